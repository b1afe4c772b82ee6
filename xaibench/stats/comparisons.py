"""Paired comparisons between benchmark cells, and the correction for making many of them.

Every cell of a grid is evaluated on the *same* test images, so two cells' numbers are
correlated: an image that is hard for one model tends to be hard for the other. Comparing the
two confidence intervals for overlap ignores that correlation and wastes most of the power (and
overlap is not a test anyway). The comparisons here work on the per-image pairs instead, and
each returns the difference ``a - b`` with its confidence interval and a two-sided p-value in a
:class:`PairedComparison`:

* :func:`delong_comparison`: the difference of two ROC AUCs, with DeLong et al.'s (1988) paired
  variance giving both the test and a normal-theory interval (computed by
  :mod:`xaibench.stats.intervals`, so the test is exactly ``delong_paired_test``).
* :func:`mcnemar_comparison`: the difference of two accuracies. Only discordant images carry
  information about it, so the p-value is McNemar's (1947) test in its exact form (a binomial
  test on the discordant pairs), which Fagerland et al. (2014) recommend over the asymptotic one
  for the small discordant counts a benchmark produces. The interval is Newcombe's (1998)
  method 10: the Wilson intervals of the two accuracies combined with a correction for their
  correlation. Unlike the Wald interval it stays within [-1, 1] and does not collapse to a point
  when there are no discordant pairs.
* :func:`~xaibench.stats.bootstrap_comparisons.paired_bootstrap_mean`: the difference of the means
  of a per-image explanation score (IoU, pointing game, relevance mass, ...), from a percentile
  bootstrap over image pairs.
* :func:`~xaibench.stats.bootstrap_comparisons.paired_bootstrap_delta_auc`: the difference of two
  cells' Δ_region (AUC lost when a region is perturbed), from a bootstrap over images stratified by
  class, the same images feeding all four AUCs of a replicate.
* :func:`holm`: Holm's (1979) step-down adjustment of p-values. A 12-cell grid has 66 pairs;
  testing them all at 5% would find "significant" differences by chance alone. Holm's procedure
  controls the family-wise error rate under any dependence between the tests, as Bonferroni's
  does, and is uniformly more powerful than it.

The two bootstrap comparisons, and the per-cell Δ replicates they share, are in
:mod:`xaibench.stats.bootstrap_comparisons` (with how their p-values are computed).

Every error the caller can cause (mismatched lengths, NaN where it is not allowed, labels that
are not binary, an empty class, a level outside (0, 1), fewer than one resample) raises
:class:`~xaibench.errors.XaibenchError` naming the argument.

References:
    E. R. DeLong, D. M. DeLong, D. L. Clarke-Pearson. Comparing the areas under two or more
    correlated receiver operating characteristic curves: a nonparametric approach.
    Biometrics 44(3):837-845, 1988.

    Q. McNemar. Note on the sampling error of the difference between correlated proportions or
    percentages. Psychometrika 12(2):153-157, 1947.

    R. G. Newcombe. Improved confidence intervals for the difference between binomial
    proportions based on paired data. Statistics in Medicine 17(22):2635-2650, 1998.

    M. W. Fagerland, S. Lydersen, P. Laake. Recommended tests and confidence intervals for
    paired binomial proportions. Statistics in Medicine 33(16):2850-2875, 2014.

    S. Holm. A simple sequentially rejective multiple test procedure. Scandinavian Journal of
    Statistics 6(2):65-70, 1979.

    B. Efron, R. J. Tibshirani. An Introduction to the Bootstrap. Chapman & Hall, 1993.

    A. C. Davison, D. V. Hinkley. Bootstrap Methods and their Application. Cambridge
    University Press, 1997.

    Kim et al. Osteoporosis International, 2025, doi:10.1007/s00198-025-07727-3 (Δ_bone, the
    Δ_region compared by
    :func:`~xaibench.stats.bootstrap_comparisons.paired_bootstrap_delta_auc`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import binomtest

from xaibench.errors import XaibenchError
from xaibench.stats.intervals import _delong_paired, _z_value, wilson_ci

__all__ = [
    "PairedComparison",
    "delong_comparison",
    "holm",
    "mcnemar_comparison",
]


@dataclass(frozen=True)
class PairedComparison:
    """The comparison of two benchmark cells on the same cases.

    Attributes:
        test: The method, e.g. ``"delong"``, ``"mcnemar"`` or ``"paired bootstrap"``.
        difference: The statistic of cell ``a`` minus that of cell ``b``.
        ci: The confidence interval of ``difference``, or ``None`` where a method has none.
        p_value: Two-sided p-value of the null hypothesis of no difference.
        n: Number of paired cases the comparison used (after dropping any NaN pairs).
        details: Method-specific numbers (discordant counts, z, the two cells' values, ...).
    """

    test: str
    difference: float
    ci: tuple[float, float] | None
    p_value: float
    n: int
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The comparison as plain Python values, ready for ``json.dumps(..., allow_nan=False)``.

        NumPy scalars become ``float``/``int``, the interval a two-element list, and non-finite
        floats (such as DeLong's ``z = inf`` when the estimated variance is zero) ``None``,
        since strict JSON has no infinity.
        """
        return {
            "test": self.test,
            "difference": _json_value(self.difference),
            "ci": None if self.ci is None else [_json_value(bound) for bound in self.ci],
            "p_value": _json_value(self.p_value),
            "n": int(self.n),
            "details": _json_value(self.details),
        }


def _json_value(value: Any) -> Any:
    """``value`` as plain JSON-compatible Python: finite floats, ints, strings, lists, dicts."""
    if value is None or isinstance(value, (bool, np.bool_)):
        return None if value is None else bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return {str(key): _json_value(item) for key, item in value.items()}
    if isinstance(value, np.ndarray):
        return [_json_value(item) for item in value.tolist()]
    if isinstance(value, Sequence):
        return [_json_value(item) for item in value]
    raise TypeError(f"cannot convert {type(value).__name__} to JSON")


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _score_vector(name: str, values: ArrayLike, *, allow_nan: bool = False) -> NDArray[np.float64]:
    """Validate a 1-D numeric vector, naming it in every error.

    Args:
        name: The argument's name, for messages.
        values: The vector.
        allow_nan: Whether NaN entries are allowed (infinite ones never are).

    Returns:
        The vector as float64.

    Raises:
        XaibenchError: Not numeric, not 1-D, infinite values, or NaN when not allowed.
    """
    try:
        vector = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise XaibenchError(f"{name} must be numeric") from error
    if vector.ndim != 1:
        raise XaibenchError(f"{name} must be 1-D, got shape {vector.shape}")
    if np.isinf(vector).any():
        raise XaibenchError(f"{name} contains infinite values")
    if not allow_nan and np.isnan(vector).any():
        raise XaibenchError(f"{name} contains NaN")
    return vector


def _same_length(**vectors: NDArray[Any]) -> int:
    """The common length of named 1-D vectors; raises naming the first one that differs."""
    items = list(vectors.items())
    first_name, first = items[0]
    for name, vector in items[1:]:
        if vector.size != first.size:
            raise XaibenchError(
                f"{name} has {vector.size} values but {first_name} has {first.size}; "
                "paired inputs must describe the same cases in the same order"
            )
    return int(first.size)


def _binary_vector(name: str, values: ArrayLike) -> NDArray[np.bool_]:
    """Validate a 1-D vector of 0/1 (or False/True) outcomes, naming it in every error."""
    vector = np.asarray(values)
    if vector.ndim != 1:
        raise XaibenchError(f"{name} must be 1-D, got shape {vector.shape}")
    if vector.dtype == np.bool_:
        return vector
    try:
        as_float = vector.astype(np.float64)
    except (TypeError, ValueError) as error:
        raise XaibenchError(f"{name} must hold 0/1 or False/True") from error
    if np.isnan(as_float).any():
        raise XaibenchError(f"{name} contains NaN")
    if not np.all((as_float == 0.0) | (as_float == 1.0)):
        raise XaibenchError(f"{name} must hold 0/1 or False/True")
    return as_float == 1.0


def _binary_labels(y_true: ArrayLike, min_per_class: int) -> NDArray[np.bool_]:
    """Validate binary labels with at least ``min_per_class`` cases in each class."""
    labels = _binary_vector("y_true", y_true)
    n_pos = int(np.count_nonzero(labels))
    n_neg = labels.size - n_pos
    if min(n_pos, n_neg) < min_per_class:
        raise XaibenchError(
            f"y_true needs at least {min_per_class} positive and {min_per_class} negative "
            f"case(s), got {n_pos} positive and {n_neg} negative"
        )
    return labels


# --------------------------------------------------------------------------------------------
# AUC: DeLong
# --------------------------------------------------------------------------------------------


def delong_comparison(
    y_true: ArrayLike, scores_a: ArrayLike, scores_b: ArrayLike, level: float = 0.95
) -> PairedComparison:
    """Compare two cells' ROC AUCs on the same cases with DeLong's paired method.

    The test is :func:`~xaibench.stats.intervals.delong_paired_test`: DeLong et al.'s (1988)
    estimate of ``var(auc_a - auc_b)`` from both scorers' structural components, covariance
    included, and ``z = difference / sqrt(variance)``. The interval uses the same variance,
    ``difference +/- z_level * sqrt(variance)``, clipped to [-1, 1] (the range of a difference
    of AUCs), so that it excludes zero exactly when ``p < 1 - level`` (before clipping).

    A zero estimated variance (identical scores, or scores equal up to an order-preserving map
    on these cases) gives a zero-width interval at the difference, with ``p = 1`` when the
    difference is zero and ``p = 0`` otherwise, as ``delong_paired_test`` documents; a
    degenerate sample, not certainty.

    Args:
        y_true: Binary labels, 1 (or True) for positive cases.
        scores_a: Cell ``a``'s scores of the cases, higher meaning more likely positive.
        scores_b: Cell ``b``'s scores of the same cases, in the same order.
        level: Confidence level of the interval, strictly between 0 and 1.

    Returns:
        A :class:`PairedComparison` with ``test="delong"``, ``difference = auc_a - auc_b``,
        ``n`` the number of cases and ``details`` holding ``auc_a``, ``auc_b``, ``z``,
        ``variance``, ``n_positive`` and ``n_negative``.

    Raises:
        XaibenchError: Inputs are mismatched, not 1-D or contain NaN/inf; labels are not
            binary; a class has fewer than two cases; ``level`` is not in (0, 1).
    """
    z_level = _z_value(level)
    a = _score_vector("scores_a", scores_a)
    b = _score_vector("scores_b", scores_b)
    labels = _binary_labels(y_true, min_per_class=2)  # the variance needs two per class
    _same_length(y_true=labels, scores_a=a, scores_b=b)

    result = _delong_paired(labels, a, b)
    half_width = z_level * math.sqrt(result.variance)
    ci = (
        max(-1.0, result.difference - half_width),
        min(1.0, result.difference + half_width),
    )
    return PairedComparison(
        test="delong",
        difference=result.difference,
        ci=ci,
        p_value=result.p_value,
        n=result.n_positive + result.n_negative,
        details={
            "auc_a": result.auc_a,
            "auc_b": result.auc_b,
            "z": result.z,
            "variance": result.variance,
            "n_positive": result.n_positive,
            "n_negative": result.n_negative,
        },
    )


# --------------------------------------------------------------------------------------------
# Accuracy: McNemar and Newcombe
# --------------------------------------------------------------------------------------------


def _newcombe_paired_interval(
    both: int, only_a: int, only_b: int, neither: int, level: float
) -> tuple[float, float]:
    """Newcombe's (1998) method 10 interval for ``p_a - p_b`` from a paired 2x2 table.

    With ``n`` pairs, ``p_a = (both + only_a) / n`` and ``p_b = (both + only_b) / n`` have Wilson
    intervals ``(l_a, u_a)`` and ``(l_b, u_b)``. The limits combine the distances from each
    estimate to its Wilson limits ("square and add"), less a correlation term:

        low  = d - sqrt((p_a - l_a)^2 - 2 phi (p_a - l_a)(u_b - p_b) + (u_b - p_b)^2)
        high = d + sqrt((p_b - l_b)^2 - 2 phi (p_b - l_b)(u_a - p_a) + (u_a - p_a)^2)

    where ``phi`` is the phi coefficient of the table with Newcombe's continuity correction:
    with ``A = both * neither - only_a * only_b`` and ``D`` the product of the four margins,
    ``phi = (A - n/2) / sqrt(D)`` if ``A > n/2``, ``0`` if ``0 <= A <= n/2`` and ``A / sqrt(D)``
    if ``A < 0``; ``phi = 0`` when a margin is empty.
    """
    n = both + only_a + only_b + neither
    p_a, p_b = (both + only_a) / n, (both + only_b) / n
    low_a, high_a = wilson_ci(both + only_a, n, level)
    low_b, high_b = wilson_ci(both + only_b, n, level)

    margins = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    phi = 0.0
    if margins > 0:
        association = both * neither - only_a * only_b
        if association > n / 2.0:
            phi = (association - n / 2.0) / math.sqrt(margins)
        elif association < 0:
            phi = association / math.sqrt(margins)

    difference = p_a - p_b
    down_a, up_b = p_a - low_a, high_b - p_b
    down_b, up_a = p_b - low_b, high_a - p_a
    low = difference - math.sqrt(max(0.0, down_a**2 - 2.0 * phi * down_a * up_b + up_b**2))
    high = difference + math.sqrt(max(0.0, down_b**2 - 2.0 * phi * down_b * up_a + up_a**2))
    return max(-1.0, low), min(1.0, high)


def mcnemar_comparison(
    correct_a: ArrayLike, correct_b: ArrayLike, level: float = 0.95
) -> PairedComparison:
    """Compare two cells' accuracies on the same cases: exact McNemar test, Newcombe interval.

    Cases both cells get right, or both get wrong, say nothing about which is more accurate;
    the ``b`` cases only ``a`` gets right and the ``c`` cases only ``b`` gets right do. Under
    the null hypothesis each discordant case is equally likely to fall either way, so ``b`` is
    binomial with ``b + c`` trials and probability 1/2; the p-value is the two-sided exact
    binomial test of that (``scipy.stats.binomtest``), and 1 when there are no discordant cases.
    The interval is Newcombe's (1998) method 10 (see :func:`_newcombe_paired_interval`).

    The two are not exact duals: the exact test is conservative, so near the boundary the
    interval can exclude zero while ``p`` is a little above ``1 - level`` (e.g. 9 against 2
    discordant cases out of 36: ``p = 0.065``, 95% interval 0.013 to 0.361). Report both; the
    test is the one that holds its size.

    Args:
        correct_a: Per case, whether cell ``a`` classified it correctly (0/1 or False/True).
        correct_b: The same for cell ``b``, on the same cases in the same order.
        level: Confidence level of the interval, strictly between 0 and 1.

    Returns:
        A :class:`PairedComparison` with ``test="mcnemar"``, ``difference`` the accuracy of
        ``a`` minus that of ``b`` (equal to ``(b - c) / n``), ``n`` the number of cases and
        ``details`` holding the discordant counts ``b`` and ``c`` and both accuracies.

    Raises:
        XaibenchError: Inputs are not 1-D, hold anything but 0/1 (NaN included), differ in
            length or are empty; ``level`` is not in (0, 1).
    """
    _z_value(level)  # validates level
    a = _binary_vector("correct_a", correct_a)
    b = _binary_vector("correct_b", correct_b)
    n = _same_length(correct_a=a, correct_b=b)
    if n == 0:
        raise XaibenchError("correct_a and correct_b are empty; a comparison needs cases")

    both = int(np.count_nonzero(a & b))
    only_a = int(np.count_nonzero(a & ~b))
    only_b = int(np.count_nonzero(~a & b))
    neither = n - both - only_a - only_b
    discordant = only_a + only_b
    p_value = 1.0 if discordant == 0 else float(binomtest(only_a, discordant, 0.5).pvalue)
    return PairedComparison(
        test="mcnemar",
        difference=(only_a - only_b) / n,
        ci=_newcombe_paired_interval(both, only_a, only_b, neither, level),
        p_value=min(1.0, p_value),
        n=n,
        details={
            "b": only_a,
            "c": only_b,
            "accuracy_a": (both + only_a) / n,
            "accuracy_b": (both + only_b) / n,
        },
    )


# --------------------------------------------------------------------------------------------
# Multiple comparisons
# --------------------------------------------------------------------------------------------


def holm(p_values: ArrayLike) -> NDArray[np.float64]:
    """Holm-Bonferroni adjusted p-values, in the order given.

    With the ``m`` p-values sorted ascending, ``p_(1) <= ... <= p_(m)``, the ``i``-th (1-based)
    is multiplied by ``m - i + 1``; a running maximum keeps the adjusted values in the order of
    the raw ones (a hypothesis is rejected only if all smaller ones are), and they are capped at
    1. Rejecting where the adjusted value is below ``alpha`` controls the family-wise error rate
    at ``alpha`` under any dependence between the tests (Holm 1979).

    NaN entries (a comparison that could not be made) stay NaN and are not counted in ``m``.

    Args:
        p_values: The raw p-values, 1-D, each in [0, 1] or NaN.

    Returns:
        The adjusted p-values, same shape and order as the input.

    Raises:
        XaibenchError: Input not 1-D or not numeric, or a value outside [0, 1] (infinite
            values included).
    """
    raw = _score_vector("p_values", p_values, allow_nan=True)
    defined = ~np.isnan(raw)
    if np.any((raw[defined] < 0.0) | (raw[defined] > 1.0)):
        raise XaibenchError("p_values must lie in [0, 1] (or be NaN)")
    adjusted = np.full(raw.shape, np.nan)
    values = raw[defined]
    m = values.size
    if m == 0:
        return adjusted
    order = np.argsort(values, kind="stable")
    stepped = np.maximum.accumulate(values[order] * np.arange(m, 0, -1, dtype=np.float64))
    in_order = np.empty(m)
    in_order[order] = np.minimum(stepped, 1.0)
    adjusted[defined] = in_order
    return adjusted
