"""Per-class performance of a multi-class model: one-vs-rest AUCs, sensitivities, confusion.

A single positive-vs-rest AUC hides how a model treats the other classes: a three-class bone
density model can separate osteoporosis well while confusing osteopenia with normal, and the
macro AUC alone does not say which class drags it down. This module reports, per class:

* the one-vs-rest AUC of that class's probability, with DeLong's interval
  (:func:`~xaibench.stats.intervals.delong_auc_ci`), which ranks cases regardless of any
  threshold;
* sensitivity and specificity of the *argmax* decision for that class ("predicted class ==
  this class"), with Wilson intervals over their own denominators (the class's positives for
  sensitivity, the rest for specificity), because pooling denominators makes intervals of a
  rare class far too narrow;

and the confusion matrix of the argmax decision. Argmax ties go to the first class, as
``numpy.argmax`` does.

A class absent from the test set (or present in every case) has no AUC; it is reported with
``auc: None`` and a ``reason`` rather than raising, so one small class does not lose the
table for the others. Errors the caller can cause (mismatched shapes, NaN probabilities,
labels out of range) raise :class:`~xaibench.errors.XaibenchError` naming the argument.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy.stats import rankdata

from xaibench.errors import XaibenchError
from xaibench.stats.intervals import delong_auc_ci, wilson_ci

__all__ = ["confusion_matrix", "macro_auc", "one_vs_rest"]


# --------------------------------------------------------------------------------------------
# Validation and shared helpers (also used by xaibench.stats.strata)
# --------------------------------------------------------------------------------------------


def _check_class_names(class_names: Sequence[str]) -> list[str]:
    """Validate class names: a sequence of at least two distinct strings."""
    if isinstance(class_names, str):
        raise XaibenchError(
            f"class_names must be a sequence of names, got the string {class_names!r}"
        )
    names = [str(name) for name in class_names]
    if len(names) < 2:
        raise XaibenchError(f"class_names needs at least two classes, got {names}")
    if len(set(names)) != len(names):
        raise XaibenchError(f"class_names must be distinct, got {names}")
    return names


def _check_inputs(
    labels: ArrayLike, probs: ArrayLike, class_names: Sequence[str]
) -> tuple[NDArray[np.int64], NDArray[np.float64], list[str]]:
    """Validate labels ``[N]``, probabilities ``[N, K]`` and ``K`` class names together.

    Returns:
        ``(labels, probs, class_names)`` as an int64 array, a float64 array and a list.

    Raises:
        XaibenchError: Shapes disagree, probabilities are NaN/infinite, labels are not integer
            class indices in ``[0, K)``, or the class names are invalid.
    """
    names = _check_class_names(class_names)
    try:
        matrix = np.asarray(probs, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise XaibenchError("probs must be numeric") from error
    if matrix.ndim != 2 or matrix.shape[1] != len(names):
        raise XaibenchError(
            f"probs must have shape [N, {len(names)}] (one column per class name), got "
            f"{matrix.shape}"
        )
    if not np.all(np.isfinite(matrix)):
        raise XaibenchError("probs contains NaN or infinite values")
    raw = np.asarray(labels)
    if raw.ndim != 1 or raw.shape[0] != matrix.shape[0]:
        raise XaibenchError(
            f"labels must be 1-D with one value per row of probs ({matrix.shape[0]}), got shape "
            f"{raw.shape}"
        )
    try:
        numeric = raw.astype(np.float64)
    except (TypeError, ValueError) as error:
        raise XaibenchError("labels must hold integer class indices") from error
    if not np.all(np.isfinite(numeric)) or not np.all(numeric == np.round(numeric)):
        raise XaibenchError("labels must hold integer class indices, without NaN")
    if numeric.size and (numeric.min() < 0 or numeric.max() >= len(names)):
        raise XaibenchError(
            f"labels must lie in [0, {len(names) - 1}] (one per class name), got values from "
            f"{int(numeric.min())} to {int(numeric.max())}"
        )
    return numeric.astype(np.int64), matrix, names


def _mann_whitney_auc(is_positive: NDArray[np.bool_], scores: NDArray[np.float64]) -> float:
    """The ROC AUC as the Mann-Whitney statistic, ties counting one half (both classes present)."""
    ranks = rankdata(scores, method="average")
    m = int(is_positive.sum())
    n = is_positive.size - m
    return float((ranks[is_positive].sum() - m * (m + 1) / 2.0) / (m * n))


def _auc_summary(
    is_positive: NDArray[np.bool_], scores: NDArray[np.float64], level: float, what: str
) -> dict[str, Any]:
    """The AUC with DeLong's interval, or ``None`` values and the reason it is undefined.

    Args:
        is_positive: Which cases are positive.
        scores: Scores of the cases, higher meaning more likely positive.
        level: Confidence level.
        what: How to name the positive class in reasons (e.g. ``"class 'normal'"``).

    Returns:
        ``{"auc", "auc_low", "auc_high", "reason"}``; ``reason`` is ``None`` when all three are
        defined. With no positive or no negative case the AUC is undefined; with one case in a
        class the AUC is defined but DeLong's variance is not, so the bounds are ``None``.
    """
    m = int(is_positive.sum())
    n = int(is_positive.size - m)
    if m == 0 or n == 0:
        missing = "positive" if m == 0 else "negative"
        return {
            "auc": None,
            "auc_low": None,
            "auc_high": None,
            "reason": f"no {missing} image ({what} {'absent' if m == 0 else 'in every image'})",
        }
    if min(m, n) < 2:
        return {
            "auc": _mann_whitney_auc(is_positive, scores),
            "auc_low": None,
            "auc_high": None,
            "reason": f"DeLong's interval needs two images per class, got {m} positive and "
            f"{n} negative",
        }
    auc, low, high = delong_auc_ci(is_positive, scores, level=level)
    return {"auc": float(auc), "auc_low": float(low), "auc_high": float(high), "reason": None}


def _check_level(level: float) -> float:
    """Validate a confidence level: a number strictly between 0 and 1."""
    try:
        value = float(level)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 < value < 1.0:  # also rejects NaN
        raise XaibenchError(f"level must be strictly between 0 and 1, got {level!r}")
    return value


def _rate(
    successes: int, total: int, level: float
) -> tuple[float | None, float | None, float | None]:
    """A proportion with its Wilson interval, or three ``None`` for an empty denominator."""
    if total == 0:
        return None, None, None
    low, high = wilson_ci(successes, total, level)
    return successes / total, float(low), float(high)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def one_vs_rest(
    labels: ArrayLike,
    probs: ArrayLike,
    class_names: Sequence[str],
    level: float = 0.95,
    ranking: ArrayLike | None = None,
) -> list[dict[str, Any]]:
    """Per class: one-vs-rest AUC (DeLong CI) and argmax sensitivity/specificity (Wilson CIs).

    Args:
        labels: True class indices, shape ``[N]``, in ``[0, K)``.
        probs: Class probabilities (or any per-class scores), shape ``[N, K]``, columns in the
            order of ``class_names``.
        class_names: The ``K`` class names.
        level: Confidence level of every interval, strictly between 0 and 1.
        ranking: Per-class scores the AUCs rank instead of ``probs``, shape ``[N, K]`` — the
            class-vs-rest log-odds, which keep the order where a confident model's
            probabilities saturate to 1.0 and tie (:mod:`xaibench.prediction_scores`). The
            argmax decisions always use ``probs``.

    Returns:
        One dict per class, in class order, with keys ``class``, ``index``, ``n``,
        ``n_positive``, ``n_negative``, ``auc``, ``auc_low``, ``auc_high``, ``sensitivity``,
        ``sensitivity_low``, ``sensitivity_high``, ``specificity``, ``specificity_low``,
        ``specificity_high``, ``tp``, ``fn``, ``tn``, ``fp`` and ``reason``. Values are Python
        ints, floats or ``None``; ``reason`` says why a value is ``None`` (``None`` when none
        is). Sensitivity is ``tp / (tp + fn)``, undefined without positives; specificity is
        ``tn / (tn + fp)``, undefined without negatives.

    Raises:
        XaibenchError: Inputs are mismatched or invalid, or ``level`` is not in (0, 1).
    """
    truth, matrix, names = _check_inputs(labels, probs, class_names)
    _check_level(level)  # even when no interval ends up computed
    ranked = matrix if ranking is None else _check_inputs(labels, ranking, class_names)[1]
    predicted = matrix.argmax(axis=1)
    rows = []
    for index, name in enumerate(names):
        is_positive = truth == index
        called = predicted == index
        tp = int(np.sum(is_positive & called))
        fn = int(np.sum(is_positive & ~called))
        tn = int(np.sum(~is_positive & ~called))
        fp = int(np.sum(~is_positive & called))
        auc = _auc_summary(is_positive, ranked[:, index], level, f"class {name!r}")
        sensitivity, sensitivity_low, sensitivity_high = _rate(tp, tp + fn, level)
        specificity, specificity_low, specificity_high = _rate(tn, tn + fp, level)
        rows.append(
            {
                "class": name,
                "index": index,
                "n": int(truth.size),
                "n_positive": tp + fn,
                "n_negative": tn + fp,
                "auc": auc["auc"],
                "auc_low": auc["auc_low"],
                "auc_high": auc["auc_high"],
                "sensitivity": sensitivity,
                "sensitivity_low": sensitivity_low,
                "sensitivity_high": sensitivity_high,
                "specificity": specificity,
                "specificity_low": specificity_low,
                "specificity_high": specificity_high,
                "tp": tp,
                "fn": fn,
                "tn": tn,
                "fp": fp,
                "reason": auc["reason"],
            }
        )
    return rows


def macro_auc(labels: ArrayLike, probs: ArrayLike, class_names: Sequence[str]) -> float | None:
    """The unweighted mean of the defined one-vs-rest AUCs.

    Each class counts equally whatever its size, so a model cannot hide a poorly separated
    small class behind a large easy one. Classes absent from (or filling) the test set have no
    AUC and are left out of the mean rather than failing it; when all are defined this equals
    ``sklearn.metrics.roc_auc_score(labels, probs, multi_class="ovr", average="macro")``.

    Args:
        labels: True class indices, shape ``[N]``.
        probs: Class probabilities, shape ``[N, K]``.
        class_names: The ``K`` class names.

    Returns:
        The macro AUC, or ``None`` when no class has both positives and negatives.

    Raises:
        XaibenchError: Inputs are mismatched or invalid.
    """
    truth, matrix, names = _check_inputs(labels, probs, class_names)
    aucs = []
    for index in range(len(names)):
        is_positive = truth == index
        if 0 < int(is_positive.sum()) < truth.size:
            aucs.append(_mann_whitney_auc(is_positive, matrix[:, index]))
    return float(np.mean(aucs)) if aucs else None


def confusion_matrix(
    labels: ArrayLike, probs: ArrayLike, class_names: Sequence[str]
) -> pd.DataFrame:
    """The confusion matrix of the argmax decision.

    Args:
        labels: True class indices, shape ``[N]``.
        probs: Class probabilities, shape ``[N, K]``.
        class_names: The ``K`` class names.

    Returns:
        A ``K x K`` frame of counts: rows are true classes (index named ``"true"``), columns
        predicted classes (named ``"predicted"``), both labelled with the class names, as
        ``sklearn.metrics.confusion_matrix`` with ``labels=range(K)``.

    Raises:
        XaibenchError: Inputs are mismatched or invalid.
    """
    truth, matrix, names = _check_inputs(labels, probs, class_names)
    k = len(names)
    predicted = matrix.argmax(axis=1)
    counts = np.bincount(truth * k + predicted, minlength=k * k).reshape(k, k)
    return pd.DataFrame(
        counts.astype(np.int64),
        index=pd.Index(names, name="true"),
        columns=pd.Index(names, name="predicted"),
    )
