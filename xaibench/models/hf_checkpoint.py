"""Reading a Hugging Face ``transformers`` checkpoint folder, offline.

The weight files ``transformers`` would load from a folder (safetensors first), the image
tower's config of a vision+text checkpoint, the input size and mean/std of its image-processor
config, and a context that silences ``transformers``' progress bars and load report while
:class:`~xaibench.models.hf_backbone.HFVisionBackbone` loads.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from xaibench.errors import XaibenchError
from xaibench.models.weights import ResolvedWeights


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' progress bars and load report while loading, then restore them.

    Missing and mismatched weights are checked and raised by
    :mod:`xaibench.models.hf_backbone` instead, so the report (which mostly lists the text tower
    of full SigLIP checkpoints) is noise.
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
