"""CheXlocalize's localisation protocol: mIoU and hit rate as its evaluation code defines them.

Saporta et al. (Nature Machine Intelligence 2022) score a saliency map against a radiologist's
segmentation in two ways, both reproduced here from their published code
(github.com/rajpurkarlab/cheXlocalize: ``heatmap_to_segmentation.py``, ``eval.py``,
``tune_heatmap_threshold.py``):

* **mIoU** (:class:`ChexlocalizeMIoU`): the map becomes a segmentation (:func:`segment`), either
  by Otsu's method, as CheXlocalize does with OpenCV (min-max normalise, truncate to 8 bits,
  Otsu's threshold, then the outer contours filled, which fills holes and drops one-pixel
  components), or by a cut-off ``normalised > t`` on the min-max normalised map, ``t`` given or
  tuned per region on the validation split over CheXlocalize's grid 0.2, 0.3, ..., 0.7
  (:func:`tune_threshold`); the IoU of each image (:func:`segmentation_iou`), then the mean
  over the images the ``images`` option selects.
* **Hit rate** (:class:`ChexlocalizeHitRate`): a hit when the map's maximum (the first in
  row-major order, as ``numpy.argmax``) lies inside the segmentation (:func:`hit_scores`).

Which images count (``images``), with ``called`` the model's positive call at the run's
operating threshold (probability >= the validation Youden threshold):

* ``true_positive``: images whose region is non-empty and that the model calls positive; for
  mIoU also those whose segmentation is non-empty. CheXlocalize's "true positive slice"
  (``true_pos_only=True``), with its probability cutoff (tuned on validation for mIoU) replaced
  by the run's operating threshold.
* ``positive``: images whose region is non-empty, whatever the model calls; an empty
  segmentation scores IoU 0. CheXlocalize's scripts without a probability cutoff (its hit rate
  exactly; its mIoU except that it excludes an empty segmentation, which Otsu or a cut-off <= 0.7
  give only for a constant map).
* ``all``: every explained image; where the model calls negative the segmentation is empty and
  there is no peak (CheXlocalize's ``true_pos_only=False`` with its probability cutoff). IoU is
  0 where exactly one of region and segmentation is empty and undefined where both are; a hit
  rate image is undefined where the region is empty and a miss where the model calls negative.

Each score's 95% CI is CheXlocalize's bootstrap (:func:`chexlocalize_bootstrap`): every explained
image is a row (undefined ones too, as CheXlocalize's rows include images without the
pathology), rows are drawn with replacement by ``numpy.random.RandomState(seed).choice`` (the
stream of CheXlocalize's ``np.random.seed(seed)`` + ``np.random.choice``), each replicate's mean
skips undefined rows, and the bounds are the sorted replicates at positions
``int(0.025 R) - 1`` and ``int(0.975 R) - 1``.

Chance levels (:mod:`xaibench.metrics.chance`): the hit rate's is the region's area fraction
(exact under any relocation of a map with a unique maximum) and 0 where the model's negative
call makes a miss certain; mIoU's is the shift null of the segmentation (it depends on the map's
values only, so it commutes with the null's moves), 0 where the IoU is 0 whatever the map.
Every difference from CheXlocalize is listed in ``docs/explainability.md`` ("CheXlocalize
protocol").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator
from scipy import ndimage

from xaibench.errors import XaibenchError
from xaibench.metrics.base import MetricValue, SaliencyRegionMetric
from xaibench.metrics.chance import (
    AREA_FRACTION,
    DEFAULT_DRAWS,
    SHIFT_NULL,
    ChanceLevel,
    area_fraction,
    iou_shift_null,
)
from xaibench.metrics.functional import _valid_flat_maps, otsu_binarize

__all__ = [
    "CHEXLOCALIZE_CITATION",
    "TUNING_GRID",
    "ChexlocalizeHitRate",
    "ChexlocalizeMIoU",
    "ChexlocalizeMetric",
    "RegionContext",
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


@dataclass(frozen=True)
class RegionContext:
    """What a CheXlocalize score needs besides maps and masks, for one batch.

    Attributes:
        calls: ``[B]`` bool, the model's positive call per image (probability >= the run's
            operating threshold); None counts every image as called positive.
        thresholds: Region -> cut-off tuned on the validation split (``threshold: tuned``).
    """

    calls: torch.Tensor | None = None
    thresholds: Mapping[str, float] = field(default_factory=dict)

    def called(self, batch: int) -> np.ndarray:
        """The calls as a bool array of ``batch`` entries (all True without calls)."""
        if self.calls is None:
            return np.ones(batch, dtype=bool)
        calls = np.asarray(self.calls.detach().cpu().numpy(), dtype=bool).reshape(-1)
        if calls.size != batch:
            raise XaibenchError(f"{calls.size} model calls for {batch} maps")
        return calls


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
            :func:`~xaibench.metrics.functional.otsu_binarize`, then :func:`fill_contours`);
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
    called = np.ones(batch, dtype=bool) if calls is None else np.asarray(calls, dtype=bool)
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
    peak = np.argmax(values, axis=1)
    hit = region[np.arange(batch), peak].astype(np.float64)
    called = np.ones(batch, dtype=bool) if calls is None else np.asarray(calls, dtype=bool)
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


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


#: One cached segmentation: maps, their in-place version, the cut-off, the result.
_LAST_SEGMENTATION: tuple[torch.Tensor, int, float | None, torch.Tensor] | None = None


def _segment_cached(maps: torch.Tensor, threshold: float | None) -> torch.Tensor:
    """:func:`segment`, reusing the last result for the same maps (scores, then chance)."""
    global _LAST_SEGMENTATION
    last = _LAST_SEGMENTATION
    if last is not None and last[0] is maps and last[1:3] == (maps._version, threshold):
        return last[3]
    out = segment(maps, threshold)
    _LAST_SEGMENTATION = (maps, maps._version, threshold, out)
    return out


class ChexlocalizeMetric(SaliencyRegionMetric):
    """Options and aggregation shared by CheXlocalize's two scores.

    The explanation stage passes a :class:`RegionContext` (the model's calls and any tuned
    cut-offs) to :meth:`per_sample_regions` and :meth:`chance_levels` of every metric with
    :attr:`needs_context`; without one, every image counts as called positive.
    """

    citation = CHEXLOCALIZE_CITATION
    best: ClassVar[float | None] = 1.0
    #: The explanation stage passes the model's calls (and tuned cut-offs) as ``context``.
    needs_context: ClassVar[bool] = True

    images: Images = Field(
        "positive",
        description="Which images count: 'true_positive', 'positive' or 'all'.",
    )
    bootstrap_replicates: int = Field(
        1000, ge=40, description="Replicates of CheXlocalize's image bootstrap (CI)."
    )
    bootstrap_seed: int = Field(0, ge=0, description="Seed of the image bootstrap.")

    @property
    def tunes(self) -> bool:
        """Whether the run must tune a cut-off on the validation split first."""
        return False

    def scores(
        self, maps: torch.Tensor, masks: torch.Tensor, region: str | None, context: RegionContext
    ) -> torch.Tensor:
        """Per-image values, float64 ``[B]`` (NaN excluded)."""
        raise NotImplementedError

    def per_sample(self, maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Per-image values with every image called positive (no tuned cut-off)."""
        return self.scores(maps, masks, None, RegionContext())

    def per_sample_regions(
        self,
        maps: torch.Tensor,
        masks: Mapping[str, torch.Tensor],
        context: RegionContext | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per-image values of every region, with the model's calls and tuned cut-offs."""
        context = context or RegionContext()
        return {name: self.scores(maps, mask, name, context) for name, mask in masks.items()}

    def aggregate(self, values: np.ndarray) -> MetricValue:
        """Mean over the defined images, with CheXlocalize's bootstrap CI (None on a NaN bound)."""
        defined = values[~np.isnan(values)]
        value = float(defined.mean()) if defined.size else math.nan
        boot = chexlocalize_bootstrap(values, self.bootstrap_replicates, self.bootstrap_seed)
        details: dict[str, Any] = {
            "ci_method": (
                f"CheXlocalize image bootstrap ({self.bootstrap_replicates} replicates, "
                f"seed {self.bootstrap_seed}, every explained image a row)"
            ),
            "images": self.images,
            "excluded_images": int(values.size - defined.size),
            "bootstrap_mean": boot.mean if boot else None,
            "bootstrap_undefined": boot.undefined if boot else None,
        }
        # A bound on a replicate that drew no defined image (NaN) is no interval.
        finite = boot is not None and math.isfinite(boot.low) and math.isfinite(boot.high)
        ci = (boot.low, boot.high) if boot and finite and defined.size >= 2 else None
        return MetricValue(value, int(defined.size), values, details, ci=ci)


class ChexlocalizeMIoU(ChexlocalizeMetric):
    """CheXlocalize's mIoU: IoU of the map's segmentation with the region, mean over images.

    ``threshold``: ``otsu`` (default, CheXlocalize's default), ``tuned`` (per region, the
    cut-off of ``tuning_grid`` with the highest mIoU on the validation split, the same
    ``images`` rule, the validation images called with the same operating threshold; the chosen
    cut-off and the curve are recorded in the details) or a number in [0, 1] (``normalised >
    threshold``). ``images`` defaults to ``true_positive``, CheXlocalize's default slice.
    """

    display_name = "mIoU (CheXlocalize)"

    images: Images = Field(
        "true_positive",
        description="Which images count: 'true_positive', 'positive' or 'all'.",
    )
    threshold: Literal["otsu", "tuned"] | float = Field(
        "otsu",
        description="'otsu', 'tuned' (on the validation split) or a cut-off in [0, 1].",
    )
    tuning_grid: tuple[float, ...] = Field(
        TUNING_GRID, description="With threshold='tuned': the cut-offs tried on validation."
    )

    @field_validator("threshold", mode="before")
    @classmethod
    def _check_threshold(cls, value: Any) -> Any:
        # One plain message instead of pydantic's per-member union errors.
        if value in ("otsu", "tuned"):
            return value
        try:
            cut = float(value)
        except (TypeError, ValueError):
            cut = math.nan
        if isinstance(value, bool) or not 0.0 <= cut <= 1.0:
            raise ValueError(
                f"threshold must be 'otsu', 'tuned' or a number in [0, 1]; got {value!r}"
            )
        return cut

    @field_validator("tuning_grid")
    @classmethod
    def _check_grid(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(not 0.0 <= t <= 1.0 for t in value):
            raise ValueError("tuning_grid must be a non-empty list of cut-offs in [0, 1]")
        return value

    @model_validator(mode="after")
    def _check_applicable(self) -> ChexlocalizeMIoU:
        if "tuning_grid" in self.model_fields_set and self.threshold != "tuned":
            raise ValueError("tuning_grid applies only to threshold='tuned'")
        return self

    @property
    def tunes(self) -> bool:
        """True with ``threshold: tuned``."""
        return self.threshold == "tuned"

    def cut_off(self, region: str | None, context: RegionContext) -> float | None:
        """The cut-off for ``region`` (None = Otsu); the tuned one from ``context``."""
        if self.threshold == "otsu":
            return None
        if self.threshold == "tuned":
            if region is None or region not in context.thresholds:
                raise XaibenchError(
                    "threshold 'tuned' needs the cut-off tuned on the validation split "
                    f"for region {region!r}"
                )
            return float(context.thresholds[region])
        return float(self.threshold)

    def validation_ious(
        self, maps: torch.Tensor, masks: torch.Tensor, calls: np.ndarray
    ) -> np.ndarray:
        """``[B, G]`` IoUs of validation maps at every cut-off of the grid (for tuning)."""
        columns = [
            segmentation_iou(segment(maps, t), masks, self.images, calls).numpy()
            for t in self.tuning_grid
        ]
        return np.stack(columns, axis=1)

    def scores(
        self, maps: torch.Tensor, masks: torch.Tensor, region: str | None, context: RegionContext
    ) -> torch.Tensor:
        """IoU per image (NaN where excluded)."""
        seg = _segment_cached(maps, self.cut_off(region, context))
        return segmentation_iou(seg, masks, self.images, context.called(len(maps)))

    def chance(
        self,
        maps: torch.Tensor,
        masks: torch.Tensor,
        generator: torch.Generator,
        draws: int = DEFAULT_DRAWS,
    ) -> ChanceLevel | None:
        """Shift-null IoU per image (every image called positive, no tuned cut-off)."""
        return self.chance_levels(maps, {"": masks}, generator, draws)[""]

    def chance_levels(
        self,
        maps: torch.Tensor,
        masks: Mapping[str, torch.Tensor],
        generator: torch.Generator,
        draws: int = DEFAULT_DRAWS,
        context: RegionContext | None = None,
    ) -> dict[str, ChanceLevel | None]:
        """Shift null of each region's (gated) segmentation; 0 where the IoU cannot vary."""
        context = context or RegionContext()
        called = context.called(len(maps))
        start = generator.get_state()
        out: dict[str, ChanceLevel | None] = {}
        for name, mask in masks.items():
            generator.set_state(start)
            seg = _segment_cached(maps, self.cut_off(name or None, context))
            if self.images != "positive":
                seg = seg & torch.from_numpy(called).view(-1, 1, 1).to(seg.device)
            values = iou_shift_null(seg.cpu(), {name: mask}, generator, draws)[name]
            if self.images == "all":  # no region, a segmentation: IoU 0 under every move
                empty = ~mask.reshape(len(mask), -1).any(dim=1).cpu()
                values = torch.where(empty, torch.zeros_like(values), values)
            out[name] = ChanceLevel(values, SHIFT_NULL, exact=False)
        return out


class ChexlocalizeHitRate(ChexlocalizeMetric):
    """CheXlocalize's hit rate: is the map's first maximum inside the region? Mean over images.

    ``images`` defaults to ``positive``: CheXlocalize's hit rate counts every image with an
    annotated segmentation, whatever the model predicts.
    """

    display_name = "Hit rate (CheXlocalize)"
    hits: ClassVar[bool] = True

    def scores(
        self, maps: torch.Tensor, masks: torch.Tensor, region: str | None, context: RegionContext
    ) -> torch.Tensor:
        """Hit (1.0) or miss (0.0) per image (NaN where excluded)."""
        return hit_scores(maps, masks, self.images, context.called(len(maps)))

    def chance(
        self,
        maps: torch.Tensor,
        masks: torch.Tensor,
        generator: torch.Generator,
        draws: int = DEFAULT_DRAWS,
    ) -> ChanceLevel | None:
        """The region's area fraction per image (every image called positive)."""
        return self.chance_levels(maps, {"": masks}, generator, draws)[""]

    def chance_levels(
        self,
        maps: torch.Tensor,
        masks: Mapping[str, torch.Tensor],
        generator: torch.Generator,
        draws: int = DEFAULT_DRAWS,
        context: RegionContext | None = None,
    ) -> dict[str, ChanceLevel | None]:
        """Area fraction per image; 0 where a negative call makes a miss certain (``all``)."""
        context = context or RegionContext()
        called = torch.from_numpy(context.called(len(maps)))
        out: dict[str, ChanceLevel | None] = {}
        for name, mask in masks.items():
            values = area_fraction(mask)
            if self.images == "all":
                values = torch.where(called, values, torch.zeros_like(values))
            out[name] = ChanceLevel(values, AREA_FRACTION, exact=True)
        return out
