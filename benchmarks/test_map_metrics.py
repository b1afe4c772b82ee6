"""Map-metric (complexity) speed against Quantus 0.6.0 on the same 256 maps at 224 x 224.

Our batched kernels (:mod:`xaibench.metrics.complexity`) against Quantus' ``Sparseness``,
``Complexity`` and ``EffectiveComplexity``: its whole call and its per-batch function
``evaluate_batch`` alone. Quantus' call takes the absolute value and divides by the maximum
before the per-batch function runs; here it is told to divide per map
(``normalise_axes=[1, 2, 3]``, as ours does), and its per-batch function receives that
preprocessed float64 array, made afresh outside the timing (its kernels modify it in place).
Ours is timed from the raw float32 maps, preprocessing included. Values must be identical
(1e-6). Only loose floors are asserted (the whole call at least 5x, the per-batch function at
least 0.8x, ratios from the same run); the ratios are printed and stored in ``extra_info``.

Run with ``python -m pytest benchmarks/test_map_metrics.py --benchmark-only -s``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import quantus
import torch
from quantus_timing import KERNEL_FLOOR, quantus_reference, report
from scipy.ndimage import gaussian_filter

from xaibench.metrics.complexity import effective_complexity, entropy_complexity, gini_sparseness

QB, QH, QW = 256, 224, 224
FLOOR = 5.0


@pytest.fixture(scope="module")
def maps() -> torch.Tensor:
    """Smooth signed float32 fields, a fifth of each map exactly zero (sparse attribution)."""
    rng = np.random.default_rng(0)
    field = gaussian_filter(rng.normal(size=(QB, QH, QW)), sigma=(0, 6, 6)).astype(np.float32)
    field[:, : QH // 5] = 0.0
    return torch.from_numpy(field)


CASES: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], type]] = {
    "sparseness": (gini_sparseness, quantus.Sparseness),
    "complexity": (entropy_complexity, quantus.Complexity),
    "effective_complexity": (  # Quantus' default threshold
        lambda m: effective_complexity(m, eps=1e-5),
        quantus.EffectiveComplexity,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.benchmark(group="map_vs_quantus")
def test_map_metric_vs_quantus(benchmark, maps, capsys, name: str) -> None:
    kernel, metric_cls = CASES[name]
    metric = metric_cls(disable_warnings=True, normalise_func_kwargs={"normalise_axes": [1, 2, 3]})
    a_batch = maps.numpy()[:, None].astype(np.float64)
    absolute = np.abs(a_batch)
    preprocessed = absolute / absolute.max(axis=(1, 2, 3), keepdims=True)
    reference = quantus_reference(metric, a_batch, kernel_a_batch=preprocessed.copy)
    result = benchmark(kernel, maps)
    np.testing.assert_allclose(result.numpy(), reference.values, rtol=0, atol=1e-6)
    report(benchmark, capsys, name, reference, True, f"{QB} maps {QH}x{QW}")
    assert reference.call_s / benchmark.stats.stats.min >= FLOOR
    assert reference.kernel_s / benchmark.stats.stats.min >= KERNEL_FLOOR
