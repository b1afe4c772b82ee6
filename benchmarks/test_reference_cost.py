"""What the reference points of the explanation scores cost: the default run before and after.

Issue 17 gives every localisation score its chance level (analytic, or a seeded shift null for
IoU) and every Δ its control regions (``controls.draws`` same-area regions per perturbed region,
each perturbed and predicted). Target: together they add at most 30% to the default run
(``xaibench run osteoporosis``: 12 cells, 1,000 phantom images at 128 px), which stays under five
minutes on two cores.

The default run is timed twice in this process, each time with a cache folder of its own (so
both render the phantom and train every cell; nothing is reused between them), after a tiny
warm-up run (without it the first run pays every import and first-call cost: measured that way,
"after" came out at 0.92 of "before"):

* **before** — ``controls.draws: 0`` and the region metrics' chance levels stubbed out (the
  metric returns no chance level, as a metric without ``best`` does);
* **after** — the defaults.

Printed and stored in the benchmark's ``extra_info``: wall and CPU seconds of each and the ratios
after / before. Nothing is asserted about time (the machine may be shared); the numbers of a run
are in ``docs/performance.md``.

Run: ``python -m pytest benchmarks/test_reference_cost.py --benchmark-only -s`` (about ten
minutes on two cores).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from xaibench.config import resolve_config
from xaibench.engine.benchmark import run_benchmark
from xaibench.metrics.base import SaliencyRegionMetric
from xaibench.plugins import collect_components, get_plugin_manager


def _default_run(out: Path, cache: Path, overrides: dict[str, Any]) -> dict[str, float]:
    components = collect_components(get_plugin_manager())
    task = components.tasks.create("osteoporosis")
    config = resolve_config(task.defaults(), {"cache_dir": str(cache), **overrides})
    wall, cpu = time.perf_counter(), time.process_time()
    outcome = run_benchmark(config, components, out)
    seconds = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}
    assert all(cell["status"] == "ok" for cell in outcome.document["cells"])
    return seconds


def test_chance_levels_and_controls_cost(
    benchmark: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    times: dict[str, dict[str, float]] = {}

    # Warm-up: every backbone family's imports, torch's thread pools and first-call costs, on
    # a tiny copy of the default run, so they do not land on whichever run comes first.
    _default_run(
        tmp_path / "warm-up",
        tmp_path / "cache-warm-up",
        {"dataset": {"name": "phantom", "options": {"n_images": 80}}, "train": {"epochs": 1}},
    )

    def measure() -> None:
        with monkeypatch.context() as patch:
            for cls in _with_chance_levels():
                patch.setattr(cls, "chance_levels", _no_chance)
            times["before"] = _default_run(
                tmp_path / "before", tmp_path / "cache-before", {"controls": {"draws": 0}}
            )
        times["after"] = _default_run(tmp_path / "after", tmp_path / "cache-after", {})

    benchmark.pedantic(measure, rounds=1, iterations=1)
    ratios = {k: times["after"][k] / times["before"][k] for k in ("wall", "cpu")}
    benchmark.extra_info.update(
        {
            "before": times["before"],
            "after": times["after"],
            "ratio": ratios,
            "target": "ratio <= 1.30; after wall < 300 s on 2 cores",
        }
    )
    print(
        f"\ndefault run: before {times['before']['wall']:.0f} s wall "
        f"({times['before']['cpu']:.0f} s CPU), after {times['after']['wall']:.0f} s wall "
        f"({times['after']['cpu']:.0f} s CPU): ratio {ratios['wall']:.2f} wall, "
        f"{ratios['cpu']:.2f} CPU (target <= 1.30)"
    )


def _with_chance_levels() -> list[type]:
    """Every built-in region-metric class that defines its own ``chance_levels``."""
    from xaibench.metrics import localisation

    classes = [SaliencyRegionMetric, *vars(localisation).values()]
    return [c for c in classes if isinstance(c, type) and "chance_levels" in vars(c)]


def _no_chance(
    self: SaliencyRegionMetric, maps: Any, masks: Any, generator: Any, draws: int = 0
) -> dict[str, None]:
    return dict.fromkeys(masks)
