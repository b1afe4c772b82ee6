"""Region-metric speed, each against an in-process baseline on the same data.

* ``iou_otsu``: batched torch Otsu + IoU vs a per-image scikit-image loop.
* ``vs_quantus``: our batched localisation kernels vs Quantus 0.6.0 on the same 256 maps at
  224 x 224 (smooth random fields with distinct values, random elliptical regions). Where the
  score is the same (pointing game, relevance mass and rank, pixel AUC) the values must be
  identical (to 1e-6). Two ratios are printed per metric: against Quantus' whole call, which is
  what a user pays and is dominated by its input checks (``set(a.tolist())`` over every
  attribution value), and against its per-batch function ``evaluate_batch`` alone, given the
  arrays its call would hand it (float64, already preprocessed). Quantus has no IoU of a
  binarised map and no inside/outside density ratio, so ``iou_region`` and ``energy_ratio``
  are timed against its nearest per-batch kernels (``TopKIntersection``,
  ``AttributionLocalisation``) without comparing values. Timings on a shared machine are
  noisy and Quantus' call is timed once, so the test asserts only loose floors (5x the whole
  call, 0.8x the per-batch function, both measured in the same run) and prints the ratios;
  ``docs/performance.md`` has the table.

Run with ``python -m pytest benchmarks/test_region_metrics.py --benchmark-only -s`` (or tox's
``bench`` env). The ratio lines are printed past pytest's capture and stored in each row's
``extra_info``. Quantus' whole call is timed once per metric (10-40 s each on a shared
two-core machine), its per-batch function best of three.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import quantus
import torch
from quantus_timing import KERNEL_FLOOR, quantus_reference, report
from scipy.ndimage import gaussian_filter
from skimage.filters import threshold_otsu

from xaibench.metrics.binarize import otsu_binarize, region_iou, topk_binarize
from xaibench.metrics.map_scores import (
    energy_ratio,
    pixel_auc,
    pointing_game,
    relevance_mass,
    relevance_rank,
)

B, H, W = 64, 128, 128


@pytest.fixture(scope="module")
def data():
    gen = torch.Generator().manual_seed(0)
    maps = torch.rand(B, H, W, generator=gen) ** 3
    masks = torch.rand(B, H, W, generator=gen) > 0.7
    return maps, masks


def skimage_loop(maps: torch.Tensor, masks: torch.Tensor) -> np.ndarray:
    out = np.empty(len(maps))
    for i, (m, r) in enumerate(zip(maps.numpy(), masks.numpy(), strict=True)):
        x = (m - m.min()) / (m.max() - m.min())
        img8 = (255 * x.astype(np.float64)).astype(np.uint8)
        pred = img8 > threshold_otsu(img8)
        out[i] = (pred & r).sum() / (pred | r).sum()
    return out


@pytest.mark.benchmark(group="iou_otsu")
def test_skimage_loop_baseline(benchmark, data):
    benchmark(skimage_loop, *data)


@pytest.mark.benchmark(group="iou_otsu")
def test_xaibench_batched(benchmark, data):
    result = benchmark(lambda: region_iou(otsu_binarize(data[0]), data[1]))
    np.testing.assert_allclose(result.numpy(), skimage_loop(*data))


# ---------------------------------------------------------------------------------------------
# Against Quantus 0.6.0
# ---------------------------------------------------------------------------------------------

QB, QH, QW = 256, 224, 224
FLOOR = 5.0  # x faster than Quantus' whole call, asserted


@pytest.fixture(scope="module")
def localisation_data() -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth signed float32 maps with all-distinct values, and 1-3 random ellipses each.

    Each map follows the ranks of a smoothed noise field, interleaved across maps
    (``rank * B + map index``) so that every value in the batch is distinct, shifted so that
    about 30 % are negative (which exercises the positive-part rule of relevance mass), and
    scaled by 2**-24 into [-0.3, 0.7). The values are then exact in float32 and float64 and
    all distinct, which gives relevance rank a single answer whatever the tie order, and they
    are not whole numbers, like real saliency values: Quantus' input check hashes every value
    of the batch, and whole-number floats would hash unrealistically fast.
    """
    rng = np.random.default_rng(0)
    field = gaussian_filter(rng.normal(size=(QB, QH, QW)), sigma=(0, 6, 6))
    ranks = field.reshape(QB, -1).argsort(axis=1).argsort(axis=1)
    interleaved = ranks * QB + np.arange(QB)[:, None]
    shifted = (interleaved - int(0.3 * QB * QH * QW)).astype(np.float32)
    maps = np.ldexp(shifted, -24).reshape(QB, QH, QW)  # exact: a power-of-two scale
    rows, cols = np.mgrid[:QH, :QW]
    masks = np.zeros((QB, QH, QW), dtype=bool)
    for i in range(QB):
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.uniform(0, QH), rng.uniform(0, QW)
            ry, rx = rng.uniform(10, 60, size=2)
            masks[i] |= ((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 <= 1
    masks[:, QH // 2, QW // 2] = True  # never empty: Quantus' pointing game mis-scores empty
    return torch.from_numpy(maps), torch.from_numpy(masks)


# name -> (our kernel, Quantus metric, transform applied to Quantus' input only, whether the
# values are the same score). Quantus has no IoU of a binarised map and no inside/outside density
# ratio: those two are timed against its nearest per-batch kernels (TopKIntersection: a top-k
# binarisation and an overlap; AttributionLocalisation: an inside/total mass ratio), values not
# compared.
CASES: dict[
    str,
    tuple[Callable[..., torch.Tensor], type, Callable[[np.ndarray], np.ndarray], bool],
] = {
    "pointing_game": (pointing_game, quantus.PointingGame, lambda a: a, True),
    # We count positive attribution only; Quantus sums signed values: give it the positive part.
    "relevance_mass": (relevance_mass, quantus.RelevanceMassAccuracy, lambda a: a.clip(0), True),
    "relevance_rank": (relevance_rank, quantus.RelevanceRankAccuracy, lambda a: a, True),
    "pixel_auc": (pixel_auc, quantus.AUC, lambda a: a, True),
    "energy_ratio": (energy_ratio, quantus.AttributionLocalisation, lambda a: a, False),
    "iou_region": (
        lambda m, r: region_iou(otsu_binarize(m), r),
        quantus.TopKIntersection,
        lambda a: a,
        False,
    ),
    "iou_region_topk": (
        lambda m, r: region_iou(topk_binarize(m, 10.0), r),
        quantus.TopKIntersection,
        lambda a: a,
        False,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.benchmark(group="vs_quantus")
def test_xaibench_vs_quantus(benchmark, localisation_data, capsys, name: str) -> None:
    kernel, metric_cls, quantus_input, same_score = CASES[name]
    maps, masks = localisation_data
    a_batch = quantus_input(maps.numpy())[:, None].astype(np.float64)
    s_batch = masks.numpy()[:, None].astype(np.float64)
    metric = metric_cls(abs=False, normalise=False, disable_warnings=True)
    reference = quantus_reference(metric, a_batch, s_batch)
    result = benchmark(kernel, maps, masks)
    if same_score:
        np.testing.assert_allclose(result.numpy(), reference.values, rtol=0, atol=1e-6)
    report(benchmark, capsys, name, reference, same_score, f"{QB} maps {QH}x{QW}")
    assert reference.call_s / benchmark.stats.stats.min >= FLOOR
    assert reference.kernel_s / benchmark.stats.stats.min >= KERNEL_FLOOR
