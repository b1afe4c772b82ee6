"""Known answers and edge cases for the localisation (saliency vs region) metrics.

Every expected value below is worked out by hand in a comment next to it. The agreement with
Quantus is tested separately, in test_quantus_agreement.py.
"""

from __future__ import annotations

import math
from fractions import Fraction
from itertools import pairwise

import numpy as np
import pytest
import torch

from xaibench.errors import InvalidOptionsError, XaibenchError
from xaibench.metrics.base import SaliencyRegionMetric
from xaibench.metrics.binarize import (
    align_mask,
    otsu_binarize,
    region_iou,
    threshold_binarize,
    topk_binarize,
)
from xaibench.metrics.localisation import EnergyRatio, IoURegion
from xaibench.metrics.map_scores import (
    energy_ratio,
    pixel_auc,
    pointing_game,
    relevance_mass,
    relevance_rank,
)

NAN = float("nan")

# Map A: 0..15 in reading order, no ties.      Region A: the bottom-right 2 x 2 block.
#    0  1  2  3                                  .  .  .  .
#    4  5  6  7                                  .  .  .  .
#    8  9 10 11                                  .  .  x  x
#   12 13 14 15                                  .  .  x  x
MAP_A = torch.arange(16, dtype=torch.float64).reshape(1, 4, 4)
REGION_A = torch.zeros(1, 4, 4, dtype=torch.bool)
REGION_A[0, 2:, 2:] = True

# Map B: signed, with ties at the maximum.      Region B: the top-left 2 x 2 block.
#    2  2  0  0                                  x  x  .  .
#    2  1  0  0                                  x  x  .  .
#    0  0 -1  0                                  .  .  .  .
#    0  0  0  2                                  .  .  .  .
MAP_B = torch.tensor(
    [[[2.0, 2, 0, 0], [2, 1, 0, 0], [0, 0, -1, 0], [0, 0, 0, 2]]], dtype=torch.float64
)
REGION_B = torch.zeros(1, 4, 4, dtype=torch.bool)
REGION_B[0, :2, :2] = True

KERNELS = [pointing_game, relevance_mass, relevance_rank, pixel_auc, energy_ratio]


def _value(scores: torch.Tensor) -> float:
    assert scores.shape == (1,)
    assert scores.dtype == torch.float64
    return float(scores[0])


# ---------------------------------------------------------------------------------------------
# Known answers
# ---------------------------------------------------------------------------------------------


def test_map_a_known_answers() -> None:
    # The maximum, 15, is inside the region.
    assert _value(pointing_game(MAP_A, REGION_A)) == 1.0
    assert _value(pointing_game(MAP_A, REGION_A, ties="any")) == 1.0
    # Inside 10 + 11 + 14 + 15 = 50 of 0 + 1 + ... + 15 = 120.
    assert _value(relevance_mass(MAP_A, REGION_A)) == pytest.approx(50 / 120, abs=1e-15)
    # K = 4; the top four are 15, 14, 13, 12, of which 15 and 14 are inside.
    assert _value(relevance_rank(MAP_A, REGION_A)) == 0.5
    # Outside pixels below each region value: 10 -> 10 (0..9), 11 -> 10, 14 -> 12, 15 -> 12;
    # U = 44 of 4 x 12 = 48 pairs.
    assert _value(pixel_auc(MAP_A, REGION_A)) == pytest.approx(44 / 48, abs=1e-15)
    # Mean inside 50 / 4; mean outside (120 - 50) / 12; ratio 12.5 / (70 / 12) = 15 / 7.
    assert _value(energy_ratio(MAP_A, REGION_A)) == pytest.approx(15 / 7, abs=1e-14)


