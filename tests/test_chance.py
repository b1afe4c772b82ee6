"""Chance levels, normalised scores and the test against chance (issue 17 items 1 and 6).

Known answers: a map equal to its region scores normalised 1; random control maps (uniform and
smoothed noise) score normalised 0 within their CI on regions from 1% to 60% of the image
(constructed discs and rectangles, and the phantom's anatomy); the analytic chance levels equal
an exhaustive enumeration of pixel permutations and of the shift null's moves; IoU's
binarise-once shift null equals binarising every moved map; a map pointing at the region beats
chance and one pointing elsewhere does not. And the runner's records and explanation frames
carry the fields of contract C1.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from cli_runs import TINY_PHANTOM_RUN
from scipy.ndimage import gaussian_filter
from scipy.stats import hypergeom

from xaibench.config import resolve_config
from xaibench.data.phantom import PhantomDataset
from xaibench.errors import XaibenchError
from xaibench.metrics.base import SaliencyRegionMetric
from xaibench.metrics.chance import (
    ShiftMoves,
    apply_moves,
    area_fraction,
    chance_details,
    draw_moves,
    shift_null,
)
from xaibench.metrics.localisation import (
    EnergyRatio,
    IoURegion,
    PixelAUC,
    PointingGame,
    RelevanceMass,
    RelevanceRank,
)
from xaibench.stats.comparisons import holm

#: Every built-in region metric with a chance level, with each of its scoring options.
BUILT_INS: dict[str, SaliencyRegionMetric] = {
    "iou_otsu": IoURegion(),
    "iou_topk": IoURegion(binarization="topk", percent=10),
    "iou_fixed": IoURegion(binarization="fixed", threshold=0.5),
    "pointing_fraction": PointingGame(),
    "pointing_any": PointingGame(ties="any"),
    "relevance_mass": RelevanceMass(),
    "relevance_rank": RelevanceRank(),
    "pixel_auc": PixelAUC(),
}

#: The linear metrics whose chance is analytic (exact under both nulls).
ANALYTIC = ("pointing_fraction", "relevance_mass", "relevance_rank", "pixel_auc")


def summary(metric: SaliencyRegionMetric, maps: torch.Tensor, masks: torch.Tensor, seed: int = 0):
    """Per-image values, per-image chance and the C1 details, as the runner computes them."""
    values = metric.per_sample(maps, masks).numpy()
    level = metric.chance(maps, masks, torch.Generator().manual_seed(seed))
    assert level is not None
    chance = np.where(np.isnan(values), np.nan, level.values.numpy())
    details = chance_details(
        values, chance, best=metric.best, method=level.method, exact=level.exact, hits=metric.hits
    )
    return values, chance, details


def disc(size: int, area: float, centre: tuple[float, float]) -> np.ndarray:
    """A disc of about ``area`` x size^2 pixels around ``centre`` (clipped at the border)."""
    rows, cols = np.mgrid[:size, :size]
    radius = math.sqrt(area * size * size / math.pi)
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


def rectangle(size: int, area: float, top: int, left: int) -> np.ndarray:
    """A rectangle twice as wide as high covering about ``area`` of the image."""
    height = max(1, round(math.sqrt(area * size * size / 2)))
    width = min(size, max(1, round(area * size * size / height)))
    out = np.zeros((size, size), dtype=bool)
    out[top : top + height, left : left + width] = True
    return out


def region_batch(shape: str, area: float, n: int, size: int, rng: np.random.Generator):
    """``n`` masks of one shape and area at random places that keep them inside the image."""
    masks = []
    for _ in range(n):
        if shape == "disc":
            radius = math.sqrt(area * size * size / math.pi)
            low, high = radius, size - 1 - radius
            centre = (rng.uniform(low, high), rng.uniform(low, high)) if high > low else (
                (size - 1) / 2, (size - 1) / 2
            )  # fmt: skip
            masks.append(disc(size, area, centre))
        else:
            probe = rectangle(size, area, 0, 0)
            height = int(probe.any(axis=1).sum())
            width = int(probe.any(axis=0).sum())
            top = int(rng.integers(0, size - height + 1))
            left = int(rng.integers(0, size - width + 1))
            masks.append(rectangle(size, area, top, left))
    return torch.from_numpy(np.stack(masks))


def smooth_noise(n: int, size: int, rng: np.random.Generator, sigma: float = 3.0) -> torch.Tensor:
    """Stationary smooth noise: Gaussian-filtered white noise on the torus (no border effects)."""
    field = gaussian_filter(rng.normal(size=(n, size, size)), sigma=(0, sigma, sigma), mode="wrap")
    return torch.from_numpy(field.astype(np.float32))


@pytest.fixture(scope="module")
def phantom_masks() -> dict[str, torch.Tensor]:
    """The phantom's anatomical regions at 32 px on 40 images."""
    data = PhantomDataset(n_images=40, image_size=32, seed=3)
    _, labels = data.generate(range(40))
    per_image = [data.masks_of(label) for label in labels]
    return {
        name: torch.from_numpy(np.stack([m[name] for m in per_image]))
        for name in ("bone", "spine", "ribs", "clavicles", "lungs")
    }


