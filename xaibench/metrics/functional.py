"""Pure metric functions: classification skill, localisation overlap and region reliance.

xaibench scores a model twice, once for *what* it predicts and once for *where* its
explanations point, so this module gathers the small numerical kernels both halves share:

* :func:`binary_auc`, :func:`macro_ovr_auc`, :func:`youden_threshold` and
  :func:`confusion_counts` measure prediction quality. AUC is computed from ranks (the
  Mann-Whitney U statistic) rather than by integrating a curve, because the rank form is exact,
  handles tied scores by giving each pair half credit, and makes the "needs both classes"
  requirement explicit instead of returning NaN.
* :func:`otsu_binarize` and :func:`region_iou` turn saliency maps into regions and compare them
  with annotated masks, following the CheXlocalize protocol (min-max normalise, 8-bit, Otsu) so
  that numbers are comparable with the published localisation literature.
* :func:`delta_auc` summarises how much a model relies on a region: the AUC it loses when that
  region is perturbed.

Every function validates its input and raises :class:`~xaibench.errors.XaibenchError` with a
message that says what is wrong, because a silently NaN or meaningless metric in a benchmark
table is worse than a run that stops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from scipy.stats import rankdata
from sklearn.metrics import roc_curve

from xaibench.errors import XaibenchError

__all__ = [
    "ConfusionCounts",
    "binary_auc",
    "confusion_counts",
    "delta_auc",
    "macro_ovr_auc",
    "otsu_binarize",
    "region_iou",
    "youden_threshold",
]

_LEVELS = 256
"""Number of grey levels of the 8-bit images Otsu's method is run on (as in CheXlocalize)."""


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
# Localisation metrics
# --------------------------------------------------------------------------------------------