def test_map_b_known_answers_with_ties() -> None:
    # The maximum 2 is tied at four pixels, three of them inside: fraction 3/4, any -> hit.
    assert _value(pointing_game(MAP_B, REGION_B)) == 0.75
    assert _value(pointing_game(MAP_B, REGION_B, ties="any")) == 1.0
    # Positive mass: 2 + 2 + 2 + 1 inside, plus the 2 at the corner outside: 7 / 9. The -1
    # does not count.
    assert _value(relevance_mass(MAP_B, REGION_B)) == pytest.approx(7 / 9, abs=1e-15)
    # K = 4 and the 4th largest value is 2, shared by four pixels (three inside), none above:
    # (0 + (4 - 0) * 3 / 4) / 4 = 3 / 4.
    assert _value(relevance_rank(MAP_B, REGION_B)) == 0.75
    # Outside: ten 0s, one -1, one 2 (12 pixels). Each region 2 beats 11 and ties 1: 11.5;
    # the region 1 beats 11. U = 3 * 11.5 + 11 = 45.5 of 4 * 12 = 48.
    assert _value(pixel_auc(MAP_B, REGION_B)) == pytest.approx(45.5 / 48, abs=1e-15)
    # Mean inside 7 / 4, mean outside 2 / 12: ratio 10.5.
    assert _value(energy_ratio(MAP_B, REGION_B)) == pytest.approx(10.5, abs=1e-13)


def test_iou_binarizations_map_a() -> None:
    def iou(**options: object) -> float:
        return _value(IoURegion(**options).per_sample(MAP_A, REGION_A))

    # Otsu: the levels are 17 v, a flat histogram of 16 levels, split at the middle: the map's
    # bottom half (v >= 8, 8 pixels) holds the whole 4-pixel region: IoU 4 / 8.
    assert iou() == 0.5
    # Top 25 %: k = 4, v >= 12 -> {12, 13, 14, 15}; overlap {14, 15}: 2 / (4 + 4 - 2).
    assert iou(binarization="topk", percent=25) == pytest.approx(1 / 3)
    # Top 10 % (default): k = ceil(1.6) = 2 -> {14, 15}, both inside: 2 / 4.
    assert iou(binarization="topk") == 0.5
    # Fixed 0.5 (default): v / 15 >= 0.5 -> v >= 8: the same 8 pixels as Otsu.
    assert iou(binarization="fixed") == 0.5
    # Fixed 0.6: v >= 9 -> 7 pixels, the region inside: 4 / 7.
    assert iou(binarization="fixed", threshold=0.6) == pytest.approx(4 / 7)
    # Fixed 1: only the maximum.
    assert iou(binarization="fixed", threshold=1.0) == 0.25


def test_iou_binarizations_map_b() -> None:
    # Levels 255 (v + 1) / 3: 0 (x1), 85 (x10), 170 (x1), 255 (x4). w0 w1 (mu0 - mu1)^2 is
    # 1 * 15 * 136^2 = 277440 for {0} | rest, 11 * 5 * (850/11 - 238)^2 = 1420834 for
    # {0, 85} | {170, 255} and 12 * 4 * 170^2 = 1387200 for {0, 85, 170} | {255}: the region
    # is the five pixels > 0, four of them inside: IoU 4 / 5.
    expected = MAP_B > 0
    assert torch.equal(otsu_binarize(MAP_B), expected)
    # Fixed 0.5: (v + 1) / 3 >= 0.5 <=> v >= 0.5: the same five pixels.
    assert torch.equal(threshold_binarize(MAP_B, 0.5), expected)
    assert _value(region_iou(expected, REGION_B)) == pytest.approx(0.8)
    # Top 25 %: k = 4, the cut value 2 is shared by exactly four pixels.
    top4 = topk_binarize(MAP_B, 25)
    assert torch.equal(top4, MAP_B == 2)
    assert _value(region_iou(top4, REGION_B)) == pytest.approx(3 / 5)
    # Top 50 %: k = 8, the 8th largest value is 0, tied at 10 pixels: all are kept, so the region
    # has 15 pixels (everything but the minimum), more than k.
    top8 = topk_binarize(MAP_B, 50)
    assert int(top8.sum()) == 15
    assert torch.equal(top8, MAP_B > -1)


def test_topk_never_keeps_the_floor() -> None:
    # A rectified map with two positive pixels: the top 25 % (k = 4) cut falls on 0, the map's
    # minimum, so only the two positive pixels are kept rather than all 16.
    relu = torch.zeros(1, 4, 4)
    relu[0, 0, 0] = 3.0
    relu[0, 1, 2] = 1.0
    assert topk_binarize(relu, 25).nonzero().tolist() == [[0, 0, 0], [0, 1, 2]]
    # k is rounded up from an exact product: 10 % of 1000 pixels is 100, not 101.
    ramp = torch.arange(1000.0).reshape(1, 10, 100)
    assert int(topk_binarize(ramp, 10).sum()) == 100
    assert int(topk_binarize(ramp, 0.01).sum()) == 1  # 0.1 pixel -> at least one
    assert int(topk_binarize(ramp, 100).sum()) == 999  # all but the minimum


