"""Cost of the region metrics' chance levels in the explanation stage of the default run.

Times ``CellRunner._explain`` (maps, region metrics, sanity checks, galleries, drift grids: the
whole explanation stage of a cell) on the default osteoporosis run's data (phantom, 1000 images
at 128 px, 200 test images; ``gradcam`` and ``saliency``; IoU, pointing game and relevance mass
on the four bone regions) for one of the default grid's backbones, randomly initialised (the
stage's cost does not depend on training). Prints the median and minimum over ``--repeats``.

With the chance levels present (this branch), each repeat runs twice, with and without them
(``ChanceTally.add`` stubbed), alternating so that drift in machine load hits both alike: the
ratio is the chance levels' own cost. Run it again with the code before them on ``PYTHONPATH``
(e.g. ``git archive 7dde945 | tar -x -C /tmp/base``) for the stage's time before and after::

    PYTHONPATH=$PWD python benchmarks/chance_cost.py
    PYTHONPATH=/tmp/base python benchmarks/chance_cost.py

Torch runs on one thread (``--threads``) for steadier timings on a shared machine; ``--cpu``
times the process's CPU time instead of wall time, which a loaded machine disturbs less.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Any

import torch

from xaibench.cell_result import CellResult
from xaibench.config import ComponentRef, resolve_config
from xaibench.engine.grid import create_backbone
from xaibench.engine.runner import CellRunner, seed_everything
from xaibench.plugins import collect_components, get_plugin_manager
from xaibench.progress import NullProgress
from xaibench.run_data import prepare_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="dinov2_tiny.random")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="Time the process's CPU time instead of wall time (steadier on a loaded machine; "
        "with one thread it is the stage's own work).",
    )
    args = parser.parse_args()
    clock = time.process_time if args.cpu else time.perf_counter
    torch.set_num_threads(args.threads)
    components = collect_components(get_plugin_manager(entry_points=False))
    defaults = components.tasks.create("osteoporosis").defaults()
    grid = {"backbones": [args.backbone], "strategies": ["linear_probe"]}
    config = resolve_config(defaults, grid)
    os.environ.setdefault("XAIBENCH_SCRATCH_DIR", tempfile.mkdtemp(prefix="chance-cost-"))
    data = prepare_data(config, components, NullProgress())
    seed_everything(0)
    ref = ComponentRef.model_validate(args.backbone)
    factory = create_backbone(components, ref)
    adapter = factory.build(factory.locate_weights(ref.key))
    model = components.strategies.create("linear_probe").prepare(adapter, 3).eval()
    runner = CellRunner(config, components, data)
    base: dict[str, Any] = {
        "backbone": args.backbone, "strategy": "linear_probe", "seed": 0, "random_init": True,
    }  # fmt: skip

    try:
        from xaibench.chance_tally import ChanceTally
    except ImportError:
        tally = None
    else:
        tally = ChanceTally
    real_add = tally.add if tally is not None else None

    def stage(chance: bool) -> float:
        if tally is not None:
            tally.add = real_add if chance else (lambda *a, **k: None)  # type: ignore[method-assign]
        seed_everything(0)
        start = clock()
        runner._explain(model, base, CellResult(None))  # type: ignore[arg-type]
        return clock() - start

    stage(True)  # warm-up: first-call costs (allocations, lazy imports)
    on, off = [], []
    for _ in range(args.repeats):
        on.append(stage(True))
        if tally is not None:
            off.append(stage(False))
    test_images = len(data.splits["test"])
    what = "CPU time" if args.cpu else "wall time"
    print(f"explanation stage ({what}), {args.backbone}, {test_images} test images")
    label = "with chance levels" if tally is not None else "code without chance levels"
    print(f"  {label}: median {statistics.median(on):.2f} s, min {min(on):.2f} s")
    if off:
        print(f"  chance stubbed out: median {statistics.median(off):.2f} s, min {min(off):.2f} s")
        ratio = statistics.median(a / b for a, b in zip(on, off, strict=True))
        print(f"  ratio with / without chance (median of paired repeats): {ratio:.3f}")


if __name__ == "__main__":
    main()
