"""CheXlocalize's protocol (issue 18 item 5): known answers, references and planted answers.

References: Otsu's threshold against OpenCV (what CheXlocalize calls) and scikit-image; the
contour fill against CheXlocalize's OpenCV contours filled with PIL, written here from its
published description; the bootstrap against an independent NumPy/pandas loop with the same
seed. Known answers: IoU, hits, slices and tuning on small fixtures computed by hand. Planted
answers on the phantom: maps built from its masks score 1 (or the known fill loss), maps
pointing elsewhere 0, and the chance levels are what the nulls say.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from cli_runs import TINY_PHANTOM_RUN
from PIL import Image, ImageDraw
from pydantic import ValidationError
from scipy.ndimage import binary_fill_holes, gaussian_filter
from skimage.filters import threshold_otsu

from xaibench.config import resolve_config
from xaibench.cut_off_tuning import kept_global_generators, tune_cut_offs
from xaibench.data.phantom import PhantomDataset
from xaibench.errors import XaibenchError
from xaibench.metrics.binarize import otsu_binarize
from xaibench.metrics.chance import chance_details, iou_shift_null
from xaibench.metrics.chexlocalize import (
    TUNING_GRID,
    ChexlocalizeHitRate,
    ChexlocalizeMIoU,
    RegionContext,
    chexlocalize_bootstrap,
    fill_contours,
    hit_scores,
    segment,
    segmentation_iou,
    tune_threshold,
)

# --------------------------------------------------------------------------------------------
# Segmentation: Otsu against OpenCV and scikit-image, the contour fill against OpenCV + PIL
# --------------------------------------------------------------------------------------------


def opencv() -> Any:
    """OpenCV, what CheXlocalize calls (not a dependency of xaibench: skipped without it)."""
    return pytest.importorskip("cv2")


def eight_bit(m: np.ndarray) -> np.ndarray:
    m = m - m.min()
    return np.uint8(255 * (m / m.max()))


def opencv_contour_segmentation(m: np.ndarray) -> np.ndarray:
    """CheXlocalize's Otsu segmentation as its paper's code describes it, with OpenCV and PIL."""
    cv2 = opencv()
    levels = eight_bit(m)
    binary = cv2.threshold(levels, 0, int(levels.max()), cv2.THRESH_OTSU)[1]
    found = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    contours = found[0] if len(found) == 2 else found[1]
    canvas = Image.new("1", (levels.shape[1], levels.shape[0]))
    for contour in contours:
        if len(contour) > 1:
            points = [(int(p[0][0]), int(p[0][1])) for p in contour]
            ImageDraw.Draw(canvas).polygon(points, outline=1, fill=1)
    return np.array(canvas, dtype=bool)


def random_maps(n: int, seed: int) -> list[np.ndarray]:
    """Noise, smoothed noise at several scales and skewed values: the shapes saliency takes."""
    rng = np.random.default_rng(seed)
    maps = []
    for i in range(n):
        raw = rng.random((40, 36))
        sigma = (0, 0.7, 1.5, 3.0)[i % 4]
        smooth = gaussian_filter(raw, sigma) if sigma else raw
        maps.append(smooth ** rng.uniform(0.3, 3.0))
    return maps


def test_otsu_threshold_matches_scikit_image():
    maps = random_maps(120, seed=1)
    ours = otsu_binarize(torch.from_numpy(np.stack(maps))).numpy()
    for m, mine in zip(maps, ours, strict=True):
        levels = eight_bit(m)
        np.testing.assert_array_equal(mine, levels > threshold_otsu(levels))


def test_otsu_threshold_matches_opencv():
    cv2 = opencv()
    maps = random_maps(120, seed=1)
    ours = otsu_binarize(torch.from_numpy(np.stack(maps))).numpy()
    for m, mine in zip(maps, ours, strict=True):
        levels = eight_bit(m)
        by_opencv = cv2.threshold(levels, 0, int(levels.max()), cv2.THRESH_OTSU)[1] > 0
        # (OpenCV can pick a later split among exactly tied ones: none on these maps)
        np.testing.assert_array_equal(mine, by_opencv)


def test_otsu_segmentation_equals_opencv_contours_filled_with_pil():
    maps = random_maps(160, seed=2)
    ours = segment(torch.from_numpy(np.stack(maps))).numpy()
    for m, mine in zip(maps, ours, strict=True):
        np.testing.assert_array_equal(mine, opencv_contour_segmentation(m))


def test_contour_fill_by_hand():
    binary = np.zeros((7, 9), dtype=bool)
    binary[1:6, 1:6] = True
    binary[2:5, 2:5] = False  # a ring: its 3 x 3 hole is filled
    binary[3, 3] = True  # an island in the hole: inside the fill
    binary[0, 8] = True  # a one-pixel component: dropped (its contour has one point)
    binary[5:7, 8] = True  # a two-pixel component: kept
    expected = np.zeros_like(binary)
    expected[1:6, 1:6] = True
    expected[5:7, 8] = True
    np.testing.assert_array_equal(fill_contours(binary), expected)
    # a hole open to the image border is not a hole
    open_ring = np.ones((4, 4), dtype=bool)
    open_ring[0, 1:3] = False
    open_ring[1, 1:3] = False
    np.testing.assert_array_equal(fill_contours(open_ring), open_ring)


def test_fixed_cut_off_is_strict_and_constant_maps_select_nothing():
    maps = torch.tensor([[[2.0, 3.0], [4.0, 6.0]], [[5.0, 5.0], [5.0, 5.0]]])
    # normalised first map: 0, 0.25, 0.5, 1
    np.testing.assert_array_equal(segment(maps, 0.5)[0].numpy(), [[False, False], [False, True]])
    np.testing.assert_array_equal(segment(maps, 0.25)[0].numpy(), [[False, False], [True, True]])
    np.testing.assert_array_equal(segment(maps, 0.0)[0].numpy(), [[False, True], [True, True]])
    assert not segment(maps, 1.0).any()
    assert not segment(maps, 0.0)[1].any()
    assert not segment(maps)[1].any()  # Otsu of a constant map
    with pytest.raises(XaibenchError, match=r"threshold must be in \[0, 1\]"):
        segment(maps, 1.5)


# --------------------------------------------------------------------------------------------
# Per-image IoU and hits, each image slice, by hand
# --------------------------------------------------------------------------------------------

#: Four 2 x 3 images: segmentation, region, the model's call.
SEG = torch.tensor(
    [
        [[1, 1, 0], [0, 0, 0]],  # overlaps the region in 1 pixel of 3 in the union
        [[1, 0, 0], [0, 0, 0]],  # region empty, segmentation not
        [[0, 0, 0], [0, 0, 0]],  # segmentation empty, region not
        [[0, 1, 1], [0, 1, 1]],  # region inside: IoU 2/4, called negative
    ],
    dtype=torch.bool,
)
REGION = torch.tensor(
    [
        [[0, 1, 1], [0, 0, 0]],
        [[0, 0, 0], [0, 0, 0]],
        [[1, 0, 0], [0, 0, 0]],
        [[0, 0, 1], [0, 0, 1]],
    ],
    dtype=torch.bool,
)
CALLS = np.array([True, True, True, False])


@pytest.mark.parametrize(
    ("images", "expected"),
    [
        # region and segmentation non-empty, called positive: only image 0
        ("true_positive", [1 / 3, math.nan, math.nan, math.nan]),
        # region non-empty, calls ignored: an empty segmentation scores 0
        ("positive", [1 / 3, math.nan, 0.0, 0.5]),
        # union non-empty; image 3 is called negative, so its segmentation is empty: IoU 0
        ("all", [1 / 3, 0.0, 0.0, 0.0]),
    ],
)
def test_segmentation_iou_by_hand(images, expected):
    got = segmentation_iou(SEG, REGION, images, CALLS).numpy()
    np.testing.assert_allclose(got, expected)


def test_segmentation_iou_all_excludes_images_with_neither():
    seg = torch.zeros((1, 2, 2), dtype=torch.bool)
    assert math.isnan(float(segmentation_iou(seg, seg.clone(), "all")[0]))


MAPS = torch.tensor(
    [
        [[0.0, 5.0, 5.0], [1.0, 1.0, 1.0]],  # tied maximum: the first (row-major) is (0, 1)
        [[9.0, 0.0, 0.0], [0.0, 0.0, 0.0]],  # region empty
        [[0.0, 0.0, 0.0], [0.0, 0.0, 3.0]],  # peak outside the region
        [[0.0, 0.0, 0.0], [0.0, 0.0, 2.0]],  # peak inside, called negative
    ]
)


@pytest.mark.parametrize(
    ("images", "expected"),
    [
        ("positive", [1.0, math.nan, 0.0, 1.0]),
        ("true_positive", [1.0, math.nan, 0.0, math.nan]),
        ("all", [1.0, math.nan, 0.0, 0.0]),  # a negative call has no peak: a miss
    ],
)
def test_hits_by_hand(images, expected):
    np.testing.assert_allclose(hit_scores(MAPS, REGION, images, CALLS).numpy(), expected)


def test_first_maximum_decides_a_tie():
    region = torch.zeros((1, 2, 3), dtype=torch.bool)
    region[0, 0, 2] = True  # the second of the tied maxima: CheXlocalize's argmax misses it
    assert float(hit_scores(MAPS[:1], region)[0]) == 0.0


def test_unknown_slice_is_refused():
    with pytest.raises(XaibenchError, match="images must be one of"):
        segmentation_iou(SEG, REGION, "everything")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Bootstrap: an independent NumPy/pandas computation with the same seed
# --------------------------------------------------------------------------------------------


def reference_bootstrap(values: list[float], replicates: int, seed: int) -> tuple[float, ...]:
    """CheXlocalize's steps: global seed, np.random.choice per replicate, pandas mean, sort."""
    frame = pd.DataFrame({"task": values})
    np.random.seed(seed)
    means = []
    for _ in range(replicates):
        rows = np.random.choice(len(frame), size=len(frame), replace=True)
        means.append(frame.iloc[rows]["task"].mean())
    ordered = pd.Series(means).sort_values()
    low = ordered.iloc[int(0.025 * replicates) - 1]
    high = ordered.iloc[int(0.975 * replicates) - 1]
    return float(low), float(high), float(ordered.mean())