# ---------------------------------------------------------------------------------------------
# Edge cases
# ---------------------------------------------------------------------------------------------


def test_empty_region_is_undefined_everywhere() -> None:
    empty = torch.zeros(1, 4, 4, dtype=torch.bool)
    for kernel in KERNELS:
        assert math.isnan(_value(kernel(MAP_A, empty))), kernel.__name__
    for binarization in ("otsu", "topk", "fixed"):
        assert math.isnan(_value(IoURegion(binarization=binarization).per_sample(MAP_A, empty)))


def test_full_region() -> None:
    full = torch.ones(1, 4, 4, dtype=torch.bool)
    # Everything is inside: the maximum, all the mass and the whole top-16.
    assert _value(pointing_game(MAP_B, full)) == 1.0
    assert _value(relevance_mass(MAP_B, full)) == 1.0
    assert _value(relevance_rank(MAP_B, full)) == 1.0
    # No outside pixel to compare with.
    assert math.isnan(_value(pixel_auc(MAP_B, full)))
    assert math.isnan(_value(energy_ratio(MAP_B, full)))


@pytest.mark.parametrize("value", [0.0, 3.0, -2.0])
def test_constant_maps(value: float) -> None:
    constant = torch.full((1, 4, 4), value)
    # A constant map points everywhere: the fraction of tied maxima inside is the region's
    # share of the image, 4 / 16; with ties="any" it is a hit.
    assert _value(pointing_game(constant, REGION_A)) == 0.25
    assert _value(pointing_game(constant, REGION_A, ties="any")) == 1.0
    # Every pixel is tied at the cut: the expected top-4 share is the chance level 4 / 16.
    assert _value(relevance_rank(constant, REGION_A)) == 0.25
    # Every pair ties: AUC 1/2.
    assert _value(pixel_auc(constant, REGION_A)) == 0.5
    if value > 0:
        # Uniform positive mass: the region's share of the area, and no preference (ratio 1).
        assert _value(relevance_mass(constant, REGION_A)) == 0.25
        assert _value(energy_ratio(constant, REGION_A)) == 1.0
    else:
        # No positive attribution: nothing to locate.
        assert math.isnan(_value(relevance_mass(constant, REGION_A)))
        assert math.isnan(_value(energy_ratio(constant, REGION_A)))
    # No binarisation selects anything from a map without structure.
    for binarization in ("otsu", "topk", "fixed"):
        assert _value(IoURegion(binarization=binarization).per_sample(constant, REGION_A)) == 0.0


def test_all_negative_map_keeps_order_based_scores() -> None:
    negative = MAP_A - 100.0
    assert _value(pointing_game(negative, REGION_A)) == 1.0
    assert _value(relevance_rank(negative, REGION_A)) == 0.5
    assert _value(pixel_auc(negative, REGION_A)) == pytest.approx(44 / 48)
    assert math.isnan(_value(relevance_mass(negative, REGION_A)))
    assert math.isnan(_value(energy_ratio(negative, REGION_A)))


def test_energy_ratio_is_infinite_when_nothing_is_outside() -> None:
    inside_only = torch.zeros(1, 4, 4)
    inside_only[0, 3, 3] = 1.0
    assert _value(energy_ratio(inside_only, REGION_A)) == math.inf
    # ... and 0 when everything is outside.
    assert _value(energy_ratio(1.0 - REGION_A.double(), REGION_A)) == 0.0
    metric = EnergyRatio()
    summary = metric.aggregate(np.array([0.5, math.inf, NAN, 2.0, math.inf]))
    assert summary.value == 2.0  # lower median of 0.5, 2, inf, inf (the plain median is inf)
    assert summary.n == 4
    assert summary.details == {"aggregate": "median", "n_infinite": 2}
    assert metric.aggregate(np.array([3.0, 0.5, math.inf])).value == 3.0
    assert metric.aggregate(np.array([math.inf, math.inf, 1.0])).value == math.inf
    assert math.isnan(metric.aggregate(np.array([NAN])).value)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("bad", [NAN, math.inf, -math.inf])
