"""Localisation metrics: how well a saliency map agrees with an annotated region, per image.

Each metric is a thin :class:`~xaibench.metrics.base.SaliencyRegionMetric` around a batched kernel
in :mod:`xaibench.metrics.binarize` or :mod:`xaibench.metrics.map_scores`, where the definitions,
tie rules and edge cases are documented. They share one contract: maps ``[B, H, W]`` and bool masks
of the same shape in, ``[B]`` float64 out, NaN for an image where the score is undefined (always
when its region is empty), which the aggregate excludes and counts. They differ in what they ask of
the map:

* :class:`IoURegion` — does the map, binarised, cover the region and nothing else?
* :class:`PointingGame` — is the map's peak inside the region?
* :class:`RelevanceMass` — how much of the positive attribution lies inside?
* :class:`RelevanceRank` — how many of the |region| top-ranked pixels lie inside?
* :class:`PixelAUC` — how well does the map rank region pixels above the others, over all
  thresholds?
* :class:`EnergyRatio` — how much denser is the positive attribution inside than outside?

Each also says what a map carrying no information about the region would score on the same
image (:meth:`~xaibench.metrics.base.SaliencyRegionMetric.chance`, nulls in
:mod:`xaibench.metrics.chance`): the exact expectation under a random permutation of the map's
pixels for the pointing game (``ties='fraction'``), relevance mass, relevance rank and pixel
AUC, and the seeded shift null for IoU and the pointing game with ``ties='any'``. All but the
energy ratio score at most 1 (``best = 1.0``); the energy ratio is unbounded, has no chance
level or normalised score, and is itself a ratio to its no-preference value 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from xaibench.metrics.base import MetricValue, SaliencyRegionMetric
from xaibench.metrics.binarize import otsu_binarize, region_iou, threshold_binarize, topk_binarize
from xaibench.metrics.chance import (
    AREA_FRACTION,
    DEFAULT_DRAWS,
    HALF,
    SHIFT_NULL,
    ChanceLevel,
    area_fraction,
    iou_shift_null,
)
from xaibench.metrics.map_scores import (
    PointingTies,
    energy_ratio,
    pixel_auc,
    pointing_game,
    relevance_mass,
    relevance_rank,
)

_ARRAS = (
    "Arras, Osman & Samek, CLEVR-XAI: a benchmark dataset for the ground truth evaluation of "
    "neural network explanations, Information Fusion 81:14-40, 2022"
)


#: :meth:`IoURegion._binary`'s one entry: maps, their version, the options, the regions.
_LAST_BINARY: tuple[torch.Tensor, int, tuple[str, float, float], torch.Tensor] | None = None


class IoURegion(SaliencyRegionMetric):
    """IoU of the binarised saliency map with a region mask, per image.

    How a map becomes a region (``binarization``):

    * ``otsu`` (default) follows CheXlocalize: min-max normalise each map, quantise to 8 bits
      and threshold with Otsu's method (:func:`~xaibench.metrics.binarize.otsu_binarize`).
    * ``topk`` keeps the top ``percent`` % of pixels; every pixel tied with the cut value is
      kept, except pixels at the map's minimum
      (:func:`~xaibench.metrics.binarize.topk_binarize`).
    * ``fixed`` keeps pixels whose min-max normalised value is ``>= threshold``
      (:func:`~xaibench.metrics.binarize.threshold_binarize`).

    A constant map selects nothing under every rule (IoU 0). Images whose region mask is empty
    are excluded (NaN).

    Chance: the shift null (estimated, ``chance_exact`` False). Every binarisation depends only
    on the map's values, so it commutes with the null's moves: the map is binarised once and
    the binary region moved (:func:`~xaibench.metrics.chance.iou_shift_null`).
    """

    display_name = "IoU"
    citation = "Saporta et al., CheXlocalize, Nature Machine Intelligence 2022"
    best: ClassVar[float | None] = 1.0

    binarization: Literal["otsu", "topk", "fixed"] = Field(
        "otsu", description="How a map becomes a mask: 'otsu', 'topk' or 'fixed'."
    )
    percent: float = Field(
        10.0, gt=0, le=100, description="With binarization='topk': share of pixels kept, in %."
    )
    threshold: float = Field(
        0.5,
        gt=0,
        le=1,
        description="With binarization='fixed': cut-off on the min-max normalised map.",
    )

    @model_validator(mode="after")
    def _check_applicable(self) -> IoURegion:
        # An option that the chosen binarisation ignores is almost always a mistake (e.g.
        # percent=20 with the default otsu); silently doing nothing would hide it.
        applies = {"percent": "topk", "threshold": "fixed"}
        for option, binarization in applies.items():
            if option in self.model_fields_set and self.binarization != binarization:
                raise ValueError(
                    f"{option} applies only to binarization='{binarization}', "
                    f"not '{self.binarization}'"
                )
        return self

    def _binary(self, maps: torch.Tensor) -> torch.Tensor:
        """:meth:`binarize`, reusing the last result for the same maps and options.

        The runner asks for the scores and then for the chance level of the same batch, and one
        binarisation serves both (Otsu costs more than the overlaps). The entry holds the maps
        themselves and their in-place version, so a new or edited tensor misses, and it is one
        module-level slot rather than state on the (frozen, comparable) metric.
        """
        global _LAST_BINARY
        options = (self.binarization, self.percent, self.threshold)
        last = _LAST_BINARY
        if last is not None and last[0] is maps and last[1:3] == (maps._version, options):
            return last[3]
        binary = self.binarize(maps)
        _LAST_BINARY = (maps, maps._version, options, binary)
        return binary

    def binarize(self, maps: torch.Tensor) -> torch.Tensor:
        """The region each map selects, bool ``[B, H, W]``."""
        if self.binarization == "topk":
            return topk_binarize(maps, self.percent)
        if self.binarization == "fixed":
            return threshold_binarize(maps, self.threshold)
        return otsu_binarize(maps)

    def per_sample(self, maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """IoU per image (NaN where the region is empty)."""
        return region_iou(self.binarize(maps), masks)

    def per_sample_regions(
        self, maps: torch.Tensor, masks: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """IoU of every region from one binarisation of the maps."""
        binary = self._binary(maps)
        return {name: region_iou(binary, mask) for name, mask in masks.items()}

    def chance(
        self,
        maps: torch.Tensor,
        masks: torch.Tensor,
        generator: torch.Generator,
        draws: int = DEFAULT_DRAWS,
    ) -> ChanceLevel | None:
        """Shift-null IoU per image, from one binarisation of each map."""
        return self.chance_levels(maps, {"region": masks}, generator, draws)["region"]

    def chance_levels(
        self,
        maps: torch.Tensor,
        masks: Mapping[str, torch.Tensor],
        generator: torch.Generator,
        draws: int = DEFAULT_DRAWS,
    ) -> dict[str, ChanceLevel | None]:
        """Shift-null IoU of every region from one binarisation and one set of moves."""
        levels = iou_shift_null(self._binary(maps), masks, generator, draws)
        return {name: ChanceLevel(v, SHIFT_NULL, exact=False) for name, v in levels.items()}


class PointingGame(SaliencyRegionMetric):
    """Hit when the map's maximum lies inside the region; the mean is the hit rate.

    With a tied maximum, ``ties='fraction'`` (default) scores the share of tied maxima inside
    the region (the expected hit of a random pick; chance level for a constant map), and
    ``ties='any'`` scores a hit if any of them is inside, as Quantus 0.6.0 does.
    """

    display_name = "Pointing game"
    citation = (
        "Zhang et al., Top-down neural attention by excitation backprop, IJCV 126:1084-1102, 2018"
    )
    best: ClassVar[float | None] = 1.0
    hits: ClassVar[bool] = True

    ties: PointingTies = Field(
        "fraction",
        description="Tied maxima: 'fraction' (share inside) or 'any' (hit if one is inside).",
    )

    def per_sample(self, maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Hit (or share of tied maxima) per image; NaN where the region is empty."""
        return pointing_game(maps, masks, self.ties)

    def chance(
        self,
        maps: torch.Tensor,
        masks: torch.Tensor,
        generator: torch.Generator,
        draws: int = DEFAULT_DRAWS,
    ) -> ChanceLevel | None:
        """Exact area fraction with ``ties='fraction'``; the shift null with ``ties='any'``.

        A hit with ``ties='any'`` is not linear in the tied maxima's positions: a plateau of
        tied maxima hits a region less often than as many scattered pixels would, so the
        permutation null (the hypergeometric chance of one of them landing inside) would put
        chance too high for coarse maps. The shift null keeps the plateau.
        """
        if self.ties == "any":
            return super().chance(maps, masks, generator, draws)
        return ChanceLevel(area_fraction(masks), AREA_FRACTION, exact=True)