@pytest.mark.parametrize("seed", [0, 7])
def test_bootstrap_reproduces_the_reference_with_the_same_seed(seed):
    rng = np.random.default_rng(5)
    values = rng.random(30)
    values[rng.random(30) < 0.4] = np.nan  # rows without the region: drawn, then skipped
    state = np.random.get_state()
    try:
        low, high, mean = reference_bootstrap(list(values), 1000, seed)
    finally:
        np.random.set_state(state)
    ours = chexlocalize_bootstrap(values, 1000, seed)
    assert ours is not None
    # the same rows in every replicate; pandas sums in another order (last-bit differences)
    assert ours.low == pytest.approx(low, abs=1e-12)
    assert ours.high == pytest.approx(high, abs=1e-12)
    assert ours.mean == pytest.approx(mean, abs=1e-12)
    assert ours.undefined == 0


def test_bootstrap_hits_and_degenerate_inputs():
    values = np.array([1.0, 0.0, 1.0, 1.0, np.nan, 0.0, 1.0, 1.0])
    ci = chexlocalize_bootstrap(values, 200, 0)
    assert ci is not None
    assert 0.0 <= ci.low <= np.nanmean(values) <= ci.high <= 1.0
    assert chexlocalize_bootstrap(np.array([np.nan, np.nan]), 1000, 0) is None
    assert chexlocalize_bootstrap(np.array([]), 1000, 0) is None
    assert chexlocalize_bootstrap(values, 39, 0) is None  # position int(0.025 R) - 1 = -1
    # one defined row in many: some replicates draw none and are NaN (sorted last)
    sparse = np.full(5, np.nan)
    sparse[0] = 0.5
    ci = chexlocalize_bootstrap(sparse, 1000, 0)
    assert ci is not None
    assert ci.undefined > 0
    assert ci.low == 0.5


