"""Peak memory of a whole run against the number of images: 2,000 vs 8,000 phantoms at 256 px.

A run must stream its images from disk, so that its peak resident memory does not grow with the
number of images beyond the per-sample score tables (predictions, explanation scores, drift
grids: a few kilobytes per image). Target: peak RSS at 8,000 images within 1.3x of that at 2,000
(asserted here; nothing about time is).

Each run is a complete ``run_benchmark`` in a fresh Python process: two cells on one backbone
(``test_resnet.random`` at 64 px input, fed 256 px images) — ``linear_probe`` (frozen features)
and ``full`` (one epoch of training, random batches) — then test predictions, the ``mean``
perturbation of bone (shared by both cells), ``gradcam`` on **every** test image (no
``max_explain_images``: explanations scale with the test split, as the claim is about the number
of test images), bone IoU, the sanity checks, galleries and drift grids, the results files and
the leaderboards. The test split is 20% of the images: 400 and 1,600. Peak RSS is the child's
``ru_maxrss`` from ``os.wait4`` (interpreter, torch and everything the run touched, counted once).

The phantoms are rendered first, in their own process (timed and reported separately: about
8,000 images at 50 images/s on two cores), into a cache folder shared by both runs: a fresh
temporary one per session, or ``$XAIBENCH_BENCH_CACHE_DIR`` to keep the rendered images between
sessions. The frozen-feature cache is emptied before each run, so both runs extract features.

Run ``python -m pytest benchmarks/test_memory_scaling.py --benchmark-only -s``; peak RSS per run
and the ratio are printed and stored in the rows' ``extra_info``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

SIZES = (2000, 8000)
IMAGE_SIZE = 256
TARGET = 1.3
SHARES = [0.45, 0.3, 0.25]
CACHE_ENV = "XAIBENCH_BENCH_CACHE_DIR"

_PEAKS: dict[int, int] = {}


def run_config(n_images: int, cache_dir: Path) -> dict[str, Any]:
    """The benchmark's run configuration for ``n_images`` phantoms."""
    return {
        "dataset": {
            "name": "phantom",
            "options": {"n_images": n_images, "image_size": IMAGE_SIZE, "class_shares": SHARES},
        },
        "backbones": [{"name": "test_resnet.random", "options": {"img_size": 64}}],
        "strategies": ["linear_probe", "full"],
        "saliency": ["gradcam"],
        "perturbations": ["mean"],
        "perturb_regions": ["bone"],
        "complement_regions": [],
        "explain_regions": ["bone"],
        "metrics": ["auc", "accuracy", "delta_region", "iou_region"],
        "train": {"epochs": 1, "batch_size": 32, "eval_batch_size": 64},
        "cache_dir": str(cache_dir),
    }


GENERATE = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    from xaibench.data.phantom import PhantomDataset

    cache, size, shares = Path(sys.argv[1]), int(sys.argv[2]), [float(s) for s in sys.argv[3:6]]
    for n in map(int, sys.argv[6:]):
        ds = PhantomDataset(n_images=n, image_size=size, class_shares=shares)
        ds.use_cache(cache)
        for i in range(0, n, ds.chunk_images()):
            ds[i]  # renders (and stores) the chunk holding image i, unless it is on disk
    """
)

RUN = textwrap.dedent(
    """
    import json
    import sys
    from pathlib import Path

    from xaibench.benchmark import run_benchmark
    from xaibench.config import resolve_config
    from xaibench.plugins import collect_components, get_plugin_manager

    config_file, out = Path(sys.argv[1]), Path(sys.argv[2])
    components = collect_components(get_plugin_manager())
    defaults = components.tasks.create("osteoporosis").defaults()
    config = resolve_config(defaults, json.loads(config_file.read_text()))
    outcome = run_benchmark(config, components, out)
    assert not outcome.failed, [r.error for r in outcome.failed]
    """
)


def run_child(args: list[str], log: Path) -> tuple[float, int]:
    """Run ``python -c ...`` in a fresh process; return its wall time (s) and peak RSS (bytes).

    ``os.wait4`` reports the resource usage of exactly this child, so no earlier child's peak
    can leak into the number (as it would through ``RUSAGE_CHILDREN``).
    """
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-c", *args], stdout=out, stderr=out)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        pytest.fail(f"child exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
    return seconds, usage.ru_maxrss * 1024  # Linux reports KiB


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder holding every phantom image of both runs (rendered here if missing)."""
    root = Path(os.environ[CACHE_ENV]) if os.environ.get(CACHE_ENV) else None
    cache = root or tmp_path_factory.mktemp("memory-cache")
    log = tmp_path_factory.mktemp("memory-logs") / "generate.log"
    shares = [str(s) for s in SHARES]
    sizes = [str(n) for n in sorted(SIZES, reverse=True)]
    seconds, peak = run_child([GENERATE, str(cache), str(IMAGE_SIZE), *shares, *sizes], log)
    print(
        f"\nphantom images in {cache}: {seconds:.0f} s to render or find "
        f"{max(SIZES)} + {min(SIZES)} images at {IMAGE_SIZE} px (peak RSS {peak / 2**20:.0f} MiB)"
    )
    return cache


def measure(n_images: int, cache: Path, work: Path) -> tuple[float, int]:
    """One complete run on ``n_images`` phantoms in a fresh process: (seconds, peak RSS bytes)."""
    shutil.rmtree(cache / "features", ignore_errors=True)  # every run extracts its features
    config = work / f"config-{n_images}.json"
    config.write_text(json.dumps(run_config(n_images, cache)))
    out = work / f"run-{n_images}"
    shutil.rmtree(out, ignore_errors=True)
    return run_child([RUN, str(config), str(out)], work / f"run-{n_images}.log")


@pytest.mark.benchmark(group="memory_scaling")
@pytest.mark.parametrize("n_images", SIZES)
def test_peak_rss_does_not_grow_with_the_number_of_images(
    benchmark, cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], n_images: int
) -> None:
    seconds, peak = benchmark.pedantic(
        measure, args=(n_images, cache_dir, tmp_path), rounds=1, iterations=1
    )
    _PEAKS[n_images] = peak
    benchmark.extra_info.update(n_images=n_images, peak_rss_mib=round(peak / 2**20, 1))
    with capsys.disabled():
        print(f"\n{n_images} images: peak RSS {peak / 2**20:.0f} MiB ({seconds:.0f} s)")
    if n_images != max(SIZES):
        return
    small = min(SIZES)
    if small not in _PEAKS:  # run on its own (-k): measure the reference too
        _PEAKS[small] = measure(small, cache_dir, tmp_path)[1]
    ratio = peak / _PEAKS[small]
    benchmark.extra_info.update(
        peak_rss_mib_small=round(_PEAKS[small] / 2**20, 1), ratio_vs_small=round(ratio, 3)
    )
    met = "met" if ratio <= TARGET else "NOT met"
    with capsys.disabled():
        print(
            f"peak RSS {n_images} / {small} images: {ratio:.2f} (target <= {TARGET}: {met}); "
            f"{_PEAKS[small] / 2**20:.0f} MiB -> {peak / 2**20:.0f} MiB"
        )
    assert ratio <= TARGET
