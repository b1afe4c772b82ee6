"""OpenCLIP image towers behind the backbone adapter contract: the adapter and its attention.

:class:`OpenCLIPAdapter` wraps a built and loaded image tower (``model.visual``); the tower is
created and its weights resolved and loaded by
:class:`~xaibench.models.open_clip_backbone.OpenCLIPBackbone`.

Two tower types are supported, both Vision Transformers:

* open_clip's own ``VisionTransformer`` (OpenAI and LAION CLIP ViTs). Its blocks use
  ``nn.MultiheadAttention``, whose ``in_proj`` is a bare parameter and whose ``out_proj`` is
  applied through ``F.linear`` with the weight, never called: LoRA hung on ``out_proj`` receives no
  gradient. peft >= 0.14 can adapt the whole ``nn.MultiheadAttention`` by merging the update into
  the frozen weights around each call, but that leaves float drift in "frozen" weights. After
  loading, each block's attention is therefore replaced by :class:`SplitProjectionAttention`, the
  same computation with ``q_proj``/``k_proj``/``v_proj``/``out_proj`` as ordinary, called
  ``nn.Linear`` layers (checked numerically equal in the tests), which LoRA adapts like any other
  family's projections.
* timm ViT trunks wrapped by open_clip's ``TimmModel`` (BiomedCLIP and other ``timm_model_name``
  configs), handled like :class:`~xaibench.models.timm_backbone.TimmAdapter`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from xaibench.errors import XaibenchError
from xaibench.models.attention_capture import Capture, timm_attention_capture
from xaibench.models.base import BackboneAdapter, InputSpec, tokens_to_grid

LoraTargets = Literal["attention", "mlp", "all"]


class _ParameterOwner(nn.Module):
    """A throwaway module that owns (shares) a bare ``nn.Parameter`` of another module.

    open_clip's final projection ``visual.proj`` is a parameter of the whole tower, not a module,
    so it cannot be listed by :meth:`~BackboneAdapter.last_block_modules` directly. This owner is
    created on each call and never registered in the adapter, so the state dict keeps open_clip's
    layout while ``owner.parameters()`` yields the very same tensor the tower trains.
    """

    def __init__(self, name: str, parameter: nn.Parameter) -> None:
        super().__init__()
        self.register_parameter(name, parameter)


class SplitProjectionAttention(nn.Module):
    """Self-attention equal to a ``nn.MultiheadAttention`` but with four called ``nn.Linear``.

    Built from a loaded ``nn.MultiheadAttention`` (its ``in_proj_weight`` split into q, k, v), it
    accepts the same call, ``attn(q, k, v, need_weights=False, attn_mask=mask)``, and returns
    ``(output, None)``, so open_clip's blocks use it unchanged.
    """

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        if mha.in_proj_weight is None or not mha._qkv_same_embed_dim:
            raise XaibenchError("only packed-projection nn.MultiheadAttention can be split")
        dim = mha.embed_dim
        self.num_heads = mha.num_heads
        self.batch_first = mha.batch_first
        bias = mha.in_proj_bias is not None
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(dim, dim, bias=bias) for _ in range(3))
        with torch.no_grad():
            for i, proj in enumerate((self.q_proj, self.k_proj, self.v_proj)):
                proj.weight.copy_(mha.in_proj_weight[i * dim : (i + 1) * dim])
                if bias:
                    proj.bias.copy_(mha.in_proj_bias[i * dim : (i + 1) * dim])
        self.out_proj = nn.Linear(dim, dim, bias=mha.out_proj.bias is not None)
        self.out_proj.load_state_dict(mha.out_proj.state_dict())
        #: When a list, each forward appends its attention weights (explicit softmax path).
        self.record: list[torch.Tensor] | None = None
        #: When set, the explicit path multiplies the values by ``capture(weights)`` (gradients
        #: kept; see :mod:`xaibench.models.attention_capture`).
        self.capture: Capture | None = None

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        need_weights: bool = False,
        attn_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, None]:
        """Scaled dot-product attention over ``[B, N, C]`` (or ``[N, B, C]``) tokens."""
        if need_weights:
            raise XaibenchError("SplitProjectionAttention does not return attention weights")
        if attn_mask is not None and attn_mask.dtype == torch.bool:
            attn_mask = torch.zeros_like(attn_mask, dtype=query.dtype).masked_fill(
                attn_mask, float("-inf")
            )  # nn.MultiheadAttention: True = masked out; SDPA float masks are additive
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        batch, tokens, dim = query.shape
        heads = self.num_heads

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(batch, -1, heads, dim // heads).transpose(1, 2)

        q, k, v = split(self.q_proj(query)), split(self.k_proj(key)), split(self.v_proj(value))
        if self.record is None and self.capture is None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        else:  # the same computation with the weights materialised
            scores = q @ k.transpose(-2, -1) / (q.shape[-1] ** 0.5)
            weights = (scores if attn_mask is None else scores + attn_mask).softmax(dim=-1)
            if self.record is not None:
                self.record.append(weights.detach())
            if self.capture is not None:
                weights = self.capture(weights)
            out = weights @ v
        out = self.out_proj(out.transpose(1, 2).reshape(batch, tokens, dim))
        return (out if self.batch_first else out.transpose(0, 1)), None


def split_attention_projections(visual: nn.Module) -> int:
    """Replace every block's ``nn.MultiheadAttention`` by :class:`SplitProjectionAttention`."""
    count = 0
    for block in visual.transformer.resblocks:  # type: ignore[union-attr]
        if isinstance(block.attn, nn.MultiheadAttention):
            block.attn = SplitProjectionAttention(block.attn)
            count += 1
    return count