# --------------------------------------------------------------------------------------------
# (a) a map equal to its region scores normalised 1
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(BUILT_INS))
def test_map_equal_to_region_scores_normalised_one(name, phantom_masks):
    metric = BUILT_INS[name]
    rng = np.random.default_rng(0)
    parts = [phantom_masks["clavicles"], region_batch("disc", 0.05, 8, 32, rng)]
    if name != "pointing_any":
        # With ties='any' a mask-shaped map has |region| tied maxima, one of which lands inside
        # a large region under almost every permutation: chance rounds to 1 and the normalised
        # score is undefined (as it should be). Small regions keep it below 1.
        parts.append(phantom_masks["bone"])
    masks = torch.cat(parts)
    masks = masks[masks.flatten(1).any(1)]  # an empty region has no score
    maps = masks.float()
    _values, chance, details = summary(metric, maps, masks)
    assert np.all(chance < 1)
    assert details["normalised"] == pytest.approx(1.0, abs=1e-12)
    if metric.hits:  # Wilson's interval of an all-hit rate: [lower bound < 1, 1]
        assert details["normalised_ci"][1] == pytest.approx(1.0, abs=1e-12)
        assert 0.9 < details["normalised_ci"][0] < 1.0
    else:
        assert details["normalised_ci"] == pytest.approx([1.0, 1.0], abs=1e-12)
    assert details["p_chance"] < 1e-6
    assert details["best"] == 1.0


# --------------------------------------------------------------------------------------------
# (b) random control maps: normalised CI covers 0 for regions of 1% to 60% of the image
# --------------------------------------------------------------------------------------------

AREAS = (0.01, 0.05, 0.2, 0.4, 0.6)


def assert_at_chance(table: list[tuple[Any, dict[str, Any]]]) -> None:
    """A table of a random control's rows (label, details) reads as chance, as a leaderboard would.

    Every row's chance level is unbiased, so each 95% interval misses 0 one time in 20 by
    sampling alone, and a table of dozens of rows almost always holds one that does: asserting
    that *every* interval covers 0 would test the seed, not the code. Asserted instead, with
    margins that a correct implementation fails with negligible probability and a biased chance
    level (e.g. IoU under the permutation null, or an area fraction off by a few percent) does
    not pass: no row beats chance after Holm's adjustment within the table (the leaderboard's
    rule), at 0.001; at least 80% of the intervals cover 0 (95% expected); no normalised score
    is further from 0 than its interval is wide (about 4 standard errors).
    """
    p_values = holm([d["p_chance"] for _, d in table])
    pairs = zip(table, p_values, strict=True)
    assert (p_values > 0.001).all(), [(label, p) for (label, _), p in pairs if p <= 0.001]
    missed = [(label, d["normalised_ci"]) for label, d in table
              if not d["normalised_ci"][0] <= 0 <= d["normalised_ci"][1]]  # fmt: skip
    assert len(missed) <= 0.2 * len(table), missed
    far = [(label, d["normalised"], d["normalised_ci"]) for label, d in table
           if abs(d["normalised"]) >= d["normalised_ci"][1] - d["normalised_ci"][0]]  # fmt: skip
    assert not far, far


