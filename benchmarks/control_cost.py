"""Cost of the control regions (specific Δ) inside a default-configuration run.

Runs the default osteoporosis configuration restricted to one backbone (its three strategies,
one seed) with ``controls.draws`` at its default, and times, in CPU seconds of this process and
in wall seconds, the control work apart from the rest: building the control masks
(``_control_plan``), perturbing and predicting the control draws (``_controls_of``, split into
the perturbations' ``apply`` and the forward passes) and the specific-Δ bootstrap
(``_specific_details``). CPU seconds are steadier than wall seconds on a shared machine. The
share the controls add is ``controls / (run - controls)``; in a 12-cell run the perturbed control
images are made once per seed (like the region's own) and only the forward passes repeat per
cell, so that share is lower than in this 3-cell run.

Usage: ``python benchmarks/control_cost.py BACKBONE OUT_DIR`` (e.g. ``dinov2_tiny.random``,
the default grid's backbone with the most expensive forward pass). Prints one JSON line.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xaibench.config import resolve_config
from xaibench.engine import runner as run_module
from xaibench.engine.benchmark import run_benchmark
from xaibench.plugins import collect_components, get_plugin_manager

TIMES: dict[str, dict[str, float]] = {}
STATE = {"in_controls": False}


def _add(name: str, wall: float, cpu: float) -> None:
    entry = TIMES.setdefault(name, {"wall": 0.0, "cpu": 0.0, "calls": 0})
    entry["wall"] += wall
    entry["cpu"] += cpu
    entry["calls"] += 1


def _timed(fn: Callable[..., Any], label: Callable[[], str], flag: bool = False) -> Any:
    def inner(*args: Any, **kwargs: Any) -> Any:
        if flag:
            STATE["in_controls"] = True
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            _add(label(), time.perf_counter() - wall, time.process_time() - cpu)
            if flag:
                STATE["in_controls"] = False

    return inner


def main(backbone: str, out: Path) -> dict[str, Any]:
    """Run and time; returns the JSON-ready result."""
    cls = run_module.CellRunner
    cls._perturb = _timed(cls._perturb, lambda: "perturb_stage")  # type: ignore[method-assign]
    cls._run = _timed(cls._run, lambda: "cells")  # type: ignore[method-assign]
    cls._controls_of = _timed(cls._controls_of, lambda: "controls_of", flag=True)  # type: ignore[method-assign]
    cls._control_plan = _timed(cls._control_plan, lambda: "control_plan")  # type: ignore[method-assign]
    cls._specific_details = staticmethod(  # type: ignore[method-assign]
        _timed(cls._specific_details, lambda: "specific_details")
    )
    where = lambda kind: lambda: f"{kind}_{'controls' if STATE['in_controls'] else 'other'}"  # noqa: E731
    run_module.predict = _timed(run_module.predict, where("predict"))
    components = collect_components(get_plugin_manager())
    config = resolve_config(
        components.tasks.create("osteoporosis").defaults(), {"backbones": [backbone]}
    )
    for ref in config.perturbations:
        kind = type(components.perturbations.create(ref.name, ref.options))
        kind.apply = _timed(kind.apply, where("apply"))  # type: ignore[method-assign]
    shutil.rmtree(out, ignore_errors=True)
    wall, cpu = time.perf_counter(), time.process_time()
    doc = run_benchmark(config, components, out).document
    result = {
        "backbone": backbone,
        "draws": config.controls.draws,
        "run_wall": time.perf_counter() - wall,
        "run_cpu": time.process_time() - cpu,
        "cells_ok": sum(c["status"] == "ok" for c in doc["cells"]),
        "parts": TIMES,
    }
    control = sum(TIMES.get(k, {}).get("cpu", 0.0)
                  for k in ("control_plan", "controls_of", "specific_details"))  # fmt: skip
    result["control_share_cpu"] = control / (result["run_cpu"] - control)
    return result


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], Path(sys.argv[2]))))
