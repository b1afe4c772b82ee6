"""Pure metric functions of predictions: classification skill and region reliance.

xaibench scores a model twice, once for *what* it predicts and once for *where* its
explanations point. This module holds the numerical kernels of the first half:

* :func:`binary_auc`, :func:`macro_ovr_auc`, :func:`youden_threshold` and
  :func:`confusion_counts` measure prediction quality. AUC is computed from ranks (the
  Mann-Whitney U statistic) rather than by integrating a curve, because the rank form is exact,
  handles tied scores by giving each pair half credit, and makes the "needs both classes"
  requirement explicit instead of returning NaN.
* :func:`delta_auc` summarises how much a model relies on a region: the AUC it loses when that
  region is perturbed.

The kernels of the second half, saliency maps against region masks, are in
:mod:`xaibench.metrics.binarize` (maps to regions: Otsu, top-k and threshold binarisation, IoU,
mask alignment) and :mod:`xaibench.metrics.map_scores` (scores of a map against a mask without
binarising it: pointing game, relevance mass and rank, pixel AUC, energy ratio).

Every function validates its input and raises :class:`~xaibench.errors.XaibenchError` with a
message that says what is wrong, because a silently NaN or meaningless metric in a benchmark
table is worse than a run that stops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.stats import rankdata
from sklearn.metrics import roc_curve

from xaibench.errors import XaibenchError

__all__ = [
    "ConfusionCounts",
    "binary_auc",
    "confusion_counts",
    "delta_auc",
    "macro_ovr_auc",
    "youden_threshold",
]


# --------------------------------------------------------------------------------------------
# Input validation shared by the classification metrics
# --------------------------------------------------------------------------------------------


def _as_binary_labels(y_true: npt.ArrayLike, name: str = "y_true") -> npt.NDArray[np.bool_]:
    """Convert 0/1 or boolean labels to a 1-D bool array, refusing anything else.

    Labels such as 2 or 0.5 usually mean the caller passed class indices or probabilities by
    mistake; coercing them with ``astype(bool)`` would hide that, so they are rejected.
    """
    array = np.asarray(y_true)
    if array.ndim != 1:
        raise XaibenchError(f"{name} must be 1-D; got shape {tuple(array.shape)}")
    if array.dtype == np.bool_:
        return array
    if not (np.issubdtype(array.dtype, np.number)):
        raise XaibenchError(f"{name} must be 0/1 or bool; got dtype {array.dtype}")
    is_zero = array == 0
    is_one = array == 1
    bad = ~(is_zero | is_one)
    if bad.any():
        examples = ", ".join(repr(v.item()) for v in np.unique(array[bad])[:5])
        raise XaibenchError(f"{name} must contain only 0 and 1 (or bool); found {examples}")
    return is_one


def _as_finite_scores(scores: npt.ArrayLike, name: str = "scores") -> npt.NDArray[np.float64]:
    """Convert scores to a 1-D float64 array, refusing NaN and infinity.

    A NaN score has no rank, and an infinite one usually signals an overflow upstream; either
    would make the metric meaningless without any visible sign, so both are errors.
    """
    try:
        array = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise XaibenchError(f"{name} must be numeric: {error}") from error
    if array.ndim != 1:
        raise XaibenchError(f"{name} must be 1-D; got shape {tuple(array.shape)}")
    finite = np.isfinite(array)
    if not finite.all():
        n_nan = int(np.isnan(array).sum())
        n_inf = int((~finite).sum()) - n_nan
        raise XaibenchError(
            f"{name} must be finite; found {n_nan} NaN and {n_inf} infinite value(s) "
            f"among {array.size}"
        )
    return array


def _labels_and_scores(
    y_true: npt.ArrayLike, scores: npt.ArrayLike
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
    """Validate a (labels, scores) pair: same length, non-empty, clean values."""
    labels = _as_binary_labels(y_true)
    values = _as_finite_scores(scores)
    if labels.shape[0] != values.shape[0]:
        raise XaibenchError(
            f"y_true and scores must have the same length; got {labels.shape[0]} labels "
            f"and {values.shape[0]} scores"
        )
    if labels.shape[0] == 0:
        raise XaibenchError("y_true and scores are empty; need at least one sample")
    return labels, values


def _require_both_classes(labels: npt.NDArray[np.bool_], what: str) -> tuple[int, int]:
    """Return (positives, negatives), raising if either is zero.

    ROC quantities compare positives with negatives, so with one class absent there is
    nothing to compare and the answer is undefined rather than 0, 0.5 or 1.
    """
    n_pos = int(labels.sum())
    n_neg = int(labels.shape[0]) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise XaibenchError(
            f"{what} needs both positives and negatives; got {n_pos} positives and "
            f"{n_neg} negatives"
        )
    return n_pos, n_neg


# --------------------------------------------------------------------------------------------
# Classification metrics
# --------------------------------------------------------------------------------------------


def binary_auc(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the ROC curve, computed as the Mann-Whitney U statistic.

    AUC equals the probability that a random positive scores higher than a random negative,
    with a tie counting one half. Ranking all scores with mid-ranks for ties gives that
    count directly: ``U = sum(ranks of positives) - P (P + 1) / 2`` and ``AUC = U / (P N)``.
    This is exact (no curve interpolation) and O(n log n).

    Args:
        y_true: 1-D labels, 0/1 integers or bools; 1 / True marks a positive.
        scores: 1-D finite scores, higher meaning "more positive"; same length as ``y_true``.

    Returns:
        The AUC in [0, 1].

    Raises:
        XaibenchError: If the lengths differ, the input is empty, a label is not 0/1, a score
            is NaN or infinite, or only one class is present.
    """
    labels, values = _labels_and_scores(y_true, scores)
    n_pos, n_neg = _require_both_classes(labels, "AUC")
    ranks = rankdata(values, method="average")
    u_statistic = float(ranks[labels].sum()) - n_pos * (n_pos + 1) / 2.0
    return u_statistic / (n_pos * n_neg)