def _minmax_uint8(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-max normalise each map to [0, 1] and truncate to 8-bit levels.

    The normalisation runs in float64 so that the 8-bit levels equal what NumPy computes for
    ``np.uint8(255 * (m - m.min()) / (m.max() - m.min()))`` in float64, whatever the input
    precision; truncation (not rounding) is what NumPy's cast of a non-negative float does.

    Returns:
        ``(levels, constant)``: int64 levels in 0..255 of shape [B, H, W] (all 0 for constant
        maps) and a bool [B] flag marking constant maps.
    """
    flat = maps.reshape(maps.shape[0], -1).to(torch.float64, copy=True)
    low = flat.amin(dim=1, keepdim=True)
    high = flat.amax(dim=1, keepdim=True)
    span = high - low
    constant = (span == 0).squeeze(1)
    safe_span = torch.where(span == 0, torch.ones_like(span), span)
    # In place on the one float64 copy: ((x - low) / span) * 255, the same operations in the same
    # order as the NumPy reference, without four more batch-sized temporaries (7x faster).
    flat.sub_(low).div_(safe_span).mul_(255.0).floor_()
    levels = flat.to(torch.int64).clamp_(0, _LEVELS - 1)
    return levels.reshape(maps.shape), constant


def _otsu_levels(levels: torch.Tensor) -> torch.Tensor:
    """Otsu threshold of each image of 8-bit levels, fully vectorised over the batch.

    Builds all B histograms with one ``bincount`` on offset indices (image ``b`` uses bins
    ``256 b .. 256 b + 255``). For a threshold t (class 0 = levels <= t) with counts w0, w1 and
    level sums s0, s1, the between-class variance ``w0 w1 (mu0 - mu1)^2`` equals
    ``D^2 / (w0 w1)`` with ``D = N s0 - S w0`` (N, S: totals). D is an exact integer, so equal
    variances (e.g. of mirror-symmetric histograms) compare equal and the first maximum is
    well defined; evaluating ``(mu0 - mu1)`` with rounded means could break such ties at random.

    Args:
        levels: int64 [B, H, W] in 0..255, each image using both 0 and 255 (as after min-max
            normalisation), so that both classes are non-empty for every t in 0..254.

    Returns:
        int64 [B] thresholds in 0..254 (the first maximiser of the between-class variance).
    """
    batch = levels.shape[0]
    offsets = torch.arange(batch, dtype=torch.int64).mul_(_LEVELS).view(batch, 1)
    flat = levels.reshape(batch, -1) + offsets
    hist = torch.bincount(flat.reshape(-1), minlength=batch * _LEVELS).view(batch, _LEVELS)
    grey = torch.arange(_LEVELS, dtype=torch.int64)
    w0 = hist.cumsum(dim=1)[:, :-1]
    s0 = (hist * grey).cumsum(dim=1)[:, :-1]
    n_total = hist.sum(dim=1, keepdim=True)
    s_total = (hist * grey).sum(dim=1, keepdim=True)
    w1 = n_total - w0
    diff = (n_total * s0 - s_total * w0).to(torch.float64)
    denominator = (w0 * w1).to(torch.float64)
    # Constant maps reach here with all mass in bin 0, so w1 == 0; give them variance 0.
    variance = torch.where(denominator > 0, diff * diff / denominator.clamp(min=1.0), 0.0)
    return torch.argmax(variance, dim=1)


def otsu_binarize(maps: torch.Tensor) -> torch.Tensor:
    """Binarise saliency maps with Otsu's threshold, following CheXlocalize.

    Saliency maps have arbitrary scale, so a fixed cut-off is meaningless; Otsu's method picks,
    per map, the grey level that best separates it into two classes (maximum between-class
    variance). To stay comparable with CheXlocalize numbers, each map is first min-max
    normalised to [0, 1] and truncated to 8 bits (``floor(255 x)``), and the threshold t is the
    first maximiser over t in 0..254 with class 0 = levels <= t; the region is ``level > t``.

    Fully vectorised: one histogram pass for the whole batch, no Python loop over maps.

    Args:
        maps: Float tensor [B, H, W] (any real dtype and device; computed on CPU in float64).

    Returns:
        Bool tensor [B, H, W] on the input's device. A constant map (max == min) has no
        structure to segment and gives all False.

    Raises:
        XaibenchError: If ``maps`` is not a 3-D real tensor or a map contains NaN or infinity
            (the message lists the offending map indices).
    """
    if not isinstance(maps, torch.Tensor):
        raise XaibenchError(f"maps must be a torch.Tensor; got {type(maps).__name__}")
    if maps.ndim != 3:
        raise XaibenchError(f"maps must have shape [B, H, W]; got shape {tuple(maps.shape)}")
    if maps.dtype == torch.bool or maps.is_complex():
        raise XaibenchError(f"maps must be real-valued; got dtype {maps.dtype}")
    device = maps.device
    if maps.numel() == 0:
        return torch.zeros(maps.shape, dtype=torch.bool, device=device)
    values = maps.detach().to("cpu")
    finite = torch.isfinite(values.reshape(values.shape[0], -1)).all(dim=1)
    if not bool(finite.all()):
        bad = torch.nonzero(~finite).flatten().tolist()
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise XaibenchError(
            f"maps must be finite; NaN or infinite values in {len(bad)} map(s) at batch "
            f"index {bad[:10]}{more}, which cannot be min-max normalised"
        )
    levels, constant = _minmax_uint8(values)
    thresholds = _otsu_levels(levels)
    binary = levels > thresholds.view(-1, 1, 1)
    binary &= ~constant.view(-1, 1, 1)
    return binary.to(device)


def region_iou(pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Intersection over union of predicted regions and annotated masks, per image.

    An image whose mask is empty has no region to localise, so its IoU is NaN (undefined)
    rather than 0 or 1; callers exclude such images and report how many were excluded. An
    empty prediction against a non-empty mask is a genuine miss and scores 0.

    Args:
        pred: Bool tensor [B, H, W], the predicted regions (e.g. from :func:`otsu_binarize`).
        mask: Bool tensor [B, H, W], the ground-truth regions; same shape as ``pred``.

    Returns:
        Float64 tensor [B] on ``pred``'s device: ``|pred & mask| / |pred | mask|``, NaN where
        ``mask`` is empty.

    Raises:
        XaibenchError: If either input is not a bool tensor, is not 3-D, or the shapes differ
            (the message gives both shapes).
    """
    for name, tensor in (("pred", pred), ("mask", mask)):
        if not isinstance(tensor, torch.Tensor):
            raise XaibenchError(f"{name} must be a torch.Tensor; got {type(tensor).__name__}")
        if tensor.dtype != torch.bool:
            raise XaibenchError(f"{name} must be a bool tensor; got dtype {tensor.dtype}")
    if pred.shape != mask.shape:
        raise XaibenchError(
            f"pred and mask must have the same shape; got pred {tuple(pred.shape)} and "
            f"mask {tuple(mask.shape)}"
        )
    if pred.ndim != 3:
        raise XaibenchError(f"pred and mask must have shape [B, H, W]; got {tuple(pred.shape)}")
    mask = mask.to(pred.device)
    intersection = (pred & mask).sum(dim=(1, 2)).to(torch.float64)
    union = (pred | mask).sum(dim=(1, 2)).to(torch.float64)
    mask_area = mask.sum(dim=(1, 2))
    iou = intersection / union.clamp(min=1.0)
    return torch.where(mask_area > 0, iou, torch.full_like(iou, float("nan")))


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
