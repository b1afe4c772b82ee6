"""CheXlocalize's definitions as functions: segmentation, per-image IoU and hits, bootstrap, tuning.

The metrics built on them, and what each option means, are in
:mod:`xaibench.metrics.chexlocalize`; every difference from CheXlocalize's published code is
listed in ``docs/explainability.md`` ("CheXlocalize protocol").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from scipy import ndimage

from xaibench.errors import XaibenchError
from xaibench.metrics.binarize import _valid_flat_maps, otsu_binarize

__all__ = [
    "CHEXLOCALIZE_CITATION",
    "TUNING_GRID",
    "BootstrapCI",
    "Images",
    "chexlocalize_bootstrap",
    "fill_contours",
    "hit_scores",
    "segment",
    "segmentation_iou",
    "tune_threshold",
]

CHEXLOCALIZE_CITATION = (
    "Saporta et al., Benchmarking saliency methods for chest X-ray interpretation, "
    "Nature Machine Intelligence 4:867-878, 2022"
)

#: CheXlocalize's threshold grid (``np.arange(0.2, .8, .1)``, saved rounded to 0.1).
TUNING_GRID: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)

Images = Literal["true_positive", "positive", "all"]
_IMAGES = ("true_positive", "positive", "all")


# --------------------------------------------------------------------------------------------
# Segmentation, per-image scores, bootstrap, tuning
# --------------------------------------------------------------------------------------------


def fill_contours(binary: np.ndarray) -> np.ndarray:
    """What CheXlocalize's contour drawing makes of an Otsu mask ``[H, W]``: holes filled.

    CheXlocalize traces every contour of the thresholded map (``cv2.findContours`` with
    ``RETR_TREE``), drops the contours of one point and fills each remaining contour as a
    polygon with its outline (PIL ``ImageDraw.polygon``). That is the mask with its holes filled
    (background not 4-connected to the image's border, OpenCV's connectivity for holes) and its
    one-pixel (8-connected) components removed, which SciPy computes directly; the tests check
    the equivalence against OpenCV and PIL on random maps.
    """
    filled = ndimage.binary_fill_holes(binary)
    labels, _ = ndimage.label(filled, structure=np.ones((3, 3), dtype=bool))
    keep = np.bincount(labels.ravel()) > 1
    keep[0] = False
    out: np.ndarray = keep[labels]
    return out


def _normalised(maps: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Min-max normalised maps ``[B, N]`` in float64 and the constant-map flags ``[B]``."""
    flat = _valid_flat_maps(maps, consequence="which cannot be min-max normalised")
    flat = flat.astype(np.float64)
    low = flat.min(axis=1, keepdims=True)
    span = flat.max(axis=1, keepdims=True) - low
    constant = (span == 0).reshape(-1)
    return (flat - low) / np.where(span == 0, 1.0, span), constant


def segment(maps: torch.Tensor, threshold: float | None = None) -> torch.Tensor:
    """CheXlocalize's segmentation of each map, bool ``[B, H, W]`` on the maps' device.

    Args:
        maps: Finite real tensor ``[B, H, W]``.
        threshold: None for Otsu's method (8-bit levels of the min-max normalised map,
            :func:`~xaibench.metrics.binarize.otsu_binarize`, then :func:`fill_contours`);
            else the pixels whose min-max normalised value is ``> threshold`` (strictly, as
            CheXlocalize), ``threshold`` in [0, 1]. A constant map gives an empty segmentation
            either way.

    Raises:
        XaibenchError: On invalid maps or a threshold outside [0, 1].
    """
    if maps.ndim != 3:
        raise XaibenchError(f"maps must be [B, H, W]; got shape {tuple(maps.shape)}")
    batch, height, width = maps.shape
    if maps.numel() == 0:
        return torch.zeros(maps.shape, dtype=torch.bool, device=maps.device)
    if threshold is None:
        binary = otsu_binarize(maps).cpu().numpy()
        out = np.stack([fill_contours(b) for b in binary])
    else:
        cut = float(threshold)
        if not 0.0 <= cut <= 1.0:  # also rejects NaN
            raise XaibenchError(f"threshold must be in [0, 1]; got {threshold!r}")
        normalised, constant = _normalised(maps)
        out = (normalised > cut) & ~constant[:, None]
        out = out.reshape(batch, height, width)
    return torch.from_numpy(np.ascontiguousarray(out)).to(maps.device)


def _masks(masks: torch.Tensor, shape: Sequence[int]) -> np.ndarray:
    if not isinstance(masks, torch.Tensor) or masks.dtype != torch.bool:
        raise XaibenchError("masks must be a bool tensor")
    if tuple(masks.shape) != tuple(shape):
        raise XaibenchError(
            f"maps and masks must have the same shape; got {tuple(shape)} and {tuple(masks.shape)}"
        )
    return masks.detach().cpu().numpy().reshape(masks.shape[0], -1)


def _check_images(images: str) -> None:
    if images not in _IMAGES:
        raise XaibenchError(f"images must be one of {', '.join(_IMAGES)}; got {images!r}")


def _calls(calls: np.ndarray | None, batch: int) -> np.ndarray:
    """The calls as ``[batch]`` bool (all True without calls); another length is an error."""
    if calls is None:
        return np.ones(batch, dtype=bool)
    called = np.asarray(calls, dtype=bool).reshape(-1)
    if called.size != batch:
        raise XaibenchError(f"{called.size} model calls for {batch} images")
    return called


