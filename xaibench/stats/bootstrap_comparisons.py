"""Bootstrap paired comparisons between benchmark cells: explanation scores and Δ_region.

The paired comparisons of :mod:`xaibench.stats.comparisons` that resample images, each returning
the difference ``a - b`` with its percentile interval and a p-value in a
:class:`~xaibench.stats.comparisons.PairedComparison`:

* :func:`paired_bootstrap_mean`: the difference of the means of a per-image explanation score
  (IoU, pointing game, relevance mass, ...), from a percentile bootstrap over image pairs.
* :func:`paired_bootstrap_delta_auc`: the difference of two cells' Δ_region (AUC lost when a
  region is perturbed), from a bootstrap over images stratified by class, the same images
  feeding all four AUCs of a replicate. :func:`delta_auc_replicates` draws one cell's
  replicates (:class:`DeltaReplicates`) once, so that :func:`paired_delta_from_replicates` can
  compare it with many other cells.

Bootstrap p-values. The two bootstrap comparisons report a percentile interval and a p-value
from the bootstrap standard error: ``z = difference / sd(replicates)``, ``p = 2 * Phi(-|z|)``
(the "normal bootstrap" test; Efron & Tibshirani 1993, section 16). The p-value that counts
replicates on either side of zero cannot go below ``2 / (B + 1)``: about 0.002 with the default
1000 resamples, and under Holm's correction over the 66 pairs of a 12-cell grid no pair could
ever reach 0.05, so every cell would share the top tier by construction, not by the data. The
normal test has no such floor; both the difference of two means and that of two AUC drops are
asymptotically normal, which is what it assumes. Where the replicates hug one side of zero the
two can disagree near the 5% line; the interval is shown beside every p-value. Identical cells
(every replicate zero) give ``p = 1``; a difference with no bootstrap variability gives
``p = 0``.

References:
    B. Efron, R. J. Tibshirani. An Introduction to the Bootstrap. Chapman & Hall, 1993.

    A. C. Davison, D. V. Hinkley. Bootstrap Methods and their Application. Cambridge
    University Press, 1997.

    Kim et al. Osteoporosis International, 2025, doi:10.1007/s00198-025-07727-3 (Δ_bone, the
    Δ_region compared by :func:`paired_bootstrap_delta_auc`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import SupportsIndex

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import norm, rankdata

from xaibench.errors import XaibenchError
from xaibench.stats.comparisons import PairedComparison, _binary_labels, _same_length, _score_vector
from xaibench.stats.intervals import (
    _block_sizes,
    _check_resamples,
    _delong_components,
    _percentile_interval,
    _split_classes,
    _z_value,
)

__all__ = [
    "DeltaReplicates",
    "delta_auc_replicates",
    "paired_bootstrap_delta_auc",
    "paired_bootstrap_mean",
    "paired_delta_from_replicates",
]


# The perturbed AUC is floored here in Δ_region (Kim et al. 2025), as in
# ``xaibench.metrics.functional.delta_auc``: a model driven below chance is not credited with
# losing more than its whole skill.
_CHANCE_AUC = 0.5


def _bootstrap_p_value(replicates: NDArray[np.float64], difference: float) -> float:
    """Two-sided p of "difference = 0" from the bootstrap standard error (module docstring)."""
    spread = float(np.std(replicates, ddof=1)) if replicates.size > 1 else 0.0
    if spread <= 0.0 or not math.isfinite(spread):
        return 1.0 if difference == 0.0 else 0.0
    return min(1.0, float(2.0 * norm.sf(abs(difference) / spread)))


# --------------------------------------------------------------------------------------------
# Bootstrap comparisons
# --------------------------------------------------------------------------------------------


def paired_bootstrap_mean(
    a: ArrayLike,
    b: ArrayLike,
    *,
    resamples: SupportsIndex = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> PairedComparison:
    """Compare two cells' mean per-image explanation scores on the same images.

    The per-image differences ``a_i - b_i`` are resampled with replacement (a percentile
    bootstrap over image pairs, Efron & Tibshirani 1993), which keeps the correlation between
    the cells and assumes nothing about the scores' distribution (bounded, skewed or binary, as
    IoU and pointing-game scores are). Pairs where either score is NaN (a metric undefined for
    that image in either cell) are dropped first, so both means are over the same images. The
    p-value is the one dual to the percentile interval (see the module docstring). Resampling
    uses ``numpy.random.default_rng(seed)``, so the same inputs and seed give the same result.

    Args:
        a: Cell ``a``'s per-image scores, 1-D; NaN marks an undefined score.
        b: Cell ``b``'s scores of the same images, in the same order.
        resamples: Number of bootstrap resamples, at least 1.
        level: Confidence level of the interval, strictly between 0 and 1.
        seed: Seed of the random generator.

    Returns:
        A :class:`PairedComparison` with ``test="paired bootstrap"``, ``difference`` the mean of
        ``a`` minus the mean of ``b`` over the ``n`` complete pairs, and ``details`` holding
        both means, the number of pairs dropped and ``resamples``.

    Raises:
        XaibenchError: Inputs not 1-D, not numeric or of different lengths; infinite values;
            fewer than two complete pairs; ``resamples < 1``; ``level`` not in (0, 1).
    """
    _z_value(level)  # validates level
    count = _check_resamples(resamples)
    first = _score_vector("a", a, allow_nan=True)
    second = _score_vector("b", b, allow_nan=True)
    total = _same_length(a=first, b=second)
    complete = ~(np.isnan(first) | np.isnan(second))
    differences = first[complete] - second[complete]
    size = differences.size
    if size < 2:
        raise XaibenchError(
            f"a paired bootstrap needs at least 2 images where both a and b are defined (not "
            f"NaN), got {size}"
        )

    rng = np.random.default_rng(seed)
    replicates = np.concatenate(
        [
            differences[rng.integers(0, size, size=(block, size))].mean(axis=1)
            for block in _block_sizes(count, size)
        ]
    )
    difference = float(differences.mean())
    return PairedComparison(
        test="paired bootstrap",
        difference=difference,
        ci=_percentile_interval(replicates, level),
        p_value=_bootstrap_p_value(replicates, difference),
        n=size,
        details={
            "mean_a": float(first[complete].mean()),
            "mean_b": float(second[complete].mean()),
            "dropped": total - size,
            "resamples": count,
        },
    )


def paired_bootstrap_delta_auc(
    y_true: ArrayLike,
    intact_a: ArrayLike,
    perturbed_a: ArrayLike,
    intact_b: ArrayLike,
    perturbed_b: ArrayLike,
    *,
    resamples: SupportsIndex = 1000,
    level: float = 0.95,
    seed: int = 0,
    chance_floor: bool = True,
) -> PairedComparison:
    """Compare two cells' Δ_region: does cell ``a`` lose more AUC than ``b`` when it is perturbed?

    ``Δ = AUC(intact) - AUC(perturbed)`` is the AUC a cell loses when the region is perturbed;
    by default the perturbed AUC is floored at 0.5 first, exactly as the leaderboard's Δ_region
    (``xaibench.metrics.functional.delta_auc``, Kim et al. 2025), so that ``difference`` is the
    difference of the two leaderboard values; ``chance_floor=False`` gives the plain
    difference of AUCs.

    The four AUCs share the test images, so the comparison resamples *images*: positives and
    negatives separately, each to its own count (as in
    :func:`~xaibench.stats.intervals.bootstrap_auc_ci`, so every replicate has both classes),
    and the same drawn images feed all four score vectors of a replicate. The difference is
    computed on the original data; the interval is the percentile interval of the replicates,
    and the p-value the one dual to it (see the module docstring). AUCs are Mann-Whitney
    statistics with ties counted one half, computed from midranks for all replicates of a
    block at once. Resampling uses ``numpy.random.default_rng(seed)``.

    Args:
        y_true: Binary labels of the images, 1 (or True) for positive cases.
        intact_a: Cell ``a``'s scores of the intact images, higher meaning more likely positive.
        perturbed_a: Cell ``a``'s scores of the same images with the region perturbed.
        intact_b: Cell ``b``'s scores of the intact images.
        perturbed_b: Cell ``b``'s scores of the perturbed images.
        resamples: Number of bootstrap resamples, at least 1.
        level: Confidence level of the interval, strictly between 0 and 1.
        seed: Seed of the random generator.
        chance_floor: Floor the perturbed AUCs at 0.5, as Δ_region does.

    Returns:
        A :class:`PairedComparison` with ``test="paired bootstrap"``,
        ``difference = Δ_a - Δ_b``, ``n`` the number of images and ``details`` holding
        ``delta_a``, ``delta_b``, the four AUCs, ``n_positive``, ``n_negative`` and
        ``resamples``.

    Raises:
        XaibenchError: Inputs mismatched, not 1-D or containing NaN/inf; labels not binary;
            a class empty; ``resamples < 1``; ``level`` not in (0, 1).
    """
    _z_value(level)  # validates level
    count = _check_resamples(resamples)
    names = ("intact_a", "perturbed_a", "intact_b", "perturbed_b")
    vectors = {
        name: _score_vector(name, values)
        for name, values in zip(names, (intact_a, perturbed_a, intact_b, perturbed_b), strict=True)
    }
    labels = _binary_labels(y_true, min_per_class=1)
    _same_length(y_true=labels, **vectors)
    a = delta_auc_replicates(
        labels, vectors["intact_a"], vectors["perturbed_a"],
        resamples=count, seed=seed, chance_floor=chance_floor,
    )  # fmt: skip
    b = delta_auc_replicates(
        labels, vectors["intact_b"], vectors["perturbed_b"],
        resamples=count, seed=seed, chance_floor=chance_floor,
    )  # fmt: skip
    return paired_delta_from_replicates(a, b, level)


@dataclass(frozen=True)
class DeltaReplicates:
    """One cell's Δ (AUC lost under a perturbation) and its bootstrap replicates.

    Replicates drawn with the same labels, ``resamples`` and ``seed`` use the same resampled
    images, so two cells' replicates subtract into the paired bootstrap of their difference
    (:func:`paired_delta_from_replicates`). A leaderboard of k cells thus bootstraps each cell
    once instead of each of its k(k-1)/2 pairs.
    """

    delta: float
    auc_intact: float
    auc_perturbed: float
    replicates: NDArray[np.float64]
    n_positive: int
    n_negative: int
    seed: int


def delta_auc_replicates(
    y_true: ArrayLike,
    intact: ArrayLike,
    perturbed: ArrayLike,
    *,
    resamples: SupportsIndex = 1000,
    seed: int = 0,
    chance_floor: bool = True,
) -> DeltaReplicates:
    """Δ of one cell and its class-stratified bootstrap replicates (see the pairing note).

    Raises:
        XaibenchError: As :func:`paired_bootstrap_delta_auc`.
    """
    count = _check_resamples(resamples)
    scores = {
        "intact": _score_vector("intact", intact),
        "perturbed": _score_vector("perturbed", perturbed),
    }
    labels = _binary_labels(y_true, min_per_class=1)
    _same_length(y_true=labels, **scores)
    positives, negatives = _split_classes(labels, *scores.values(), min_per_class=1)
    aucs = _delong_components(positives, negatives)[0]
    floor = _CHANCE_AUC if chance_floor else -math.inf
    pos, neg = np.stack(positives), np.stack(negatives)  # (2, m) and (2, n)
    m, n = pos.shape[1], neg.shape[1]
    rng = np.random.default_rng(seed)
    blocks = []
    # Blocks depend on the number of images only, so every cell draws the same images.
    for block in _block_sizes(count, 4 * (m + n)):
        drawn = np.concatenate(
            [
                pos[:, rng.integers(0, m, size=(block, m))],
                neg[:, rng.integers(0, n, size=(block, n))],
            ],
            axis=2,
        )  # (2, block, m + n), the same images for both score vectors
        ranks = rankdata(drawn, method="average", axis=2)
        replicate_aucs = (ranks[:, :, :m].sum(axis=2) - m * (m + 1) / 2.0) / (m * n)
        blocks.append(replicate_aucs[0] - np.maximum(replicate_aucs[1], floor))
    return DeltaReplicates(
        delta=float(aucs[0] - max(aucs[1], floor)),
        auc_intact=float(aucs[0]),
        auc_perturbed=float(aucs[1]),
        replicates=np.concatenate(blocks),
        n_positive=m,
        n_negative=n,
        seed=seed,
    )


def paired_delta_from_replicates(
    a: DeltaReplicates, b: DeltaReplicates, level: float = 0.95
) -> PairedComparison:
    """The paired comparison ``Δ_a - Δ_b`` from two cells' replicates on the same draws.

    Raises:
        XaibenchError: The replicates were not drawn alike (other images, resamples or seed),
            so they do not pair.
    """
    _z_value(level)
    same = a.replicates.shape == b.replicates.shape and (a.n_positive, a.n_negative, a.seed) == (
        b.n_positive,
        b.n_negative,
        b.seed,
    )
    if not same:
        raise XaibenchError(
            "Δ replicates of the two cells were drawn differently (images, resamples or seed); "
            "they cannot be paired"
        )
    replicates = a.replicates - b.replicates
    delta_a, delta_b = a.delta, b.delta
    count, m, n = replicates.size, a.n_positive, a.n_negative
    aucs = (a.auc_intact, a.auc_perturbed, b.auc_intact, b.auc_perturbed)
    difference = delta_a - delta_b
    return PairedComparison(
        test="paired bootstrap",
        difference=difference,
        ci=_percentile_interval(replicates, level),
        p_value=_bootstrap_p_value(replicates, difference),
        n=m + n,
        details={
            "delta_a": delta_a,
            "delta_b": delta_b,
            "auc_intact_a": float(aucs[0]),
            "auc_perturbed_a": float(aucs[1]),
            "auc_intact_b": float(aucs[2]),
            "auc_perturbed_b": float(aucs[3]),
            "n_positive": m,
            "n_negative": n,
            "resamples": count,
        },
    )
