"""Timing helpers shared by the benchmarks: ratios against a baseline run in the same process."""

import statistics
import time
from collections.abc import Callable


def interleaved_ratio(
    fn: Callable[[], object], baseline: Callable[[], object], rounds: int = 21
) -> float:
    """Median time of ``fn`` over median time of ``baseline``, alternating them so that drift in
    machine load hits both alike."""
    fn(), baseline()
    times: dict[str, list[float]] = {"fn": [], "baseline": []}
    for _ in range(rounds):
        for key, f in (("fn", fn), ("baseline", baseline)):
            start = time.perf_counter()
            f()
            times[key].append(time.perf_counter() - start)
    return statistics.median(times["fn"]) / statistics.median(times["baseline"])
