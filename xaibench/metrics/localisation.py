"""Localisation metrics: how well a saliency map agrees with an annotated region, per image.

Each metric is a thin :class:`~xaibench.metrics.base.SaliencyRegionMetric` around a batched kernel
in :mod:`xaibench.metrics.functional`, where the definitions, tie rules and edge cases are
documented. They share one contract: maps ``[B, H, W]`` and bool masks of the same shape in,
``[B]`` float64 out, NaN for an image where the score is undefined (always when its region is
empty), which the aggregate excludes and counts. They differ in what they ask of the map:

* :class:`IoURegion` — does the map, binarised, cover the region and nothing else?
* :class:`PointingGame` — is the map's peak inside the region?
* :class:`RelevanceMass` — how much of the positive attribution lies inside?
* :class:`RelevanceRank` — how many of the |region| top-ranked pixels lie inside?
* :class:`PixelAUC` — how well does the map rank region pixels above the others, over all
  thresholds?
* :class:`EnergyRatio` — how much denser is the positive attribution inside than outside?
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from xaibench.metrics.base import MetricValue, SaliencyRegionMetric
from xaibench.metrics.functional import (
    PointingTies,
    energy_ratio,
    otsu_binarize,
    pixel_auc,
    pointing_game,
    region_iou,
    relevance_mass,
    relevance_rank,
    threshold_binarize,
    topk_binarize,
)

_ARRAS = (
    "Arras, Osman & Samek, CLEVR-XAI: a benchmark dataset for the ground truth evaluation of "
    "neural network explanations, Information Fusion 81:14-40, 2022"
)


class IoURegion(SaliencyRegionMetric):
    """IoU of the binarised saliency map with a region mask, per image.

    How a map becomes a region (``binarization``):

    * ``otsu`` (default) follows CheXlocalize: min-max normalise each map, quantise to 8 bits
      and threshold with Otsu's method (:func:`~xaibench.metrics.functional.otsu_binarize`).
    * ``topk`` keeps the top ``percent`` % of pixels; every pixel tied with the cut value is
      kept, except pixels at the map's minimum
      (:func:`~xaibench.metrics.functional.topk_binarize`).
    * ``fixed`` keeps pixels whose min-max normalised value is ``>= threshold``
      (:func:`~xaibench.metrics.functional.threshold_binarize`).

    A constant map selects nothing under every rule (IoU 0). Images whose region mask is empty
    are excluded (NaN).
    """

    display_name = "IoU"
    citation = "Saporta et al., CheXlocalize, Nature Machine Intelligence 2022"

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

    ties: PointingTies = Field(
        "fraction",
        description="Tied maxima: 'fraction' (share inside) or 'any' (hit if one is inside).",
    )

    def per_sample(self, maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Hit (or share of tied maxima) per image; NaN where the region is empty."""
        return pointing_game(maps, masks, self.ties)


class RelevanceMass(SaliencyRegionMetric):
    """Share of the positive attribution that lies inside the region (relevance mass accuracy).

    NaN where the region is empty or the map has no positive attribution.
    """

    display_name = "Relevance mass"
    citation = _ARRAS

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

    def per_sample(self, maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Top-|region| hit share per image."""
        return relevance_rank(maps, masks)


class PixelAUC(SaliencyRegionMetric):
    """ROC AUC of the map's values as a classifier of region pixels; ties count one half.

    0.5 for a map unrelated to the region; NaN where the region is empty or the whole image.
    """

    display_name = "Pixel AUC"
    citation = "Fawcett, An introduction to ROC analysis, Pattern Recognition Letters 27(8), 2006"

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
