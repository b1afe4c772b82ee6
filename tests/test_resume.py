"""Runs that survive being killed: checkpoints, --resume, atomic results, the cache commands."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from cli_runs import cli

from xaibench.config import resolve_config
from xaibench.engine.benchmark import run_benchmark
from xaibench.engine.checkpoints import CELLS_DIR, RUN_STATE, load_cell, save_cell
from xaibench.engine.grid import Cell
from xaibench.engine.runner import CellResult
from xaibench.errors import XaibenchError
from xaibench.paths import TEMPORARY_PREFIX

#: Four small cells: two tiny models x two strategies on a 60-image phantom at 32 px.
RUN = {
    "task": "osteoporosis",
    "dataset": {
        "name": "phantom",
        "options": {"n_images": 60, "image_size": 32, "class_shares": [0.4, 0.3, 0.3]},
    },
    "backbones": [
        {"name": "test_vit.random", "options": {"img_size": 32}},
        {"name": "test_resnet.random", "options": {"img_size": 32}},
    ],
    "strategies": ["linear_probe", "full"],
    "saliency": ["saliency"],
    "perturbations": ["zero"],
    "train": {"epochs": 1, "batch_size": 16},
    "max_explain_images": 6,
    "gallery_images": 2,
    "sanity": {"images": 2, "steps": 2},
    "analysis": {"bootstrap": 200},
    # every run computes its cells itself (no trained models from another run's cache), so
    # "not recomputed" can only come from the run directory's checkpoints
    "cache": False,
}


def _config_file(folder: Path) -> Path:
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(RUN))
    return path


def _run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "xaibench", "run", "osteoporosis", *args, "--quiet"],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def _comparable(run_dir: Path) -> dict:
    """results.json without what legitimately differs between two runs: times."""
    doc = json.loads((run_dir / "results.json").read_text())
    for key in ("created", "finished"):
        doc.pop(key)
    for cell in doc["cells"]:
        cell.pop("seconds")
    return doc


def _checkpoint_stamps(run_dir: Path) -> dict[str, int]:
    root = run_dir / CELLS_DIR
    return {
        p.parent.name: p.stat().st_mtime_ns
        for p in root.glob("*/cell.json")
        if not p.parent.name.startswith(".")
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("resume")
    config = _config_file(folder)
    proc = _run("--config", str(config), "--out", "ref", cwd=folder)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return folder, config


def _assert_same_results(folder: Path, run: str) -> None:
    ref, got = folder / "ref", folder / run
    assert _comparable(got) == _comparable(ref)
    for name in ("predictions.csv", "explanations.csv", "leaderboard_performance.csv",
                 "leaderboard_explainability.csv", "comparisons.csv", "per_class.csv",
                 "gallery/index.json"):  # fmt: skip
        assert (got / name).read_bytes() == (ref / name).read_bytes(), name
    pngs = sorted(p.name for p in (ref / "gallery").glob("*.png"))
    assert pngs == sorted(p.name for p in (got / "gallery").glob("*.png"))
    for name in pngs:
        assert (got / "gallery" / name).read_bytes() == (ref / "gallery" / name).read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize(
    "failpoint",
    ["checkpoint:2", "write-run", "random:1", "random:7"],
    ids=["mid-checkpoint", "mid-results-write", "random-time-1", "random-time-2"],
)
def test_killed_run_resumes_to_identical_results_without_recomputing(reference, failpoint):
    folder, config = reference
    out = f"killed-{failpoint.replace(':', '-')}"
    if failpoint.startswith("random"):
        # SIGKILL from outside at a random moment of the run (seeded: the test is repeatable)
        # SIGKILL from outside at a random moment: after a random number (1-2) of the four
        # cells have finished, plus a random delay (seeded: the test is repeatable); two cells
        # are still to run, so the kill lands mid-run even on a loaded machine
        rng = np.random.default_rng(int(failpoint.split(":")[1]))
        finished, delay = int(rng.integers(1, 3)), float(rng.uniform(0.0, 0.3))
        proc = _run("--config", str(config), "--out", out, cwd=folder)
        deadline = time.monotonic() + 300
        while len(_checkpoint_stamps(folder / out)) < finished and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[1]
            time.sleep(0.05)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=600)
        assert proc.returncode == -signal.SIGKILL
        assert not (folder / out / "results.json").exists()  # killed mid-run, not after it
    else:
        proc = _run(
            "--config", str(config), "--out", out, cwd=folder,
            env={"XAIBENCH_FAILPOINT": failpoint},
        )  # fmt: skip
        proc.communicate(timeout=600)
        assert proc.returncode == -signal.SIGKILL
        assert not (folder / out / "results.json").exists() or failpoint == "write-run"
    before = _checkpoint_stamps(folder / out)
    if failpoint == "checkpoint:2":
        assert len(before) == 1  # the first cell finished; the second died mid-checkpoint
        assert list((folder / out / CELLS_DIR).glob(f"{TEMPORARY_PREFIX}*"))
    if failpoint == "write-run":
        assert len(before) == 4  # every cell finished before the results were written
    # resume from the run directory alone: its own config.yaml (the executor may change)
    proc = _run("--resume", "--out", out, "--executor", "local", cwd=folder)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    after = _checkpoint_stamps(folder / out)
    assert len(after) == 4
    for name, stamp in before.items():  # finished cells were read back, not recomputed
        assert after[name] == stamp, name
    assert not list((folder / out / CELLS_DIR).glob(f"{TEMPORARY_PREFIX}*"))
    _assert_same_results(folder, out)


def test_a_run_directory_of_another_configuration_is_refused(components, tmp_path):
    config = resolve_config(components.tasks.create("osteoporosis").defaults(), RUN)
    out = tmp_path / "run"
    (out / CELLS_DIR).mkdir(parents=True)
    (out / RUN_STATE).write_text(json.dumps({"study_hash": "0" * 64, "started": "x"}))
    with pytest.raises(XaibenchError, match="another configuration"):
        run_benchmark(config, components, out)
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(XaibenchError, match="holds no xaibench run"):
        run_benchmark(config, components, stranger)


def test_resume_takes_no_other_options_and_needs_a_run(tmp_path):
    proc = cli("run", "osteoporosis", "--resume", cwd=tmp_path)
    assert proc.returncode == 2
    assert "--resume needs --out" in proc.stderr
    proc = cli("run", "osteoporosis", "--resume", "--out", "x", "--epochs", "3", cwd=tmp_path)
    assert proc.returncode == 2
    assert "drop --epochs" in proc.stderr
    proc = cli("run", "osteoporosis", "--resume", "--out", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2
    assert "no xaibench run to resume" in proc.stderr


def test_checkpoint_round_trip_is_exact(components, tmp_path):
    config = resolve_config(components.tasks.create("osteoporosis").defaults(), RUN)
    cell = Cell(config.backbones[0], config.strategies[0], 0)
    result = CellResult(cell, random_init=True, weights={"sha256": "abc"}, seconds=1.5)
    result.fit = {"epochs": 1}
    result.records = [
        {"metric": "auc", "value": 0.7, "details": {"x": float("nan"), "t": (1, 2)}},
    ]
    probs = np.random.default_rng(0).random((5, 3)).astype(np.float32)
    result.predictions = [
        pd.DataFrame(
            {
                "backbone": cell.backbone.key, "strategy": cell.strategy.key, "seed": 0,
                "split": "test", "sample_id": [f"s{i}" for i in range(5)], "label": [0, 1, 2, 0, 1],
                "perturbation": ["", "", "zero", "zero", ""],
                "region": ["", "", "bone", "bone", ""],
                "prob_a": probs[:, 0], "called_positive": [True, False, True, False, True],
            }
        )
    ]  # fmt: skip
    save_cell(tmp_path, "k" * 64, result)
    back = load_cell(tmp_path, cell, "k" * 64)
    assert back is not None
    assert back.records[0]["value"] == 0.7
    assert math.isnan(back.records[0]["details"]["x"])
    assert back.weights == {"sha256": "abc"}
    assert back.seconds == 1.5
    # the table writes back to the same bytes
    assert back.predictions[0].to_csv(index=False) == result.predictions[0].to_csv(index=False)
    assert load_cell(tmp_path, cell, "other" * 8) is None  # another key: not this checkpoint
