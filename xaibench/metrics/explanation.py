"""Explanation metrics: Delta_region (perturbation) and IoU_region (saliency vs mask)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from xaibench.metrics.base import MetricValue, PerturbationMetric, Predictions, SaliencyRegionMetric
from xaibench.metrics.functional import binary_auc, delta_auc, otsu_binarize, region_iou


class DeltaRegion(PerturbationMetric):
    """AUC lost when a region is perturbed: ``AUC(intact) - max(AUC(perturbed), 0.5)``.

    Kim et al. (2025) call it Delta_bone for the bone region. Large values mean the model's skill
    depends on the region; near zero means it does not (it looks elsewhere).
    """

    display_name = "Δ"
    citation = "Kim et al., Osteoporosis International 2025, doi:10.1007/s00198-025-07727-3"

    def compute(self, intact: Predictions, perturbed: Predictions) -> MetricValue:
        """Delta from positive-vs-rest AUCs on the same images."""
        auc_intact = binary_auc(intact.is_positive, intact.scores)
        auc_perturbed = binary_auc(perturbed.is_positive, perturbed.scores)
        return MetricValue(
            delta_auc(auc_intact, auc_perturbed),
            len(intact.labels),
            details={"auc_intact": auc_intact, "auc_perturbed": auc_perturbed},
        )


class IoURegion(SaliencyRegionMetric):
    """IoU of the binarised saliency map with a region mask, per image.

    Binarisation ``otsu`` follows CheXlocalize: min-max normalise each map, quantise to 8 bits and
    threshold with Otsu's method. Images whose region mask is empty are excluded (NaN).
    """

    display_name = "IoU"
    citation = "Saporta et al., CheXlocalize, Nature Machine Intelligence 2022"

    binarization: Literal["otsu"] = Field("otsu", description="How a map becomes a mask.")

    def per_sample(self, maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """IoU per image (NaN where the region is empty)."""
        return region_iou(otsu_binarize(maps), masks)


__all__ = ["DeltaRegion", "IoURegion", "MetricValue"]
