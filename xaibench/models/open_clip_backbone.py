"""OpenCLIP image towers behind the backbone adapter contract.

Only the image tower of a CLIP model is built. The text tower is never constructed: it is not
needed for image features, it is often as large as the image tower, and for some models
(BiomedCLIP's PubMedBERT) building it would fetch a Hugging Face config from the network. The tower
is created from open_clip's architecture config (a built-in name such as ``ViT-B-16``, or the
``open_clip_config.json`` shipped next to ``hf-hub:`` / ``local-dir:`` weights), always with random
weights first; the checkpoint is then read safely by
:func:`~xaibench.models.weights.load_state_dict` and applied with strict key checking, so nothing is
ever downloaded or unpickled.

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

import copy
import difflib
import json
import posixpath
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from xaibench.errors import XaibenchError
from xaibench.models.base import BackboneAdapter, BackboneFactory, InputSpec, tokens_to_grid
from xaibench.models.presets import OPEN_CLIP_TINY_CONFIG, OPENCLIP_VIT_B16
from xaibench.models.weights import (
    MissingWeightsError,
    ResolvedWeights,
    file_sha256,
    hf_cache_dir,
    hf_cache_snapshot,
    load_state_dict,
    resolve_weights,
    weight_files,
)

#: Backbones of the study: the LAION-2B ViT-B/16 OpenCLIP image tower (weights from the local
#: Hugging Face cache, ``laion/CLIP-ViT-B-16-laion2B-s34B-b88K``).
STUDY_BACKBONES: dict[str, dict[str, Any]] = {"openclip_vit_b16": OPENCLIP_VIT_B16}

#: ``model_cfg_overrides`` for a tiny random ViT tower (see presets).
TINY_CONFIG = OPEN_CLIP_TINY_CONFIG

#: Config file open_clip ships next to ``hf-hub:`` and ``local-dir:`` weights.
CONFIG_FILE = "open_clip_config.json"

#: open_clip's checkpoint names, most preferred first (safetensors before pickles). Hugging Face
#: repositories of CLIP models also hold ``model.safetensors`` / ``pytorch_model.bin`` in the
#: *transformers* or *timm* layout, which must not be mistaken for (or merged with) these.
OPEN_CLIP_CHECKPOINTS: tuple[str, ...] = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
)

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
        if self.record is None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        else:  # the same computation with the weights materialised
            scores = q @ k.transpose(-2, -1) / (q.shape[-1] ** 0.5)
            weights = (scores if attn_mask is None else scores + attn_mask).softmax(dim=-1)
            self.record.append(weights.detach())
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

    Use it to save a checkpoint that open_clip (and :class:`OpenCLIPBackbone`) can load.
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


def _deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Copy of ``base`` with ``overrides`` merged in, recursively for nested dicts."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _square(size: Any, what: str) -> int:
    """An image or patch size as one int; open_clip also allows ``(h, w)``."""
    if isinstance(size, list | tuple):
        if len(size) != 2 or size[0] != size[1]:
            raise XaibenchError(f"{what} {size!r} is not square; only square inputs are supported")
        size = size[0]
    return int(size)


class OpenCLIPBackbone(BackboneFactory):
    """The image tower of an OpenCLIP model, with weights from a local file, folder or HF cache.

    ``model_name`` is an open_clip architecture (``ViT-B-16``) or a schema name:
    ``hf-hub:org/repo`` (BiomedCLIP and other models published with an ``open_clip_config.json``)
    or ``local-dir:/path``. Built-in names take their weights from the repository that open_clip's
    pretrained registry gives for ``pretrained_tag`` (looked up offline, in the local Hugging Face
    cache); ``hf-hub:`` names from that repository; ``local-dir:`` from the folder. ``weights`` (a
    file, or a folder with an open_clip checkpoint) overrides all of these.

    Features are the tower's pooled class token after ``ln_post`` projected into the joint
    image-text space (``model.visual(x)``, what ``encode_image`` returns unnormalised), by default:
    that is the representation CLIP's contrastive objective shaped, it is what zero-shot and the
    common OpenCLIP linear-probe protocols use, and it has the same meaning across CLIP-family
    towers (LAION ViT, BiomedCLIP's timm ViT). ``projected=False`` gives the pre-projection width
    instead (what Radford et al. probed for CLIP ViTs; a linear head on it can express anything a
    head on the projected features can, since the projection is linear).
    """

    display_name = "OpenCLIP"
    spec_option = "model_name"
    citation = (
        "Ilharco et al., OpenCLIP, doi:10.5281/zenodo.5143773; Cherti et al., Reproducible scaling "
        "laws for contrastive language-image learning, CVPR 2023"
    )
    model_name: str = Field(
        description="open_clip architecture (e.g. ViT-B-16), or hf-hub:org/repo, or local-dir:path."
    )
    pretrained_tag: str | None = Field(
        None,
        description="open_clip pretrained tag (e.g. laion2b_s34b_b88k): recorded, and for built-in "
        "names it selects the Hugging Face repository looked up in the local cache.",
    )
    img_size: int | None = Field(
        None,
        ge=16,
        le=2048,
        description="Square input size; default: the model's own. Position embeddings are resized.",
    )
    model_cfg_overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="Merged (recursively) into open_clip's model config, e.g. "
        "{'vision_cfg': {'layers': 2, 'width': 64}} for a tiny random tower.",
    )
    projected: bool = Field(
        True,
        description="Features after the projection into the joint image-text space (default), "
        "or the pooled tower output before it.",
    )
    lora_targets: LoraTargets = Field(
        "attention",
        description="What LoRA adapts in every block: attention (q/k/v and output projections; "
        "needs peft >= 0.14 for open_clip towers), mlp, or all.",
    )

    # -- names, repositories, configs --------------------------------------------------------

    def _schema(self) -> tuple[str | None, str]:
        from open_clip.factory import parse_model_name

        try:
            return parse_model_name(self.model_name)
        except ValueError as exc:
            raise XaibenchError(f"bad open_clip model name {self.model_name!r}: {exc}") from None

    def _builtin_config(self) -> dict[str, Any] | None:
        """open_clip's own config for a schema-less name (offline; ``None`` if unknown)."""
        import open_clip

        schema, identifier = self._schema()
        if schema is not None:
            return None
        config = open_clip.get_model_config(identifier.replace("/", "-"))
        return copy.deepcopy(config) if config else None

    def _pretrained_cfg(self) -> dict[str, Any]:
        """open_clip's registry entry for ``(model_name, pretrained_tag)``; ``{}`` if none applies.

        Raises:
            XaibenchError: A tag that the registry does not know for a built-in name.
        """
        import open_clip

        schema, identifier = self._schema()
        if schema is not None or self.pretrained_tag is None:
            return {}
        name = identifier.replace("/", "-")
        cfg = open_clip.get_pretrained_cfg(name, self.pretrained_tag)
        if not cfg:
            tags = open_clip.list_pretrained_tags_by_model(name)
            close = difflib.get_close_matches(self.pretrained_tag, tags, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            known = (
                f" (known: {', '.join(tags)})" if tags else " (open_clip has no pretrained tags)"
            )
            raise XaibenchError(
                f"unknown open_clip pretrained tag {self.pretrained_tag!r} for {name}{hint}{known}"
            )
        return dict(cfg)

    def hf_repo(self) -> tuple[str | None, str | None]:
        """Hugging Face repository (and file, if the registry names one) holding the weights.

        ``hf-hub:org/repo`` names give ``org/repo``; built-in names the ``hf_hub`` entry of
        open_clip's pretrained registry for ``pretrained_tag`` (``org/repo/`` or
        ``org/repo/file``); otherwise ``(None, None)``.
        """
        schema, identifier = self._schema()
        if schema == "hf-hub":
            return identifier, None
        hub = str(self._pretrained_cfg().get("hf_hub", "") or "")
        if not hub:
            return None, None
        repo, filename = posixpath.split(hub)
        return repo, filename or None

    def _check(self) -> None:
        """Fail early on an unknown architecture or tag (the message suggests close names)."""
        import open_clip

        schema, identifier = self._schema()
        if schema is None and self._builtin_config() is None and self.weights is None:
            close = difflib.get_close_matches(identifier, open_clip.list_models(), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise XaibenchError(
                f"unknown open_clip architecture {identifier!r}{hint} (or use hf-hub:org/repo, "
                f"local-dir:path, or a weights folder holding {CONFIG_FILE})"
            )
        self._pretrained_cfg()

    def _config_dirs(self, weights: ResolvedWeights) -> list[Path]:
        """Folders that may hold ``open_clip_config.json``, most specific first."""
        dirs: list[Path] = []
        if weights.path is not None:
            dirs.append(weights.path if weights.source == "directory" else weights.path.parent)
        schema, identifier = self._schema()
        if schema == "local-dir":
            dirs.append(Path(identifier).expanduser())
        repo, _ = self.hf_repo()
        if schema == "hf-hub" and repo is not None:
            snapshot = hf_cache_snapshot(repo)
            if snapshot is not None:
                dirs.append(snapshot)
        return dirs

    def tower_config(self, weights: ResolvedWeights) -> tuple[dict[str, Any], dict[str, Any]]:
        """open_clip's model config (overrides merged) and preprocessing config for ``weights``.

        Built-in names use open_clip's config; other names the ``open_clip_config.json`` next to
        the weights (or in the ``local-dir:`` folder, or in the cached ``hf-hub:`` snapshot).
        Preprocessing comes from that file, else from the pretrained tag's registry entry.

        Raises:
            XaibenchError: No config could be found; the message lists where it looked.
        """
        model_cfg = self._builtin_config()
        preprocess: dict[str, Any] = {}
        pretrained = self._pretrained_cfg()
        for key in ("mean", "std"):
            if key in pretrained:
                preprocess[key] = pretrained[key]
        if model_cfg is None:
            looked = []
            for directory in self._config_dirs(weights):
                path = directory / CONFIG_FILE
                looked.append(str(path))
                if path.is_file():
                    try:
                        data = json.loads(path.read_text(encoding="utf-8"))
                    except (OSError, ValueError) as exc:
                        raise XaibenchError(f"cannot read {str(path)!r}: {exc}") from None
                    model_cfg = dict(data.get("model_cfg", data))
                    preprocess.update(data.get("preprocess_cfg", {}) or {})
                    break
            if model_cfg is None:
                where = "; ".join(looked) or "no folder to look in (no weights, no cached repo)"
                raise XaibenchError(
                    f"no open_clip config for {self.model_name!r}: "
                    f"looked for {CONFIG_FILE} in {where}"
                )
        model_cfg = _deep_merge(model_cfg, self.model_cfg_overrides)
        if "vision_cfg" not in model_cfg or "embed_dim" not in model_cfg:
            raise XaibenchError(
                f"open_clip config for {self.model_name!r} lacks 'vision_cfg' or 'embed_dim'"
            )
        if pretrained.get("quick_gelu"):
            # Weights trained with QuickGELU (OpenAI, MetaCLIP, DFN tags): open_clip only warns
            # when the architecture config disagrees; building the activation they need is right.
            model_cfg["quick_gelu"] = True
        return model_cfg, preprocess

    # -- weights -----------------------------------------------------------------------------

    def locate_weights(self, name: str) -> ResolvedWeights:
        """Explicit file or folder, else the ``local-dir:`` folder, else the HF cache snapshot.

        In a folder the open_clip checkpoint is chosen by name (:data:`OPEN_CLIP_CHECKPOINTS`, or
        the file the pretrained registry names), because CLIP repositories also carry transformers-
        or timm-format copies of the same weights; a folder with a single weight file of another
        name is accepted too. Only the chosen file is hashed.

        Raises:
            MissingWeightsError: Nothing found; says which folder, repository and files it tried.
        """
        self._check()
        if self.random_init:
            return ResolvedWeights("random")
        if self.weights is not None:
            path = Path(self.weights).expanduser()
            if path.is_dir():
                return _folder_weights(name, path, None, f"folder {str(path)!r}")
            return resolve_weights(name, weights=path, hf_repo=None, random_init=False)
        schema, identifier = self._schema()
        if schema == "local-dir":
            folder = Path(identifier).expanduser()
            if folder.is_dir():
                return _folder_weights(name, folder, None, f"folder {str(folder)!r}")
            raise MissingWeightsError(
                name, [f"{str(folder)!r} (no such folder)"], "fix the local-dir: path"
            )
        repo, filename = self.hf_repo()
        if repo is None:
            return resolve_weights(  # raises, naming the missing option
                name,
                weights=None,
                hf_repo=None,
                random_init=False,
                hint="set 'pretrained_tag' to one of open_clip's tags for "
                f"{self.model_name!r}, or pass a local file or folder with the option 'weights'",
            )
        snapshot = hf_cache_snapshot(repo)
        wanted = filename or " / ".join(OPEN_CLIP_CHECKPOINTS)
        if snapshot is None:
            raise MissingWeightsError(
                name,
                [f"Hugging Face cache {str(hf_cache_dir())!r} for {repo!r} (file {wanted})"],
                f"download them on a machine with internet (`hf download {repo} "
                f"{filename or OPEN_CLIP_CHECKPOINTS[0]}`) and copy the cache, or pass a local "
                "file or folder with the backbone option 'weights'; or use --random-init for "
                "untrained weights",
            )
        return _folder_weights(name, snapshot, filename, f"Hugging Face cache snapshot of {repo!r}")

    # -- building ----------------------------------------------------------------------------

    def build(self, weights: ResolvedWeights) -> BackboneAdapter:
        """Create the image tower, load ``weights`` (unless random) and wrap it, in eval mode.

        Raises:
            XaibenchError: Unusable config, or weights that do not fit the tower (strict keys).
        """
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
        from open_clip.model import _build_vision_tower

        self._check()
        model_cfg, preprocess = self.tower_config(weights)
        vision_cfg = dict(model_cfg["vision_cfg"])
        is_timm = bool(vision_cfg.get("timm_model_name"))
        vision_cfg["timm_model_pretrained"] = False  # never let timm download a trunk
        native = _square(vision_cfg.get("image_size", 224), "image_size")
        size = self.img_size or native
        if not is_timm:
            patch = _square(vision_cfg.get("patch_size", 16), "patch_size")
            if size % patch:
                raise XaibenchError(f"img_size {size} is not a multiple of the patch size {patch}")
            vision_cfg["image_size"] = size  # learned position embeddings are resized on load
        try:
            # The image tower alone (open_clip's own builder, as create_model uses it): the text
            # tower is never needed and may not even be constructible offline (BiomedCLIP).
            visual = _build_vision_tower(
                int(model_cfg["embed_dim"]),
                vision_cfg,
                quick_gelu=bool(model_cfg.get("quick_gelu", False)),
            )
        except (TypeError, ValueError, AssertionError, RuntimeError) as exc:
            raise XaibenchError(
                f"cannot build the open_clip image tower of {self.model_name!r} from vision_cfg "
                f"{vision_cfg}: {type(exc).__name__}: {exc}"
            ) from None
        tower_kind(visual, self.model_name)  # unsupported towers fail before any loading
        if is_timm and tuple(visual.trunk.patch_embed.img_size) != (size, size):
            # open_clip's TimmModel builds the trunk at timm's default size whatever image_size
            # says; resize it before loading, so a checkpoint is resampled at most once.
            visual.set_input_size(size)
        if not weights.random_init:
            _load_tower(visual, weights, self.model_name)
        if not is_timm:
            split_attention_projections(visual)
        if not self.projected:
            _remove_projection(visual)
        spec = InputSpec(
            size=size,
            mean=tuple(float(v) for v in preprocess.get("mean", OPENAI_DATASET_MEAN)),
            std=tuple(float(v) for v in preprocess.get("std", OPENAI_DATASET_STD)),
        )
        adapter = OpenCLIPAdapter(
            visual,
            spec,
            random_init=weights.random_init,
            lora_targets=self.lora_targets,
            name=self.model_name,
        )
        return adapter.eval()


def _folder_weights(name: str, folder: Path, filename: str | None, where: str) -> ResolvedWeights:
    """The open_clip checkpoint in ``folder`` (see :meth:`OpenCLIPBackbone.locate_weights`)."""
    names: list[str] = []
    if filename:  # the registry's file, its safetensors twin first (as open_clip prefers)
        names += [str(Path(filename).with_suffix(".safetensors")), filename]
    names += [n for n in OPEN_CLIP_CHECKPOINTS if n not in names]
    names = list(dict.fromkeys(names))
    for candidate in names:
        path = folder / candidate
        if path.is_file():
            return ResolvedWeights("directory", folder, file_sha256(path), (path,))
    others = weight_files(folder)
    if len(others) == 1:
        return ResolvedWeights("directory", folder, file_sha256(others[0]), others)
    found = f"; it holds {', '.join(p.name for p in others)}" if others else ""
    raise MissingWeightsError(
        name,
        [f"{where} for {' / '.join(names)}{found}"],
        "put the open_clip checkpoint there (or pass the file itself with the option 'weights')",
    )


def _tower_state_dict(weights: ResolvedWeights) -> dict[str, torch.Tensor]:
    """The image-tower part of the checkpoint, keys relative to ``model.visual``.

    A full CLIP checkpoint keeps only its ``visual.`` entries (the text tower's tensors are dropped
    here, before anything is built from them); a checkpoint without any is taken as a tower alone.
    """
    if not weights.files:
        raise XaibenchError(f"no weight files found in {str(weights.path)!r}")
    state: dict[str, torch.Tensor] = {}
    for file in weights.files:
        state.update(load_state_dict(file))
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k.removeprefix("module."): v for k, v in state.items()}
    if any(k.startswith("visual.") for k in state):
        state = {k.removeprefix("visual."): v for k, v in state.items() if k.startswith("visual.")}
    return state


def _load_tower(visual: nn.Module, weights: ResolvedWeights, model_name: str) -> None:
    """Load ``weights`` into ``visual`` with strict key and shape checks.

    Learned position embeddings of another grid size are resized first: open_clip's own
    ``resize_pos_embed`` (bicubic, class token kept) for open_clip towers, timm's
    ``resample_abs_pos_embed`` for timm trunks, as ``create_model(force_image_size=...)`` does.
    """
    state = _tower_state_dict(weights)
    source = ", ".join(f.name for f in weights.files)
    own = visual.state_dict()
    if "positional_embedding" in state and "positional_embedding" in own:
        from open_clip.model import resize_pos_embed

        wrapped = {"visual.positional_embedding": state["positional_embedding"]}
        resize_pos_embed(wrapped, nn.ModuleDict({"visual": visual}))
        state["positional_embedding"] = wrapped["visual.positional_embedding"]
    key = "trunk.pos_embed"
    if key in state and key in own and state[key].shape != own[key].shape:
        from timm.layers import resample_abs_pos_embed

        trunk: Any = getattr(visual, "trunk")  # noqa: B009 (open_clip TimmModel, untyped)
        prefix = 0 if getattr(trunk, "no_embed_class", False) else int(trunk.num_prefix_tokens)
        state[key] = resample_abs_pos_embed(
            state[key], new_size=list(trunk.patch_embed.grid_size), num_prefix_tokens=prefix
        )
    try:
        result = visual.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise XaibenchError(
            f"weights {source} do not fit the {model_name!r} image tower: {exc}"
        ) from None
    if result.missing_keys or result.unexpected_keys:
        missing, unexpected = result.missing_keys, result.unexpected_keys
        raise XaibenchError(
            f"weights {source} do not fit the {model_name!r} image tower: "
            f"{len(missing)} missing key(s) {missing[:5]}, "
            f"{len(unexpected)} unexpected key(s) {unexpected[:5]}"
        )


def _remove_projection(visual: nn.Module) -> None:
    """Make the tower return its pooled features before the joint-space projection."""
    tower: Any = visual
    if hasattr(tower, "trunk"):
        tower.head = nn.Identity()
        if getattr(tower.trunk, "num_classes", 0):  # the trunk's own classifier was the projection
            tower.trunk.reset_classifier(0)
    else:
        tower.proj = None  # open_clip skips a None projection