def test_non_finite_maps_are_errors(kernel, bad: float) -> None:
    maps = torch.rand(3, 4, 4)
    maps[2, 1, 1] = bad
    masks = torch.ones(3, 4, 4, dtype=torch.bool)
    with pytest.raises(XaibenchError, match=r"maps must be finite.* at batch index \[2\]"):
        kernel(maps, masks)


@pytest.mark.parametrize(
    "binarize", [otsu_binarize, lambda m: topk_binarize(m, 10), threshold_binarize]
)
def test_non_finite_maps_are_errors_for_binarizations(binarize) -> None:
    maps = torch.rand(2, 4, 4)
    maps[0, 0, 0] = NAN
    with pytest.raises(XaibenchError, match=r"maps must be finite.* at batch index \[0\]"):
        binarize(maps)


@pytest.mark.parametrize("kernel", KERNELS)
def test_bad_masks_are_errors(kernel) -> None:
    maps = torch.rand(2, 4, 4)
    with pytest.raises(XaibenchError, match=r"masks \(2, 8, 8\).*align_mask"):
        kernel(maps, torch.ones(2, 8, 8, dtype=torch.bool))
    with pytest.raises(XaibenchError, match="masks must be a bool tensor"):
        kernel(maps, torch.ones(2, 4, 4))
    with pytest.raises(XaibenchError, match=r"shape \[B, H, W\]"):
        kernel(torch.rand(4, 4), torch.ones(4, 4, dtype=torch.bool))


def test_bad_options_are_errors() -> None:
    with pytest.raises(XaibenchError, match="ties must be"):
        pointing_game(MAP_A, REGION_A, ties="all")  # type: ignore[arg-type]
    for percent in (0, -1, 101, NAN):
        with pytest.raises(XaibenchError, match=r"percent must be in \(0, 100\]"):
            topk_binarize(MAP_A, percent)
    for threshold in (0, 1.5, NAN):
        with pytest.raises(XaibenchError, match=r"threshold must be in \(0, 1\]"):
            threshold_binarize(MAP_A, threshold)


def test_empty_batches_and_pixel_less_maps() -> None:
    for kernel in KERNELS:
        out = kernel(torch.zeros(0, 4, 4), torch.zeros(0, 4, 4, dtype=torch.bool))
        assert out.shape == (0,)
        no_pixels = kernel(torch.zeros(2, 0, 4), torch.zeros(2, 0, 4, dtype=torch.bool))
        assert torch.isnan(no_pixels).all(), kernel.__name__
    assert topk_binarize(torch.zeros(0, 4, 4)).shape == (0, 4, 4)
    assert threshold_binarize(torch.zeros(0, 4, 4)).shape == (0, 4, 4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.int64])
def test_other_dtypes_give_the_same_scores(dtype: torch.dtype) -> None:
    # Small integers are exact in every dtype, so every score must match float64's.
    maps = torch.stack([MAP_A[0], MAP_B[0]])
    masks = torch.stack([REGION_A[0], REGION_B[0]])
    for kernel in KERNELS:
        expected = kernel(maps, masks)
        torch.testing.assert_close(kernel(maps.to(dtype), masks), expected, rtol=0, atol=1e-15)
    assert torch.equal(topk_binarize(maps.to(dtype), 25), topk_binarize(maps, 25))
    assert torch.equal(threshold_binarize(maps.to(dtype), 0.6), threshold_binarize(maps, 0.6))


def test_batch_rows_are_independent() -> None:
    # Scores of a batch equal the scores of each map alone, in order.
    rng = np.random.default_rng(3)
    maps = torch.from_numpy(np.round(rng.normal(size=(6, 5, 7)), 1))
    masks = torch.from_numpy(rng.random((6, 5, 7)) > 0.6)
    masks[4] = False
    for kernel in KERNELS:
        batched = kernel(maps, masks)
        single = torch.cat([kernel(maps[i : i + 1], masks[i : i + 1]) for i in range(6)])
        torch.testing.assert_close(batched, single, rtol=0, atol=0, equal_nan=True)


# ---------------------------------------------------------------------------------------------
# Against brute force on small random maps
# ---------------------------------------------------------------------------------------------


