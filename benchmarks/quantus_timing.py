"""Quantus 0.6.0 as a speed baseline: its whole call and its per-batch function, same run."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Loose floor on our speed over Quantus' per-batch function (target 1x; noise margin).
KERNEL_FLOOR = 0.8


@dataclass(frozen=True)
class Reference:
    """Quantus' values, the seconds of one whole call and the best of its per-batch function."""

    values: np.ndarray
    call_s: float
    kernel_s: float


def quantus_reference(
    metric: Any,
    a_batch: np.ndarray,
    s_batch: np.ndarray | None = None,
    kernel_a_batch: Callable[[], np.ndarray] | None = None,
    rounds: int = 3,
) -> Reference:
    """Time ``metric``'s whole call once and its ``evaluate_batch`` best of ``rounds``.

    Args:
        metric: A Quantus metric instance (model-free: localisation or complexity).
        a_batch: ``[B, 1, H, W]`` float64 attributions for the whole call.
        s_batch: ``[B, 1, H, W]`` float64 regions, or None.
        kernel_a_batch: Makes the array ``evaluate_batch`` receives (what the call's
            preprocessing would hand it), afresh each round, outside the timing (some kernels
            modify it in place); ``a_batch`` itself when None.
        rounds: Timed calls of the per-batch function.
    """
    batch = len(a_batch)
    x_batch = np.zeros_like(a_batch)
    y_batch = np.zeros(batch, dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        values = metric(
            model=None,
            x_batch=x_batch,
            y_batch=y_batch,
            a_batch=a_batch.copy(),
            s_batch=s_batch,
            batch_size=batch,
        )
        call_s = time.perf_counter() - start
        kernel_times = []
        for _ in range(rounds):
            kernel_input = a_batch if kernel_a_batch is None else kernel_a_batch()
            start = time.perf_counter()
            metric.evaluate_batch(x_batch=x_batch, a_batch=kernel_input, s_batch=s_batch)
            kernel_times.append(time.perf_counter() - start)
    return Reference(np.asarray(values, dtype=np.float64), call_s, min(kernel_times))


def report(
    benchmark: Any, capsys: Any, name: str, reference: Reference, same_score: bool, data: str
) -> None:
    """Store the ratios in the benchmark row and print one line past pytest's capture."""
    ours = benchmark.stats.stats.min
    vs_call, vs_kernel = reference.call_s / ours, reference.kernel_s / ours
    benchmark.extra_info.update(
        quantus_call_s=round(reference.call_s, 3),
        quantus_kernel_s=round(reference.kernel_s, 4),
        speedup_vs_quantus_call=round(vs_call, 1),
        speedup_vs_quantus_kernel=round(vs_kernel, 2),
    )
    values = "values identical to 1e-6" if same_score else "speed only (not the same score)"
    with capsys.disabled():
        print(
            f"\n{name}: xaibench {ours * 1e3:.1f} ms; Quantus per-batch "
            f"{reference.kernel_s * 1e3:.1f} ms ({vs_kernel:.2f}x), whole call "
            f"{reference.call_s:.2f} s ({vs_call:.0f}x); {data}, {values}"
        )
