"""Hugging Face ``transformers`` vision encoders behind the backbone adapter contract.

The two chest X-ray encoders of the study ship as ``transformers`` checkpoints, not timm ones:
RAD-DINO (``microsoft/rad-dino``, a DINOv2 ViT-B/14) and the SigLIP image tower of CheXagent
(``StanfordAIMI/XraySigLIP__vit-l-16-siglip-384__webli``, a full vision+text SigLIP model of which
only the vision tower is used). This module loads them (and any checkpoint of the same families)
offline and adds what ``transformers`` leaves to the user:

* the token-to-grid reshape with the class and register tokens dropped, and the CAM layer (the
  normalised input of the last block, since the class token's output after the last block gets
  no gradient from the patch tokens);
* one pooled feature per image, chosen per family (see :class:`HFVisionBackbone` ``pooling``);
* preprocessing from the checkpoint's own ``preprocessor_config.json`` (mean/std) at the size the
  model is run at, with position embeddings interpolated when that differs from the native size;
* safe, strict loading: ``local_files_only`` everywhere (nothing is downloaded), safetensors
  preferred, pickled ``.bin`` files only through ``torch.load(weights_only=True)`` (enforced by
  ``transformers`` 5 for folders and by :func:`~xaibench.models.weights.load_state_dict` for
  single files), never ``trust_remote_code``, and an error, not a log line, when a checkpoint
  leaves weights of the encoder uninitialised.

Hand-written layouts (``transformers`` >= 5 module layout): ``dinov2``,
``dinov2_with_registers`` and ``siglip`` (full SigLIP checkpoints or ``siglip_vision_model``
ones). Every other ``AutoModel`` vision encoder (ViT, CLIP's vision tower, DeiT, BEiT, Swin,
ConvNeXt, ResNet, ...) is laid out by probing it once: see :mod:`xaibench.models.hf_generic`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from xaibench.errors import InvalidOptionsError, XaibenchError
from xaibench.models.base import BackboneAdapter, BackboneFactory, InputSpec, tokens_to_grid
from xaibench.models.hf_generic import GenericHFAdapter, probe_layout
from xaibench.models.presets import CHEXAGENT_SIGLIP, HF_TINY_CONFIGS, RAD_DINO
from xaibench.models.weights import (
    MissingWeightsError,
    ResolvedWeights,
    files_sha256,
    hf_cache_snapshot,
    load_state_dict,
    resolve_weights,
)

logger = logging.getLogger(__name__)

Architecture = Literal["auto", "dinov2", "dinov2_with_registers", "siglip", "generic"]
Pooling = Literal["cls", "mean", "pooler"]

#: The two encoders of the study, as options for :class:`HFVisionBackbone`.
STUDY_BACKBONES: dict[str, dict[str, Any]] = {
    "rad_dino": RAD_DINO,
    "chexagent_siglip": CHEXAGENT_SIGLIP,
}

#: Where the study encoders come from, for the docs and the report.
STUDY_CITATIONS: dict[str, str] = {
    "rad_dino": (
        "Perez-Garcia et al., Exploring scalable medical image encoders beyond text supervision "
        "(RAD-DINO), Nature Machine Intelligence 2025, arXiv:2401.10815"
    ),
    "chexagent_siglip": (
        "Chen et al., CheXagent: Towards a Foundation Model for Chest X-Ray Interpretation, "
        "arXiv:2401.12208"
    ),
}

#: ``config_overrides`` for tiny random models of each architecture (see presets).
TINY_CONFIGS = HF_TINY_CONFIGS

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class _Family:
    """How one ``transformers`` family is laid out (module paths relative to the HF model).

    Attributes:
        name: The ``architecture`` option value.
        model_types: ``config.model_type`` values that belong to the family.
        config_class: ``transformers`` config class for models built from scratch.
        model_class: ``transformers`` model class (the bare encoder, no head).
        layers: Path of the ``nn.ModuleList`` of transformer blocks.
        norm1: Name, inside a block, of the layer norm in front of attention (the CAM layer).
        final_norm: Path of the norm applied to the last block's output.
        attention: Names, inside a block, of the attention ``nn.Linear`` layers LoRA adapts.
        class_token: Whether the token sequence starts with a class token.
        interpolate_flag: Whether the forward needs ``interpolate_pos_encoding=True`` at a
            non-native size (DINOv2 interpolates on its own).
        mean: Default normalisation mean when the checkpoint has no preprocessor config.
        std: Default normalisation std.
        unused_weights: Weights the encoder has but never uses without special inputs, so a
            checkpoint may lack them (DINOv2's ``mask_token``, used only with
            ``bool_masked_pos`` in masked-image pretraining).
    """

    name: str
    model_types: tuple[str, ...]
    config_class: str
    model_class: str
    layers: str
    norm1: str
    final_norm: str
    attention: tuple[str, ...]
    class_token: bool
    interpolate_flag: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]
    unused_weights: tuple[str, ...] = ()


_DINOV2 = _Family(
    name="dinov2",
    model_types=("dinov2",),
    config_class="Dinov2Config",
    model_class="Dinov2Model",
    layers="encoder.layer",
    norm1="norm1",
    final_norm="layernorm",
    attention=("attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.o_proj"),
    class_token=True,
    interpolate_flag=False,
    mean=_IMAGENET_MEAN,
    std=_IMAGENET_STD,
    unused_weights=("embeddings.mask_token",),
)

_FAMILIES: dict[str, _Family] = {
    "dinov2": _DINOV2,
    # Same layout; the register tokens only change the prefix count (read from the config).
    "dinov2_with_registers": dataclasses.replace(
        _DINOV2,
        name="dinov2_with_registers",
        model_types=("dinov2_with_registers",),
        config_class="Dinov2WithRegistersConfig",
        model_class="Dinov2WithRegistersModel",
    ),
    "siglip": _Family(
        name="siglip",
        # "siglip" is the full vision+text model; only its vision_config/vision tower is used.
        model_types=("siglip", "siglip_vision_model"),
        config_class="SiglipVisionConfig",
        model_class="SiglipVisionModel",
        layers="encoder.layers",
        norm1="layer_norm1",
        final_norm="post_layernorm",
        attention=(
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.out_proj",
        ),
        class_token=False,
        interpolate_flag=True,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
    ),
}


def _family_of(model_type: str) -> _Family | None:
    return next((f for f in _FAMILIES.values() if model_type in f.model_types), None)


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' progress bars and load report while loading, then restore them.

    Missing and mismatched weights are checked and raised by this module instead, so the
    report (which mostly lists the text tower of full SigLIP checkpoints) is noise.
    """
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def hf_weight_files(folder: Path) -> tuple[Path, ...]:
    """The weight files ``transformers`` would load from ``folder``, safetensors first.

    A single ``model.safetensors``, the shards named by ``model.safetensors.index.json``, else
    the pickled equivalents; empty when there are none. Other files in the folder (an
    ``open_clip`` checkpoint beside the HF one, say) are left out of the hash because they are
    not what is loaded.
    """
    for single, index in (
        ("model.safetensors", "model.safetensors.index.json"),
        ("pytorch_model.bin", "pytorch_model.bin.index.json"),
    ):
        if (folder / single).is_file():
            return (folder / single,)
        if (folder / index).is_file():
            try:
                weight_map = json.loads((folder / index).read_text())["weight_map"]
                names = sorted(set(weight_map.values()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                raise XaibenchError(
                    f"cannot read shard index {str(folder / index)!r}: {type(exc).__name__}: {exc}"
                ) from None
            return tuple(folder / n for n in names)
    return ()


def _grid_side(image_size: Any, what: str) -> int:
    """A square side from an ``int`` or ``[h, w]`` config value."""
    if isinstance(image_size, (list, tuple)):
        if len(image_size) != 2 or image_size[0] != image_size[1]:
            raise XaibenchError(f"only square inputs are supported, the {what} is {image_size}")
        image_size = image_size[0]
    return int(image_size)


class HFVisionAdapter(BackboneAdapter):
    """Adapter around a bare ``transformers`` ViT encoder (DINOv2, DINOv2 with registers, SigLIP).

    Attributes:
        model: The ``transformers`` model (``Dinov2Model``, ``Dinov2WithRegistersModel`` or
            ``SiglipVisionModel``), so module names relative to the adapter start with ``model.``.
        family: The architecture family name.
        pooling: How :meth:`forward_features` pools tokens.
        patch_size: Side of one patch in pixels.
        num_prefix_tokens: Tokens in front of the patch tokens (class and register tokens).
        native_size: The input size the position embeddings were made for.
    """

    def __init__(
        self,
        model: nn.Module,
        family: _Family,
        input_spec: InputSpec,
        pooling: Pooling,
        *,
        random_init: bool,
    ) -> None:
        config: Any = getattr(model, "config")  # noqa: B009 (transformers attribute)
        super().__init__(input_spec, int(config.hidden_size), "vit", random_init=random_init)
        # Typed loosely: the module layout differs by family and is reached by path.
        self.model: Any = model
        self._family = family
        self.family = family.name
        self.pooling: Pooling = pooling
        self.patch_size = _grid_side(config.patch_size, "patch size")
        self.num_prefix_tokens = int(family.class_token) + int(
            getattr(config, "num_register_tokens", 0) or 0
        )
        self.native_size = _grid_side(config.image_size, "config image_size")

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patch grid ``(h, w)`` at the adapter's input size."""
        side = self.input_spec.size // self.patch_size
        return side, side

    def _layers(self) -> nn.ModuleList:
        layers: nn.ModuleList = self.model.get_submodule(self._family.layers)
        return layers

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``[B, hidden_size]`` of preprocessed input (see ``pooling``)."""
        kwargs: dict[str, Any] = {}
        if self._family.interpolate_flag and tuple(x.shape[-2:]) != (
            self.native_size,
            self.native_size,
        ):
            # SigLIP adds fixed-size position embeddings unless told to resample them.
            kwargs["interpolate_pos_encoding"] = True
        out = self.model(pixel_values=x, **kwargs)
        if self.pooling == "pooler":
            pooled: torch.Tensor = out.pooler_output
            return pooled
        hidden: torch.Tensor = out.last_hidden_state  # after the final norm
        if self.pooling == "cls":
            return hidden[:, 0]
        return hidden[:, self.num_prefix_tokens :].mean(dim=1)

    def attention_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Attention weights of every layer, from transformers' eager attention.

        SDPA never materialises the weights; the model is switched to eager attention for this
        call only and restored afterwards.
        """
        x = self.preprocess(images)
        kwargs: dict[str, Any] = {"output_attentions": True}
        if self._family.interpolate_flag and tuple(x.shape[-2:]) != (
            self.native_size,
            self.native_size,
        ):
            kwargs["interpolate_pos_encoding"] = True
        previous = self.model.config._attn_implementation
        self.model.set_attn_implementation("eager")
        try:
            out = self.model(pixel_values=x, **kwargs)
        finally:
            self.model.set_attn_implementation(previous)
        return [a.detach() for a in out.attentions]

    def cam_layer(self) -> nn.Module:
        """The last block's first layer norm: the normalised tokens entering its attention."""
        return self._layers()[-1].get_submodule(self._family.norm1)

    def activation_to_grid(self, activation: torch.Tensor) -> torch.Tensor:
        """Drop the class/register tokens and reshape ``[B, N, C]`` to ``[B, C, h, w]``."""
        return tokens_to_grid(activation, self.num_prefix_tokens, self.grid_size)

    def last_block_modules(self) -> list[nn.Module]:
        """Last block and final norm, plus SigLIP's attention-pooling head when it pools."""
        modules: list[nn.Module] = [
            self._layers()[-1],
            self.model.get_submodule(self._family.final_norm),
        ]
        if self.pooling == "pooler" and self._family.name == "siglip":
            modules.append(self.model.head)
        return modules

    def lora_target_modules(self) -> list[str]:
        """Every block's query, key, value and attention-output ``nn.Linear``.

        Raises:
            XaibenchError: A name does not resolve to an ``nn.Linear`` (a ``transformers``
                release changed the module layout).
        """
        names = [
            f"model.{self._family.layers}.{i}.{part}"
            for i in range(len(self._layers()))
            for part in self._family.attention
        ]
        for name in names:
            try:
                module = self.get_submodule(name)
            except AttributeError:
                module = None
            if not isinstance(module, nn.Linear):
                raise XaibenchError(
                    f"{name!r} is not an nn.Linear in this transformers version; "
                    "the LoRA targets of the family need updating"
                )
        return names


class HFVisionBackbone(BackboneFactory):
    """A Hugging Face ``transformers`` vision encoder, offline, from a folder or the HF cache.

    Weights come from ``weights`` (a folder saved with ``save_pretrained`` or a snapshot, or a
    single weights file) or else from the local Hugging Face cache snapshot of ``model_id``;
    nothing is ever downloaded. The config comes from the same folder (for a single file: the
    file's folder, else the cached snapshot of ``model_id``, else the ``architecture`` defaults),
    with ``config_overrides`` applied on top; random initialisation uses it too, so a random
    baseline has the architecture of the pretrained model when its config is cached.

    Pooling defaults (``pooling`` unset): DINOv2/RAD-DINO use the class token of the last
    hidden state after the final layer norm (what DINOv2 and RAD-DINO linear probes use);
    SigLIP uses ``pooler_output``, its attention-pooling head (the image embedding SigLIP was
    trained to align with text), or the token mean when the checkpoint has no head. ``mean``
    averages the patch tokens (class and register tokens excluded) after the final norm;
    ``pooler`` on DINOv2 equals ``cls``.
    """

    display_name = "Hugging Face transformers"
    spec_option = "model_id"
    citation = (
        "Wolf et al., Transformers: State-of-the-Art Natural Language Processing, "
        "EMNLP 2020 (demos), doi:10.18653/v1/2020.emnlp-demos.6"
    )

    model_id: str = Field(
        min_length=1,
        description="Hugging Face repository id, looked up in the local cache (never downloaded).",
    )
    img_size: int | None = Field(
        None,
        ge=16,
        le=4096,
        description=(
            "Square input size; default: the config's image_size. Position embeddings are "
            "interpolated when it differs; it must be a multiple of the patch size."
        ),
    )
    config_overrides: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Config fields to override (for SigLIP: fields of the vision config), e.g. to "
            "build tiny random models; unknown fields are errors."
        ),
    )
    architecture: Architecture = Field(
        "auto",
        description=(
            "Model family; 'auto' takes it from the config on disk (a model type without a "
            "hand-written layout is probed: 'generic'). Needed to build a random model when no "
            "config is available locally; checked against the config otherwise. 'generic' forces "
            "the probed layout even for DINOv2 and SigLIP."
        ),
    )
    pooling: Pooling | None = Field(
        None,
        description=(
            "Pooled feature: 'cls' token, 'mean' of patch tokens or the model's 'pooler' output; "
            "default: 'cls' for DINOv2, 'pooler' (attention-pooling head) for SigLIP; for other "
            "models 'pooler' unless it has a dense layer (ViT's), else 'cls' when there is a "
            "class token, else 'mean'."
        ),
    )

    def _hint(self) -> str:
        return (
            f"download them on a machine with internet (`hf download {self.model_id}`) and copy "
            "the Hugging Face cache folder, or pass a folder saved with save_pretrained (or a "
            "weights file) as the backbone option 'weights'"
        )

    def locate_weights(self, name: str) -> ResolvedWeights:
        """Explicit file or folder, else the snapshot of ``model_id`` in the local HF cache.

        For folders, only the files ``transformers`` loads are hashed (see
        :func:`hf_weight_files`).

        Raises:
            MissingWeightsError: Nothing found, or a folder without ``transformers`` weights.
        """
        resolved = resolve_weights(
            name,
            weights=self.weights,
            hf_repo=self.model_id,
            random_init=self.random_init,
            hint=self._hint(),
        )
        if resolved.source != "directory" or resolved.path is None:
            return resolved
        files = hf_weight_files(resolved.path)
        if not files:
            raise MissingWeightsError(
                name,
                [
                    f"{str(resolved.path)!r} (no model.safetensors, pytorch_model.bin or "
                    "shard index)"
                ],
                self._hint() + "; or use --random-init for untrained weights",
            )
        if files == resolved.files and resolved.sha256 is not None:
            return resolved
        return ResolvedWeights("directory", resolved.path, files_sha256(files), files)

    # -- config ---------------------------------------------------------------------------------

    def _config_folder(self, weights: ResolvedWeights) -> Path | None:
        """Where ``config.json`` (and ``preprocessor_config.json``) come from, if anywhere."""
        candidates: list[Path] = []
        if weights.path is not None:
            candidates.append(weights.path if weights.path.is_dir() else weights.path.parent)
        elif self.weights is not None:  # random init next to given weights: same architecture
            path = Path(self.weights).expanduser()
            candidates.append(path if path.is_dir() else path.parent)
        for folder in candidates:
            if (folder / "config.json").is_file():
                return folder
        snapshot = hf_cache_snapshot(self.model_id)
        if snapshot is not None and (snapshot / "config.json").is_file():
            return snapshot
        return None

    def _with_overrides(self, config: Any) -> Any:
        """A copy of ``config`` with ``config_overrides`` applied, refusing unknown fields.

        ``transformers`` configs accept unknown keyword arguments silently (a typo would change
        nothing), so the keys are checked against the config's declared fields. The config is
        rebuilt rather than mutated so that derived values are recomputed (DINOv2 derives its
        ``stage_names`` from ``num_hidden_layers``; a mutated config would not reload).
        """
        if not self.config_overrides:
            return config
        from huggingface_hub.errors import StrictDataclassError

        fields = [
            f.name for f in dataclasses.fields(config) if f.init and not f.name.startswith("_")
        ]
        unknown = sorted(set(self.config_overrides) - set(fields))
        if unknown:
            raise InvalidOptionsError(
                f"config_overrides for {type(config).__name__}: unknown field(s) "
                f"{', '.join(unknown)} (known: {', '.join(sorted(fields))})"
            )
        values = {name: getattr(config, name) for name in fields}
        values.update(self.config_overrides)
        try:
            return type(config)(**values)
        except (TypeError, ValueError, StrictDataclassError) as exc:
            first = str(exc).strip().splitlines()
            raise InvalidOptionsError(
                f"config_overrides {self.config_overrides!r} for {type(config).__name__}: "
                f"{' '.join(first[:2])}"
            ) from None

    def _make_config(self, folder: Path | None) -> tuple[_Family | None, Any]:
        """The family (``None``: probe the layout) and the (vision) config, with overrides."""
        import transformers

        if folder is None:
            if self.architecture in ("auto", "generic"):
                raise InvalidOptionsError(
                    f"{self.model_id!r}: no config.json in the weights folder or the local "
                    f"Hugging Face cache, so architecture {self.architecture!r} cannot tell what "
                    f"to build; set architecture to one of {', '.join(_FAMILIES)}, or pass the "
                    "folder of a saved config as 'weights'"
                )
            family = _FAMILIES[self.architecture]
            return family, self._with_overrides(getattr(transformers, family.config_class)())
        try:
            config = transformers.AutoConfig.from_pretrained(
                str(folder), local_files_only=True, trust_remote_code=False
            )
        except (OSError, ValueError, KeyError) as exc:
            raise XaibenchError(
                f"cannot read the config in {str(folder)!r}: {type(exc).__name__}: {exc}"
            ) from None
        found = _family_of(str(config.model_type))
        if self.architecture == "generic" or (found is None and self.architecture == "auto"):
            return None, self._with_overrides(_vision_config(config, folder))
        if found is None:
            raise InvalidOptionsError(
                f"architecture {self.architecture!r} does not match the config in "
                f"{str(folder)!r} (model_type {config.model_type!r}); use 'auto'"
            )
        if self.architecture not in ("auto", found.name):
            raise InvalidOptionsError(
                f"architecture {self.architecture!r} does not match the config in "
                f"{str(folder)!r} (model_type {config.model_type!r}, family {found.name!r})"
            )
        if found.name == "siglip" and config.model_type == "siglip":
            config = config.vision_config  # vision+text checkpoint: the image tower only
        return found, self._with_overrides(config)

    # -- preprocessing --------------------------------------------------------------------------

    def _input_spec(self, family: _Family | None, config: Any, folder: Path | None) -> InputSpec:
        """Size from ``img_size``, the config or the preprocessor; mean/std from the latter."""
        processor = None if folder is None else folder / "preprocessor_config.json"
        patch = _grid_side(getattr(config, "patch_size", 1) or 1, "patch size")
        if self.img_size is not None:
            size = self.img_size
        elif getattr(config, "image_size", None) is not None:
            size = _grid_side(config.image_size, "config image_size")
        else:  # CNNs: the processor's crop size, else the ImageNet convention
            size = _processor_size(processor) or 224
        if size % patch:
            lower = max(patch, size // patch * patch)
            raise InvalidOptionsError(
                f"img_size {size} is not a multiple of the patch size {patch} "
                f"(try {lower} or {lower + patch})"
            )
        channels = int(getattr(config, "num_channels", 3))
        mean, std = (_IMAGENET_MEAN, _IMAGENET_STD) if family is None else (family.mean, family.std)
        if processor is not None and processor.is_file():
            mean, std = _processor_mean_std(processor, mean, std)
        mean, std = _per_channel(mean, channels, processor), _per_channel(std, channels, processor)
        if not all(s > 0 for s in std):
            raise XaibenchError(f"{str(processor)!r}: image_std must be positive, got {std}")
        return InputSpec(size=size, mean=mean, std=std, channels=channels)

    def _pooling(self, family: _Family, config: Any) -> Pooling:
        has_head = family.name == "siglip" and bool(getattr(config, "vision_use_head", True))
        if self.pooling is None:
            if family.name == "siglip":
                return "pooler" if has_head else "mean"
            return "cls"
        if self.pooling == "cls" and not family.class_token:
            raise InvalidOptionsError(
                f"pooling 'cls': {family.name} has no class token (use 'pooler' or 'mean')"
            )
        if self.pooling == "pooler" and family.name == "siglip" and not has_head:
            raise InvalidOptionsError(
                "pooling 'pooler': this SigLIP config has no attention-pooling head "
                "(vision_use_head is false); use 'mean'"
            )
        return self.pooling

    # -- build ----------------------------------------------------------------------------------

    def build(self, weights: ResolvedWeights) -> BackboneAdapter:
        """Create the encoder from its config, load ``weights`` (unless random), wrap it."""
        import transformers

        folder = self._config_folder(weights)
        family, config = self._make_config(folder)
        spec = self._input_spec(family, config, folder)
        if family is None:
            return self._build_generic(config, spec, weights)
        pooling = self._pooling(family, config)
        model_class = getattr(transformers, family.model_class)
        with _quiet_transformers():
            if weights.random_init:
                model = model_class(config)
            else:
                model, missing = self._load(model_class, config, weights)
                self._check_complete(model_class, weights, missing, set(family.unused_weights))
        adapter = HFVisionAdapter(
            model.float(), family, spec, pooling, random_init=weights.random_init
        )
        return adapter.eval()

    def _build_generic(
        self, config: Any, spec: InputSpec, weights: ResolvedWeights
    ) -> BackboneAdapter:
        """Any other vision encoder: ``AutoModel``'s class for the config, layout probed.

        A checkpoint may leave weights off the feature path uninitialised (a ViT pooler the
        pooling does not use); every weight that reaches the pooled feature must load.
        """
        from transformers.models.auto.modeling_auto import MODEL_MAPPING

        try:
            model_class: Any = MODEL_MAPPING[type(config)]
        except KeyError:
            raise XaibenchError(
                f"{self.model_id!r}: transformers has no AutoModel class for "
                f"{type(config).__name__} (model_type {config.model_type!r})"
            ) from None
        if isinstance(model_class, tuple):  # some configs map to several classes; take the first
            model_class = next(c for c in model_class if c is not None)
        missing: list[str] = []
        with _quiet_transformers():
            if weights.random_init:
                model = model_class(config)
            else:
                model, missing = self._load(model_class, config, weights)
        model = model.float().eval()
        native = getattr(config, "image_size", None)
        native_size = None if native is None else _grid_side(native, "config image_size")
        layout = probe_layout(model, spec, native_size, self.pooling)
        if missing:
            # Parameters off the feature path may be absent; buffers (BatchNorm statistics)
            # get no gradient, so a missing one is always an error.
            parameters = {name for name, _ in model.named_parameters()}
            unused = {k for k in missing if k in parameters} - layout.feature_parameters
            self._check_complete(model_class, weights, missing, unused)
            logger.info("%s: not in the checkpoint, unused: %s", self.model_id, sorted(unused))
        adapter = GenericHFAdapter(
            model, layout, spec, native_size, random_init=weights.random_init
        )
        return adapter.eval()

    def _load(
        self, model_class: Any, config: Any, weights: ResolvedWeights
    ) -> tuple[nn.Module, list[str]]:
        """Load pretrained weights; return the model and the names the checkpoint lacked.

        Folders go through ``from_pretrained`` (sharding, key conversions such as the legacy
        DINOv2 ``attention.attention.query`` names, the ``vision_model.`` prefix of full SigLIP
        checkpoints); a single file is read by :func:`load_state_dict` and handed over as a
        state dict so the same conversions apply. Unused checkpoint entries (the SigLIP text
        tower) are ignored and logged at debug level.
        """
        assert weights.path is not None
        common: dict[str, Any] = {
            "config": config,
            "dtype": torch.float32,  # transformers 5 defaults to the checkpoint's dtype
            "output_loading_info": True,
        }
        try:
            if weights.source == "directory":
                has_safetensors = any(f.suffix == ".safetensors" for f in weights.files)
                model, info = model_class.from_pretrained(
                    str(weights.path),
                    local_files_only=True,
                    use_safetensors=has_safetensors,
                    weights_only=True,
                    trust_remote_code=False,
                    **common,
                )
            else:
                state = load_state_dict(weights.path)
                model, info = model_class.from_pretrained(None, state_dict=state, **common)
        except XaibenchError:
            raise
        except pickle.UnpicklingError:
            raise XaibenchError(
                f"{self.model_id!r}: refused to unpickle {_names(weights)} in "
                f"{str(weights.path)!r}: it holds objects other than tensors, and pickled "
                "checkpoints are only read with torch.load(weights_only=True); convert it to "
                "safetensors on a machine where it is trusted"
            ) from None
        except (OSError, RuntimeError, ValueError, KeyError) as exc:
            message = str(exc).strip().splitlines()
            raise XaibenchError(
                f"{self.model_id!r}: cannot load {_names(weights)} from {str(weights.path)!r}: "
                f"{type(exc).__name__}: {message[0] if message else ''}"
            ) from None
        mismatched = sorted(str(k) for k in info.get("mismatched_keys", ()))
        if mismatched:
            raise XaibenchError(
                f"{self.model_id!r}: {str(weights.path)!r} does not fit {model_class.__name__} "
                f"built from its config: {len(mismatched)} mismatched weight(s), e.g. "
                f"{', '.join(mismatched[:5])}"
            )
        unexpected = info.get("unexpected_keys", ())
        if unexpected:
            logger.debug("%s: ignored %d checkpoint entries", self.model_id, len(unexpected))
        loaded: nn.Module = model
        return loaded, sorted(str(k) for k in info.get("missing_keys", ()))

    def _check_complete(
        self, model_class: Any, weights: ResolvedWeights, missing: list[str], unused: set[str]
    ) -> None:
        """Refuse a checkpoint that leaves weights the features depend on at random values."""
        bad = sorted(set(missing) - unused)
        if bad:
            raise XaibenchError(
                f"{self.model_id!r}: {str(weights.path)!r} does not fit {model_class.__name__} "
                f"built from its config: {len(bad)} missing weight(s), e.g. {', '.join(bad[:5])}"
            )


def _vision_config(config: Any, folder: Path) -> Any:
    """The image tower's config of a vision+text checkpoint (CLIP, ...), else ``config``."""
    vision = getattr(config, "vision_config", None)
    if vision is None:
        return config
    if isinstance(vision, dict):
        raise XaibenchError(f"{str(folder)!r}: vision_config is not a transformers config")
    return vision


def _processor_size(path: Path | None) -> int | None:
    """The square crop (or resize) side of an image processor config, if it states one."""
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise XaibenchError(f"cannot read {str(path)!r}: {type(exc).__name__}: {exc}") from None
    for key in ("crop_size", "size"):
        value = data.get(key) if isinstance(data, dict) else None
        if isinstance(value, dict):
            value = value.get("height", value.get("shortest_edge"))
        if isinstance(value, int) and value > 0:
            return value
    return None


def _names(weights: ResolvedWeights) -> str:
    return ", ".join(f.name for f in weights.files) or "weights"


def _processor_mean_std(
    path: Path, mean: tuple[float, ...], std: tuple[float, ...]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``image_mean``/``image_std`` of an image processor config (identity if it skips them)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise XaibenchError(f"cannot read {str(path)!r}: {type(exc).__name__}: {exc}") from None
    if not isinstance(data, dict):
        raise XaibenchError(f"{str(path)!r} is not a JSON object")
    if data.get("do_normalize") is False:
        return (0.0,), (1.0,)
    return _floats(data.get("image_mean", mean), path), _floats(data.get("image_std", std), path)


def _floats(value: Any, path: Path) -> tuple[float, ...]:
    values = value if isinstance(value, (list, tuple)) else [value]
    try:
        return tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise XaibenchError(f"{str(path)!r}: bad image_mean/image_std {value!r}") from None


def _per_channel(values: tuple[float, ...], channels: int, path: Path | None) -> tuple[float, ...]:
    if len(values) == 1:
        return values * channels
    if len(values) != channels:
        raise XaibenchError(
            f"{str(path)!r}: {len(values)} mean/std values for a {channels}-channel model"
        )
    return values