def youden_threshold(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Operating threshold that maximises Youden's J = sensitivity + specificity - 1.

    A fixed operating point is needed to report sensitivity and specificity; J weighs both
    errors equally and does not depend on prevalence, which makes it a neutral default.

    Decision rule: a sample is predicted positive when ``score >= threshold``, so the returned
    value is always one of the observed scores. Candidates are the ROC operating points of
    :func:`sklearn.metrics.roc_curve` (all of them; intermediate points are not dropped), minus
    its first, infinite threshold that predicts nothing positive. J is compared exactly, from
    integer counts, so mathematically equal J values tie exactly; ties are broken by taking the
    **highest** threshold, i.e. the most conservative point (fewest positive calls) among the
    equally good ones.

    Args:
        y_true: 1-D labels, 0/1 integers or bools; 1 / True marks a positive.
        scores: 1-D finite scores; same length as ``y_true``.

    Returns:
        The chosen threshold, one of the values in ``scores``.

    Raises:
        XaibenchError: On the same bad input as :func:`binary_auc`, including a single class.
    """
    labels, values = _labels_and_scores(y_true, scores)
    n_pos, n_neg = _require_both_classes(labels, "Youden's threshold")
    fpr, tpr, thresholds = roc_curve(labels, values, drop_intermediate=False)
    # Recover the integer counts behind the rates so that J can be compared without rounding:
    # J = tp/P - fp/N has the same ordering as tp*N - fp*P.
    true_pos = np.rint(tpr[1:] * n_pos).astype(np.int64)
    false_pos = np.rint(fpr[1:] * n_neg).astype(np.int64)
    scaled_j = true_pos * n_neg - false_pos * n_pos
    # roc_curve orders thresholds from high to low and argmax returns the first maximum, so
    # this is the highest threshold among ties.
    best = int(np.argmax(scaled_j))
    return float(thresholds[1:][best])


@dataclass(frozen=True)
class ConfusionCounts:
    """Counts of a binary decision against the truth, with the rates derived from them.

    The rates are properties that raise instead of returning NaN when undefined, so that a
    benchmark table never shows a silent NaN (e.g. sensitivity on a set with no positives).

    Attributes:
        tp: Positives predicted positive.
        fp: Negatives predicted positive.
        tn: Negatives predicted negative.
        fn: Positives predicted negative.
    """

    tp: int
    fp: int
    tn: int
    fn: int

    def __post_init__(self) -> None:
        """Reject negative or non-integer counts, which no confusion matrix can have."""
        for name in ("tp", "fp", "tn", "fn"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise XaibenchError(f"{name} must be an integer count; got {value!r}")
            if value < 0:
                raise XaibenchError(f"{name} must be non-negative; got {value}")

    @property
    def total(self) -> int:
        """Number of samples counted."""
        return self.tp + self.fp + self.tn + self.fn

    @property
    def accuracy(self) -> float:
        """Fraction of samples decided correctly, (tp + tn) / total."""
        if self.total == 0:
            raise XaibenchError("accuracy is undefined: no samples")
        return (self.tp + self.tn) / self.total

    @property
    def sensitivity(self) -> float:
        """True-positive rate (recall), tp / (tp + fn)."""
        if self.tp + self.fn == 0:
            raise XaibenchError("sensitivity is undefined: no positive samples")
        return self.tp / (self.tp + self.fn)

    @property
    def specificity(self) -> float:
        """True-negative rate, tn / (tn + fp)."""
        if self.tn + self.fp == 0:
            raise XaibenchError("specificity is undefined: no negative samples")
        return self.tn / (self.tn + self.fp)

    @property
    def ppv(self) -> float:
        """Positive predictive value (precision), tp / (tp + fp)."""
        if self.tp + self.fp == 0:
            raise XaibenchError("PPV is undefined: no sample was called positive")
        return self.tp / (self.tp + self.fp)

    @property
    def npv(self) -> float:
        """Negative predictive value, tn / (tn + fn)."""
        if self.tn + self.fn == 0:
            raise XaibenchError("NPV is undefined: no sample was called negative")
        return self.tn / (self.tn + self.fn)


def confusion_counts(
    y_true: npt.ArrayLike, scores: npt.ArrayLike, threshold: float
) -> ConfusionCounts:
    """Count a thresholded decision against the truth.

    Uses the same rule as :func:`youden_threshold` (positive when ``score >= threshold``), so a
    threshold chosen there reproduces its operating point here.

    Args:
        y_true: 1-D labels, 0/1 integers or bools; 1 / True marks a positive.
        scores: 1-D finite scores; same length as ``y_true``.
        threshold: Decision threshold; must not be NaN.

    Returns:
        The four counts. One class may be absent; only the rates that need it are undefined.

    Raises:
        XaibenchError: If the lengths differ, the input is empty, a label is not 0/1, a score
            is NaN or infinite, or the threshold is NaN.
    """
    labels, values = _labels_and_scores(y_true, scores)
    threshold_value = float(threshold)
    if np.isnan(threshold_value):
        raise XaibenchError("threshold must not be NaN")
    predicted = values >= threshold_value
    return ConfusionCounts(
        tp=int((predicted & labels).sum()),
        fp=int((predicted & ~labels).sum()),
        tn=int((~predicted & ~labels).sum()),
        fn=int((~predicted & labels).sum()),
    )


def macro_ovr_auc(labels: npt.ArrayLike, probs: npt.ArrayLike) -> float:
    """Macro-averaged one-vs-rest AUC for a multi-class problem.

    Each class ``c`` is scored as a binary problem ``labels == c`` against ``probs[:, c]`` and
    the per-class AUCs are averaged with equal weight, so rare classes count as much as common
    ones. The scores need not sum to one (unlike scikit-learn's implementation), which lets
    logits be passed directly.

    Args:
        labels: 1-D integer class indices in ``0 .. C-1``, length N.
        probs: Scores of shape [N, C], one column per class.

    Returns:
        The mean of the C per-class AUCs.

    Raises:
        XaibenchError: If ``probs`` is not [N, C] with C >= 2, labels are not integers in
            range, a score is NaN or infinite, or some class has no samples (its AUC would be
            undefined; the message names the class index).
    """
    label_array = np.asarray(labels)
    if label_array.ndim != 1:
        raise XaibenchError(f"labels must be 1-D; got shape {tuple(label_array.shape)}")
    if label_array.dtype == np.bool_ or not np.issubdtype(label_array.dtype, np.integer):
        raise XaibenchError(f"labels must be integer class indices; got dtype {label_array.dtype}")
    try:
        prob_array = np.asarray(probs, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise XaibenchError(f"probs must be numeric: {error}") from error
    if prob_array.ndim != 2:
        raise XaibenchError(f"probs must have shape [N, C]; got shape {tuple(prob_array.shape)}")
    n_samples, n_classes = prob_array.shape
    if n_samples != label_array.shape[0]:
        raise XaibenchError(
            f"probs must have one row per label; got probs of shape {tuple(prob_array.shape)} "
            f"and {label_array.shape[0]} labels"
        )
    if n_samples == 0:
        raise XaibenchError("labels and probs are empty; need at least one sample")
    if n_classes < 2:
        raise XaibenchError(f"macro one-vs-rest AUC needs at least 2 classes; got C={n_classes}")
    out_of_range = (label_array < 0) | (label_array >= n_classes)
    if out_of_range.any():
        examples = ", ".join(str(v) for v in np.unique(label_array[out_of_range])[:5])
        raise XaibenchError(
            f"labels must be class indices in 0..{n_classes - 1} (probs has C={n_classes} "
            f"columns); found {examples}"
        )
    if not np.isfinite(prob_array).all():
        raise XaibenchError("probs must be finite; found NaN or infinite values")
    counts = np.bincount(label_array, minlength=n_classes)
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        raise XaibenchError(
            f"class {int(empty[0])} has no samples, so its one-vs-rest AUC is undefined "
            f"(classes without samples: {', '.join(str(int(c)) for c in empty)})"
        )
    per_class = [binary_auc(label_array == c, prob_array[:, c]) for c in range(n_classes)]
    return float(np.mean(per_class))


# --------------------------------------------------------------------------------------------
# Region reliance
# --------------------------------------------------------------------------------------------


def _check_auc_value(name: str, value: Any) -> float:
    """Return ``value`` as a float, raising if it cannot be an AUC."""
    try:
        number = float(value)
    except (TypeError, ValueError) as error:
        raise XaibenchError(f"{name} must be a number; got {value!r}") from error
    if not 0.0 <= number <= 1.0:  # also rejects NaN
        raise XaibenchError(f"{name} must be an AUC in [0, 1]; got {number}")
    return number


def delta_auc(auc_intact: float, auc_perturbed: float) -> float:
    """AUC lost when a region is perturbed, with the perturbed AUC floored at chance.

    This is Delta_bone of Kim et al. (2025): ``auc_intact - max(auc_perturbed, 0.5)``. A model
    that relies on the region drops towards chance when it is perturbed; flooring at 0.5 stops a
    model driven *below* chance (systematically inverted) from being credited with losing more
    than its whole skill, so the result never exceeds ``auc_intact - 0.5``. It is negative when
    perturbing the region helps the model.

    Args:
        auc_intact: AUC on unmodified images, in [0, 1].
        auc_perturbed: AUC with the region perturbed, in [0, 1].

    Returns:
        The reliance score ``auc_intact - max(auc_perturbed, 0.5)``.

    Raises:
        XaibenchError: If either AUC is NaN or outside [0, 1].
    """
    intact = _check_auc_value("auc_intact", auc_intact)
    perturbed = _check_auc_value("auc_perturbed", auc_perturbed)
    return intact - max(perturbed, 0.5)
