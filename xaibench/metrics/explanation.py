"""Explanation metrics: Delta_region (perturbation).

The saliency-versus-mask metrics, IoU_region included, live in :mod:`xaibench.metrics.localisation`;
``IoURegion`` is re-exported here because this is where it used to be defined.
"""

from __future__ import annotations

from xaibench.metrics.base import MetricValue, PerturbationMetric, Predictions
from xaibench.metrics.functional import binary_auc, delta_auc
from xaibench.metrics.localisation import IoURegion


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


__all__ = ["DeltaRegion", "IoURegion", "MetricValue"]