@pytest.mark.parametrize("noise", ["uniform", "smooth"])
@pytest.mark.parametrize("shape", ["disc", "rectangle"])
def test_random_control_is_at_chance_for_every_area(noise, shape):
    # 400 images of 32 x 32: a 1% region is about 10 pixels, hit by the pointing game about 4
    # times in 400; fewer images leave its bootstrap without a single hit.
    rng = np.random.default_rng({"uniform": 1, "smooth": 2}[noise] * 10 + len(shape))
    n, size = 400, 32
    table = []
    for area in AREAS:
        masks = region_batch(shape, area, n, size, rng)
        assert abs(area_fraction(masks).mean().item() - area) < 0.25 * area + 0.005
        maps = torch.rand(n, size, size, generator=torch.Generator().manual_seed(int(area * 1e4)))
        if noise == "smooth":
            maps = smooth_noise(n, size, rng)
        for name, metric in BUILT_INS.items():
            table.append(((name, area), summary(metric, maps, masks)[2]))
    assert_at_chance(table)


def test_random_control_is_at_chance_on_the_phantom_anatomy(phantom_masks):
    table = []
    for region, masks in phantom_masks.items():
        masks = masks.repeat(6, 1, 1)  # 240 images, every anatomy 6 times
        share = area_fraction(masks).nanmean().item()
        assert 0.005 < share < 0.6
        maps = torch.rand(masks.shape, generator=torch.Generator().manual_seed(7))
        for name, metric in BUILT_INS.items():
            table.append(((name, region), summary(metric, maps, masks)[2]))
    assert_at_chance(table)


@pytest.mark.parametrize(("name", "noise"), [("relevance_mass", "uniform"), ("iou_otsu", "smooth"),
                                             ("pointing_fraction", "smooth")])  # fmt: skip
def test_normalised_interval_is_calibrated_at_chance(name, noise):
    # Over 200 independent replications the 95% CI of a random map's normalised score covers 0
    # about 95% of the time, and p_chance < 0.05 about 5% of the time: the intervals and the
    # test mean what they say, for an analytic and for the shift null.
    rng = np.random.default_rng(11)
    masks = region_batch("disc", 0.2, 60, 16, rng)
    covered, rejected = 0, 0
    replications = 200
    for r in range(replications):
        maps = torch.rand(60, 16, 16, generator=torch.Generator().manual_seed(r))
        if noise == "smooth":
            maps = smooth_noise(60, 16, rng, sigma=2)
        _, _, details = summary(BUILT_INS[name], maps, masks, seed=r)
        low, high = details["normalised_ci"]
        covered += low <= 0 <= high
        rejected += details["p_chance"] < 0.05
    # binomial(200, 0.95): 99.9% of draws fall in 180..198 (rejections likewise 1..20)
    assert 178 <= covered <= 199
    assert 1 <= rejected <= 22


# --------------------------------------------------------------------------------------------
# (c) analytic chance levels equal the permutation null and the shift null, exhaustively
# --------------------------------------------------------------------------------------------

#: A 2 x 4 map with ties (at the maximum and elsewhere), negatives and a zero.
SMALL_MAP = torch.tensor([[[3.0, -1.0, 3.0, 0.5], [3.0, -2.0, 0.5, 0.0]]])
SMALL_REGION = torch.tensor([[[True, True, False, False], [False, False, True, False]]])


