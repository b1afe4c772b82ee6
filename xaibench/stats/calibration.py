"""Calibration of predicted probabilities: reliability curves and the expected calibration error.

An AUC says whether a model ranks cases well, not whether its probabilities mean what they say:
a screening tool whose "80 %" is right half the time misleads a clinician even at a high AUC.
A reliability curve (DeGroot & Fienberg 1983) bins cases by their stated confidence and sets
the observed frequency of the outcome in each bin against the mean confidence there; the
expected calibration error (ECE; Naeini et al. 2015, Guo et al. 2017) is the gap between the
two averaged over bins, weighted by how many cases each bin holds.

Two views of a multi-class model are provided:

* :func:`top_label_calibration`: confidence is the largest class probability and the outcome
  is whether that class is the true one (Guo et al.'s "confidence calibration").
* :func:`positive_class_calibration`: confidence is the probability of one class of interest
  (e.g. osteoporosis) and the outcome is whether the case belongs to it, which is what a
  screening threshold acts on.

Bins are equal-width on [0, 1] and **closed on the left**: bin ``i`` of ``n_bins`` holds
``edges[i] <= c < edges[i + 1]`` with ``edges = numpy.linspace(0, 1, n_bins + 1)``, and the
last bin is closed on both sides so that a confidence of exactly 1 is counted. Left-closed bins
put a confidence of exactly 0.5 in the bin that starts at 0.5, as the printed edges suggest.
``sklearn.calibration.calibration_curve(strategy="uniform")`` uses the opposite convention
(right-closed bins, the first closed on both sides), so the two agree bin by bin unless a
confidence lies exactly on an interior edge. Empty bins are kept, with ``n = 0`` and NaN means,
so every curve of a run has the same shape in plots and files.

Every error the caller can cause (NaN or out-of-range probabilities, mismatched lengths, a
non-binary outcome, a bad ``n_bins``) raises :class:`~xaibench.errors.XaibenchError` naming the
argument.

References:
    C. Guo, G. Pleiss, Y. Sun, K. Q. Weinberger. On calibration of modern neural networks.
    ICML 2017.

    M. P. Naeini, G. F. Cooper, M. Hauskrecht. Obtaining well calibrated probabilities using
    Bayesian binning. AAAI 2015.

    M. H. DeGroot, S. E. Fienberg. The comparison and evaluation of forecasters. Journal of
    the Royal Statistical Society, Series D 32(1/2):12-22, 1983.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any, SupportsIndex

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from xaibench.errors import XaibenchError
from xaibench.stats.intervals import check_positive_count

__all__ = [
    "CURVE_COLUMNS",
    "CalibrationResult",
    "expected_calibration_error",
    "positive_class_calibration",
    "reliability_curve",
    "top_label_calibration",
]

#: Columns of the frame :func:`reliability_curve` returns, in order.
CURVE_COLUMNS = ("bin_low", "bin_high", "n", "mean_confidence", "observed")


@dataclass(frozen=True, eq=False)
class CalibrationResult:
    """The calibration of one view of a model's probabilities.

    Attributes:
        kind: ``"top_label"`` or ``"positive_class"``: which confidence and outcome were used.
        ece: The expected calibration error, in [0, 1].
        curve: The reliability curve, one row per bin (:data:`CURVE_COLUMNS`).
        n_bins: The number of equal-width bins.
    """

    kind: str
    ece: float
    curve: pd.DataFrame
    n_bins: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form: Python scalars, the curve as a list of rows, NaN as ``None``."""
        rows = [
            {
                "bin_low": float(row.bin_low),
                "bin_high": float(row.bin_high),
                "n": int(row.n),
                "mean_confidence": _none_if_nan(row.mean_confidence),
                "observed": _none_if_nan(row.observed),
            }
            for row in self.curve.itertuples(index=False)
        ]
        return {"kind": self.kind, "ece": float(self.ece), "n_bins": self.n_bins, "curve": rows}


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _none_if_nan(value: float) -> float | None:
    """``None`` for NaN (JSON has no NaN), else the value as a Python float."""
    number = float(value)
    return None if math.isnan(number) else number


def _check_probabilities(values: ArrayLike, name: str, ndim: int) -> NDArray[np.float64]:
    """Validate an array of probabilities: numeric, of the given rank, finite, in [0, 1].

    Args:
        values: The probabilities.
        name: The argument's name, for error messages.
        ndim: The number of dimensions it must have.

    Returns:
        The values as a float64 array.

    Raises:
        XaibenchError: The values are not numeric, have the wrong rank, are empty, or hold NaN
            or a value outside [0, 1].
    """
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise XaibenchError(f"{name} must be numeric") from error
    if array.ndim != ndim:
        raise XaibenchError(f"{name} must be {ndim}-D, got shape {array.shape}")
    if array.size == 0:
        raise XaibenchError(f"{name} is empty; calibration needs at least one case")
    if np.isnan(array).any():
        raise XaibenchError(f"{name} contains NaN")
    if (array < 0.0).any() or (array > 1.0).any():
        raise XaibenchError(
            f"{name} must lie in [0, 1], got values from {array.min()!r} to {array.max()!r}"
        )
    return array