def test_metric_aggregate_uses_its_bootstrap_options():
    values = np.array([0.2, np.nan, 0.4, 0.9, 0.1, np.nan])
    metric = ChexlocalizeMIoU(bootstrap_replicates=500, bootstrap_seed=3)
    result = metric.aggregate(values)
    expected = chexlocalize_bootstrap(values, 500, 3)
    assert expected is not None
    assert result.value == pytest.approx(0.4)
    assert result.n == 4
    assert result.ci == (expected.low, expected.high)
    assert result.details["excluded_images"] == 2
    assert result.details["bootstrap_mean"] == expected.mean
    assert "500 replicates, seed 3" in result.details["ci_method"]


# --------------------------------------------------------------------------------------------
# Threshold tuning
# --------------------------------------------------------------------------------------------


def test_tune_threshold_by_hand():
    per_image = np.array(
        [
            [0.5, 0.6, 0.6, 0.1, np.nan, np.nan],
            [0.3, 0.4, 0.4, 0.2, np.nan, np.nan],
            [np.nan, np.nan, np.nan, np.nan, np.nan, np.nan],
        ]
    )
    cut, curve = tune_threshold(per_image, TUNING_GRID)
    assert cut == 0.3  # 0.3 and 0.4 tie at mIoU 0.5: the first wins, as CheXlocalize's index
    assert [c["threshold"] for c in curve] == list(TUNING_GRID)
    assert [c["n"] for c in curve] == [2, 2, 2, 2, 0, 0]
    assert curve[0]["miou"] == pytest.approx(0.4)
    assert curve[1]["miou"] == pytest.approx(0.5)
    assert curve[4]["miou"] is None
    with pytest.raises(XaibenchError, match="no validation image"):
        tune_threshold(np.full((2, 6), np.nan), TUNING_GRID)