def open_clip_state_dict(visual: nn.Module) -> dict[str, torch.Tensor]:
    """The tower's state dict in open_clip's own layout (split projections packed again).

    Use it to save a checkpoint that open_clip (and
    :class:`~xaibench.models.open_clip_backbone.OpenCLIPBackbone`) can load.
    """
    state = dict(visual.state_dict())
    for name, module in visual.named_modules():
        if isinstance(module, SplitProjectionAttention):
            parts = [f"{name}.{p}" for p in ("q_proj", "k_proj", "v_proj")]
            state[f"{name}.in_proj_weight"] = torch.cat([state.pop(f"{p}.weight") for p in parts])
            if f"{parts[0]}.bias" in state:
                state[f"{name}.in_proj_bias"] = torch.cat([state.pop(f"{p}.bias") for p in parts])
    return state


class OpenCLIPAdapter(BackboneAdapter):
    """Adapter around an OpenCLIP image tower (``model.visual``), ViT towers only.

    ``forward_features`` returns what the tower returns: the pooled class token after ``ln_post``
    and, unless the factory was built with ``projected=False``, the final projection into the joint
    image-text space (``visual.proj``, or the ``head`` of a timm tower).
    """

    def __init__(
        self,
        visual: nn.Module,
        input_spec: InputSpec,
        *,
        random_init: bool,
        lora_targets: LoraTargets = "attention",
        name: str = "open_clip",
    ) -> None:
        kind = tower_kind(visual, name)
        feature_dim = _output_dim(visual, input_spec.size)
        super().__init__(input_spec, feature_dim, "vit", random_init=random_init)
        # open_clip and timm modules are typed as plain modules; attributes vary by tower.
        self.visual: Any = visual
        self.tower_kind: Literal["openclip", "timm"] = kind
        # open_clip's VisionTransformer always prepends exactly one class token.
        self.num_prefix_tokens = (
            1 if kind == "openclip" else int(visual.trunk.num_prefix_tokens)  # type: ignore[union-attr,arg-type]
        )
        self.lora_targets: LoraTargets = lora_targets

    # -- structure ---------------------------------------------------------------------------

    def _blocks(self) -> Any:
        if self.tower_kind == "openclip":
            return self.visual.transformer.resblocks
        return self.visual.trunk.blocks

    def _block_prefix(self) -> str:
        return (
            "visual.transformer.resblocks"
            if self.tower_kind == "openclip"
            else "visual.trunk.blocks"
        )

    @property
    def tokens_first(self) -> bool:
        """Whether blocks see tokens as ``[N, B, C]`` (open_clip before ``batch_first``, v2.24).

        Read on each call: it is a property of the tower's ``Transformer``, which older open_clip
        versions lack (they always ran sequence-first).
        """
        if self.tower_kind == "timm":
            return False
        return not getattr(self.visual.transformer, "batch_first", False)

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patch grid ``(h, w)`` of the input size the tower was built for."""
        grid = (
            self.visual.grid_size
            if self.tower_kind == "openclip"
            else self.visual.trunk.patch_embed.grid_size
        )
        return int(grid[0]), int(grid[1])

    # -- the contract ------------------------------------------------------------------------

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The tower's pooled embedding ``[B, feature_dim]`` (projected unless built without)."""
        out = self.visual(x)
        return out[0] if isinstance(out, tuple) else out  # towers built with output_tokens

    def cam_layer(self) -> nn.Module:
        """The last block's first norm (``ln_1``; ``norm1`` for timm): tokens entering attention.

        The output of the last block is useless for CAM: only its class token feeds the pooled
        feature, so the patch tokens there receive no gradient.
        """
        last = self._blocks()[-1]
        return last.ln_1 if self.tower_kind == "openclip" else last.norm1

    def activation_to_grid(self, activation: torch.Tensor) -> torch.Tensor:
        """Drop the class token and reshape ``[B, N, C]`` (or ``[N, B, C]``) to ``[B, C, h, w]``."""
        if self.tokens_first and activation.ndim == 3:
            activation = activation.transpose(0, 1)
        return tokens_to_grid(activation, self.num_prefix_tokens, self.grid_size)

    def last_block_modules(self) -> list[nn.Module]:
        """Everything after the second-to-last block: last block, final norm and projection.

        For open_clip towers the projection ``visual.proj`` is a bare parameter of the whole tower;
        it is returned wrapped in a throwaway module that shares it (not registered in the adapter,
        so state dicts keep open_clip's keys). An attentional pooler (CoCa) is included too. For
        timm towers: the trunk's last block and norms, and open_clip's ``head`` (the projection).
        """
        last = self._blocks()[-1]
        if self.tower_kind == "timm":
            trunk = self.visual.trunk
            norms = [
                m
                for m in (getattr(trunk, "norm", None), getattr(trunk, "fc_norm", None))
                if isinstance(m, nn.Module) and not isinstance(m, nn.Identity)
            ]
            head = getattr(trunk, "head", None)
            trunk_head = [head] if isinstance(head, nn.Module) and any(head.parameters()) else []
            return [last, *norms, *trunk_head, self.visual.head]
        modules: list[nn.Module] = [last, self.visual.ln_post]
        for pool in ("attn_pool", "attn_pool_contrastive"):
            module = getattr(self.visual, pool, None)
            if isinstance(module, nn.Module):
                modules.append(module)
        if self.visual.proj is not None:
            modules.append(_ParameterOwner("proj", self.visual.proj))
        return modules

    def attention_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Attention weights of every block (open_clip towers; timm towers via timm's path)."""
        if self.tower_kind == "timm":
            raise XaibenchError("attention maps of timm towers inside open_clip are not exposed")
        blocks = [b.attn for b in self._blocks() if isinstance(b.attn, SplitProjectionAttention)]
        captured: list[torch.Tensor] = []
        try:
            for attn in blocks:
                attn.record = captured
            self(images)
        finally:
            for attn in blocks:
                attn.record = None
        return captured

    def capture_attention(self, capture: Capture) -> AbstractContextManager[None]:
        """Each block's softmax attention through ``capture`` (open_clip and timm towers).

        Raises:
            XaibenchError: An open_clip block whose attention is not a
                :class:`SplitProjectionAttention` (custom attention blocks).
        """
        if self.tower_kind == "timm":
            return timm_attention_capture(self.visual.trunk.blocks, capture)
        blocks = [b.attn for b in self._blocks()]
        other = [type(a).__name__ for a in blocks if not isinstance(a, SplitProjectionAttention)]
        if other:
            raise XaibenchError(f"open_clip attention {other[0]} exposes no attention weights")
        return _split_attention_capture(blocks, capture)

    def lora_target_modules(self) -> list[str]:
        """Modules LoRA adapts in every block, chosen by the factory option ``lora_targets``.

        ``attention`` (the default): for open_clip towers the ``q_proj``, ``k_proj``, ``v_proj``
        and ``out_proj`` of each block's :class:`SplitProjectionAttention` (the Hugging Face
        families' layout); for timm towers ``attn.qkv`` and ``attn.proj``. All are called
        ``nn.Linear`` layers, so LoRA updates reach the output and frozen weights stay bit-exact.

        ``mlp``: the two MLP ``nn.Linear`` layers of each block (``c_fc``/``c_proj``, timm
        ``fc1``/``fc2``), which every peft version supports. ``all``: both sets.

        Raises:
            XaibenchError: Attention targets on a tower whose attention LoRA cannot reach
                (open_clip's custom attention blocks).
        """
        prefix = self._block_prefix()
        names: list[str] = []
        for i, block in enumerate(self._blocks()):
            if self.lora_targets in ("attention", "all"):
                names.extend(self._attention_targets(f"{prefix}.{i}", block))
            if self.lora_targets in ("mlp", "all"):
                parts = ("c_fc", "c_proj") if self.tower_kind == "openclip" else ("fc1", "fc2")
                names.extend(f"{prefix}.{i}.mlp.{part}" for part in parts)
        for name in names:
            module = _unwrapped(self.get_submodule(name))
            if not isinstance(module, nn.Linear):
                raise XaibenchError(
                    f"LoRA target {name} is a {type(module).__name__}, not a Linear"
                )
        return names

    def _attention_targets(self, path: str, block: nn.Module) -> list[str]:
        attn = getattr(block, "attn", None)
        if self.tower_kind == "timm":
            return [
                f"{path}.attn.{p}"
                for p in ("qkv", "proj")
                if isinstance(_unwrapped(getattr(attn, p, None)), nn.Linear)
            ]
        if not isinstance(_unwrapped(attn), SplitProjectionAttention):
            raise XaibenchError(
                f"LoRA on attention is not possible for open_clip's {type(attn).__name__} blocks "
                "(their q/k/v projection is a bare parameter); use lora_targets='mlp'"
            )
        return [f"{path}.attn.{p}" for p in ("q_proj", "k_proj", "v_proj", "out_proj")]


@contextmanager
def _split_attention_capture(
    blocks: list[SplitProjectionAttention], capture: Capture
) -> Iterator[None]:
    try:
        for attn in blocks:
            attn.capture = capture
        yield
    finally:
        for attn in blocks:
            attn.capture = None


def _unwrapped(module: Any) -> Any:
    """The original layer inside a peft LoRA wrapper (so targets can be listed after injection)."""
    get_base_layer = getattr(module, "get_base_layer", None)
    return get_base_layer() if callable(get_base_layer) else module


def tower_kind(visual: nn.Module, name: str = "open_clip") -> Literal["openclip", "timm"]:
    """``openclip`` (open_clip VisionTransformer) or ``timm`` (TimmModel around a timm ViT).

    Raises:
        XaibenchError: Any other tower (ModifiedResNet, ConvNeXt and other CNN trunks).
    """
    from open_clip.timm_model import TimmModel
    from open_clip.transformer import VisionTransformer

    if isinstance(visual, VisionTransformer):
        return "openclip"
    trunk = getattr(visual, "trunk", None)
    vit_parts = ("blocks", "patch_embed", "num_prefix_tokens")
    if isinstance(visual, TimmModel) and all(hasattr(trunk, a) for a in vit_parts):
        return "timm"
    what = type(visual).__name__ + (f" ({type(trunk).__name__})" if trunk is not None else "")
    raise XaibenchError(
        f"{name}: the image tower is a {what}; only Vision Transformer towers (open_clip "
        "VisionTransformer or a timm ViT trunk) are supported"
    )


def _output_dim(visual: nn.Module, size: int) -> int:
    """Width of the tower's pooled output, read from its structure (or one probe forward)."""
    proj = getattr(visual, "proj", None)
    if isinstance(proj, torch.Tensor):
        return int(proj.shape[1])
    ln_post = getattr(visual, "ln_post", None)
    if isinstance(ln_post, nn.LayerNorm):  # projection removed: pooled width
        return int(ln_post.normalized_shape[0])
    # timm towers: heads vary (linear, mlp, the trunk's own classifier); one probe is exact.
    was_training = visual.training
    visual.eval()
    try:
        with torch.no_grad():
            out = visual(torch.zeros(1, 3, size, size))
    finally:
        visual.train(was_training)
    return int((out[0] if isinstance(out, tuple) else out).shape[-1])