def _check_binary(values: ArrayLike, name: str, length: int) -> NDArray[np.float64]:
    """Validate a binary outcome vector (0/1 or False/True) of a given length."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise XaibenchError(f"{name} must be 1-D, got shape {array.shape}")
    if array.shape[0] != length:
        raise XaibenchError(f"{name} has {array.shape[0]} values, expected {length}")
    try:
        numeric = array.astype(np.float64)
    except (TypeError, ValueError) as error:
        raise XaibenchError(f"{name} must hold 0/1 or False/True") from error
    if not np.all((numeric == 0.0) | (numeric == 1.0)):
        raise XaibenchError(f"{name} must hold 0/1 or False/True, without NaN")
    return numeric


def _check_labels(labels: ArrayLike, n_classes: int, length: int) -> NDArray[np.int64]:
    """Validate integer class indices in ``[0, n_classes)`` of a given length."""
    array = np.asarray(labels)
    if array.ndim != 1:
        raise XaibenchError(f"labels must be 1-D, got shape {array.shape}")
    if array.shape[0] != length:
        raise XaibenchError(f"labels has {array.shape[0]} values, probs has {length} rows")
    try:
        numeric = array.astype(np.float64)
    except (TypeError, ValueError) as error:
        raise XaibenchError("labels must hold integer class indices") from error
    if not np.all(np.isfinite(numeric)) or not np.all(numeric == np.round(numeric)):
        raise XaibenchError("labels must hold integer class indices, without NaN")
    if numeric.size and (numeric.min() < 0 or numeric.max() >= n_classes):
        raise XaibenchError(
            f"labels must lie in [0, {n_classes - 1}] (probs has {n_classes} columns), got "
            f"values from {int(numeric.min())} to {int(numeric.max())}"
        )
    return numeric.astype(np.int64)


# --------------------------------------------------------------------------------------------
# Curve and ECE
# --------------------------------------------------------------------------------------------


def reliability_curve(
    confidence: ArrayLike, outcome: ArrayLike, n_bins: SupportsIndex = 10
) -> pd.DataFrame:
    """The reliability curve: observed frequency against mean confidence in equal-width bins.

    Bins are left-closed, the last closed on both sides (see the module docstring for why and
    how this differs from scikit-learn). Every bin is returned, empty ones with ``n = 0`` and
    NaN means, so curves from different cells line up row by row.

    Args:
        confidence: Stated probabilities, 1-D, in [0, 1].
        outcome: Whether each event happened, 1-D, 0/1 or False/True, same length.
        n_bins: Number of equal-width bins on [0, 1].

    Returns:
        A frame with one row per bin and columns ``bin_low``, ``bin_high``, ``n`` (cases in
        the bin), ``mean_confidence`` (their mean confidence) and ``observed`` (the fraction
        of them whose outcome is 1).

    Raises:
        XaibenchError: ``confidence`` holds NaN or values outside [0, 1]; ``outcome`` is not
            binary or its length differs; ``n_bins`` is not a positive integer.
    """
    count = check_positive_count(n_bins, "n_bins")
    conf = _check_probabilities(confidence, "confidence", ndim=1)
    hits = _check_binary(outcome, "outcome", conf.shape[0])

    edges = np.linspace(0.0, 1.0, count + 1)
    # side="right" puts a value equal to edges[i] in bin i (left-closed); 1.0 would fall past
    # the last bin, so it is folded back into it (last bin closed).
    bins = np.minimum(np.searchsorted(edges, conf, side="right") - 1, count - 1)
    n = np.bincount(bins, minlength=count)
    confidence_sum = np.bincount(bins, weights=conf, minlength=count)
    hit_sum = np.bincount(bins, weights=hits, minlength=count)
    filled = n > 0
    mean_confidence = np.full(count, np.nan)
    observed = np.full(count, np.nan)
    mean_confidence[filled] = confidence_sum[filled] / n[filled]
    observed[filled] = hit_sum[filled] / n[filled]
    return pd.DataFrame(
        {
            "bin_low": edges[:-1],
            "bin_high": edges[1:],
            "n": n.astype(np.int64),
            "mean_confidence": mean_confidence,
            "observed": observed,
        },
        columns=list(CURVE_COLUMNS),
    )


def _ece_from_curve(curve: pd.DataFrame) -> float:
    """``sum_b n_b / N * |observed_b - mean_confidence_b|`` over the non-empty bins."""
    filled = curve[curve["n"] > 0]
    total = int(curve["n"].sum())
    gaps = (filled["observed"] - filled["mean_confidence"]).abs()
    return float((filled["n"] * gaps).sum() / total)


def expected_calibration_error(
    confidence: ArrayLike, outcome: ArrayLike, n_bins: SupportsIndex = 10
) -> float:
    """The expected calibration error over equal-width bins (Naeini et al. 2015; Guo et al. 2017).

    ``ECE = sum_b n_b / N * |observed_b - mean_confidence_b|``: the average gap between stated
    and observed probability, each case counting once. It is 0 for a perfectly calibrated
    model *in the limit*; on a finite sample the binned estimate is biased upwards (each bin's
    observed frequency is noisy and the absolute value does not cancel noise), by roughly
    ``sqrt(n_bins / N)``, so compare ECEs only between models scored on the same cases with
    the same ``n_bins``.

    Args:
        confidence: Stated probabilities, 1-D, in [0, 1].
        outcome: Whether each event happened, 1-D, 0/1 or False/True, same length.
        n_bins: Number of equal-width bins on [0, 1] (bins as in :func:`reliability_curve`).

    Returns:
        The ECE, in [0, 1].

    Raises:
        XaibenchError: As :func:`reliability_curve`.
    """
    return _ece_from_curve(reliability_curve(confidence, outcome, n_bins))


# --------------------------------------------------------------------------------------------
# Multi-class views
# --------------------------------------------------------------------------------------------


def _result(
    kind: str, confidence: NDArray[np.float64], outcome: NDArray[np.bool_], n_bins: SupportsIndex
) -> CalibrationResult:
    curve = reliability_curve(confidence, outcome, n_bins)
    return CalibrationResult(kind=kind, ece=_ece_from_curve(curve), curve=curve, n_bins=len(curve))


def top_label_calibration(
    probs: ArrayLike, labels: ArrayLike, n_bins: SupportsIndex = 10
) -> CalibrationResult:
    """Calibration of the predicted class's probability (Guo et al.'s confidence calibration).

    Confidence is each case's largest class probability and the outcome is whether its argmax
    class (the first one on ties, as ``numpy.argmax``) is the true class. This asks "when the
    model says it is 80 % sure of its answer, is it right 80 % of the time?", whatever the
    answer is.

    Args:
        probs: Class probabilities, shape ``[N, K]``, in [0, 1] (rows are not required to sum
            to exactly 1, so rounded probabilities read back from a CSV are accepted).
        labels: True class indices, shape ``[N]``, in ``[0, K)``.
        n_bins: Number of equal-width bins on [0, 1].

    Returns:
        A :class:`CalibrationResult` of kind ``"top_label"``.

    Raises:
        XaibenchError: ``probs`` is not 2-D, holds NaN or values outside [0, 1]; ``labels``
            is mismatched, not integral or out of range; ``n_bins`` is invalid.
    """
    matrix = _check_probabilities(probs, "probs", ndim=2)
    truth = _check_labels(labels, matrix.shape[1], matrix.shape[0])
    predicted = matrix.argmax(axis=1)
    confidence = matrix[np.arange(matrix.shape[0]), predicted]
    return _result("top_label", confidence, predicted == truth, n_bins)


def positive_class_calibration(
    probs: ArrayLike,
    labels: ArrayLike,
    positive_index: SupportsIndex,
    n_bins: SupportsIndex = 10,
) -> CalibrationResult:
    """Calibration of one class's probability against membership of that class.

    Confidence is the probability of class ``positive_index`` and the outcome is whether the
    case belongs to it. This is the calibration a screening decision depends on: a threshold
    on the positive probability means what it says only if that probability is calibrated.

    Args:
        probs: Class probabilities, shape ``[N, K]``, in [0, 1].
        labels: True class indices, shape ``[N]``, in ``[0, K)``.
        positive_index: Index of the class of interest, in ``[0, K)``.
        n_bins: Number of equal-width bins on [0, 1].

    Returns:
        A :class:`CalibrationResult` of kind ``"positive_class"``.

    Raises:
        XaibenchError: As :func:`top_label_calibration`, or ``positive_index`` is not an
            integer in ``[0, K)``.
    """
    matrix = _check_probabilities(probs, "probs", ndim=2)
    truth = _check_labels(labels, matrix.shape[1], matrix.shape[0])
    try:
        index = operator.index(positive_index)
    except TypeError as error:
        raise XaibenchError(f"positive_index must be an integer, got {positive_index!r}") from error
    if not 0 <= index < matrix.shape[1]:
        raise XaibenchError(f"positive_index must lie in [0, {matrix.shape[1] - 1}], got {index}")
    return _result("positive_class", matrix[:, index], truth == index, n_bins)
