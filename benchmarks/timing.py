"""Timing helpers shared by the benchmarks: ratios against a baseline run in the same process."""

import statistics
import time
from collections.abc import Callable, Mapping


def interleaved(fns: Mapping[str, Callable[[], object]], rounds: int = 21) -> dict[str, float]:
    """Median seconds of each function, calling them in turn in every round so that drift in
    machine load hits all alike (one untimed call of each first)."""
    for f in fns.values():
        f()
    times: dict[str, list[float]] = {key: [] for key in fns}
    for _ in range(rounds):
        for key, f in fns.items():
            start = time.perf_counter()
            f()
            times[key].append(time.perf_counter() - start)
    return {key: statistics.median(t) for key, t in times.items()}


def interleaved_medians(
    fn: Callable[[], object], baseline: Callable[[], object], rounds: int = 21
) -> tuple[float, float]:
    """Median seconds of ``fn`` and of ``baseline``, alternating them (see :func:`interleaved`)."""
    medians = interleaved({"fn": fn, "baseline": baseline}, rounds)
    return medians["fn"], medians["baseline"]


def interleaved_ratio(
    fn: Callable[[], object], baseline: Callable[[], object], rounds: int = 21
) -> float:
    """Median time of ``fn`` over median time of ``baseline``, alternating them so that drift in
    machine load hits both alike."""
    t_fn, t_baseline = interleaved_medians(fn, baseline, rounds)
    return t_fn / t_baseline
