"""Explanation metrics: Delta_region (perturbation).

The saliency-versus-mask metrics, IoU_region included, live in :mod:`xaibench.metrics.localisation`;
``IoURegion`` is re-exported here because this is where it used to be defined.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

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
        auc_intact = binary_auc(intact.is_positive, intact.ranking_scores)
        auc_perturbed = binary_auc(perturbed.is_positive, perturbed.ranking_scores)
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
    AUCs count ties half (the midrank AUC), vectorised over resamples by counting how often
    each image is drawn (:func:`_resampled_aucs`).
    """
    resampled = _resampled_auc_fn(intact, resamples, seed)
    if resampled is None:
        return None
    deltas = resampled(intact.ranking_scores) - np.maximum(resampled(perturbed.ranking_scores), 0.5)
    return float(np.quantile(deltas, 0.025)), float(np.quantile(deltas, 0.975))


def _resampled_auc_fn(
    intact: Predictions, resamples: int, seed: int
) -> Callable[[np.ndarray], np.ndarray] | None:
    """The AUC of any scores of the same images in each of ``resamples`` seeded resamples.

    Resamples draw positives and negatives separately (so every AUC stays defined); the returned
    function gives ``[resamples]`` AUCs over the *same* draws for whatever scores it is given, so
    differences of AUCs are paired. None with fewer than two images of either kind.
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
    # How often each image is drawn in each resample: [resamples, n]. Shared by every AUC.
    n = len(intact.labels)
    rows = np.arange(resamples)[:, None] * n
    counts = np.bincount((rows + idx).ravel(), minlength=resamples * n).reshape(resamples, n)
    is_positive = np.asarray(intact.is_positive, dtype=bool)

    def aucs(scores: np.ndarray) -> np.ndarray:
        result: np.ndarray = _resampled_aucs(scores, is_positive, counts) / (n1 * n0)
        return result

    return aucs


def specific_delta(
    intact: Predictions,
    perturbed: Predictions,
    controls: Sequence[Predictions],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """Specific Δ: the region's Δ less the mean Δ of its control regions, with a paired CI.

    ``Δ_control`` (the perturbation's *off-target cost*) is the mean over the control draws of
    ``AUC(intact) - max(AUC(control), 0.5)``, each control draw being the same images with a
    region of the same area perturbed elsewhere (:mod:`xaibench.control_regions`). The specific
    Δ is ``Δ_region - Δ_control``. Its 95% CI resamples images as :func:`delta_bootstrap_ci`
    does (stratified by class), the same draws for the intact, region and every control AUC, so
    the difference is paired; ``specific_p`` is the one-sided bootstrap p-value that the
    specific Δ exceeds 0, ``(1 + #{resampled specific Δ <= 0}) / (resamples + 1)``, not adjusted
    for multiplicity.

    Args:
        intact: Predictions on the intact images.
        perturbed: Predictions with the region perturbed.
        controls: Predictions with each control draw's region perturbed (at least one).
        resamples: Bootstrap resamples.
        seed: Seed of the resampling.

    Returns:
        ``control_delta``, ``control_deltas``, ``control_draws``, ``specific``, ``specific_ci``
        and ``specific_p`` (the last two None with fewer than two images of either class).
    """
    if not controls:
        raise ValueError("specific_delta needs at least one control draw")
    auc_intact = binary_auc(intact.is_positive, intact.ranking_scores)
    raw = delta_auc(auc_intact, binary_auc(perturbed.is_positive, perturbed.ranking_scores))
    per_draw = [
        delta_auc(auc_intact, binary_auc(c.is_positive, c.ranking_scores)) for c in controls
    ]
    control = float(np.mean(per_draw))
    out: dict[str, Any] = {
        "control_delta": control,
        "control_deltas": [float(d) for d in per_draw],
        "control_draws": len(controls),
        "specific": float(raw - control),
        "specific_ci": None,
        "specific_p": None,
    }
    resampled = _resampled_auc_fn(intact, resamples, seed)
    if resampled is None:
        return out
    base = resampled(intact.ranking_scores)
    region = base - np.maximum(resampled(perturbed.ranking_scores), 0.5)
    off = np.mean([base - np.maximum(resampled(c.ranking_scores), 0.5) for c in controls], axis=0)
    specific = region - off
    out["specific_ci"] = [float(np.quantile(specific, 0.025)), float(np.quantile(specific, 0.975))]
    out["specific_p"] = float((1 + np.count_nonzero(specific <= 0)) / (len(specific) + 1))
    return out


def _resampled_aucs(scores: np.ndarray, is_positive: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mann-Whitney ``U`` of every resample (ties count half), from one sort of the scores.

    A resample is the original images drawn ``counts[b, i]`` times, so its ``U`` is the sum,
    over positive draws, of the negative draws below them plus half of those tied with them.
    With the images sorted by score once, those are cumulative sums of the negative counts
    taken at the start and end of each run of tied scores: no per-resample sort or ranking
    (the rank-based form sorted a ``[resamples, n]`` matrix for every AUC, most of the cost of
    scoring a perturbation on a small test split). Every term is an integer or a half, so the
    result (counted in integers) is exact and equals the midrank formula bit for bit.
    """
    order = np.argsort(scores, kind="stable")
    ordered = np.asarray(scores)[order]
    drawn = counts[:, order]  # integers throughout: exact, and several times faster than floats
    positive = is_positive[order]
    negative_drawn = np.where(positive, 0, drawn)
    through = np.cumsum(negative_drawn, axis=1)  # negative draws at or before each position
    new_run = np.ones(len(ordered), dtype=bool)
    new_run[1:] = ordered[1:] != ordered[:-1]
    if new_run.all():  # no tied scores: below = at or below = the draws before (a positive)
        twice_u = 2 * (np.where(positive, drawn, 0) * through).sum(axis=1)
    else:  # each position's run of ties: its first and last positions
        run = np.cumsum(new_run) - 1
        starts = np.flatnonzero(new_run)
        ends = np.append(starts[1:], len(ordered)) - 1
        below = through[:, starts[run]] - negative_drawn[:, starts[run]]
        at_or_below = through[:, ends[run]]
        twice_u = (np.where(positive, drawn, 0) * (below + at_or_below)).sum(axis=1)
    result: np.ndarray = twice_u / 2.0
    return result


__all__ = ["DeltaRegion", "IoURegion", "MetricValue", "delta_bootstrap_ci", "specific_delta"]
