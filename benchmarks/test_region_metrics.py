"""Region-metric speed, each against an in-process baseline on the same data.

* ``iou_otsu``: batched torch Otsu + IoU vs a per-image scikit-image loop.
* ``vs_quantus``: our batched localisation kernels vs Quantus 0.6.0 on the same 256 maps at
  224 x 224 (smooth random fields with distinct values, random elliptical regions). Values
  must be identical (to 1e-6). Two ratios are printed per metric: against Quantus' whole
  call, which is what a user pays and is dominated by its input checks (``set(a.tolist())``
  over every attribution value), and against its ``evaluate_batch`` kernel alone. The target
  is at least 20x on the whole call. Timings on a shared machine are noisy and Quantus' call
  is timed once, so the test asserts only a floor of 5x (a per-image Python loop would fall
  below it) and prints whether the target was met; the kernel ratios are reported as they are
  (Quantus' pointing-game and mass kernels are single vectorised NumPy expressions without
  input validation, so they are not expected to be beaten).

Run with ``python -m pytest benchmarks/test_region_metrics.py --benchmark-only`` (or tox's
``bench`` env). The ratio lines are printed past pytest's capture and stored in each row's
``extra_info``. Quantus' whole call is timed once per metric (3-12 s each, depending on the
machine), its kernel best of three.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import quantus
import torch
from scipy.ndimage import gaussian_filter
from skimage.filters import threshold_otsu

from xaibench.metrics.binarize import otsu_binarize, region_iou
from xaibench.metrics.map_scores import pixel_auc, pointing_game, relevance_mass, relevance_rank

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
TARGET = 20.0  # x faster than Quantus' whole call, reported
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


@dataclass(frozen=True)
class Reference:
    values: np.ndarray
    call_s: float
    kernel_s: float


def _quantus_reference(metric_cls: type, maps: np.ndarray, masks: np.ndarray) -> Reference:
    """Quantus' scores with its preprocessing off, and the time of its call and its kernel."""
    metric = metric_cls(abs=False, normalise=False, disable_warnings=True)
    a_batch = maps[:, None].astype(np.float64)
    s_batch = masks[:, None].astype(np.float64)
    x_batch = np.zeros_like(a_batch)
    y_batch = np.zeros(len(maps), dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        values = metric(
            model=None,
            x_batch=x_batch,
            y_batch=y_batch,
            a_batch=a_batch,
            s_batch=s_batch,
            batch_size=len(maps),
        )
        call_s = time.perf_counter() - start
        kernel_times = []
        for _ in range(3):
            start = time.perf_counter()
            metric.evaluate_batch(a_batch=a_batch, s_batch=s_batch)
            kernel_times.append(time.perf_counter() - start)
    return Reference(np.asarray(values, dtype=np.float64), call_s, min(kernel_times))


# name -> (our kernel, Quantus metric, transform applied to Quantus' input only)
CASES: dict[str, tuple[Callable[..., torch.Tensor], type, Callable[[np.ndarray], np.ndarray]]] = {
    "pointing_game": (pointing_game, quantus.PointingGame, lambda a: a),
    # We count positive attribution only; Quantus sums signed values: give it the positive part.
    "relevance_mass": (relevance_mass, quantus.RelevanceMassAccuracy, lambda a: a.clip(0)),
    "relevance_rank": (relevance_rank, quantus.RelevanceRankAccuracy, lambda a: a),
    "pixel_auc": (pixel_auc, quantus.AUC, lambda a: a),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.benchmark(group="vs_quantus")
def test_xaibench_vs_quantus(benchmark, localisation_data, capsys, name: str) -> None:
    kernel, metric_cls, quantus_input = CASES[name]
    maps, masks = localisation_data
    reference = _quantus_reference(metric_cls, quantus_input(maps.numpy()), masks.numpy())
    result = benchmark(kernel, maps, masks)
    np.testing.assert_allclose(result.numpy(), reference.values, rtol=0, atol=1e-6)
    ours = benchmark.stats.stats.min
    vs_call, vs_kernel = reference.call_s / ours, reference.kernel_s / ours
    benchmark.extra_info.update(
        quantus_call_s=round(reference.call_s, 3),
        quantus_kernel_s=round(reference.kernel_s, 4),
        speedup_vs_quantus_call=round(vs_call, 1),
        speedup_vs_quantus_kernel=round(vs_kernel, 2),
    )
    met = "met" if vs_call >= TARGET else "NOT met"
    with capsys.disabled():
        print(
            f"\n{name}: xaibench {ours * 1e3:.0f} ms; Quantus call {reference.call_s:.2f} s "
            f"({vs_call:.0f}x, target {TARGET:.0f}x {met}), Quantus kernel "
            f"{reference.kernel_s * 1e3:.0f} ms ({vs_kernel:.1f}x); {QB} maps {QH}x{QW}, "
            "values identical to 1e-6"
        )
    assert vs_call >= FLOOR