def test_tune_cut_offs_picks_the_cut_off_of_highest_validation_miou():
    # validation maps: the region at 0.75 on a background ramp up to 0.45 (normalised), so every
    # cut-off from 0.45 up to 0.75 selects exactly the region; lower cut-offs add background.
    region = np.zeros((4, 8, 8), dtype=bool)
    region[:, 2:5, 3:6] = True
    ramp = np.linspace(0.0, 0.45, 64).reshape(8, 8)
    maps = np.where(region, 0.75, ramp[None])
    maps[:, 0, 0] = 1.0  # the maximum, outside the region
    metric = ChexlocalizeMIoU(threshold="tuned", images="positive")
    tuned = tune_cut_offs(
        {"miou": metric},
        lambda s: torch.from_numpy(maps[s]),
        {"lesion": torch.from_numpy(region)},
        ["lesion"],
        n=4,
        calls=None,
        batch_size=3,
    )
    assert tuned.errors == {}
    assert tuned.cut_offs == {"miou": {"lesion": 0.5}}
    details = tuned.details[("miou", "lesion")]
    assert details["tuned_threshold"] == 0.5
    assert details["tuning_split"] == "val"
    assert details["tuning_images"] == 4
    curve = {c["threshold"]: c["miou"] for c in details["tuning_curve"]}
    assert curve[0.5] == pytest.approx(9 / 10)  # region 9 pixels plus the maximum
    assert curve[0.4] < curve[0.5]
    assert curve[0.7] == pytest.approx(curve[0.5])  # tied, later: not chosen
    # the tuned cut-off is the one the test-time score applies
    context = RegionContext(thresholds=tuned.cut_offs["miou"])
    scores = metric.per_sample_regions(
        torch.from_numpy(maps), {"lesion": torch.from_numpy(region)}, context
    )
    np.testing.assert_allclose(scores["lesion"].numpy(), 0.9)


