"""Where computation runs and in what precision.

Tensors of a split stay on the CPU; each batch moves to the device on use (non-blocking), and
results come back to the CPU for metrics. bf16 autocast speeds up training and inference on GPUs
that support it; saliency maps are always computed in float32, because gradients in bf16 are too
coarse for attribution.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import torch

from xaibench.errors import XaibenchError

Precision = Literal["fp32", "bf16"]


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
    """The device and precision of a run."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: Precision = "fp32"

    def to(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` on the run's device (a no-op on the CPU)."""
        return tensor.to(self.device, non_blocking=True)

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """bf16 autocast when ``precision`` is ``bf16``, else nothing."""
        if self.precision == "bf16":
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16):
                yield
        else:
            yield