class RelevanceMass(SaliencyRegionMetric):
    """Share of the positive attribution that lies inside the region (relevance mass accuracy).

    NaN where the region is empty or the map has no positive attribution.
    """

    display_name = "Relevance mass"
    citation = _ARRAS
    best: ClassVar[float | None] = 1.0
    #: Exact: the positive mass is spread uniformly in expectation.
    exact_chance: ClassVar[str | None] = AREA_FRACTION

    def per_sample(self, maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """``sum(max(a, 0) in region) / sum(max(a, 0))`` per image."""
        return relevance_mass(maps, masks)


class RelevanceRank(SaliencyRegionMetric):
    """Share of the |region| highest-ranked pixels inside the region (relevance rank accuracy).

    Pixels tied at the cut share the remaining places equally (expected value of a random
    tie-break). NaN where the region is empty.
    """

    display_name = "Relevance rank"
    citation = _ARRAS
    best: ClassVar[float | None] = 1.0
    #: Exact: each top-ranked place is inside with that probability.
    exact_chance: ClassVar[str | None] = AREA_FRACTION

    def per_sample(self, maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Top-|region| hit share per image."""
        return relevance_rank(maps, masks)


class PixelAUC(SaliencyRegionMetric):
    """ROC AUC of the map's values as a classifier of region pixels; ties count one half.

    0.5 for a map unrelated to the region; NaN where the region is empty or the whole image.
    """

    display_name = "Pixel AUC"
    citation = "Fawcett, An introduction to ROC analysis, Pattern Recognition Letters 27(8), 2006"
    best: ClassVar[float | None] = 1.0
    #: Exact: either order of an inside-outside pair is equally likely.
    exact_chance: ClassVar[str | None] = HALF

    def per_sample(self, maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Pixel-level ROC AUC per image."""
        return pixel_auc(maps, masks)


class EnergyRatio(SaliencyRegionMetric):
    """Mean positive attribution per pixel inside the region over that outside it.

    1 means no preference for the region, above 1 concentration on it. ``inf`` (no positive
    attribution outside) is a legitimate per-image value, so the aggregate is the **median**
    over the images where the ratio is defined, not the mean, which a single ``inf`` or a
    near-empty outside would dominate. With an even count it is the lower of the two middle
    values, so it is always an observed ratio and is finite unless at least half of the images
    score ``inf``; ``details["n_infinite"]`` counts those.
    """

    display_name = "Energy ratio"
    citation = (
        "Wang et al., Score-CAM: score-weighted visual explanations for convolutional neural "
        "networks, CVPR Workshops 2020 (energy-based pointing game; here per pixel, "
        "inside over outside)"
    )
    best: ClassVar[float | None] = None  # unbounded: no chance level, no normalised score

    def per_sample(self, maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Inside/outside density ratio per image (``inf`` when nothing is outside)."""
        return energy_ratio(maps, masks)

    def aggregate(self, values: np.ndarray) -> MetricValue:
        """Lower median over the images where the ratio is defined, with the count of ``inf``."""
        defined = values[~np.isnan(values)]
        value = float(np.percentile(defined, 50, method="lower")) if defined.size else math.nan
        details = {"aggregate": "median", "n_infinite": int(np.isinf(defined).sum())}
        return MetricValue(value, int(defined.size), values, details)


__all__ = [
    "EnergyRatio",
    "IoURegion",
    "PixelAUC",
    "PointingGame",
    "RelevanceMass",
    "RelevanceRank",
]
