"""Where computation runs, in what precision, and whether the forward pass is compiled.

Tensors of a split stay on the CPU; each batch moves to the device on use. On a CUDA device a
batch is first copied into page-locked ("pinned") host memory and then transferred with
``non_blocking=True``, so the copy runs asynchronously while the host goes on queueing kernels
(from ordinary pageable memory CUDA would stage it synchronously). Results come back to the CPU
with ``.cpu()``, which waits for the device, so nothing reads a tensor before its transfer is done.
On the CPU, :meth:`Runtime.to` returns the very tensor it was given.

bf16 autocast speeds up training and inference on GPUs that support it; saliency maps are always
computed in float32, because gradients in bf16 are too coarse for attribution.

``compile`` runs the network of training and inference passes through :func:`torch.compile`
(see :meth:`Runtime.forward`). Saliency methods and sanity checks always get the eager module:
they register hooks, differentiate to the input and (captum) wrap the forward themselves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from xaibench.errors import XaibenchError

Precision = Literal["fp32", "bf16"]

#: A forward pass: raw images in, logits (or features) out.
Forward = Callable[[torch.Tensor], torch.Tensor]


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` (an error when CUDA is unavailable) or ``auto`` (CUDA when present).

    Raises:
        XaibenchError: CUDA requested but not available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise XaibenchError(
            "device 'cuda' was requested but torch finds no CUDA device "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); use --device cpu"
        )
    if name not in ("cpu", "cuda"):
        raise XaibenchError(f"unknown device {name!r} (use cpu, cuda or auto)")
    return torch.device(name)


@dataclass(frozen=True)
class Runtime:
    """The device and precision of a run, and whether training and inference are compiled."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: Precision = "fp32"
    compile: bool = False

    def to(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` on the run's device (the same tensor on the CPU).

        Host tensors bound for a CUDA device are pinned first, so the transfer is truly
        asynchronous. Reusing the pinned buffer is safe: torch's caching host allocator does not
        hand it out again before the copy that reads it has finished.
        """
        if self.device.type == "cuda" and tensor.device.type == "cpu" and not tensor.is_pinned():
            tensor = tensor.pin_memory()
        return tensor.to(self.device, non_blocking=True)

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """bf16 autocast when ``precision`` is ``bf16``, else nothing."""
        if self.precision == "bf16":
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16):
                yield
        else:
            yield

    def forward(self, module: nn.Module) -> Forward:
        """What training and inference call instead of ``module(images)``.

        The module itself unless ``compile`` is set; then see :func:`compiled_forward`. Never
        use it for saliency: methods need the eager module (hooks, gradients to the input).
        """
        return compiled_forward(module) if self.compile else module


def _classifier_network(model: Any, x: torch.Tensor) -> torch.Tensor:
    """Logits of a classifier for preprocessed input."""
    return model.head(model.backbone.forward_features(x))


def _adapter_network(adapter: Any, x: torch.Tensor) -> torch.Tensor:
    """Pooled features of a backbone adapter for preprocessed input."""
    return adapter.forward_features(x)


#: Compiled graphs kept per network function (torch's default is 8).
RECOMPILE_LIMIT = 128

#: The two networks, each compiled once per process (on first use).
_COMPILED: dict[str, Callable[[Any, torch.Tensor], torch.Tensor]] = {}


def _compiled(
    network: Callable[[Any, torch.Tensor], torch.Tensor],
) -> Callable[[Any, torch.Tensor], torch.Tensor]:
    if network.__name__ not in _COMPILED:
        _COMPILED[network.__name__] = torch.compile(network)
    return _COMPILED[network.__name__]


def compiled_forward(module: nn.Module) -> Forward:
    """``module``'s forward with its network compiled by :func:`torch.compile` (default mode).

    For a :class:`~xaibench.models.base.Classifier` or a backbone adapter with the standard
    forward, the input check and preprocessing (:meth:`BackboneAdapter.preprocess
    <xaibench.models.base.BackboneAdapter.preprocess>`) run eagerly and only the network (the
    adapter's ``forward_features`` and the head) is compiled: the range check reads two numbers
    back to the host, which would split the compiled graph. Any other module is compiled whole.

    The compiled functions take the model as an argument and are shared by every model:
    parameters are graph inputs, so a new model of an architecture already compiled (the next
    cell) reuses its graphs. Train and eval mode, grad and inference mode, and a second batch
    size (then compiled with a dynamic batch dimension) each compile once. Numbers match the
    eager module to float rounding, not bit for bit.
    """
    from xaibench.models.base import BackboneAdapter, Classifier

    if isinstance(module, Classifier) and type(module).forward is Classifier.forward:
        adapter, network = module.backbone, _compiled(_classifier_network)
    elif isinstance(module, BackboneAdapter):
        adapter, network = module, _compiled(_adapter_network)
    else:
        return torch.compile(module)
    if type(adapter).forward is not BackboneAdapter.forward:
        return torch.compile(module)

    def forward(images: torch.Tensor) -> torch.Tensor:
        x = adapter.preprocess(images)
        # Every architecture, strategy, mode and batch shape of a run adds graphs to the same
        # two functions: beyond torch's default of 8 per function it would fall back to eager.
        with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
            return network(module, x)

    return forward
