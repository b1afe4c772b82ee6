"""Confidence intervals and tests for the numbers a benchmark reports.

A benchmark table without intervals invites over-reading small differences: an AUC of 0.91
against 0.89 on a few hundred cases is often noise. This module gives the intervals that
medical-imaging papers use, so that results can be printed with their uncertainty:

* :func:`delong_auc_ci` and :func:`delong_paired_test`: the AUC, its DeLong et al. (1988)
  variance and the test comparing two correlated AUCs on the same cases, computed with the
  fast midrank algorithm of Sun & Xu (2014).
* :func:`bootstrap_auc_ci`: a stratified percentile bootstrap of the AUC, free of the normal
  approximation DeLong's interval relies on.
* :func:`wilson_ci`: the Wilson score interval for a proportion (accuracy, sensitivity, ...),
  the recommended default.
* :func:`wald_ci`: the plain Wald interval, only for reproducing published tables.
* :func:`bootstrap_mean_ci`: a percentile bootstrap of a mean (e.g. of a per-image metric).

Every error the caller can cause (an empty class, NaN input, a level outside (0, 1)) raises
:class:`~xaibench.errors.XaibenchError`.

References:
    E. R. DeLong, D. M. DeLong, D. L. Clarke-Pearson. Comparing the areas under two or more
    correlated receiver operating characteristic curves: a nonparametric approach.
    Biometrics 44(3):837-845, 1988.

    X. Sun, W. Xu. Fast implementation of DeLong's algorithm for comparing the areas under
    correlated receiver operating characteristic curves. IEEE Signal Processing Letters
    21(11):1389-1393, 2014.

    E. B. Wilson. Probable inference, the law of succession, and statistical inference.
    Journal of the American Statistical Association 22(158):209-212, 1927.

    L. D. Brown, T. T. Cai, A. DasGupta. Interval estimation for a binomial proportion.
    Statistical Science 16(2):101-133, 2001.
"""

from __future__ import annotations

import math
import operator
from typing import NamedTuple, SupportsIndex

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import ndtri
from scipy.stats import norm, rankdata

from xaibench.errors import XaibenchError

__all__ = [
    "bootstrap_auc_ci",
    "bootstrap_mean_ci",
    "check_positive_count",
    "delong_auc_ci",
    "delong_paired_test",
    "wald_ci",
    "wilson_ci",
]

# A variance at or below this is zero up to rounding: structural components lie in [0, 1] and
# are multiples of 1/(2n), so a genuine variance is far larger, while rounding leaves ~1e-32.
_ZERO_VARIANCE = 1e-24

# Bootstrap replicates are computed in blocks of about this many drawn values, so that memory
# stays bounded for large samples whatever the number of resamples.
_BLOCK_ELEMENTS = 1 << 20


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _z_value(level: float) -> float:
    """The two-sided standard-normal quantile for a confidence level.

    Args:
        level: The confidence level, strictly between 0 and 1.

    Returns:
        ``z`` such that a standard normal lies in ``[-z, z]`` with probability ``level``.

    Raises:
        XaibenchError: ``level`` is not a number strictly between 0 and 1.
    """
    try:
        value = float(level)
    except (TypeError, ValueError):
        value = math.nan
    if not 0.0 < value < 1.0:  # also rejects NaN
        raise XaibenchError(f"confidence level must be strictly between 0 and 1, got {level!r}")
    return float(ndtri(0.5 + 0.5 * value))


def _check_counts(successes: SupportsIndex, n: SupportsIndex) -> tuple[int, int]:
    """Validate a count of successes out of ``n`` trials.

    Args:
        successes: Number of successes; any integer type (``operator.index`` must accept it).
        n: Number of trials.

    Returns:
        ``(successes, n)`` as Python ints.

    Raises:
        XaibenchError: A count is not an integer, ``n`` is not positive (a proportion of
            nothing has no interval), or ``successes`` is outside ``[0, n]``.
    """
    try:
        k, total = operator.index(successes), operator.index(n)
    except TypeError as error:
        raise XaibenchError(
            f"counts must be integers, got successes={successes!r}, n={n!r}"
        ) from error
    if total <= 0:
        raise XaibenchError(f"a proportion needs at least one trial, got n={total}")
    if not 0 <= k <= total:
        raise XaibenchError(f"successes must lie in [0, n={total}], got {k}")
    return k, total


