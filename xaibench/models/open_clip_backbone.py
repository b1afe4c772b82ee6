"""OpenCLIP image towers behind the backbone adapter contract.

Only the image tower of a CLIP model is built. The text tower is never constructed: it is not
needed for image features, it is often as large as the image tower, and for some models
(BiomedCLIP's PubMedBERT) building it would fetch a Hugging Face config from the network. The tower
is created from open_clip's architecture config (a built-in name such as ``ViT-B-16``, or the
``open_clip_config.json`` shipped next to ``hf-hub:`` / ``local-dir:`` weights), always with random
weights first; the checkpoint is then read safely by
:func:`~xaibench.models.weights.load_state_dict` and applied with strict key checking, so nothing is
ever downloaded or unpickled.

The factory, :class:`OpenCLIPBackbone`, and the weights resolution and loading are here; the
adapter around the built tower (:class:`~xaibench.models.open_clip_adapter.OpenCLIPAdapter`),
the two supported tower types and the split attention projections LoRA needs are in
:mod:`xaibench.models.open_clip_adapter`.
"""

from __future__ import annotations

import copy
import difflib
import json
import posixpath
from pathlib import Path
from typing import Any

import torch
from pydantic import Field
from torch import nn

from xaibench.errors import XaibenchError
from xaibench.models.base import BackboneAdapter, BackboneFactory, InputSpec
from xaibench.models.open_clip_adapter import (
    LoraTargets,
    OpenCLIPAdapter,
    split_attention_projections,
    tower_kind,
)
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