def _auc_by_pairs(values: np.ndarray, region: np.ndarray) -> float:
    inside, outside = values[region], values[~region]
    wins = (inside[:, None] > outside[None, :]).sum()
    ties = (inside[:, None] == outside[None, :]).sum()
    return float(Fraction(2 * int(wins) + int(ties), 2 * inside.size * outside.size))


def _rank_by_expectation(values: np.ndarray, region: np.ndarray) -> float:
    """Expected top-K share over every tie-breaking order, from groups of equal values."""
    k = int(region.sum())
    hits, taken = Fraction(0), 0
    for value in sorted(set(values.tolist()), reverse=True):
        group = values == value
        places = min(k - taken, int(group.sum()))
        hits += Fraction(places * int((group & region).sum()), int(group.sum()))
        taken += places
        if taken == k:
            break
    return float(hits / k)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pixel_auc_and_rank_match_brute_force(dtype: torch.dtype) -> None:
    # Values rounded to one decimal: many ties, within and across the region boundary, plus
    # -0.0 next to +0.0, which compare equal and must count as a tie in both AUC paths.
    rng = np.random.default_rng(7)
    values = np.round(rng.normal(size=(40, 6, 5)), 1)
    values[0] = np.where(rng.random((6, 5)) > 0.5, 0.0, -0.0)
    values[0, 0, 0] = 1.0
    region = rng.random((40, 6, 5)) > 0.5
    region[:, 0, 0] = True
    region[:, 0, 1] = False
    maps = torch.from_numpy(values).to(dtype)
    auc = pixel_auc(maps, torch.from_numpy(region))
    rank = relevance_rank(maps, torch.from_numpy(region))
    as_stored = maps.double().numpy()
    for i in range(values.shape[0]):
        flat, mask = as_stored[i].ravel(), region[i].ravel()
        assert auc[i].item() == pytest.approx(_auc_by_pairs(flat, mask), abs=1e-12)
        assert rank[i].item() == pytest.approx(_rank_by_expectation(flat, mask), abs=1e-12)


def test_pixel_auc_is_the_same_for_float32_and_float64_maps_of_the_same_values() -> None:
    # Float32 values are exact in float64, so the order (and every tie) is the same: the
    # counts, hence the scores, must be equal bit for bit, with and without ties.
    rng = np.random.default_rng(11)
    smooth = rng.normal(size=(16, 20, 20)).astype(np.float32)
    tied = np.round(smooth, 0)
    region = torch.from_numpy(rng.random((16, 20, 20)) > 0.7)
    for values in (smooth, tied, -np.abs(tied)):
        single = pixel_auc(torch.from_numpy(values), region)
        double = pixel_auc(torch.from_numpy(values.astype(np.float64)), region)
        torch.testing.assert_close(single, double, rtol=0, atol=0)


def test_pointing_game_fraction_on_plateaus() -> None:
    # A coarse 2 x 2 map upsampled to 4 x 4: the maximum is a 2 x 2 plateau in the top-right
    # corner (rows 0-1, columns 2-3), which region A (rows 2-3) does not touch: 0.
    coarse = torch.tensor([[[0.0, 1.0], [0.5, 0.2]]])
    upsampled = coarse.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
    assert _value(pointing_game(upsampled, REGION_A)) == 0.0
    # A region that takes one column of the plateau: half of the tied maxima are inside.
    half = torch.zeros(1, 4, 4, dtype=torch.bool)
    half[0, :, 3] = True
    assert _value(pointing_game(upsampled, half)) == 0.5
    assert _value(pointing_game(upsampled, half, ties="any")) == 1.0


# ---------------------------------------------------------------------------------------------
# align_mask
# ---------------------------------------------------------------------------------------------


def test_align_mask_nearest() -> None:
    small = torch.tensor([[[True, False], [False, True]]])
    big = align_mask(small, (4, 4))
    assert big.dtype == torch.bool
    assert torch.equal(big, small.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2))
    # Downsampling by 2 samples the pixel centres: rows and columns 1 and 3.
    assert torch.equal(align_mask(REGION_A, (2, 2)), REGION_A[:, 1::2, 1::2])
    # Non-integer factors stay binary and keep the region where it was.
    odd = align_mask(REGION_A, (7, 5))
    assert odd.shape == (1, 7, 5)
    assert bool(odd[0, -1, -1])
    assert not bool(odd[0, 0, 0])
    # Same size: returned unchanged.
    assert align_mask(REGION_A, (4, 4)) is REGION_A
    assert align_mask(torch.zeros(0, 3, 3, dtype=torch.bool), (4, 4)).shape == (0, 4, 4)