@pytest.mark.parametrize("name", ANALYTIC)
def test_analytic_chance_equals_every_pixel_permutation(name):
    # All 8! = 40320 placements of the map's values, scored in one call: their mean is the
    # exact expectation under a uniformly random permutation.
    metric = BUILT_INS[name]
    flat = SMALL_MAP.reshape(8)
    order = torch.tensor(list(itertools.permutations(range(8))))
    permuted = flat[order].reshape(-1, 2, 4)
    regions = SMALL_REGION.expand(len(permuted), 2, 4)
    brute = metric.per_sample(permuted, regions).mean().item()
    level = metric.chance(SMALL_MAP, SMALL_REGION, torch.Generator().manual_seed(0))
    assert level is not None
    assert level.exact
    assert level.values.item() == pytest.approx(brute, abs=1e-12)


def every_move(batch: int, height: int, width: int) -> ShiftMoves:
    """All H x W translations with each of the four flips, for every image."""
    dy, dx, flips = np.meshgrid(np.arange(height), np.arange(width), np.arange(4), indexing="ij")
    column = [a.reshape(-1, 1).repeat(batch, axis=1) for a in (dy, dx, flips)]
    return ShiftMoves(*column)


@pytest.mark.parametrize("name", ANALYTIC)
def test_analytic_chance_equals_the_whole_shift_group(name):
    # A smooth map on an 8 x 6 image, every translation and flip: the analytic chance is also
    # the exact mean of the shift null, so smoothness does not change it.
    metric = BUILT_INS[name]
    rng = np.random.default_rng(5)
    maps = torch.from_numpy(
        gaussian_filter(rng.normal(size=(2, 8, 6)), sigma=(0, 1.5, 1.5), mode="wrap")
    )
    maps[0] += 0.2  # some positive attribution for relevance mass
    maps[1] = maps[1].round(decimals=1)  # ties
    masks = torch.zeros(2, 8, 6, dtype=torch.bool)
    masks[0, 1:4, 2:5] = True
    masks[1, 5:, :2] = True
    moves = every_move(2, 8, 6)
    moved = apply_moves(maps, moves)
    scores = metric.per_sample(moved.reshape(-1, 8, 6), masks.repeat(len(moved), 1, 1))
    group_mean = scores.reshape(len(moved), 2).mean(0)
    level = metric.chance(maps, masks, torch.Generator().manual_seed(0))
    assert level is not None
    np.testing.assert_allclose(level.values.numpy(), group_mean.numpy(), atol=1e-12)


def test_moves_are_rolls_and_flips():
    maps = torch.arange(2 * 4 * 5, dtype=torch.float32).reshape(2, 4, 5)
    moves = ShiftMoves(np.array([[1, 3]]), np.array([[2, 0]]), np.array([[0, 3]]))
    moved = apply_moves(maps, moves)[0]
    assert torch.equal(moved[0], torch.roll(maps[0], shifts=(-1, -2), dims=(0, 1)))
    assert torch.equal(moved[1], torch.roll(maps[1].flip(0, 1), shifts=(-3, 0), dims=(0, 1)))
    drawn = apply_moves(maps, draw_moves(2, 4, 5, 16, torch.Generator().manual_seed(0)))
    # every move is a permutation of the map's own values
    for k in range(16):
        for b in range(2):
            assert torch.equal(drawn[k, b].flatten().sort().values, maps[b].flatten())


# --------------------------------------------------------------------------------------------
# (d) IoU's shift null: binarise once and move the mask == binarise every moved map
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["iou_otsu", "iou_topk", "iou_fixed"])
def test_iou_shift_null_binarise_once_equals_binarise_each_moved_map(name):
    metric = BUILT_INS[name]
    rng = np.random.default_rng(9)
    maps = smooth_noise(12, 20, rng) ** 2  # skewed values: Otsu's cut is not the median
    masks = region_batch("disc", 0.15, 12, 20, rng)
    once = metric.chance(maps, masks, torch.Generator().manual_seed(4), draws=8)
    each = shift_null(metric.per_sample, maps, masks, torch.Generator().manual_seed(4), draws=8)
    assert once is not None
    assert once.method == "shift null"
    assert not once.exact
    # equal up to the order of a float sum (NumPy's mean against torch's sum)
    np.testing.assert_allclose(once.values.numpy(), each.numpy(), rtol=1e-13, atol=1e-15)