def segmentation_iou(
    segmentation: torch.Tensor,
    masks: torch.Tensor,
    images: Images = "true_positive",
    calls: np.ndarray | None = None,
) -> torch.Tensor:
    """IoU of each image's segmentation with its region, NaN where ``images`` excludes it.

    Where the model calls negative (``calls`` False) the segmentation counts as empty under
    ``true_positive`` and ``all`` (CheXlocalize's probability cutoff); ``positive`` ignores the
    calls. See the module docstring for which images each option keeps.

    Returns:
        Float64 ``[B]`` (CPU).
    """
    _check_images(images)
    batch = segmentation.shape[0]
    seg = _masks(segmentation, segmentation.shape)
    region = _masks(masks, segmentation.shape)
    called = _calls(calls, batch)
    if images != "positive":
        seg = seg & called[:, None]
    inter = np.count_nonzero(seg & region, axis=1).astype(np.float64)
    union = np.count_nonzero(seg | region, axis=1).astype(np.float64)
    has_region = region.any(axis=1)
    has_seg = seg.any(axis=1)
    iou = inter / np.maximum(union, 1.0)
    if images == "true_positive":
        defined = has_region & has_seg
    elif images == "positive":
        defined = has_region
    else:
        defined = union > 0
    return torch.from_numpy(np.where(defined, iou, math.nan))


def hit_scores(
    maps: torch.Tensor,
    masks: torch.Tensor,
    images: Images = "positive",
    calls: np.ndarray | None = None,
) -> torch.Tensor:
    """1.0 where the map's first maximum (row-major) is inside the region, else 0.0; NaN excluded.

    Undefined where the region is empty (CheXlocalize); under ``true_positive`` also where the
    model calls negative, under ``all`` such an image is a miss (no segmentation, no peak).

    Returns:
        Float64 ``[B]`` (CPU).
    """
    _check_images(images)
    values = _valid_flat_maps(maps, consequence="which has no maximum")
    region = _masks(masks, maps.shape)
    batch = values.shape[0]
    if values.shape[1] == 0:
        return torch.full((batch,), math.nan, dtype=torch.float64)
    called = _calls(calls, batch)
    peak = np.argmax(values, axis=1)
    hit = region[np.arange(batch), peak].astype(np.float64)
    defined = region.any(axis=1)
    if images == "true_positive":
        defined &= called
    elif images == "all":
        hit = np.where(called, hit, 0.0)
    return torch.from_numpy(np.where(defined, hit, math.nan))


@dataclass(frozen=True)
class BootstrapCI:
    """CheXlocalize's bootstrap of a mean over images.

    Attributes:
        low: Lower bound (the sorted replicates at ``int(0.025 R) - 1``).
        high: Upper bound (at ``int(0.975 R) - 1``); NaN when more replicates than lie above
            that position drew no defined image (the metric then reports no interval).
        mean: Mean of the replicates (CheXlocalize's reported "mean").
        undefined: Replicates that drew no defined image (NaN, sorted last as pandas does).
    """

    low: float
    high: float
    mean: float
    undefined: int


def chexlocalize_bootstrap(
    values: np.ndarray, replicates: int = 1000, seed: int = 0
) -> BootstrapCI | None:
    """95% bootstrap interval of the mean of ``values`` (NaN = undefined row) as CheXlocalize.

    Each replicate draws ``len(values)`` rows with replacement,
    ``numpy.random.RandomState(seed).choice(n, size=n, replace=True)`` (the stream
    CheXlocalize's ``np.random.seed(seed)`` then ``np.random.choice`` gives), and takes the mean
    of the defined rows drawn. None without rows, without a defined row, or with fewer than 40
    replicates (the lower position would be -1, the largest replicate).
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    n = values.size
    if n == 0 or replicates < 40 or not np.isfinite(values).any():
        return None
    rng = np.random.RandomState(seed)
    means = np.empty(replicates)
    for r in range(replicates):
        drawn = values[rng.choice(n, size=n, replace=True)]
        defined = drawn[~np.isnan(drawn)]
        means[r] = defined.mean() if defined.size else math.nan
    ordered = np.sort(means)  # NaN last, as pandas' sort_values
    low = ordered[int(0.025 * replicates) - 1]
    high = ordered[int(0.975 * replicates) - 1]
    finite = means[~np.isnan(means)]
    return BootstrapCI(float(low), float(high), float(finite.mean()), int(replicates - finite.size))


def tune_threshold(
    per_image: np.ndarray, grid: Sequence[float] = TUNING_GRID
) -> tuple[float, list[dict[str, Any]]]:
    """The cut-off maximising mIoU on validation, and the mIoU curve over ``grid``.

    Args:
        per_image: ``[N, G]`` validation IoUs, column ``g`` with cut-off ``grid[g]`` (NaN where
            the image is excluded).
        grid: The cut-offs, in the order CheXlocalize tries them (the first maximum wins).

    Returns:
        ``(threshold, curve)``: the first cut-off with the largest mIoU, and one
        ``{"threshold", "miou", "n"}`` per cut-off (``miou`` None where no image is defined).

    Raises:
        XaibenchError: If no cut-off has a defined validation image.
    """
    per_image = np.asarray(per_image, dtype=np.float64).reshape(-1, len(grid))
    curve: list[dict[str, Any]] = []
    best, best_t = -math.inf, None
    for g, t in enumerate(grid):
        column = per_image[:, g]
        defined = column[~np.isnan(column)]
        miou = float(defined.mean()) if defined.size else None
        curve.append({"threshold": float(t), "miou": miou, "n": int(defined.size)})
        if miou is not None and miou > best:
            best, best_t = miou, float(t)
    if best_t is None:
        raise XaibenchError(
            "threshold 'tuned': no validation image has a defined IoU at any threshold "
            "(no annotated region, or no positive call, on the validation split)"
        )
    return best_t, curve
