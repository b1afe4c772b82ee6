"""The run configuration, validated and frozen.

It is resolved from task defaults, an optional YAML file and command-line options, in that order
of precedence (later wins).

Unknown keys are errors that name the key, so a typo in a config never silently runs the default.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from xaibench.component import Seed
from xaibench.errors import InvalidOptionsError, XaibenchError
from xaibench.strategies.settings import TrainSettings


class ComponentRef(BaseModel):
    """A registered component by name, with options.

    A bare string means no options; ``"family:model"`` (split at the first colon) names a model
    of a generic backbone family, e.g. ``timm:resnet18.a1_in1k`` or
    ``open_clip:hf-hub:org/repo``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, description="Registry name.")
    options: dict[str, Any] = Field(default_factory=dict, description="Component options.")
    label: str | None = Field(
        None,
        min_length=1,
        description="Name in results and leaderboards; needed when one component is listed "
        "twice with different options (defaults to the registry name).",
    )
    spec: str | None = Field(
        None,
        min_length=1,
        description="Model of a generic backbone family (the part after 'family:').",
    )

    @field_validator("label")
    @classmethod
    def _printable_label(cls, value: str | None) -> str | None:
        # A label names files, table rows and one-line messages: no line breaks, tabs or other
        # control characters, and no invisible spaces at either end.
        if value is not None:
            if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in value):
                raise ValueError("a label may not contain line breaks, tabs or control characters")
            if value != value.strip():
                raise ValueError("a label may not start or end with a space")
        return value

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        name, sep, spec = value.partition(":")
        return {"name": name, "spec": spec} if sep and name and spec else {"name": value}

    @property
    def key(self) -> str:
        """The identifier in results and tables: the label, else ``name`` or ``name:spec``."""
        if self.label:
            return self.label
        return f"{self.name}:{self.spec}" if self.spec else self.name


class SplitSettings(BaseModel):
    """Patient-level split of the dataset."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    seed: Seed = 0

    @field_validator("fractions")
    @classmethod
    def _sum_to_one(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if (
            any(f < 0 for f in value)
            or abs(sum(value) - 1) > 1e-6
            or value[0] == 0
            or value[2] == 0
        ):
            raise ValueError(
                "train/val/test fractions must be non-negative, sum to 1, with train and test > 0"
            )
        return value


class SanitySettings(BaseModel):
    """Saliency sanity checks run in every cell (see :mod:`xaibench.sanity`)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    images: int = Field(
        8, ge=0, le=1024, description="Test images the checks run on per cell and method (0: off)."
    )
    steps: int = Field(4, ge=2, le=64, description="Cascading randomisation steps, the head first.")
    threshold: float = Field(
        0.5,
        gt=-1,
        le=1,
        description="A check passes when the mean Spearman similarity of maps is below this.",
    )


class AnalysisSettings(BaseModel):
    """Cross-cell analyses (see :mod:`xaibench.analysis`)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    drift_grid: int = Field(
        32,
        ge=0,
        le=256,
        description="Keep maps on this grid for explanation drift between strategies (0: off).",
    )
    bootstrap: int = Field(
        1000, ge=0, le=100_000, description="Bootstrap resamples for the drift CIs."
    )


class ChanceSettings(BaseModel):
    """Chance levels of the region metrics (see :mod:`xaibench.metrics.chance`)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    draws: int = Field(
        16,
        ge=1,
        le=1024,
        description="Shift-null moves per image for metrics without an analytic chance level "
        "(IoU, plugin metrics declaring 'best').",
    )