def test_shift_null_is_seeded_and_independent_of_the_other_regions():
    metric = BUILT_INS["iou_otsu"]
    rng = np.random.default_rng(2)
    maps = smooth_noise(6, 16, rng)
    a, b = region_batch("disc", 0.1, 6, 16, rng), region_batch("disc", 0.3, 6, 16, rng)
    both = metric.chance_levels(maps, {"a": a, "b": b}, torch.Generator().manual_seed(1))
    alone = metric.chance_levels(maps, {"b": b}, torch.Generator().manual_seed(1))
    again = metric.chance_levels(maps, {"b": b}, torch.Generator().manual_seed(1))
    other = metric.chance_levels(maps, {"b": b}, torch.Generator().manual_seed(2))
    assert torch.equal(both["b"].values, alone["b"].values)
    assert torch.equal(alone["b"].values, again["b"].values)
    assert not torch.equal(alone["b"].values, other["b"].values)


def permutation_iou(binary: torch.Tensor, masks: torch.Tensor) -> np.ndarray:
    """Exact mean IoU of each binarised map scattered by a random permutation (scipy's
    hypergeometric: the overlap of p random pixels with a region of r among N)."""
    n = binary[0].numel()
    out = []
    for p, r in zip(
        binary.flatten(1).sum(1).tolist(), masks.flatten(1).sum(1).tolist(), strict=True
    ):
        k = np.arange(0, min(p, r) + 1)
        out.append(float((hypergeom(n, r, p).pmf(k) * k / (p + r - k)).sum()))
    return np.array(out)


@pytest.mark.parametrize("name", ["iou_otsu", "iou_topk"])
def test_iou_shift_null_is_above_the_permutation_null_for_smooth_maps(name):
    # Why IoU needs the shift null: a smooth map's binarised blob overlaps a region more
    # variably than the same number of scattered pixels, and IoU is convex in the overlap, so
    # its chance is higher than the permutation null's; by about 0.01 here (256 moves per map
    # so that the estimate's own noise is small).
    rng = np.random.default_rng(3)
    maps = smooth_noise(64, 32, rng, sigma=4)
    masks = region_batch("disc", 0.2, 64, 32, rng)
    metric = BUILT_INS[name]
    shifted = metric.chance(maps, masks, torch.Generator().manual_seed(0), draws=256)
    assert shifted is not None
    difference = shifted.values.numpy() - permutation_iou(metric.binarize(maps), masks)
    t = difference.mean() / (difference.std(ddof=1) / math.sqrt(difference.size))
    assert difference.mean() > 0.005
    assert t > 5  # paired over the 64 images


def test_per_sample_regions_leaves_the_scores_unchanged():
    rng = np.random.default_rng(4)
    maps = smooth_noise(5, 16, rng)
    masks = {"a": region_batch("disc", 0.1, 5, 16, rng), "b": region_batch("rect", 0.3, 5, 16, rng)}
    for metric in [*BUILT_INS.values(), EnergyRatio()]:
        together = metric.per_sample_regions(maps, masks)
        for name, mask in masks.items():
            np.testing.assert_array_equal(together[name].numpy(), metric.per_sample(maps, mask))


# --------------------------------------------------------------------------------------------
# (e) a map pointing at the region beats chance; one pointing elsewhere does not
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(BUILT_INS))
def test_pointing_at_the_region_beats_chance_pointing_elsewhere_does_not(name):
    metric = BUILT_INS[name]
    rng = np.random.default_rng(6)
    n, size = 40, 32
    region = torch.from_numpy(disc(size, 0.08, (9, 9))).expand(n, size, size)
    decoy = torch.from_numpy(disc(size, 0.08, (22, 22)))
    noise = smooth_noise(n, size, rng, sigma=2)
    at_region = noise + 2.0 * region
    elsewhere = noise + 2.0 * decoy
    _, _, hit = summary(metric, at_region, region)
    _, _, miss = summary(metric, elsewhere, region)
    assert hit["p_chance"] < 1e-6
    assert hit["normalised"] > 0.3
    assert hit["normalised_ci"][0] > 0
    assert miss["p_chance"] > 0.5
    assert miss["normalised"] <= 0