def test_tuning_leaves_the_global_generators_as_it_found_them():
    # a random control map drawn from the global generator after tuning is the one it would
    # have been without tuning: adding a tuned metric changes no other score
    region = torch.zeros((2, 6, 6), dtype=torch.bool)
    region[:, 1:4, 1:4] = True
    torch.manual_seed(11)
    np.random.seed(11)
    untouched = (torch.rand(3), np.random.rand(3))
    torch.manual_seed(11)
    np.random.seed(11)
    tuned = tune_cut_offs(
        {"miou": ChexlocalizeMIoU(threshold="tuned", images="positive")},
        lambda s: torch.rand(len(range(*s.indices(2))), 6, 6) + np.random.rand(),
        {"lesion": region},
        ["lesion"],
        n=2,
        calls=None,
        batch_size=1,
    )
    assert tuned.cut_offs["miou"]["lesion"] in TUNING_GRID
    torch.testing.assert_close(torch.rand(3), untouched[0])
    np.testing.assert_array_equal(np.random.rand(3), untouched[1])
    with kept_global_generators():
        torch.rand(5)
    torch.manual_seed(11)
    expected = torch.rand(1)
    torch.manual_seed(11)
    with kept_global_generators():
        torch.rand(5)
    torch.testing.assert_close(torch.rand(1), expected)


class RaisesWhileTuning(ChexlocalizeMIoU):
    def validation_ious(self, maps, masks, calls):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom while tuning")


def test_a_metric_that_raises_while_tuning_fails_alone():
    region = torch.ones((2, 4, 4), dtype=torch.bool)
    tuned = tune_cut_offs(
        {
            "broken": RaisesWhileTuning(threshold="tuned"),
            "fine": ChexlocalizeMIoU(threshold="tuned", images="positive"),
        },
        lambda s: torch.rand(1, 4, 4),
        {"lesion": region},
        ["lesion"],
        n=2,
        calls=None,
        batch_size=1,
    )
    assert tuned.errors == {"broken": "threshold 'tuned': RuntimeError: boom while tuning"}
    assert set(tuned.cut_offs) == {"fine"}


def test_calls_of_another_length_are_an_error():
    with pytest.raises(XaibenchError, match="3 model calls for 4 images"):
        segmentation_iou(SEG, REGION, "positive", CALLS[:3])
    with pytest.raises(XaibenchError, match="3 model calls for 4 images"):
        hit_scores(MAPS, REGION, "positive", CALLS[:3])


def test_no_interval_when_a_bound_falls_on_an_undefined_replicate():
    values = np.full(60, np.nan)
    values[:2] = [0.1, 0.3]  # 2 defined rows in 60: about 93% of replicates draw neither
    result = ChexlocalizeMIoU().aggregate(values)
    assert result.value == pytest.approx(0.2)
    assert result.ci is None
    assert result.details["bootstrap_undefined"] > 25


def test_tuning_without_validation_masks_fails_with_the_reason():
    tuned = tune_cut_offs(
        {"miou": ChexlocalizeMIoU(threshold="tuned")},
        lambda s: torch.zeros((1, 2, 2)),
        {},
        ["lesion"],
        n=1,
        calls=None,
        batch_size=1,
    )
    assert tuned.errors == {"miou": "threshold 'tuned': no lesion masks on validation"}


def test_tuned_without_a_tuned_cut_off_is_an_error():
    with pytest.raises(XaibenchError, match="tuned on the validation split"):
        ChexlocalizeMIoU(threshold="tuned").per_sample(MAPS, REGION)


@pytest.mark.parametrize(
    "options",
    [
        {"threshold": 1.5},
        {"threshold": -0.1},
        {"threshold": "median"},
        {"tuning_grid": [0.3, 0.5]},  # only with threshold='tuned'
        {"threshold": "tuned", "tuning_grid": []},
        {"images": "negative"},
        {"bootstrap_replicates": 10},
    ],
)
def test_bad_options_are_refused(options: dict[str, Any]):
    with pytest.raises(ValidationError):
        ChexlocalizeMIoU(**options)


