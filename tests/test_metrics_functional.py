"""Known-answer tests for xaibench.metrics.functional and the Otsu/IoU kernels of binarize."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from skimage.filters import threshold_otsu
from sklearn.metrics import roc_auc_score

from xaibench.errors import XaibenchError
from xaibench.metrics.binarize import otsu_binarize, region_iou
from xaibench.metrics.functional import (
    ConfusionCounts,
    binary_auc,
    confusion_counts,
    delta_auc,
    macro_ovr_auc,
    youden_threshold,
)

# ---------------------------------------------------------------------------------------------
# binary_auc
# ---------------------------------------------------------------------------------------------


def test_binary_auc_hand_computed_with_tie() -> None:
    # positives: 0.9, 0.4, 0.7    negatives: 0.4, 0.2, 0.6    -> 3 x 3 = 9 pairs
    #   0.9 vs 0.4 / 0.2 / 0.6: win, win, win        = 3
    #   0.4 vs 0.4 / 0.2 / 0.6: tie (1/2), win, loss = 1.5
    #   0.7 vs 0.4 / 0.2 / 0.6: win, win, win        = 3
    # AUC = 7.5 / 9 = 5 / 6
    y = [1, 1, 0, 1, 0, 0]
    s = [0.9, 0.4, 0.4, 0.7, 0.2, 0.6]
    assert binary_auc(y, s) == pytest.approx(5 / 6, abs=1e-15)
    assert binary_auc(np.array(y, dtype=bool), np.array(s, dtype=np.float32)) == pytest.approx(
        5 / 6, abs=1e-15
    )


def test_binary_auc_extremes() -> None:
    assert binary_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert binary_auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0
    assert binary_auc([1, 0, 1, 0], [0.5, 0.5, 0.5, 0.5]) == 0.5


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_binary_auc_matches_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    # Few distinct values: many ties, within and across classes.
    scores = np.round(rng.normal(y * 0.7, 1.0), 1)
    assert binary_auc(y, scores) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    assert binary_auc(torch.from_numpy(y), torch.from_numpy(scores)) == pytest.approx(
        roc_auc_score(y, scores), abs=1e-12
    )


def test_binary_auc_errors() -> None:
    with pytest.raises(XaibenchError, match="same length; got 3 labels and 2 scores"):
        binary_auc([0, 1, 1], [0.1, 0.2])
    with pytest.raises(XaibenchError, match="empty"):
        binary_auc([], [])
    with pytest.raises(XaibenchError, match="1 NaN and 0 infinite"):
        binary_auc([0, 1, 1], [0.1, float("nan"), 0.3])
    with pytest.raises(XaibenchError, match="0 NaN and 1 infinite"):
        binary_auc([0, 1, 1], [0.1, float("inf"), 0.3])
    with pytest.raises(
        XaibenchError,
        match="AUC needs both positives and negatives; got 12 positives and 0 negatives",
    ):
        binary_auc([1] * 12, np.linspace(0, 1, 12))
    with pytest.raises(XaibenchError, match="got 0 positives and 3 negatives"):
        binary_auc([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(XaibenchError, match=r"only 0 and 1.*found 2"):
        binary_auc([0, 1, 2], [0.1, 0.2, 0.3])
    with pytest.raises(XaibenchError, match="1-D"):
        binary_auc([[0, 1]], [[0.1, 0.2]])


# ---------------------------------------------------------------------------------------------
# youden_threshold and confusion_counts
# ---------------------------------------------------------------------------------------------


def test_youden_hand_computed() -> None:
    # 4 positives (P), 3 negatives (N); predicted positive when score >= t.
    #   t     tp fp   J = tp/4 - fp/3
    #   0.8   1  0    0.25
    #   0.7   2  0    0.5
    #   0.6   3  0    0.75   <- maximum
    #   0.5   3  1    0.4167
    #   0.4   4  1    0.6667
    #   0.3   4  2    0.3333
    #   0.2   4  3    0
    y = [0, 0, 1, 0, 1, 1, 1]
    s = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    assert youden_threshold(y, s) == 0.6


def test_youden_tie_takes_highest_threshold_exactly() -> None:
    # 3 positives, 3 negatives.
    #   t     tp fp   J
    #   0.9   1  0    1/3
    #   0.7   2  0    2/3   <- tie, highest threshold: chosen
    #   0.6   2  1    1/3
    #   0.35  3  1    2/3   <- tie (in floats 1 - 1/3 > 2/3 - 0, so naive float argmax picks this)
    #   0.3   3  2    1/3
    #   0.1   3  3    0
    y = [0, 0, 1, 0, 1, 1]
    s = [0.1, 0.3, 0.35, 0.6, 0.7, 0.9]
    assert 1.0 - 1.0 / 3.0 != 2.0 / 3.0  # the float trap the exact comparison avoids
    assert youden_threshold(y, s) == 0.7


def test_youden_perfect_separation_and_errors() -> None:
    assert youden_threshold([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 0.8
    with pytest.raises(XaibenchError, match="both positives and negatives; got 0 positives"):
        youden_threshold([0, 0], [0.1, 0.2])


def test_confusion_counts_hand_computed() -> None:
    y = [0, 0, 1, 0, 1, 1, 1]
    s = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    # score >= 0.6 -> predicted positive: 0.6, 0.7, 0.8 (all positives); 0.4 is a missed positive.
    counts = confusion_counts(y, s, 0.6)
    assert counts == ConfusionCounts(tp=3, fp=0, tn=3, fn=1)
    assert counts.accuracy == pytest.approx(6 / 7)
    assert counts.sensitivity == pytest.approx(3 / 4)
    assert counts.specificity == 1.0
    # The threshold itself counts as positive.
    assert confusion_counts(y, s, 0.5) == ConfusionCounts(tp=3, fp=1, tn=2, fn=1)


def test_confusion_counts_undefined_rates() -> None:
    only_neg = confusion_counts([0, 0, 0], [0.1, 0.5, 0.9], 0.5)
    assert only_neg == ConfusionCounts(tp=0, fp=2, tn=1, fn=0)
    assert only_neg.specificity == pytest.approx(1 / 3)
    with pytest.raises(XaibenchError, match="sensitivity is undefined: no positive samples"):
        _ = only_neg.sensitivity
    only_pos = ConfusionCounts(tp=2, fp=0, tn=0, fn=1)
    with pytest.raises(XaibenchError, match="specificity is undefined: no negative samples"):
        _ = only_pos.specificity
    with pytest.raises(XaibenchError, match="accuracy is undefined: no samples"):
        _ = ConfusionCounts(0, 0, 0, 0).accuracy
    with pytest.raises(XaibenchError, match="tp must be non-negative"):
        ConfusionCounts(tp=-1, fp=0, tn=0, fn=0)
    with pytest.raises(XaibenchError, match="threshold must not be NaN"):
        confusion_counts([0, 1], [0.1, 0.2], float("nan"))


# ---------------------------------------------------------------------------------------------
# macro_ovr_auc
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "n_classes"), [(0, 3), (1, 4), (2, 5), (3, 7)])
def test_macro_ovr_auc_matches_sklearn(seed: int, n_classes: int) -> None:
    rng = np.random.default_rng(seed)
    n = 150
    labels = rng.integers(0, n_classes, n)
    labels[:n_classes] = np.arange(n_classes)
    # Small integer weights give rows summing to one (as sklearn requires) with many ties.
    weights = rng.integers(0, 4, (n, n_classes)) + 1
    weights[np.arange(n), labels] += rng.integers(0, 3, n)
    probs = weights / weights.sum(axis=1, keepdims=True)
    expected = roc_auc_score(labels, probs, multi_class="ovr", average="macro")
    assert macro_ovr_auc(labels, probs) == pytest.approx(expected, abs=1e-12)


def test_macro_ovr_auc_hand_computed() -> None:
    labels = [0, 1, 2, 0]
    probs = np.array(
        [
            [0.8, 0.1, 0.1],
            [0.2, 0.7, 0.1],
            [0.3, 0.3, 0.4],
            [0.5, 0.4, 0.1],
        ]
    )
    # class 0: positives 0.8, 0.5 vs negatives 0.2, 0.3 -> 4/4 = 1
    # class 1: positive 0.7 vs 0.1, 0.3, 0.4 -> 1
    # class 2: positive 0.4 vs 0.1, 0.1, 0.1 -> 1
    assert macro_ovr_auc(labels, probs) == 1.0
    # Swap class 2's column with something that ranks its positive below one negative:
    probs[3, 2] = 0.9  # 0.4 vs 0.1, 0.1, 0.9 -> 2/3
    assert macro_ovr_auc(labels, probs) == pytest.approx((1 + 1 + 2 / 3) / 3)


def test_macro_ovr_auc_errors() -> None:
    probs = np.full((4, 3), 1 / 3)
    with pytest.raises(XaibenchError, match=r"class 1 has no samples"):
        macro_ovr_auc([0, 2, 2, 0], probs)
    with pytest.raises(XaibenchError, match=r"shape \[N, C\]; got shape \(4,\)"):
        macro_ovr_auc([0, 1, 2, 0], np.ones(4))
    with pytest.raises(XaibenchError, match=r"one row per label; got probs of shape \(4, 3\)"):
        macro_ovr_auc([0, 1, 2], probs)
    with pytest.raises(XaibenchError, match=r"class indices in 0\.\.2.*found 3"):
        macro_ovr_auc([0, 1, 2, 3], probs)
    with pytest.raises(XaibenchError, match="integer class indices"):
        macro_ovr_auc([0.0, 1.0, 2.0, 0.0], probs)
    with pytest.raises(XaibenchError, match="at least 2 classes"):
        macro_ovr_auc([0, 0], np.ones((2, 1)))


# ---------------------------------------------------------------------------------------------
# otsu_binarize
# ---------------------------------------------------------------------------------------------


def _to_uint8(single_map: np.ndarray) -> np.ndarray:
    """Independent reference of the CheXlocalize 8-bit conversion (float64, truncation)."""
    m = single_map.astype(np.float64)
    return np.uint8(255 * ((m - m.min()) / (m.max() - m.min())))


def _exact_otsu_variances(img8: np.ndarray) -> list[Fraction]:
    """Between-class variance w0 w1 (mu0 - mu1)^2 for t = 0..254, in exact arithmetic."""
    hist = np.bincount(img8.ravel(), minlength=256).tolist()
    out = []
    w0 = s0 = 0
    n_total = sum(hist)
    s_total = sum(i * h for i, h in enumerate(hist))
    for t in range(255):
        w0 += hist[t]
        s0 += t * hist[t]
        w1, s1 = n_total - w0, s_total - s0
        if w0 == 0 or w1 == 0:
            out.append(Fraction(0))
            continue
        out.append(w0 * w1 * (Fraction(s0, w0) - Fraction(s1, w1)) ** 2)
    return out


def _random_maps(rng: np.random.Generator, kind: str, n: int, h: int, w: int) -> np.ndarray:
    if kind == "uniform":
        return rng.random((n, h, w))
    if kind == "smooth":  # peaked histograms with long sparse tails: many empty bins
        return np.stack([gaussian_filter(rng.standard_normal((h, w)), 3.0) for _ in range(n)])
    if kind == "bimodal":
        maps = rng.normal(0.0, 1.0, (n, h, w))
        share = rng.uniform(0.1, 0.6, (n, 1, 1))
        shift = rng.uniform(2.0, 8.0, (n, 1, 1))
        return maps + shift * (rng.random((n, h, w)) < share)
    if kind == "few_levels":
        return rng.integers(0, 4, (n, h, w)).astype(np.float64)
    if kind == "heavy_tailed_f32":
        return (rng.standard_normal((n, h, w)) ** 3).astype(np.float32)
    raise AssertionError(kind)


_KINDS = ["uniform", "smooth", "bimodal", "few_levels", "heavy_tailed_f32"]


@pytest.mark.parametrize("kind", _KINDS)
def test_otsu_matches_skimage(kind: str) -> None:
    rng = np.random.default_rng(_KINDS.index(kind))
    maps = _random_maps(rng, kind, 48, 37, 45)
    binary = otsu_binarize(torch.from_numpy(maps))
    assert binary.dtype == torch.bool
    assert binary.shape == maps.shape
    empty_bins = 0
    for i in range(maps.shape[0]):
        img8 = _to_uint8(maps[i])
        empty_bins += int((np.bincount(img8.ravel(), minlength=256) == 0).sum())
        expected = img8 > threshold_otsu(img8)
        np.testing.assert_array_equal(binary[i].numpy(), expected, err_msg=f"{kind} map {i}")
    if kind == "smooth":
        assert empty_bins > 0  # the case where Otsu's variance has plateaus


def test_otsu_is_first_exact_maximum() -> None:
    # Tiny maps make exact ties between non-empty splits likely; check against exact fractions.
    rng = np.random.default_rng(11)
    maps = rng.random((300, 3, 3))
    binary = otsu_binarize(torch.from_numpy(maps))
    for i in range(maps.shape[0]):
        img8 = _to_uint8(maps[i])
        variances = _exact_otsu_variances(img8)
        t = variances.index(max(variances))
        np.testing.assert_array_equal(binary[i].numpy(), img8 > t)


def test_otsu_tie_takes_first_maximum() -> None:
    # Levels 0..255 survive the 8-bit conversion unchanged when the map spans exactly 0..255.
    # Splits after 119 (4 | 5 pixels) and after 145 (5 | 4 pixels) have exactly equal
    # between-class variance: D = N s0 - S w0 = -2853 for both, and w0 w1 = 20 for both.
    levels = [0, 54, 90, 119, 145, 188, 204, 250, 255]
    variances = _exact_otsu_variances(np.array(levels, dtype=np.uint8))
    assert variances[119] == variances[145] == max(variances)
    binary = otsu_binarize(torch.tensor(levels, dtype=torch.float64).reshape(1, 3, 3))
    assert binary.flatten().tolist() == [v > 119 for v in levels]
    assert threshold_otsu(np.array(levels, dtype=np.uint8)) == 119


@pytest.mark.parametrize("kind", _KINDS)
def test_otsu_matches_opencv_except_exact_ties(kind: str) -> None:
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(100 + _KINDS.index(kind))
    maps = _random_maps(rng, kind, 32, 29, 31)
    binary = otsu_binarize(torch.from_numpy(maps))
    for i in range(maps.shape[0]):
        img8 = _to_uint8(maps[i])
        t_cv, _ = cv2.threshold(img8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        expected = img8 > t_cv
        if not np.array_equal(binary[i].numpy(), expected):
            # OpenCV accumulates the class means incrementally and can pick a later split
            # among exactly tied ones; anything else would be a real disagreement.
            variances = _exact_otsu_variances(img8)
            assert variances[int(t_cv)] == max(variances), f"{kind} map {i}"


def test_otsu_obvious_bimodal_map() -> None:
    rng = np.random.default_rng(5)
    maps = np.full((1, 8, 8), 0.1) + rng.uniform(0, 0.05, (1, 8, 8))
    maps[0, 2:6, 3:7] = 0.9 + rng.uniform(0, 0.05, (4, 4))
    expected = np.zeros((1, 8, 8), dtype=bool)
    expected[0, 2:6, 3:7] = True
    np.testing.assert_array_equal(otsu_binarize(torch.from_numpy(maps)).numpy(), expected)
    # float32 input, batched with a constant map, gives the same region.
    batch = torch.stack([torch.from_numpy(maps[0]).float(), torch.full((8, 8), 3.0)])
    out = otsu_binarize(batch)
    np.testing.assert_array_equal(out[0].numpy(), expected[0])
    assert not out[1].any()


def test_otsu_constant_and_invalid_maps() -> None:
    assert not otsu_binarize(torch.full((2, 5, 5), 0.7)).any()
    assert otsu_binarize(torch.zeros(0, 4, 4)).shape == (0, 4, 4)
    bad = torch.rand(3, 4, 4)
    bad[1, 2, 2] = float("nan")
    with pytest.raises(
        XaibenchError, match=r"NaN or infinite values in 1 map\(s\) at batch index \[1\]"
    ):
        otsu_binarize(bad)
    with pytest.raises(XaibenchError, match=r"shape \[B, H, W\]; got shape \(4, 4\)"):
        otsu_binarize(torch.rand(4, 4))


@pytest.mark.parametrize("bad", [float("inf"), float("-inf")])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_otsu_rejects_infinities(bad: float, dtype: torch.dtype) -> None:
    # The finiteness check looks at each map's extremes only; an infinity is always one.
    maps = torch.rand(12, 5, 5).to(dtype)
    maps[3, 4, 4] = bad
    maps[10, 0, 1] = float("nan")
    with pytest.raises(XaibenchError, match=r"in 2 map\(s\) at batch index \[3, 10\]"):
        otsu_binarize(maps)


# ---------------------------------------------------------------------------------------------
# region_iou
# ---------------------------------------------------------------------------------------------


def test_region_iou_hand_made() -> None:
    pred = torch.zeros(4, 4, 4, dtype=torch.bool)
    mask = torch.zeros(4, 4, 4, dtype=torch.bool)
    # image 0: pred rows 0-1 x cols 0-1, mask rows 0-1 x cols 1-2: overlap 2, union 4 + 4 - 2 = 6
    pred[0, 0:2, 0:2] = True
    mask[0, 0:2, 1:3] = True
    # image 1: identical regions -> 1
    pred[1, 1:3, 1:3] = True
    mask[1, 1:3, 1:3] = True
    # image 2: empty mask -> NaN (undefined), whatever the prediction
    pred[2, 0, 0] = True
    # image 3: empty prediction, non-empty mask -> 0
    mask[3, 3, 3] = True
    iou = region_iou(pred, mask)
    assert iou.dtype == torch.float64
    assert iou[0].item() == pytest.approx(2 / 6)
    assert iou[1].item() == 1.0
    assert math.isnan(iou[2].item())
    assert iou[3].item() == 0.0


def test_region_iou_errors() -> None:
    a = torch.zeros(2, 4, 4, dtype=torch.bool)
    with pytest.raises(XaibenchError, match=r"pred \(2, 4, 4\) and mask \(2, 4, 5\)"):
        region_iou(a, torch.zeros(2, 4, 5, dtype=torch.bool))
    with pytest.raises(XaibenchError, match="mask must be a bool tensor"):
        region_iou(a, torch.zeros(2, 4, 4))


# ---------------------------------------------------------------------------------------------
# delta_auc
# ---------------------------------------------------------------------------------------------


def test_delta_auc() -> None:
    assert delta_auc(0.9, 0.7) == pytest.approx(0.2)
    assert delta_auc(0.9, 0.4) == pytest.approx(0.4)  # floored at chance: 0.9 - 0.5
    assert delta_auc(0.9, 0.5) == pytest.approx(0.4)
    assert delta_auc(0.7, 0.8) == pytest.approx(-0.1)  # perturbing helped
    with pytest.raises(XaibenchError, match=r"auc_perturbed must be an AUC in \[0, 1\]; got nan"):
        delta_auc(0.9, float("nan"))
    with pytest.raises(XaibenchError, match="auc_intact"):
        delta_auc(1.2, 0.5)