# --------------------------------------------------------------------------------------------
# Aggregation edge cases, plugin metrics, configuration
# --------------------------------------------------------------------------------------------


def test_chance_details_by_hand():
    values = np.array([0.5, 0.7, np.nan, 0.9])
    chance = np.array([0.25, 0.25, 0.25, np.nan])
    details = chance_details(values, chance, best=1.0, method="area fraction", exact=True)
    # paired images: the first two. (0.6 - 0.25) / (1 - 0.25) = 0.35 / 0.75
    assert details["chance"] == 0.25
    assert details["chance_n"] == 2
    assert details["normalised"] == pytest.approx(0.35 / 0.75)
    low, high = details["normalised_ci"]
    assert (0.25 / 0.75) - 1e-12 <= low <= high <= (0.45 / 0.75) + 1e-12
    # the t-test of differences 0.25 and 0.45: mean 0.35, sd 0.1414, t = 3.5, one-sided df 1
    assert details["p_chance"] == pytest.approx(0.5 - math.atan(3.5) / math.pi)
    none = chance_details(values, chance, best=None, method="shift null", exact=False)
    assert none["normalised"] is None
    assert none["normalised_ci"] is None
    equal = chance_details(np.ones(3), np.ones(3), best=1.0, method="area fraction", exact=True)
    assert equal["normalised"] is None
    assert equal["p_chance"] == 1.0


