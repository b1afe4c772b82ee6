"""Explanation metrics: Delta_region (perturbation).

The saliency-versus-mask metrics, IoU_region included, live in :mod:`xaibench.metrics.localisation`;
``IoURegion`` is re-exported here because this is where it used to be defined.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from xaibench.metrics.base import BOOTSTRAP_RESAMPLES, MetricValue, PerturbationMetric, Predictions
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
            details={
                "auc_intact": auc_intact,
                "auc_perturbed": auc_perturbed,
                "ci_method": "stratified image bootstrap",
            },
            ci=delta_bootstrap_ci(intact, perturbed),
        )


def delta_bootstrap_ci(
    intact: Predictions,
    perturbed: Predictions,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float] | None:
    """95% percentile CI of Δ from resampling test images, paired and stratified by class.

    Each resample draws positives and negatives separately (so both AUCs stay defined) and uses
    the *same* images for the intact and the perturbed AUC, because Δ is a paired difference.
    AUCs come from midranks (ties count half), vectorised over resamples.
    """
    positive = np.flatnonzero(intact.is_positive)
    negative = np.flatnonzero(~intact.is_positive)
    if len(positive) < 2 or len(negative) < 2:
        return None
    rng = np.random.default_rng(seed)
    idx = np.concatenate(
        [
            positive[rng.integers(0, len(positive), (resamples, len(positive)))],
            negative[rng.integers(0, len(negative), (resamples, len(negative)))],
        ],
        axis=1,
    )
    n1, n0 = len(positive), len(negative)

    def aucs(scores: np.ndarray) -> np.ndarray:
        ranks = rankdata(scores[idx], axis=1)
        return (ranks[:, :n1].sum(axis=1) - n1 * (n1 + 1) / 2) / (n1 * n0)

    deltas = aucs(intact.scores) - np.maximum(aucs(perturbed.scores), 0.5)
    return float(np.quantile(deltas, 0.025)), float(np.quantile(deltas, 0.975))


__all__ = ["DeltaRegion", "IoURegion", "MetricValue"]