def test_good_options():
    assert ChexlocalizeMIoU(threshold=0.35).cut_off("x", RegionContext()) == 0.35
    assert ChexlocalizeMIoU(threshold=1).cut_off("x", RegionContext()) == 1.0
    assert ChexlocalizeMIoU().images == "true_positive"
    assert ChexlocalizeHitRate().images == "positive"
    assert ChexlocalizeMIoU(threshold="tuned", tuning_grid=[0.2, 0.8]).tunes


# --------------------------------------------------------------------------------------------
# Planted answers and chance levels on the phantom
# --------------------------------------------------------------------------------------------


def phantom_masks(size: int = 48, n: int = 24) -> dict[str, torch.Tensor]:
    data = PhantomDataset(n_images=n, image_size=size, seed=3)
    _, labels = data.generate(range(n))
    per_image = [data.masks_of(label) for label in labels]
    return {r: torch.from_numpy(np.stack([m[r] for m in per_image])) for r in ("heart", "ribs")}


def test_map_equal_to_the_region_scores_one():
    heart = phantom_masks()["heart"]
    maps = heart.double() + 0.01 * torch.rand(
        heart.shape, generator=torch.Generator().manual_seed(0)
    )
    maps = torch.where(heart, 1.0 + maps, maps)  # peak inside; Otsu and 0.5 select the heart
    for metric in (ChexlocalizeMIoU(), ChexlocalizeMIoU(threshold=0.5), ChexlocalizeHitRate()):
        values = metric.per_sample(maps, heart).numpy()
        np.testing.assert_allclose(values, 1.0)
        level = metric.chance(maps, heart, torch.Generator().manual_seed(1))
        assert level is not None
        details = chance_details(
            values, level.values.numpy(), best=1.0, method=level.method, exact=level.exact
        )
        assert details["normalised"] == pytest.approx(1.0)
        assert details["chance"] < 0.2


def test_map_pointing_elsewhere_scores_zero():
    heart = phantom_masks()["heart"]
    outside = torch.zeros_like(heart)
    outside[:, :6, :6] = True  # the top-left corner: never the heart
    assert not (outside & heart).any()
    maps = outside.double()
    np.testing.assert_allclose(ChexlocalizeMIoU().per_sample(maps, heart).numpy(), 0.0)
    np.testing.assert_allclose(ChexlocalizeHitRate().per_sample(maps, heart).numpy(), 0.0)


def test_regions_with_holes_lose_them_to_the_contour_fill():
    ribs = phantom_masks()["ribs"]
    values = ChexlocalizeMIoU().per_sample(ribs.double(), ribs).numpy()
    region = ribs.numpy()
    filled = np.stack([binary_fill_holes(r) for r in region])
    assert (filled.sum(axis=(1, 2)) > region.sum(axis=(1, 2))).all()  # every image has holes
    # CheXlocalize's segmentation of the indicator map (OpenCV contours filled with PIL): the
    # holes filled and one-pixel fragments dropped
    seg = np.stack([opencv_contour_segmentation(r.astype(np.float64)) for r in region])
    expected = (seg & region).sum(axis=(1, 2)) / (seg | region).sum(axis=(1, 2))
    assert (expected < 0.9).all()
    np.testing.assert_allclose(values, expected)


def test_uninformative_maps_score_chance():
    masks = phantom_masks(size=48, n=40)
    rng = np.random.default_rng(4)
    maps = torch.from_numpy(
        np.stack([gaussian_filter(rng.random((48, 48)), 3.0) for _ in range(40)])
    )
    for metric in (ChexlocalizeMIoU(), ChexlocalizeHitRate()):
        values = metric.per_sample(maps, masks["heart"]).numpy()
        level = metric.chance(maps, masks["heart"], torch.Generator().manual_seed(2), 16)
        assert level is not None
        details = chance_details(
            values,
            level.values.numpy(),
            best=1.0,
            method=level.method,
            exact=level.exact,
            hits=metric.hits,
        )
        low, high = details["normalised_ci"]
        assert low <= 0.0 <= high, (type(metric).__name__, details)