class DeclaresBest(SaliencyRegionMetric):
    """A plugin metric opting in: the share of the map's maximum inside the region (0..1)."""

    best: ClassVar[float | None] = 1.0

    def per_sample(self, maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        peak = maps.flatten(1).amax(1, keepdim=True)
        inside = (maps.flatten(1) * masks.flatten(1)).amax(1, keepdim=True)
        return (inside / peak).squeeze(1).double()


class NoBest(DeclaresBest):
    best: ClassVar[float | None] = None


def test_plugin_metrics_opt_in_with_best():
    rng = np.random.default_rng(8)
    maps = smooth_noise(4, 16, rng).abs() + 0.1
    masks = region_batch("disc", 0.2, 4, 16, rng)
    level = DeclaresBest().chance(maps, masks, torch.Generator().manual_seed(0), draws=4)
    assert level is not None
    assert level.method == "shift null"
    assert not level.exact
    assert level.values.shape == (4,)
    assert torch.isfinite(level.values).all()
    assert NoBest().chance(maps, masks, torch.Generator().manual_seed(0)) is None
    assert EnergyRatio().best is None
    assert EnergyRatio().chance(maps, masks, torch.Generator().manual_seed(0)) is None


def test_chance_draws_setting():
    run = {**TINY_PHANTOM_RUN, "metrics": ["iou_region"]}
    base = resolve_config(run)
    assert base.chance.draws == 16
    assert "chance" not in base.hashed_settings()  # at its default: old runs keep their hash
    explicit = resolve_config(run, {"chance": {"draws": 16}})
    assert explicit.config_hash() == base.config_hash()
    other = resolve_config(run, {"chance": {"draws": 4}})
    assert other.config_hash() != base.config_hash()
    with pytest.raises(XaibenchError, match=r"chance\.draws"):
        resolve_config(run, {"chance": {"draws": 0}})


# --------------------------------------------------------------------------------------------
# The runner: records carry contract C1's details, explanations.csv its chance column
# --------------------------------------------------------------------------------------------


def test_run_records_and_explanations_carry_chance(components, tmp_path: Path):
    import pandas as pd

    from xaibench.engine.benchmark import run_benchmark

    config = resolve_config(
        TINY_PHANTOM_RUN,
        {
            "saliency": ["random"],
            "metrics": ["auc", "iou_region", "pointing_game", "relevance_mass", "energy_ratio"],
            "explain_regions": ["bone", "clavicles"],
            "max_explain_images": 10,
            "chance": {"draws": 4},
        },
    )
    outcome = run_benchmark(config, components, tmp_path / "run")
    records = [r for r in outcome.document["records"] if r["category"] == "explanation"]
    frame = pd.read_csv(tmp_path / "run" / "explanations.csv")
    assert "chance" in frame.columns
    methods = {"iou_region": "shift null", "pointing_game": "area fraction",
               "relevance_mass": "area fraction"}  # fmt: skip
    seen = set()
    for record in records:
        details: dict[str, Any] = record["details"]
        rows = frame[(frame.metric == record["metric"]) & (frame.region == record["region"])]
        if record["metric"] == "energy_ratio":
            assert details["chance"] is None
            assert details["best"] is None
            assert details["normalised"] is None
            assert "chance_reason" in details
            assert rows.chance.isna().all()
            continue
        seen.add(record["metric"])
        assert details["chance_method"] == methods[record["metric"]]
        assert details["chance_exact"] == (record["metric"] != "iou_region")
        assert details["best"] == 1.0
        defined = rows.value.notna()
        assert rows.chance[~defined].isna().all()
        assert rows.chance[defined].notna().all()
        assert details["chance"] == pytest.approx(rows.chance[defined].mean())
        expected = (record["value"] - details["chance"]) / (1.0 - details["chance"])
        assert details["normalised"] == pytest.approx(expected)
        low, high = details["normalised_ci"]
        assert low <= details["normalised"] <= high
        assert 0.0 <= details["p_chance"] <= 1.0
        if record["metric"] == "iou_region":
            assert details["chance_draws"] == 4
    assert seen == set(methods)


class ChanceRaises(DeclaresBest):
    def chance(self, maps, masks, generator, draws=16):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom in chance")


def test_a_failing_chance_level_keeps_the_scores():
    from xaibench.chance_tally import ChanceTally

    rng = np.random.default_rng(1)
    maps = smooth_noise(3, 8, rng).abs()
    masks = {"a": region_batch("disc", 0.2, 3, 8, rng)}
    metric = ChanceRaises()
    tally = ChanceTally({"plugin": metric}, seed=0, draws=2)
    scores = metric.per_sample_regions(maps, masks)
    tally.add("plugin", maps, masks, scores)
    chance = tally.per_image("plugin", "a", 3)
    assert np.isnan(chance).all()
    details = tally.details("plugin", "a", scores["a"].numpy(), chance)
    assert details["chance"] is None
    assert details["chance_reason"] == "RuntimeError: boom in chance"


def test_hits_get_wilson_intervals_that_cover_chance_when_no_image_hits() -> None:
    """Zero random peaks in a 1% region over 120 images: the interval must not collapse."""
    from xaibench.metrics.chance import chance_details
    from xaibench.stats.intervals import wilson_ci

    values = np.zeros(120)
    level = np.full(120, 0.01)
    details = chance_details(values, level, best=1.0, method="area fraction", exact=True, hits=True)
    low, high = details["normalised_ci"]
    assert low < 0 < high  # a bootstrap gave [-0.0101, -0.0101]
    w_low, w_high = wilson_ci(0, 120)
    assert low == pytest.approx((w_low - 0.01) / 0.99)
    assert high == pytest.approx((w_high - 0.01) / 0.99)
    assert details["p_chance"] == 1.0
    # fractional values (tied maxima shared) keep the paired bootstrap
    mixed = chance_details(
        np.r_[values[:-1], 0.5], level, best=1.0, method="x", exact=True, hits=True
    )
    assert mixed["normalised_ci"] != details["normalised_ci"]
