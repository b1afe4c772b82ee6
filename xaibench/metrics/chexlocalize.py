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
The definitions as functions (segmentation, per-image IoU and hits, bootstrap, tuning) are in
:mod:`xaibench.metrics.chexlocalize_scores` and re-exported here. Every difference from
CheXlocalize is listed in ``docs/explainability.md`` ("CheXlocalize protocol").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator

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
from xaibench.metrics.chexlocalize_scores import (
    CHEXLOCALIZE_CITATION,
    TUNING_GRID,
    Images,
    chexlocalize_bootstrap,
    fill_contours,
    hit_scores,
    segment,
    segmentation_iou,
    tune_threshold,
)

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
