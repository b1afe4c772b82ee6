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
  that numbers are comparable with the published localisation literature;
  :func:`topk_binarize` and :func:`threshold_binarize` are the fixed-size and fixed-level
  alternatives.
* :func:`pointing_game`, :func:`relevance_mass`, :func:`relevance_rank`, :func:`pixel_auc` and
  :func:`energy_ratio` score a map against a mask without binarising it, and
  :func:`align_mask` brings masks to the maps' size when a caller accepts a resize.
* :func:`delta_auc` summarises how much a model relies on a region: the AUC it loses when that
  region is perturbed.

Every function validates its input and raises :class:`~xaibench.errors.XaibenchError` with a
message that says what is wrong, because a silently NaN or meaningless metric in a benchmark
table is worse than a run that stops. The per-image localisation scores use NaN only for what
the contract of :class:`~xaibench.metrics.base.SaliencyRegionMetric` allows: an image where the
score is undefined (e.g. its region is empty), which the aggregate excludes and counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from sklearn.metrics import roc_curve

from xaibench.errors import XaibenchError

__all__ = [
    "ConfusionCounts",
    "PointingTies",
    "align_mask",
    "binary_auc",
    "confusion_counts",
    "delta_auc",
    "energy_ratio",
    "macro_ovr_auc",
    "otsu_binarize",
    "pixel_auc",
    "pointing_game",
    "region_iou",
    "relevance_mass",
    "relevance_rank",
    "threshold_binarize",
    "topk_binarize",
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
# Localisation metrics
# --------------------------------------------------------------------------------------------


def _valid_flat_maps(maps: Any, *, consequence: str) -> np.ndarray:
    """Check that ``maps`` is a finite real [B, H, W] tensor; return it as a [B, N] CPU array.

    A NaN or infinite saliency value usually comes from a numerical failure in the explanation
    method (e.g. a division by a zero gradient norm). Every localisation metric would turn it
    into a silently wrong number, so it is an error whose message lists the offending maps; the
    caller adds the method's name.

    The array shares memory with CPU float32 and float64 tensors. Half precision is widened to
    float32 and integers to float64, both exactly, because NumPy has no bfloat16; comparisons
    and sorts are then exact, and callers accumulate sums in float64.

    Args:
        maps: The candidate saliency maps.
        consequence: End of the message, saying why such a map cannot be scored.

    Raises:
        XaibenchError: If ``maps`` is not a 3-D real tensor or holds NaN or infinity.
    """
    if not isinstance(maps, torch.Tensor):
        raise XaibenchError(f"maps must be a torch.Tensor; got {type(maps).__name__}")
    if maps.ndim != 3:
        raise XaibenchError(f"maps must have shape [B, H, W]; got shape {tuple(maps.shape)}")
    if maps.dtype == torch.bool or maps.is_complex():
        raise XaibenchError(f"maps must be real-valued; got dtype {maps.dtype}")
    values = maps.detach().cpu()
    if values.dtype in (torch.float16, torch.bfloat16):
        values = values.float()
    elif not values.is_floating_point():
        values = values.double()
    batch, height, width = values.shape
    flat: np.ndarray = values.reshape(batch, height * width).numpy()
    if flat.size == 0:
        return flat
    # Max and min propagate NaN and an infinity is an extreme, so checking the two extremes
    # of each map checks every value, several times faster than isfinite over the batch.
    finite = np.isfinite(flat.max(axis=1)) & np.isfinite(flat.min(axis=1))
    if not finite.all():
        bad = np.flatnonzero(~finite).tolist()
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise XaibenchError(
            f"maps must be finite; NaN or infinite values in {len(bad)} map(s) at batch "
            f"index {bad[:10]}{more}, {consequence}"
        )
    return flat


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
    flat = _valid_flat_maps(maps, consequence="which cannot be min-max normalised")
    device = maps.device
    if maps.numel() == 0:
        return torch.zeros(maps.shape, dtype=torch.bool, device=device)
    levels, constant = _minmax_uint8(torch.from_numpy(flat).reshape(maps.shape))
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
# Saliency maps against region masks (localisation)
# --------------------------------------------------------------------------------------------
#
# Every kernel below takes maps [B, H, W] and bool masks [B, H, W] of the same shape and returns
# float64 [B] on the maps' device, NaN where the score is undefined for that image (an empty
# region, always; other cases are listed per function). Maps are never normalised or made
# absolute here: each definition says which part of the attribution it uses, so that a map's
# sign convention cannot change a score behind the caller's back.
#
# Inputs and outputs are tensors, but the work is done on CPU (where the runner keeps saliency
# maps) with NumPy: its SIMD sort is 10-40x faster than torch.sort on CPU for saliency-sized
# rows, and its row reductions (counts, float64 sums of float32) 3-10x faster than torch's.
# Moving to CPU is free for CPU tensors (NumPy shares their memory).

PointingTies = Literal["fraction", "any"]
"""How :func:`pointing_game` scores a map whose maximum is reached at several pixels."""


def _region_inputs(maps: Any, masks: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (maps, masks) pair and flatten both to [B, N] NumPy arrays.

    Raises:
        XaibenchError: If the maps are not a finite real [B, H, W] tensor, or the masks are not
            a bool tensor of exactly the maps' shape (resize them with :func:`align_mask`).
    """
    values = _valid_flat_maps(
        maps, consequence="so no localisation score can be computed from them"
    )
    if not isinstance(masks, torch.Tensor):
        raise XaibenchError(f"masks must be a torch.Tensor; got {type(masks).__name__}")
    if masks.dtype != torch.bool:
        raise XaibenchError(f"masks must be a bool tensor; got dtype {masks.dtype}")
    if masks.shape != maps.shape:
        raise XaibenchError(
            f"maps and masks must have the same shape; got maps {tuple(maps.shape)} and masks "
            f"{tuple(masks.shape)} (resize the masks with align_mask and record that you did)"
        )
    batch, height, width = masks.shape
    region: np.ndarray = masks.detach().cpu().reshape(batch, height * width).numpy()
    return values, region


def _count(flags: np.ndarray) -> np.ndarray:
    """Number of True values per row, as float64 (exact: counts stay far below 2**53).

    Float64 so that every ratio of counts is computed in float64 without further casts.
    """
    return np.count_nonzero(flags, axis=1).astype(np.float64)


def _scores(scores: np.ndarray, undefined: np.ndarray, device: torch.device) -> torch.Tensor:
    """``scores`` as a float64 tensor on ``device``, NaN where ``undefined`` is True."""
    result = np.where(undefined, np.nan, scores).astype(np.float64)
    return torch.from_numpy(result).to(device)


def _all_undefined(batch: int, device: torch.device) -> torch.Tensor:
    """A [B] float64 tensor of NaN, for batches whose maps have no pixels."""
    return torch.full((batch,), float("nan"), dtype=torch.float64, device=device)


def align_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize bool region masks to the saliency maps' size with nearest-neighbour sampling.

    Region masks come at the image's resolution while some explanation methods return maps at
    another one; the metrics require equal shapes instead of resizing silently, because a
    resize changes what is measured. Nearest-neighbour (PyTorch's ``nearest-exact``, which
    samples at pixel centres and so does not shift the mask by half a pixel) keeps the mask
    binary and never invents a region where there was none. Whoever calls this decides that
    the resize is acceptable and must record it with the results (e.g. in the record's
    details), since scores on resized masks are not comparable with scores at full size.

    Args:
        mask: Bool tensor [B, h, w].
        size: Target ``(H, W)``, both positive.

    Returns:
        Bool tensor [B, H, W] on the mask's device; ``mask`` itself when it already has that
        size.

    Raises:
        XaibenchError: If ``mask`` is not a 3-D bool tensor or ``size`` is not two positive
            integers.
    """
    if not isinstance(mask, torch.Tensor):
        raise XaibenchError(f"mask must be a torch.Tensor; got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise XaibenchError(f"mask must be a bool tensor; got dtype {mask.dtype}")
    if mask.ndim != 3:
        raise XaibenchError(f"mask must have shape [B, h, w]; got shape {tuple(mask.shape)}")
    target = tuple(size)
    if len(target) != 2 or not all(
        isinstance(n, int | np.integer) and not isinstance(n, bool) and n > 0 for n in target
    ):
        raise XaibenchError(f"size must be two positive integers (H, W); got {size!r}")
    height, width = int(target[0]), int(target[1])
    if tuple(mask.shape[1:]) == (height, width):
        return mask
    if mask.numel() == 0:
        return torch.zeros((mask.shape[0], height, width), dtype=torch.bool, device=mask.device)
    resized = F.interpolate(
        mask.unsqueeze(1).to(torch.uint8), size=(height, width), mode="nearest-exact"
    )
    return resized.squeeze(1).bool()


def topk_binarize(maps: torch.Tensor, percent: float = 10.0) -> torch.Tensor:
    """Keep the top ``percent`` % of each map's pixels as its region.

    Unlike Otsu's method this fixes the region's size, which makes IoU comparable across
    methods whose maps have very different value distributions.

    The cut is the value of the k-th largest pixel, ``k = ceil(percent / 100 * H * W)``
    (at least 1; the product is rounded to 9 decimals first, so that 10 % of 1000 pixels is
    exactly 100 and not 101 because of binary floating point). Ties at the cut are resolved
    without looking at pixel order: **every pixel equal to the cut value is kept**, so the
    region can be larger than k, except that **pixels at the map's minimum are never kept**.
    The exception matters for rectified maps (e.g. Grad-CAM), which are often zero almost
    everywhere: with fewer than k positive pixels the cut falls on the floor, and keeping
    every zero pixel would turn "the most salient 10 %" into "the whole image". It also makes
    a constant map select nothing, as with :func:`otsu_binarize`.

    Args:
        maps: Finite real tensor [B, H, W].
        percent: Share of pixels to keep, in (0, 100].

    Returns:
        Bool tensor [B, H, W] on the maps' device.

    Raises:
        XaibenchError: If ``percent`` is outside (0, 100] or the maps are not a finite real
            [B, H, W] tensor.
    """
    share = float(percent)
    if not 0.0 < share <= 100.0:  # also rejects NaN
        raise XaibenchError(f"percent must be in (0, 100]; got {percent!r}")
    flat = _valid_flat_maps(maps, consequence="which cannot be ranked")
    batch, n_pixels = flat.shape
    if batch == 0 or n_pixels == 0:
        return torch.zeros(maps.shape, dtype=torch.bool, device=maps.device)
    k = min(n_pixels, max(1, math.ceil(round(share * n_pixels / 100.0, 9))))
    # The k-th largest value is the (n - k)-th smallest; a partition finds it in linear time.
    cut = np.partition(flat, n_pixels - k, axis=1)[:, n_pixels - k, None]
    keep = (flat >= cut) & (flat > flat.min(axis=1, keepdims=True))
    return torch.from_numpy(keep).reshape(maps.shape).to(maps.device)


def threshold_binarize(maps: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Keep the pixels whose min-max normalised value is at least ``threshold``.

    Each map is scaled to [0, 1] by its own minimum and maximum (in float64) so that one
    threshold means the same thing for maps of any scale; the region is ``normalised >=
    threshold``. A constant map cannot be normalised and selects nothing, as with
    :func:`otsu_binarize`. ``threshold`` is strictly positive, so the map's minimum is never
    selected either, matching :func:`topk_binarize`.

    Args:
        maps: Finite real tensor [B, H, W].
        threshold: Cut-off on the normalised map, in (0, 1].

    Returns:
        Bool tensor [B, H, W] on the maps' device.

    Raises:
        XaibenchError: If ``threshold`` is outside (0, 1] or the maps are not a finite real
            [B, H, W] tensor.
    """
    cut = float(threshold)
    if not 0.0 < cut <= 1.0:  # also rejects NaN
        raise XaibenchError(f"threshold must be in (0, 1]; got {threshold!r}")
    flat = _valid_flat_maps(maps, consequence="which cannot be min-max normalised")
    if flat.size == 0:
        return torch.zeros(maps.shape, dtype=torch.bool, device=maps.device)
    flat = flat.astype(np.float64)
    low = flat.min(axis=1, keepdims=True)
    span = flat.max(axis=1, keepdims=True) - low
    constant = span == 0
    normalised = (flat - low) / np.where(constant, 1.0, span)
    keep = (normalised >= cut) & ~constant
    return torch.from_numpy(keep).reshape(maps.shape).to(maps.device)


def pointing_game(
    maps: torch.Tensor, masks: torch.Tensor, ties: PointingTies = "fraction"
) -> torch.Tensor:
    """Whether each map's most salient pixel lies inside the region (Zhang et al.).

    The score asks only "does the explanation point at the right place", which is robust to
    how the rest of the map is scaled. When the maximum is reached at several pixels (a
    plateau, e.g. a coarse map upsampled with nearest-neighbour, or a constant map), "the"
    argmax is not defined, and ``ties`` says what is scored:

    * ``"fraction"`` (default): the share of the tied maxima that lie in the region, i.e. the
      expected hit when one of them is picked at random. It equals the plain hit (0 or 1)
      whenever the maximum is unique, does not reward coarse maps for having large plateaus,
      and gives a constant map the chance level ``|region| / (H W)`` instead of a free hit.
    * ``"any"``: a hit if any tied maximum lies in the region, as Quantus 0.6.0's
      ``PointingGame`` does; a constant map then scores 1 whenever the region is non-empty.

    Args:
        maps: Finite real tensor [B, H, W]; the raw values are used (no absolute value).
        masks: Bool tensor [B, H, W], the regions.
        ties: ``"fraction"`` or ``"any"``, see above.

    Returns:
        Float64 [B] in [0, 1]; NaN where the region is empty (there is nothing to point at).

    Raises:
        XaibenchError: On invalid maps or masks (see :func:`relevance_mass`) or an unknown
            ``ties``.
    """
    if ties not in ("fraction", "any"):
        raise XaibenchError(f"ties must be 'fraction' or 'any'; got {ties!r}")
    values, region = _region_inputs(maps, masks)
    batch, n_pixels = values.shape
    if n_pixels == 0:
        return _all_undefined(batch, maps.device)
    at_max = values == values.max(axis=1, keepdims=True)
    inside = _count(at_max & region)
    score = (inside > 0).astype(np.float64) if ties == "any" else inside / _count(at_max)
    return _scores(score, _count(region) == 0, maps.device)


def _positive_mass(values: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sums of positive attribution inside and outside the region, per row, in float64.

    Both are summed directly (not one as the total minus the other), so that "nothing
    outside" is an exact zero rather than a rounding residue.
    """
    positive = np.maximum(values, 0)
    inside = np.add.reduce(positive * region, axis=1, dtype=np.float64)
    outside = np.add.reduce(positive * ~region, axis=1, dtype=np.float64)
    return inside, outside


def relevance_mass(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Share of the positive attribution that falls inside the region (Arras et al., 2022).

    ``sum(max(a, 0) over the region) / sum(max(a, 0) over the image)``. Only positive
    attribution counts, as in Arras et al.: it is evidence *for* the explained class, while
    negative attribution is evidence against it and would otherwise cancel positive mass,
    letting the ratio leave [0, 1]. Sums are accumulated in float64.

    Args:
        maps: Finite real tensor [B, H, W].
        masks: Bool tensor [B, H, W], the regions, same shape as ``maps``.

    Returns:
        Float64 [B] in [0, 1]. NaN where the region is empty, or where the map has no positive
        attribution at all (all zero or all negative: there is no mass to locate). A full
        region gives 1.

    Raises:
        XaibenchError: If the maps are not a finite real [B, H, W] tensor (the message says
            which maps are non-finite), or the masks are not bool or differ in shape.
    """
    values, region = _region_inputs(maps, masks)
    inside, outside = _positive_mass(values, region)
    total = inside + outside
    score = inside / np.where(total > 0, total, 1.0)
    return _scores(score, (_count(region) == 0) | (total == 0), maps.device)


def relevance_rank(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Share of the K most salient pixels that lie inside the region, K = |region| (Arras et al.).

    Unlike :func:`relevance_mass` this uses only the order of the values, so it does not
    depend on the map's scale or on a few extreme pixels. Pixels are ranked by their raw
    value (most positive first).

    Ties at the cut: when the K-th largest value is shared by pixels on both sides of the
    cut, which of them are "in the top K" is arbitrary (Quantus 0.6.0 leaves it to
    ``np.argsort``). Here each tied pixel gets the same fractional credit, which is the
    expected score when the tie is broken uniformly at random::

        score = (inside_above + (K - n_above) * inside_tied / n_tied) / K

    with ``n_above`` the pixels strictly above the cut value, ``n_tied`` those equal to it and
    ``inside_*`` how many of them lie in the region. Without a tie at the cut this is the
    plain count; a constant map scores the chance level ``K / (H W)``.

    Args:
        maps: Finite real tensor [B, H, W].
        masks: Bool tensor [B, H, W], the regions.

    Returns:
        Float64 [B] in [0, 1]; NaN where the region is empty. A full region gives 1.

    Raises:
        XaibenchError: On invalid maps or masks (see :func:`relevance_mass`).
    """
    values, region = _region_inputs(maps, masks)
    batch, n_pixels = values.shape
    if batch == 0 or n_pixels == 0:
        return _all_undefined(batch, maps.device)
    k = _count(region)
    # The K-th largest value is the (N - K)-th smallest. K varies per map, so each row gets its
    # own selection (linear time, against a sort's N log N: several times faster at 224 px).
    position = np.minimum(n_pixels - k, n_pixels - 1).astype(np.int64)
    cut = np.array(
        [np.partition(row, p)[p] for row, p in zip(values, position, strict=True)],
        dtype=values.dtype,
    )[:, None]
    above = values > cut
    tied = values == cut
    n_above = _count(above)
    hits = _count(above & region) + (k - n_above) * _count(tied & region) / _count(tied)
    return _scores(hits / np.maximum(k, 1.0), k == 0, maps.device)


def _twice_u(values: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """``2 U`` per row: over the region pixels, outside pixels below plus those at or below.

    Each tie therefore counts one half of 2. Per row, the outside values and the region values
    are each sorted, and ``searchsorted`` counts, for every region value, the outside values
    below it (``left``) and at or below it (``right``, searched only when some region value
    equals an outside one). Sorting the queries too keeps the searches cheap (each continues
    from the previous one's place), so a row costs about one sort of its pixels. Comparisons
    of real values are exact (``-0.0 == +0.0``; NaN was refused by the caller), so the counts
    do not depend on how a sort ordered equal values, and one kernel serves every dtype. A
    loop over rows rather than one batched sort: the rows have different numbers of outside
    pixels, and per row the work is already vectorised.
    """
    result = np.zeros(values.shape[0], dtype=np.int64)
    outside_of = ~inside
    for i, row in enumerate(values):
        outside, queries = row[outside_of[i]], row[inside[i]]  # copies: sorted in place
        outside.sort()
        queries.sort()
        below = np.searchsorted(outside, queries, "left")
        result[i] = 2 * below.sum()
        # "at or below" differs from "below" only where a region value equals an outside one:
        # the second search is needed only then (never for a continuous map without ties).
        nearest = outside[np.minimum(below, outside.size - 1)] if outside.size else queries[:0]
        if queries.size and outside.size and np.any(nearest == queries):
            result[i] += (np.searchsorted(outside, queries, "right") - below).sum()
    return result


def pixel_auc(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """ROC AUC of the map as a per-pixel classifier of region membership.

    The probability that a random region pixel is more salient than a random pixel outside
    it, with ties counting one half; Quantus calls this ``AUC``. Like
    :func:`relevance_rank` it depends only on the order of the values, but over every
    threshold rather than one. It is computed as the Mann-Whitney U statistic: each region
    pixel is credited with the outside pixels strictly below its value plus half of those
    equal to it, all as exact integer counts, so the result does not depend on how a sort
    happened to order equal values. Per map it costs about one sort of its pixels.

    Args:
        maps: Finite real tensor [B, H, W]; raw values (no absolute value).
        masks: Bool tensor [B, H, W], the regions.

    Returns:
        Float64 [B] in [0, 1], 0.5 for a constant map; NaN where the region is empty or covers
        the whole image (an AUC needs pixels of both kinds).

    Raises:
        XaibenchError: On invalid maps or masks (see :func:`relevance_mass`).
    """
    values, region = _region_inputs(maps, masks)
    batch, n_pixels = values.shape
    if batch == 0 or n_pixels == 0:
        return _all_undefined(batch, maps.device)
    n_inside = _count(region)
    n_outside = n_pixels - n_inside
    twice_u = _twice_u(values, region).astype(np.float64)
    pairs = np.maximum(n_inside * n_outside, 1.0)
    return _scores(twice_u / (2.0 * pairs), (n_inside == 0) | (n_outside == 0), maps.device)


def energy_ratio(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mean positive attribution per pixel inside the region over that outside it.

    ``(sum(max(a, 0) in region) / |region|) / (sum(max(a, 0) outside) / |outside|)``. This is
    a size-normalised form of the energy-based pointing game (Wang et al., 2020): that score,
    the share of positive energy inside the region, is :func:`relevance_mass` and grows with
    the region's size even for a map that ignores it, whereas this ratio is 1 for a map that
    does not prefer the region (e.g. a constant positive map), above 1 for one concentrated
    on it and below 1 for one that avoids it. It is *not* Quantus' ``AttributionLocalisation``
    (a mass share with an optional size weight).

    Args:
        maps: Finite real tensor [B, H, W].
        masks: Bool tensor [B, H, W], the regions.

    Returns:
        Float64 [B] in [0, inf]. ``inf`` where there is positive attribution inside the region
        and none outside (perfect localisation, a legitimate value: aggregate with a median,
        not a mean). NaN where the region is empty or covers the whole image (no outside to
        compare with) or the map has no positive attribution at all (0 / 0).

    Raises:
        XaibenchError: On invalid maps or masks (see :func:`relevance_mass`).
    """
    values, region = _region_inputs(maps, masks)
    n_inside = _count(region)
    n_outside = values.shape[1] - n_inside
    inside, outside = _positive_mass(values, region)
    density_in = inside / np.maximum(n_inside, 1.0)
    density_out = outside / np.maximum(n_outside, 1.0)
    nothing_outside = density_out == 0
    ratio = np.where(
        nothing_outside, np.inf, density_in / np.where(nothing_outside, 1.0, density_out)
    )
    undefined = (n_inside == 0) | (n_outside == 0) | (inside + outside == 0)
    return _scores(ratio, undefined, maps.device)


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
