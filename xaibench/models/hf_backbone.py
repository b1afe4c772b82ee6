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

The factory, :class:`HFVisionBackbone`, is here. The adapter around a loaded encoder and the
hand-written family layouts are in :mod:`xaibench.models.hf_adapter`; reading a checkpoint
folder (its weight files, vision config and image-processor settings) is in
:mod:`xaibench.models.hf_checkpoint`.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from xaibench.errors import InvalidOptionsError, XaibenchError
from xaibench.models.base import BackboneAdapter, BackboneFactory, InputSpec
from xaibench.models.hf_adapter import (
    _FAMILIES,
    _IMAGENET_MEAN,
    _IMAGENET_STD,
    HFVisionAdapter,
    Pooling,
    _Family,
    _family_of,
    _grid_side,
)
from xaibench.models.hf_checkpoint import (
    _names,
    _per_channel,
    _processor_mean_std,
    _processor_size,
    _quiet_transformers,
    _vision_config,
    hf_weight_files,
)
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