def test_chance_follows_the_slice_and_the_calls():
    maps = MAPS.double()
    context = RegionContext(calls=torch.from_numpy(CALLS))
    hit = ChexlocalizeHitRate(images="all")
    level = hit.chance_levels(maps, {"r": REGION}, torch.Generator(), 4, context)["r"]
    assert level is not None
    assert level.exact
    # area fraction; NaN where the region is empty; 0 where the negative call makes a miss certain
    np.testing.assert_allclose(level.values.numpy(), [2 / 6, math.nan, 1 / 6, 0.0])
    miou = ChexlocalizeMIoU(images="all", threshold=0.5)
    level = miou.chance_levels(maps, {"r": REGION}, torch.Generator().manual_seed(0), 8, context)[
        "r"
    ]
    assert level is not None
    assert not level.exact
    seg = segment(maps, 0.5) & torch.from_numpy(CALLS).view(-1, 1, 1)
    expected = iou_shift_null(seg, {"r": REGION}, torch.Generator().manual_seed(0), 8)["r"]
    expected[1] = 0.0  # no region, a segmentation: IoU 0 under every move
    np.testing.assert_allclose(level.values.numpy(), expected.numpy())
    assert level.values[3] == 0.0  # called negative: empty segmentation, IoU 0 whatever


# --------------------------------------------------------------------------------------------
# The run: calls reach the metrics, the tuning is recorded
# --------------------------------------------------------------------------------------------


def test_run_records_the_tuning_and_uses_the_models_calls(components, tmp_path: Path):
    from xaibench.engine.benchmark import run_benchmark

    config = resolve_config(
        TINY_PHANTOM_RUN,
        {
            "saliency": ["saliency"],
            "metrics": [
                "auc",
                {
                    "name": "chexlocalize_miou",
                    "label": "miou_tuned",
                    "options": {"threshold": "tuned", "images": "positive"},
                },
                {"name": "chexlocalize_miou", "label": "miou_tp"},
                {
                    "name": "chexlocalize_miou",
                    "label": "miou_pos",
                    "options": {"images": "positive"},
                },
                {"name": "chexlocalize_hit_rate", "options": {"images": "all"}},
            ],
            "explain_regions": ["heart"],
            "max_explain_images": 12,
            "chance": {"draws": 4},
        },
    )
    outcome = run_benchmark(config, components, tmp_path / "run")
    records = {
        r["metric"]: r for r in outcome.document["records"] if r["category"] == "explanation"
    }
    assert all(r["status"] == "ok" for r in records.values()), records
    tuned = records["miou_tuned"]["details"]
    curve = tuned["tuning_curve"]
    assert [c["threshold"] for c in curve] == list(TUNING_GRID)
    best = max(c["miou"] for c in curve if c["miou"] is not None)
    first = next(c["threshold"] for c in curve if c["miou"] == best)
    assert tuned["tuned_threshold"] == first
    assert tuned["tuning_split"] == "val"
    assert records["miou_tp"]["details"]["images"] == "true_positive"
    assert records["chexlocalize_hit_rate"]["details"]["chance_method"] == "area fraction"
    # the true-positive slice: the positive slice less the images the model calls negative
    frame = pd.read_csv(tmp_path / "run" / "explanations.csv")
    preds = pd.read_csv(tmp_path / "run" / "predictions.csv")
    test = preds[(preds.split == "test") & preds.perturbation.isna()]
    called = test.set_index("sample_id").called_positive.astype(bool)
    tp = frame[frame.metric == "miou_tp"].set_index("sample_id").value
    pos = frame[frame.metric == "miou_pos"].set_index("sample_id").value
    assert records["miou_tp"]["details"]["constant_maps"] == 0  # no empty segmentation
    expected = pos.notna() & called.reindex(pos.index)
    assert 0 < expected.sum() < pos.notna().sum()  # the slices differ on this fixture
    np.testing.assert_array_equal(tp.notna().to_numpy(), expected.to_numpy())
    assert records["miou_tp"]["n"] == int(expected.sum())
    np.testing.assert_allclose(tp[expected], pos[expected])