def check_positive_count(value: SupportsIndex, name: str) -> int:
    """Validate a count that must be a positive integer (resamples, bins); return it as int.

    Raises:
        XaibenchError: ``value`` is not an integer or is below 1 (the message names ``name``).
    """
    try:
        count = operator.index(value)
    except TypeError as error:
        raise XaibenchError(f"{name} must be an integer, got {value!r}") from error
    if count < 1:
        raise XaibenchError(f"{name} must be at least 1, got {count}")
    return count


def _check_resamples(resamples: SupportsIndex) -> int:
    """Validate the number of bootstrap resamples (a positive integer)."""
    return check_positive_count(resamples, "resamples")


def _split_classes(
    y_true: ArrayLike, *scores: ArrayLike, min_per_class: int
) -> tuple[list[NDArray[np.float64]], list[NDArray[np.float64]]]:
    """Validate binary labels and score vectors, and split each score vector by class.

    Args:
        y_true: Labels, 1 (or True) for positive cases and 0 (or False) for negative ones.
        *scores: One or more score vectors of the same length, higher meaning more positive.
        min_per_class: The fewest cases each class must have.

    Returns:
        ``(positives, negatives)``: for each score vector, its scores of positive and of
        negative cases.

    Raises:
        XaibenchError: Inputs are not 1-D, lengths differ, labels are not binary, a value is
            NaN or infinite, or a class has fewer than ``min_per_class`` cases.
    """
    labels = np.asarray(y_true)
    if labels.ndim != 1:
        raise XaibenchError(f"y_true must be 1-D, got shape {labels.shape}")
    try:
        labels_float = labels.astype(np.float64)
    except (TypeError, ValueError) as error:
        raise XaibenchError("y_true must hold binary labels (0/1 or False/True)") from error
    if not np.all((labels_float == 0.0) | (labels_float == 1.0)):
        raise XaibenchError("y_true must hold binary labels (0/1 or False/True), without NaN")
    is_positive = labels_float == 1.0

    positives: list[NDArray[np.float64]] = []
    negatives: list[NDArray[np.float64]] = []
    for index, vector in enumerate(scores):
        try:
            values = np.asarray(vector, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise XaibenchError(f"scores #{index + 1} must be numeric") from error
        if values.shape != labels.shape:
            raise XaibenchError(
                f"scores #{index + 1} has shape {values.shape}, y_true has shape {labels.shape}"
            )
        if not np.all(np.isfinite(values)):
            raise XaibenchError(f"scores #{index + 1} contains NaN or infinite values")
        positives.append(values[is_positive])
        negatives.append(values[~is_positive])

    n_pos, n_neg = int(is_positive.sum()), int((~is_positive).sum())
    if min(n_pos, n_neg) < min_per_class:
        raise XaibenchError(
            f"each class needs at least {min_per_class} case(s), got {n_pos} positive and "
            f"{n_neg} negative"
        )
    return positives, negatives


# --------------------------------------------------------------------------------------------
# DeLong
# --------------------------------------------------------------------------------------------


def _midranks(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """1-based ranks, tied values sharing the mean of the ranks they span (midranks).

    Midranks make the Mann-Whitney count score a tie as one half, which is what the AUC and
    DeLong's structural components need.

    Args:
        values: A 1-D array.

    Returns:
        The midrank of each value, in the order of ``values``.
    """
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)  # 1-based rank of the last member of each tie group
    group_midrank = ends - (counts - 1) / 2.0
    return group_midrank[inverse].astype(np.float64)


def _delong_components(
    positives: list[NDArray[np.float64]], negatives: list[NDArray[np.float64]]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """AUCs and DeLong structural components by the midrank algorithm of Sun & Xu (2014).

    With ``m`` positives ``X_i`` and ``n`` negatives ``Y_j``, and the kernel
    ``psi(x, y) = 1 if x > y, 1/2 if x == y, 0 otherwise``, DeLong et al. (1988) define

    * ``V10(X_i) = (1/n) sum_j psi(X_i, Y_j)``, the fraction of negatives a positive beats;
    * ``V01(Y_j) = (1/m) sum_i psi(X_i, Y_j)``, the fraction of positives that beat a negative.

    Both average to the AUC. Instead of the ``O(mn)`` double sum, Sun & Xu read them off
    midranks in ``O((m + n) log(m + n))``: the midrank of ``X_i`` among all cases minus its
    midrank among positives is the number of negatives below it, ties counted one half.

    Args:
        positives: For each of ``k`` scorers, its scores of the ``m`` positive cases.
        negatives: For each scorer, its scores of the ``n`` negative cases.

    Returns:
        ``(aucs, v10, v01)`` with shapes ``(k,)``, ``(k, m)`` and ``(k, n)``.
    """
    m, n = positives[0].size, negatives[0].size
    aucs = np.empty(len(positives))
    v10 = np.empty((len(positives), m))
    v01 = np.empty((len(positives), n))
    for row, (pos, neg) in enumerate(zip(positives, negatives, strict=True)):
        within_pos = _midranks(pos)
        within_neg = _midranks(neg)
        combined = _midranks(np.concatenate([pos, neg]))
        v10[row] = (combined[:m] - within_pos) / n
        v01[row] = 1.0 - (combined[m:] - within_neg) / m
        # Mann-Whitney: the rank sum of positives beyond its minimum, per pair.
        aucs[row] = (combined[:m].sum() - m * (m + 1) / 2.0) / (m * n)
    return aucs, v10, v01


def delong_auc_ci(
    y_true: ArrayLike, scores: ArrayLike, level: float = 0.95
) -> tuple[float, float, float]:
    """The ROC AUC with DeLong's normal-approximation confidence interval.

    The AUC is the Mann-Whitney statistic; its variance is DeLong et al.'s (1988)
    nonparametric estimate ``S10/m + S01/n``, where ``S10`` and ``S01`` are the sample
    variances (denominators ``m - 1`` and ``n - 1``) of the structural components of the
    ``m`` positives and ``n`` negatives, computed with the fast midrank algorithm of
    Sun & Xu (2014). Tied scores count one half, as in the AUC itself. The interval is
    ``auc +/- z * sqrt(variance)``, clipped to [0, 1] because the normal approximation can
    spill past the bounds an AUC cannot cross.

    Near 0 or 1, and with few cases, the normal approximation is poor; a perfectly separating
    score has an estimated variance of zero and so a zero-width interval at 1. Prefer
    :func:`bootstrap_auc_ci` there, or report both.

    Args:
        y_true: Binary labels, 1 (or True) for positive cases.
        scores: Scores of the same cases, higher meaning more likely positive.
        level: Confidence level, strictly between 0 and 1.

    Returns:
        ``(auc, low, high)``.

    Raises:
        XaibenchError: Inputs are mismatched, not 1-D or contain NaN/inf; labels are not
            binary; a class has fewer than two cases (the variance needs two per class);
            ``level`` is not in (0, 1).
    """
    z = _z_value(level)
    positives, negatives = _split_classes(y_true, scores, min_per_class=2)
    aucs, v10, v01 = _delong_components(positives, negatives)
    m, n = v10.shape[1], v01.shape[1]
    variance = float(np.var(v10[0], ddof=1) / m + np.var(v01[0], ddof=1) / n)
    auc = float(aucs[0])
    half_width = z * math.sqrt(max(variance, 0.0))
    return auc, max(0.0, auc - half_width), min(1.0, auc + half_width)


def delong_paired_test(
    y_true: ArrayLike, scores_a: ArrayLike, scores_b: ArrayLike
) -> tuple[float, float, float]:
    """DeLong's test that two scorers of the same cases have equal ROC AUCs.

    Two models scored on the same test set make correlated AUCs; testing their difference as
    if independent wastes power. DeLong et al. (1988) estimate the variance of
    ``auc_a - auc_b`` from the structural components of both scorers, including their
    covariance. Here that variance is computed directly as ``var(V10_a - V10_b)/m +
    var(V01_a - V01_b)/n``, which equals ``S_aa + S_bb - 2 S_ab`` and stays exactly zero for
    identical scores. ``z = difference / sqrt(variance)`` is referred to a standard normal.

    A zero estimated variance (identical scores, or scores that differ by an order-preserving
    map on these cases) leaves the ratio undefined. It is resolved as follows: a zero
    difference gives ``z = 0`` and ``p = 1`` (no evidence of a difference); a non-zero
    difference gives ``z = +/-inf`` and ``p = 0`` (a difference with no estimated sampling
    variability, which in practice means too few or too degenerate cases to trust).

    Args:
        y_true: Binary labels, 1 (or True) for positive cases.
        scores_a: Scores of the first model on the cases.
        scores_b: Scores of the second model on the same cases, in the same order.

    Returns:
        ``(auc_a - auc_b, z, p)`` with ``p`` the two-sided p-value.

    Raises:
        XaibenchError: Inputs are mismatched, not 1-D or contain NaN/inf; labels are not
            binary; a class has fewer than two cases.
    """
    result = _delong_paired(y_true, scores_a, scores_b)
    return result.difference, result.z, result.p_value


class _DelongPaired(NamedTuple):
    """What :func:`delong_paired_test` computes, for callers that need more than it returns."""

    auc_a: float
    auc_b: float
    difference: float  # auc_a - auc_b
    variance: float  # DeLong's estimate of var(auc_a - auc_b)
    z: float
    p_value: float
    n_positive: int
    n_negative: int


def _delong_paired(y_true: ArrayLike, scores_a: ArrayLike, scores_b: ArrayLike) -> _DelongPaired:
    """DeLong's paired comparison of two AUCs, with the variance of their difference.

    The computation behind :func:`delong_paired_test` (which documents the zero-variance rule);
    :func:`xaibench.stats.comparisons.delong_comparison` also needs the variance, for the
    confidence interval of the difference.
    """
    positives, negatives = _split_classes(y_true, scores_a, scores_b, min_per_class=2)
    aucs, v10, v01 = _delong_components(positives, negatives)
    m, n = v10.shape[1], v01.shape[1]
    difference = float(aucs[0] - aucs[1])
    variance = float(np.var(v10[0] - v10[1], ddof=1) / m + np.var(v01[0] - v01[1], ddof=1) / n)
    if variance <= _ZERO_VARIANCE:
        variance = 0.0
        if difference == 0.0:
            difference, z, p = 0.0, 0.0, 1.0
        else:
            z, p = math.copysign(math.inf, difference), 0.0
    else:
        z = difference / math.sqrt(variance)
        p = min(1.0, float(2.0 * norm.sf(abs(z))))
    return _DelongPaired(float(aucs[0]), float(aucs[1]), difference, variance, z, p, m, n)


# --------------------------------------------------------------------------------------------
# Proportions
# --------------------------------------------------------------------------------------------


def wilson_ci(
    successes: SupportsIndex, n: SupportsIndex, level: float = 0.95
) -> tuple[float, float]:
    """The Wilson score interval for a binomial proportion.

    The Wilson interval inverts the score test, so its coverage stays close to the nominal
    level even for small ``n`` or proportions near 0 or 1 (Brown, Cai & DasGupta 2001), where
    the Wald interval collapses to a point or leaves [0, 1]. It is the default to report for
    accuracy, sensitivity and specificity. At 0 (or ``n``) successes the bound at 0 (or 1) is
    exact; it is set exactly rather than left to rounding.

    Args:
        successes: Number of successes, in ``[0, n]``.
        n: Number of trials, positive.
        level: Confidence level, strictly between 0 and 1.

    Returns:
        ``(low, high)``.

    Raises:
        XaibenchError: ``n == 0``, counts are not integers or out of range, or ``level`` is
            not in (0, 1).
    """
    z = _z_value(level)
    k, total = _check_counts(successes, n)
    p = k / total
    z2 = z * z
    denominator = 1.0 + z2 / total
    center = (p + z2 / (2.0 * total)) / denominator
    half_width = z / denominator * math.sqrt(p * (1.0 - p) / total + z2 / (4.0 * total * total))
    low = 0.0 if k == 0 else max(0.0, center - half_width)
    high = 1.0 if k == total else min(1.0, center + half_width)
    return low, high


def wald_ci(successes: SupportsIndex, n: SupportsIndex, level: float = 0.95) -> tuple[float, float]:
    """The plain Wald interval ``p +/- z sqrt(p (1 - p) / n)``, clipped to [0, 1].

    This is the interval many papers print, the reference study for this benchmark included.
    It is here only to reproduce published tables: its coverage is erratic and often far
    below nominal for small ``n`` or proportions near 0 or 1, and at 0 or ``n`` successes it
    degenerates to a single point (Brown, Cai & DasGupta 2001). Use :func:`wilson_ci` for new
    results.

    Args:
        successes: Number of successes, in ``[0, n]``.
        n: Number of trials, positive.
        level: Confidence level, strictly between 0 and 1.

    Returns:
        ``(low, high)``.

    Raises:
        XaibenchError: ``n == 0``, counts are not integers or out of range, or ``level`` is
            not in (0, 1).
    """
    z = _z_value(level)
    k, total = _check_counts(successes, n)
    p = k / total
    half_width = z * math.sqrt(p * (1.0 - p) / total)
    return max(0.0, p - half_width), min(1.0, p + half_width)


# --------------------------------------------------------------------------------------------
# Bootstrap
# --------------------------------------------------------------------------------------------


def study_wald_ci(value: float, n_all: int, level: float = 0.95) -> tuple[float, float]:
    """The interval the reference study printed: ``v +/- z sqrt(v (1 - v) / n_all)``, clipped.

    Kim et al. (2025) printed, for AUC, accuracy, sensitivity *and* specificity alike, a Wald
    interval whose ``n`` is the whole test set (4,163 images), although sensitivity's
    denominator is its 211 positives and an AUC is not a proportion (the arithmetic is checked
    in ``tests/test_study_intervals.py`` against the paper's Table 2). ``ci: wald_all``
    reproduces it so a table can be compared like for like; it is far too narrow and must not
    be used for new results.

    Args:
        value: The AUC or rate, in [0, 1].
        n_all: Number of test images.
        level: Confidence level, strictly between 0 and 1.
    """
    z = _z_value(level)
    if not 0.0 <= float(value) <= 1.0:
        raise XaibenchError(f"value must lie in [0, 1], got {value!r}")
    if int(n_all) < 1:
        raise XaibenchError(f"n_all must be positive, got {n_all!r}")
    half_width = z * math.sqrt(value * (1.0 - value) / int(n_all))
    return max(0.0, value - half_width), min(1.0, value + half_width)


def _percentile_interval(replicates: NDArray[np.float64], level: float) -> tuple[float, float]:
    """The central ``level`` interval of bootstrap replicates (linear interpolation)."""
    alpha = 1.0 - level
    low, high = np.quantile(replicates, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


def _block_sizes(resamples: int, draws_per_resample: int) -> list[int]:
    """Split ``resamples`` into blocks of at most about ``_BLOCK_ELEMENTS`` drawn values."""
    per_block = max(1, _BLOCK_ELEMENTS // max(1, draws_per_resample))
    sizes = [per_block] * (resamples // per_block)
    if resamples % per_block:
        sizes.append(resamples % per_block)
    return sizes


def bootstrap_mean_ci(
    values: ArrayLike,
    *,
    resamples: SupportsIndex = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """A percentile-bootstrap confidence interval for the mean.

    For per-image metrics whose distribution is skewed or bounded (faithfulness scores,
    pointing-game hits), the percentile bootstrap makes no normality assumption. NaN values
    (e.g. a metric undefined for an image) are dropped first, so the interval is for the mean
    of the defined values. Resampling uses ``numpy.random.default_rng(seed)``, so the same
    inputs and seed give the same interval.

    Fewer than two values after dropping NaN raise instead of returning ``None``: a bootstrap
    of one value is a zero-width interval that would read as certainty, and raising keeps the
    return type a plain pair.

    Args:
        values: The sample, 1-D; NaN entries are ignored.
        resamples: Number of bootstrap resamples.
        level: Confidence level, strictly between 0 and 1.
        seed: Seed of the random generator.

    Returns:
        ``(low, high)``.

    Raises:
        XaibenchError: Fewer than two non-NaN values, infinite values, input not 1-D,
            ``resamples < 1`` or ``level`` not in (0, 1).
    """
    _z_value(level)  # validates level
    count = _check_resamples(resamples)
    try:
        sample = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise XaibenchError("values must be numeric") from error
    if sample.ndim != 1:
        raise XaibenchError(f"values must be 1-D, got shape {sample.shape}")
    sample = sample[~np.isnan(sample)]
    if np.isinf(sample).any():
        raise XaibenchError("values contains infinite values")
    if sample.size < 2:
        raise XaibenchError(
            f"a bootstrap interval needs at least 2 non-NaN values, got {sample.size}"
        )

    rng = np.random.default_rng(seed)
    size = sample.size
    means = np.concatenate(
        [
            sample[rng.integers(0, size, size=(block, size))].mean(axis=1)
            for block in _block_sizes(count, size)
        ]
    )
    return _percentile_interval(means, level)


def bootstrap_auc_ci(
    y_true: ArrayLike,
    scores: ArrayLike,
    *,
    resamples: SupportsIndex = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """The ROC AUC with a stratified percentile-bootstrap confidence interval.

    Positives and negatives are resampled separately, each to its own count, as in a
    case-control design: every replicate then has both classes (a plain bootstrap of a small
    class can draw none, leaving the AUC undefined) and the class balance of the data. Each
    replicate's AUC is the Mann-Whitney statistic with ties counted one half. Resampling uses
    ``numpy.random.default_rng(seed)``, so the result is reproducible.

    Unlike :func:`delong_auc_ci` this needs no normal approximation, but it inherits the
    percentile bootstrap's slight under-coverage for small samples.

    Args:
        y_true: Binary labels, 1 (or True) for positive cases.
        scores: Scores of the same cases, higher meaning more likely positive.
        resamples: Number of bootstrap resamples.
        level: Confidence level, strictly between 0 and 1.
        seed: Seed of the random generator.

    Returns:
        ``(auc, low, high)``, with ``auc`` computed on the original data, as in
        :func:`delong_auc_ci`.

    Raises:
        XaibenchError: Inputs are mismatched, not 1-D or contain NaN/inf; labels are not
            binary; a class is empty; ``resamples < 1``; ``level`` is not in (0, 1).
    """
    _z_value(level)  # validates level
    count = _check_resamples(resamples)
    positives, negatives = _split_classes(y_true, scores, min_per_class=1)
    pos, neg = positives[0], negatives[0]
    m, n = pos.size, neg.size
    auc = float(_delong_components(positives, negatives)[0][0])

    rng = np.random.default_rng(seed)
    blocks = []
    for block in _block_sizes(count, m + n):
        drawn = np.concatenate(
            [pos[rng.integers(0, m, size=(block, m))], neg[rng.integers(0, n, size=(block, n))]],
            axis=1,
        )
        ranks = rankdata(drawn, method="average", axis=1)
        blocks.append((ranks[:, :m].sum(axis=1) - m * (m + 1) / 2.0) / (m * n))
    low, high = _percentile_interval(np.concatenate(blocks), level)
    return auc, low, high
