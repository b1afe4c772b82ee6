"""Any other ``transformers`` vision encoder, laid out by probing it once.

The study's HF encoders (DINOv2, DINOv2 with registers, SigLIP) have hand-written layouts in
:mod:`xaibench.models.hf_adapter`. Every other ``AutoModel`` vision encoder (ViT, CLIP's vision
tower, DeiT, BEiT, Swin, ConvNeXt, ResNet, ...) goes through this module instead: the layout the
adapter contract needs is read off one forward and backward pass of a single random image at
build time, so no per-family table has to be kept in step with ``transformers`` releases.

What the probe decides, and the rule it uses:

* **token or feature map**: ``last_hidden_state`` shaped ``[B, N, C]`` is a transformer
  (``architecture="vit"``), ``[B, C, h, w]`` a CNN;
* **prefix tokens** (class/register tokens, dropped from the CAM grid): ``N`` minus the patch
  grid ``(size / patch_size)^2`` when the config has a patch size that fits, else the smallest
  count that leaves a square grid (hierarchical models such as Swin downsample past their patch
  size and have no prefix);
* **blocks**: the shallowest ``nn.ModuleList`` with the most children (the transformer layers,
  or a CNN's / Swin's stages); the last one is what ``last_block`` trains;
* **CAM layer**: transformers: the first ``LayerNorm`` of the last block whose output holds all
  ``N`` tokens (the normalised tokens entering its attention, as for the hand-written families);
  CNNs: the last block itself when its output is the final feature map;
* **after the last block**: the modules with parameters that run after it *and* receive gradient
  from the pooled feature (final norms, a pooler that the pooling uses), trained with it;
* **LoRA targets**: transformers: every ``nn.Linear`` inside an attention submodule
  (``attn``/``attention`` in its name) that ran; CNNs: the convolutions of the last stage;
* **which weights matter**: the parameters that received gradient; a checkpoint may leave other
  weights (an unused pooler) uninitialised, never these.

A model whose layout the rules cannot find fails at build time with a message saying which
part is missing, not later with a shape error inside a saliency method.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from xaibench.errors import InvalidOptionsError, XaibenchError
from xaibench.models.base import BackboneAdapter, InputSpec, tokens_to_grid

GenericPooling = Literal["cls", "mean", "pooler"]

#: The most class/register tokens a transformer is assumed to put in front of its patches.
MAX_PREFIX_TOKENS = 16


@dataclass(frozen=True)
class Layout:
    """What one probe pass found out about a model (module names relative to the HF model).

    Attributes:
        architecture: ``"vit"`` for token outputs, ``"cnn"`` for feature maps.
        feature_dim: Width of the pooled feature.
        blocks: Name of the ``nn.ModuleList`` of blocks (or stages).
        num_blocks: Its length.
        cam_layer: Name of the CAM layer, or ``None`` when none fits the rules.
        num_prefix_tokens: Class/register tokens in front of the patch tokens.
        grid: Spatial grid ``(h, w)`` of the final tokens or feature map.
        after_last_block: Modules after the last block on the feature path.
        lora_targets: Default LoRA targets.
        feature_parameters: Parameters that received gradient from the pooled feature.
        pooling: The pooling the layout was probed with.
    """

    architecture: Literal["cnn", "vit"]
    feature_dim: int
    blocks: str
    num_blocks: int
    cam_layer: str | None
    num_prefix_tokens: int
    grid: tuple[int, int]
    after_last_block: tuple[str, ...]
    lora_targets: tuple[str, ...]
    feature_parameters: frozenset[str]
    pooling: GenericPooling


def _first_tensor(output: Any) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


def _forward_kwargs(model: nn.Module, size: int, native: int | None) -> dict[str, Any]:
    """``interpolate_pos_encoding=True`` where the model takes it and runs off its native size."""
    if native is None or size == native:
        return {}
    parameters = inspect.signature(model.forward).parameters
    return {"interpolate_pos_encoding": True} if "interpolate_pos_encoding" in parameters else {}


def _pool(output: Any, architecture: str, prefix: int, pooling: GenericPooling) -> torch.Tensor:
    """The pooled feature ``[B, C]`` of a model output under ``pooling``."""
    if pooling == "pooler":
        pooled: torch.Tensor = output.pooler_output
        return pooled.flatten(1)
    hidden: torch.Tensor = output.last_hidden_state
    if pooling == "cls":
        return hidden[:, 0]
    if architecture == "cnn":
        return hidden.mean(dim=(2, 3))
    return hidden[:, prefix:].mean(dim=1)


def _find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    lists = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) > 0
    ]
    if not lists:
        raise XaibenchError(
            f"{type(model).__name__}: no nn.ModuleList of blocks found, so there is no last "
            "block to tune and no CAM layer"
        )
    # Shallowest first (blocks or stages, not the layers inside one), then the longest.
    name, blocks = min(lists, key=lambda item: (item[0].count("."), -len(item[1]), item[0]))
    return name, blocks


def _prefix_and_grid(tokens: int, size: int, patch: Any) -> tuple[int, tuple[int, int]]:
    if isinstance(patch, (list, tuple)) and len(patch) == 2 and patch[0] == patch[1]:
        patch = patch[0]
    if isinstance(patch, int) and patch > 0 and size % patch == 0:
        side = size // patch
        prefix = tokens - side * side
        if 0 <= prefix <= MAX_PREFIX_TOKENS:
            return prefix, (side, side)
    for prefix in range(min(tokens - 1, MAX_PREFIX_TOKENS) + 1):
        side = math.isqrt(tokens - prefix)
        if side * side == tokens - prefix:
            return prefix, (side, side)
    raise XaibenchError(
        f"{tokens} output tokens do not form a square patch grid after at most "
        f"{MAX_PREFIX_TOKENS} class/register tokens; only square grids are supported"
    )


def probe_layout(
    model: nn.Module,
    spec: InputSpec,
    native_size: int | None,
    pooling: GenericPooling | None,
) -> Layout:
    """Run one random image forward and backward through ``model`` and read its layout.

    The image comes from a private generator, so the global RNG (and hence training) is not
    disturbed; gradients are cleared afterwards.

    Args:
        model: A bare ``transformers`` vision model (``pixel_values`` in, ``last_hidden_state``
            out), in eval mode.
        spec: The input the adapter will feed it.
        native_size: The config's image size, for position-embedding interpolation.
        pooling: Requested pooling, or ``None`` for the default: the model's ``pooler_output``
            unless the model has none or it passes through an ``nn.Linear`` (a ViT/BERT-style
            dense pooler, often untrained in encoder checkpoints), else the class token when
            there is one, else the mean of the patch tokens / feature map.

    Raises:
        XaibenchError: The model cannot run at ``spec.size`` or its output is not a token
            sequence or a feature map.
        InvalidOptionsError: ``pooling`` needs a class token or pooler the model lacks.
    """
    blocks_name, blocks = _find_blocks(model)
    last = f"{blocks_name}.{len(blocks) - 1}" if blocks_name else str(len(blocks) - 1)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, spec.channels, spec.size, spec.size, generator=generator)
    order: list[str] = []
    shapes: dict[str, tuple[int, ...] | None] = {}
    handles = []

    def record(name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            order.append(name)
            tensor = _first_tensor(output)
            shapes.setdefault(name, None if tensor is None else tuple(tensor.shape))

        return hook

    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_hook(record(name)))
    try:
        with torch.enable_grad():
            try:
                output = model(pixel_values=x, **_forward_kwargs(model, spec.size, native_size))
            except (RuntimeError, ValueError, TypeError, IndexError) as exc:
                first = str(exc).strip().splitlines()
                raise XaibenchError(
                    f"{type(model).__name__} does not run on {spec.size} px input: "
                    f"{type(exc).__name__}: {first[0] if first else ''}"
                ) from None
            hidden = getattr(output, "last_hidden_state", None)
            if not isinstance(hidden, torch.Tensor) or hidden.ndim not in (3, 4):
                raise XaibenchError(
                    f"{type(model).__name__} returns no last_hidden_state shaped [B, N, C] or "
                    "[B, C, h, w]; it is not a vision encoder xaibench can adapt"
                )
            architecture: Literal["cnn", "vit"] = "vit" if hidden.ndim == 3 else "cnn"
            if architecture == "vit":
                prefix, grid = _prefix_and_grid(
                    int(hidden.shape[1]), spec.size, getattr(model.config, "patch_size", None)
                )
            else:
                prefix, grid = 0, (int(hidden.shape[2]), int(hidden.shape[3]))
            pooler = getattr(output, "pooler_output", None)
            has_pooler = isinstance(pooler, torch.Tensor) and pooler.flatten(1).shape[1] > 0
            chosen = _choose_pooling(pooling, architecture, prefix, has_pooler)
            if pooling is None and chosen == "pooler":
                # The model's own pooled output, unless it goes through a dense layer: a
                # ViT/BERT-style pooler is often left untrained in encoder checkpoints.
                features = _pool(output, architecture, prefix, chosen)
                features.float().sum().backward(retain_graph=True)
                after = _after(model, last, order, _with_grad(model))
                if any(
                    isinstance(m, nn.Linear)
                    for n in after
                    for m in model.get_submodule(n).modules()
                ):
                    model.zero_grad(set_to_none=True)
                    chosen = "cls" if architecture == "vit" and prefix > 0 else "mean"
            if not _with_grad(model):
                features = _pool(output, architecture, prefix, chosen)
                features.float().sum().backward()
    finally:
        for handle in handles:
            handle.remove()
    feature_parameters = _with_grad(model)
    model.zero_grad(set_to_none=True)
    executed = set(order)
    cam = _cam_layer(model, last, order, shapes, tuple(hidden.shape), architecture)
    return Layout(
        architecture=architecture,
        feature_dim=int(features.shape[1]),
        blocks=blocks_name,
        num_blocks=len(blocks),
        cam_layer=cam,
        num_prefix_tokens=prefix,
        grid=grid,
        after_last_block=_after(model, last, order, feature_parameters),
        lora_targets=_lora_targets(model, blocks_name, last, architecture, executed),
        feature_parameters=feature_parameters,
        pooling=chosen,
    )


def _with_grad(model: nn.Module) -> frozenset[str]:
    return frozenset(n for n, p in model.named_parameters() if p.grad is not None)


def _choose_pooling(
    pooling: GenericPooling | None, architecture: str, prefix: int, has_pooler: bool
) -> GenericPooling:
    if pooling is None:
        if has_pooler:
            return "pooler"
        return "cls" if architecture == "vit" and prefix > 0 else "mean"
    if pooling == "cls" and (architecture == "cnn" or prefix == 0):
        raise InvalidOptionsError("pooling 'cls': this model has no class token (use 'mean')")
    if pooling == "pooler" and not has_pooler:
        raise InvalidOptionsError("pooling 'pooler': this model returns no pooler_output")
    return pooling


def _inside(name: str, parent: str) -> bool:
    return name == parent or name.startswith(parent + ".")


def _cam_layer(
    model: nn.Module,
    last: str,
    order: list[str],
    shapes: dict[str, tuple[int, ...] | None],
    hidden: tuple[int, ...],
    architecture: str,
) -> str | None:
    if architecture == "vit":
        for name in order:
            shape = shapes.get(name)
            if (
                _inside(name, last)
                and isinstance(model.get_submodule(name), nn.LayerNorm)
                and shape is not None
                and len(shape) == 3
                and shape[1] == hidden[1]
            ):
                return name
        return None
    if shapes.get(last) == hidden:
        return last
    matches = [n for n in order if _inside(n, last) and shapes.get(n) == hidden]
    return matches[-1] if matches else None


def _after(
    model: nn.Module, last: str, order: list[str], feature_parameters: frozenset[str]
) -> tuple[str, ...]:
    """Modules with parameters that ran after the last block and feed the pooled feature.

    Each is reported as its outermost ancestor that ran wholly after the block and whose
    parameters all feed the feature (SigLIP's attention-pooling ``head``, not its four layers).
    """
    if last not in order:
        return ()
    end = len(order) - 1 - order[::-1].index(last)  # the block's hook fires when it returns
    before = set(order[: end + 1])

    def qualifies(name: str) -> bool:
        if not name or _inside(name, last) or _inside(last, name):
            return False  # the root, inside the block, or a parent of it (runs before it too)
        module = model.get_submodule(name)
        inner = {f"{name}.{n}".rstrip(".") for n, _ in module.named_modules()}
        return not (inner & before) and all(
            f"{name}.{p}" in feature_parameters for p, _ in module.named_parameters()
        )

    names: list[str] = []
    for name in order[end + 1 :]:
        own = [f"{name}.{p}" for p, _ in model.get_submodule(name).named_parameters(recurse=False)]
        if not qualifies(name) or not any(p in feature_parameters for p in own):
            continue
        while "." in name and qualifies(name.rsplit(".", 1)[0]):
            name = name.rsplit(".", 1)[0]
        if name not in names:
            names.append(name)
    return tuple(names)


def _lora_targets(
    model: nn.Module, blocks: str, last: str, architecture: str, executed: set[str]
) -> tuple[str, ...]:
    if architecture == "cnn":
        return tuple(
            name
            for name, module in model.named_modules()
            if _inside(name, last) and isinstance(module, nn.Conv2d) and name in executed
        )
    prefix = f"{blocks}." if blocks else ""
    targets = []
    for name, module in model.named_modules():
        if not (name.startswith(prefix) and isinstance(module, nn.Linear) and name in executed):
            continue
        parts = name[len(prefix) :].split(".")[1:]
        if any("attn" in p.lower() or "attention" in p.lower() for p in parts):
            targets.append(name)
    return tuple(targets)


class GenericHFAdapter(BackboneAdapter):
    """Adapter around a ``transformers`` vision encoder laid out by :func:`probe_layout`.

    Attributes:
        model: The ``transformers`` model; module names relative to the adapter start with
            ``model.``.
        layout: What the probe found.
        pooling: How :meth:`forward_features` pools.
        native_size: The config's image size (position embeddings), if it has one.
    """

    def __init__(
        self,
        model: nn.Module,
        layout: Layout,
        input_spec: InputSpec,
        native_size: int | None,
        *,
        random_init: bool,
    ) -> None:
        super().__init__(
            input_spec, layout.feature_dim, layout.architecture, random_init=random_init
        )
        self.model: Any = model
        self.layout = layout
        self.family = f"generic:{getattr(model.config, 'model_type', type(model).__name__)}"
        self.pooling: GenericPooling = layout.pooling
        self.native_size = native_size
        self.num_prefix_tokens = layout.num_prefix_tokens
        self._kwargs = _forward_kwargs(model, input_spec.size, native_size)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``[B, feature_dim]`` of preprocessed input."""
        output = self.model(pixel_values=x, **self._kwargs)
        return _pool(output, self.architecture, self.num_prefix_tokens, self.pooling)

    def cam_layer(self) -> nn.Module:
        """The probed CAM layer (see the module docstring).

        Raises:
            XaibenchError: The probe found none; gradient-based methods still work.
        """
        if self.layout.cam_layer is None:
            raise XaibenchError(
                f"{self.family}: no layer whose output is the full token grid or final feature "
                "map was found in the last block, so CAM-style methods cannot run on it; use a "
                "gradient method such as 'saliency'"
            )
        module: nn.Module = self.model.get_submodule(self.layout.cam_layer)
        return module

    def activation_to_grid(self, activation: torch.Tensor) -> torch.Tensor:
        """Tokens ``[B, N, C]`` to ``[B, C, h, w]`` without prefix tokens; maps pass through."""
        if self.architecture == "cnn":
            return activation
        return tokens_to_grid(activation, self.num_prefix_tokens, self.layout.grid)

    def last_block_modules(self) -> list[nn.Module]:
        """The last block (or stage) and the modules after it on the feature path."""
        last = f"{self.layout.blocks}.{self.layout.num_blocks - 1}".lstrip(".")
        names = [last, *self.layout.after_last_block]
        return [self.model.get_submodule(name) for name in names]

    def lora_target_modules(self) -> list[str]:
        """Attention ``nn.Linear`` layers of every block (transformers); last-stage convs (CNNs)."""
        return [f"model.{name}" for name in self.layout.lora_targets]

    def attention_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Attention weights of every layer, from eager attention, where they cover all tokens.

        Raises:
            XaibenchError: A CNN, or a model whose attention is windowed (Swin) or not returned.
        """
        if self.architecture == "cnn":
            return super().attention_maps(images)
        x = self.preprocess(images)
        switch = hasattr(self.model, "set_attn_implementation")
        previous = getattr(self.model.config, "_attn_implementation", None)
        if switch:
            self.model.set_attn_implementation("eager")
        try:
            output = self.model(pixel_values=x, output_attentions=True, **self._kwargs)
        finally:
            if switch and previous is not None:
                self.model.set_attn_implementation(previous)
        maps = getattr(output, "attentions", None)
        tokens = self.num_prefix_tokens + self.layout.grid[0] * self.layout.grid[1]
        if not maps or any(a.ndim != 4 or a.shape[-2:] != (tokens, tokens) for a in maps):
            raise XaibenchError(
                f"{self.family}: the model returns no attention weights over all {tokens} tokens "
                "(windowed or unsupported attention), so attention maps are not defined"
            )
        return [a.detach() for a in maps]