class ControlSettings(BaseModel):
    """Control regions of every perturbed region, for the specific Δ.

    See :mod:`xaibench.control_regions` and ``docs/explainability.md``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    draws: int = Field(
        1,
        ge=0,
        le=16,
        description="Control regions drawn per perturbed region and image, each perturbed and "
        "predicted like the region (0: off, no specific Δ).",
    )
    field: str = Field(
        "auto",
        min_length=1,
        description="Where controls may go: 'auto' (a 'body' or 'field' region of the dataset, "
        "else the image less its uniform border padding), 'image' (anywhere), or a region name.",
    )
    avoid_tested: bool = Field(
        True,
        description="Keep controls off the run's other regions under test (perturbed, "
        "explained or complemented), even where that leaves less than the region's area.",
    )


class RunConfig(BaseModel):
    """Everything that determines a run's numbers (recorded, hashed, in every results file)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    task: str
    task_sha256: str | None = Field(
        None,
        exclude=True,
        pattern=r"^[0-9a-f]{64}$",
        description="SHA-256 of the user's task file (set by xaibench from the file, never "
        "written to config.yaml): hashed, so a run whose task file changed does not resume.",
    )
    dataset: ComponentRef
    backbones: list[ComponentRef] = Field(min_length=1)
    strategies: list[ComponentRef] = Field(min_length=1)
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1)
    saliency: list[ComponentRef] = Field(default_factory=list)
    perturbations: list[ComponentRef] = Field(default_factory=list)
    metrics: list[ComponentRef] = Field(min_length=1)
    explain_regions: list[str] = Field(default_factory=list)
    perturb_regions: list[str] = Field(default_factory=list)
    complement_regions: list[str] = Field(
        default_factory=list,
        description="Regions kept while everything else is perturbed ('outside_<region>').",
    )
    saliency_target: Literal["positive"] = Field(
        "positive", description="Which class the maps explain: the task's positive class."
    )
    max_explain_images: int | None = Field(
        None,
        ge=1,
        le=10_000_000,
        description="Explain at most this many test images (all by default).",
    )
    gallery_images: int = Field(
        4,
        ge=0,
        le=64,
        description="Test images in each of the best, worst and random saliency galleries "
        "(0: no galleries).",
    )
    split: SplitSettings = Field(default_factory=SplitSettings)
    sanity: SanitySettings = Field(default_factory=SanitySettings)
    analysis: AnalysisSettings = Field(default_factory=AnalysisSettings)
    chance: ChanceSettings = Field(default_factory=ChanceSettings)
    controls: ControlSettings = Field(default_factory=ControlSettings)
    train: TrainSettings = Field(default_factory=lambda: TrainSettings())
    cache: bool = Field(True, description="Reuse frozen features from the disk cache.")
    cache_dir: str | None = Field(
        None, description="Cache folder (default: $XAIBENCH_CACHE_DIR or ~/.cache/xaibench)."
    )
    executor: ComponentRef = Field(default_factory=lambda: ComponentRef(name="local", label=None))
    device: Literal["cpu", "cuda", "auto"] = Field(
        "cpu", description="Where cells run: cpu, cuda, or auto (CUDA when available)."
    )
    ci: Literal["default", "wald_all"] = Field(
        "default",
        description="Intervals of AUC and rates: 'default' (DeLong; Wilson over each rate's own "
        "denominator) or 'wald_all' (the reference study's Wald interval over all test images, "
        "to reproduce its tables only).",
    )
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="bf16 autocast for training and inference (saliency stays fp32)."
    )
    compile: bool = Field(
        False,
        description="Run the network of training and inference passes through torch.compile "
        "(saliency maps always use the eager model). Numbers match eager ones to float rounding, "
        "not bit for bit; compiling costs time up front (tens of seconds per graph on a GPU), so "
        "it pays off on long GPU training only. Needs a C compiler on the CPU.",
    )

    @field_validator("strategies", "saliency", "perturbations", "metrics")
    @classmethod
    def _whole_names(cls, value: list[ComponentRef]) -> list[ComponentRef]:
        # Only backbones take a 'family:model' name; elsewhere a colon belongs to the registry
        # name (bridged components: captum:IntegratedGradients, quantus:Sparseness).
        return [
            ref.model_copy(update={"name": f"{ref.name}:{ref.spec}", "spec": None})
            if ref.spec is not None
            else ref
            for ref in value
        ]

    @field_validator("backbones", "strategies", "saliency", "perturbations", "metrics")
    @classmethod
    def _unique_keys(cls, value: list[ComponentRef]) -> list[ComponentRef]:
        seen: set[str] = set()
        for ref in value:
            if ref.key in seen:
                raise ValueError(
                    f"{ref.key!r} is listed twice; give variants distinct labels "
                    f"(e.g. {{name: {ref.name}, label: {ref.name}_2, options: ...}})"
                )
            seen.add(ref.key)
        return value

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError(f"seeds must be unique, got {value}")
        return value

    def hashed_settings(self) -> dict[str, Any]:
        """The configuration as hashed: fields added later are left out while at their default.

        So a field added in a later version (``compile``) does not change the hash of a
        configuration that does not use it: runs started before it existed still resume, and
        their checkpoints and cached stages are still found.
        """
        settings = self.model_dump(mode="json")
        for name, default in _HASHED_ONLY_WHEN_SET.items():
            if settings.get(name) == default:
                settings.pop(name)
        if self.task_sha256 is not None:  # a user task file: its content is part of the study
            settings["task_sha256"] = self.task_sha256
        return settings

    def config_hash(self) -> str:
        """SHA-256 of the canonical JSON form: equal configs, equal hashes."""
        blob = json.dumps(self.hashed_settings(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()

    def study_hash(self) -> str:
        """SHA-256 of the configuration without where it runs (``executor``).

        Two configurations with the same study hash compute the same numbers, so a run may be
        resumed on another executor (started locally, finished on a Ray cluster).
        """
        settings = self.hashed_settings()
        settings.pop("executor", None)
        blob = json.dumps(settings, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()


#: Fields added after runs existed, with the default that keeps them out of every hash.
_HASHED_ONLY_WHEN_SET: dict[str, Any] = {
    "compile": False,
    "chance": {"draws": 16},
    "controls": {"draws": 1, "field": "auto", "avoid_tested": True},
}


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``override`` into ``base``: mappings merge recursively, anything else replaces.

    A component given by another ``name`` (``dataset: {name: manifest, ...}`` over the task's
    ``phantom``) replaces the base component instead of merging into it, so the phantom's
    options never leak into another dataset's.
    """
    out = dict(base)
    for key, value in override.items():
        previous = out.get(key)
        if isinstance(previous, str) and isinstance(value, Mapping) and "name" in value:
            previous = {"name": previous}  # a bare component name in the base layer
        if isinstance(value, str) and isinstance(previous, Mapping) and "name" in previous:
            value = {"name": value} if value != previous["name"] else previous
        if isinstance(value, Mapping) and isinstance(previous, Mapping):
            renamed = "name" in value and "name" in previous and value["name"] != previous["name"]
            out[key] = dict(value) if renamed else deep_merge(previous, value)
        else:
            out[key] = value
    return out


#: Largest configuration file read (bytes): a run configuration is a few kilobytes.
MAX_CONFIG_BYTES = 1_000_000
#: Deepest nesting and most values (YAML aliases expanded) a configuration may hold.
MAX_CONFIG_DEPTH = 64
MAX_CONFIG_VALUES = 100_000


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a YAML run configuration with ``yaml.safe_load``, within limits.

    A configuration may come from someone else, so besides ``safe_load`` (no Python objects,
    no tags) the file must be at most :data:`MAX_CONFIG_BYTES`, UTF-8, nested at most
    :data:`MAX_CONFIG_DEPTH` levels and hold at most :data:`MAX_CONFIG_VALUES` values with its
    aliases expanded (a "billion laughs" file is a few lines that expand to billions of values
    once merged and hashed).

    Raises:
        XaibenchError: Missing, unreadable, too large, not UTF-8, invalid YAML, too deep or too
            big once expanded, or not a mapping; the message names the file.
    """
    name = str(path)
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise XaibenchError(f"cannot read config file {name!r}: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise XaibenchError(
            f"config file {name!r} is larger than {MAX_CONFIG_BYTES:,} bytes; "
            "is it a run configuration?"
        )
    return parse_yaml_document(raw, f"config file {name!r}")


def parse_yaml_document(raw: bytes, what: str) -> dict[str, Any]:
    """A YAML mapping from ``raw`` with ``yaml.safe_load``, within the configuration limits.

    The limits of :func:`load_config_file`: UTF-8, nesting, values with aliases expanded.

    Args:
        raw: The file's bytes.
        what: How messages name the file (``config file 'x.yaml'``).

    Raises:
        XaibenchError: Not UTF-8, invalid YAML, too deep or too big, or not a mapping.
    """
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise XaibenchError(
            f"{what} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
            f"{exc.start}); save it as UTF-8"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise XaibenchError(f"{what} is not valid YAML: {exc}".replace("\n", " ")) from None
    except RecursionError:
        raise XaibenchError(
            f"{what} is nested too deeply to read "
            f"(a configuration needs fewer than {MAX_CONFIG_DEPTH} levels)"
        ) from None
    _check_size(data, what)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise XaibenchError(f"{what} must hold a mapping, got {type(data).__name__}")
    return data


def _check_size(data: Any, what: str) -> None:
    """Refuse a loaded document nested deeper than the limit or too big with aliases expanded.

    Walks iteratively (no recursion) and stops at the first value past a limit, so a document
    that expands exponentially costs at most :data:`MAX_CONFIG_VALUES` steps.
    """
    stack: list[tuple[Any, int]] = [(data, 0)]
    seen = 0
    while stack:
        value, depth = stack.pop()
        seen += 1
        if seen > MAX_CONFIG_VALUES:
            raise XaibenchError(
                f"{what} holds more than {MAX_CONFIG_VALUES:,} values once its "
                "aliases (&anchor / *alias) are expanded; is it a run configuration?"
            )
        if depth > MAX_CONFIG_DEPTH:
            raise XaibenchError(f"{what} is nested more than {MAX_CONFIG_DEPTH} levels deep")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
            stack.extend((k, depth + 1) for k in value)
        elif isinstance(value, list | tuple):
            stack.extend((v, depth + 1) for v in value)


def resolve_config(*layers: Mapping[str, Any]) -> RunConfig:
    """Merge configuration layers (later wins) and validate.

    Raises:
        InvalidOptionsError: A key is unknown or a value is invalid; the message names each.
    """
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = deep_merge(merged, layer)
    try:
        return RunConfig.model_validate(merged)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(config)"
            msg = _unknown_key(err["loc"]) if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"{where}: {msg}")
        raise InvalidOptionsError(
            f"invalid run configuration: {'; '.join(problems)}", problems
        ) from None


def _unknown_key(loc: tuple[int | str, ...]) -> str:
    """``unknown key``, with did-you-mean from the keys allowed where it appeared."""
    import difflib

    model: type[BaseModel] | None = RunConfig
    for part in loc[:-1]:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            model = None
            break
        annotation = model.model_fields[part].annotation
        model = (
            annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel)
            else None
        )
    if model is None:
        return "unknown key"
    close = difflib.get_close_matches(str(loc[-1]), sorted(model.model_fields), n=1, cutoff=0.6)
    return f"unknown key; did you mean {close[0]!r}?" if close else "unknown key"