def test_align_mask_errors() -> None:
    with pytest.raises(XaibenchError, match="bool tensor"):
        align_mask(torch.ones(1, 2, 2), (4, 4))
    with pytest.raises(XaibenchError, match=r"shape \[B, h, w\]"):
        align_mask(torch.ones(2, 2, dtype=torch.bool), (4, 4))
    for size in [(4,), (0, 4), (4.0, 4), (True, 4)]:
        with pytest.raises(XaibenchError, match="two positive integers"):
            align_mask(REGION_A, size)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Registered components
# ---------------------------------------------------------------------------------------------

REGISTERED = {
    "iou_region": ("IoU", {}),
    "pointing_game": ("Pointing game", {"ties": "any"}),
    "relevance_mass": ("Relevance mass", {}),
    "relevance_rank": ("Relevance rank", {}),
    "pixel_auc": ("Pixel AUC", {}),
    "energy_ratio": ("Energy ratio", {}),
}


@pytest.mark.parametrize("name", sorted(REGISTERED))
def test_registered_region_metrics(components, name: str) -> None:
    display_name, options = REGISTERED[name]
    metric = components.metrics.create(name, options)
    assert isinstance(metric, SaliencyRegionMetric)
    assert metric.higher_is_better
    assert metric.category == "explanation"
    assert metric.needs == "saliency"
    assert metric.display_name == display_name
    assert metric.citation
    assert components.metrics.get(name).summary
    scores = metric.per_sample(torch.stack([MAP_A[0], MAP_B[0]]), torch.stack([REGION_A[0]] * 2))
    assert scores.shape == (2,)
    assert scores.dtype == torch.float64


def test_iou_region_options(components) -> None:
    registry = components.metrics
    assert registry.create("iou_region").options() == {
        "binarization": "otsu",
        "percent": 10.0,
        "threshold": 0.5,
    }
    topk = registry.create("iou_region", {"binarization": "topk", "percent": 25})
    assert _value(topk.per_sample(MAP_A, REGION_A)) == pytest.approx(1 / 3)
    # An option the chosen binarisation ignores is a mistake, not a no-op.
    with pytest.raises(InvalidOptionsError, match="percent applies only to binarization='topk'"):
        registry.create("iou_region", {"percent": 20})
    with pytest.raises(InvalidOptionsError, match="threshold applies only to"):
        registry.create("iou_region", {"binarization": "topk", "threshold": 0.3})
    with pytest.raises(InvalidOptionsError, match="percent"):
        registry.create("iou_region", {"binarization": "topk", "percent": 0})
    with pytest.raises(InvalidOptionsError, match="binarization"):
        registry.create("iou_region", {"binarization": "mean"})
    with pytest.raises(InvalidOptionsError, match="ties"):
        registry.create("pointing_game", {"ties": "all"})


def test_default_iou_is_unchanged_otsu(components) -> None:
    rng = np.random.default_rng(0)
    maps = torch.from_numpy(rng.random((5, 9, 9)) ** 3)
    masks = torch.from_numpy(rng.random((5, 9, 9)) > 0.6)
    expected = region_iou(otsu_binarize(maps), masks)
    got = components.metrics.create("iou_region").per_sample(maps, masks)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_sorted_cut_helpers_agree_with_numpy() -> None:
    # topk against a direct per-map reference: keep >= k-th largest, never the minimum.
    rng = np.random.default_rng(5)
    values = np.round(rng.normal(size=(12, 7, 9)), 1)
    keep = topk_binarize(torch.from_numpy(values), 15).numpy()
    k = math.ceil(0.15 * 63)
    for got, flat in zip(keep, values, strict=True):
        cut = np.sort(flat.ravel())[::-1][k - 1]
        np.testing.assert_array_equal(got, (flat >= cut) & (flat > flat.min()))
    # Region sizes never shrink as the share grows.
    sizes = [int(topk_binarize(torch.from_numpy(values), p).sum()) for p in (5, 10, 25, 50)]
    assert all(a <= b for a, b in pairwise(sizes))
