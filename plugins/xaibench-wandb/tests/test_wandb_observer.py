"""The observer called directly with made-up events, W&B offline, read back from its run folders.

Fast (no benchmark runs): what each W&B run holds, that restored cells are not logged twice,
that nothing lands in HOME or the working folder, and that a run the user has open is left
alone.
"""

import hashlib
import json
from pathlib import Path

import pytest
import wandb
from PIL import Image
from wandb_files import offline_runs
from xaibench_wandb.naming import metric_values, wandb_id
from xaibench_wandb.observer import WandbObserver, logged

from xaibench.observers.base import CellFinished, RunFinished, RunStarted

RUN_ID = "0123456789abcdef"
WANDB_VARS = ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record(metric, value, status="ok", **q):
    base = {"category": "explanation", "metric": metric, "value": value, "status": status}
    return {**base, "ci_low": value - 0.1, "ci_high": value + 0.1, "seed": 0, **q}


@pytest.fixture
def place(tmp_path, monkeypatch):
    """An empty HOME and working folder, no WANDB_* folders set, and a run folder."""
    for name in ("home", "cwd", "run"):
        (tmp_path / name).mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home" / ".cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))
    for var in (*WANDB_VARS, "WANDB_ARTIFACT_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path / "cwd")
    run_dir = tmp_path / "run"
    gallery = run_dir / "cells" / "c1" / "gallery"
    gallery.mkdir(parents=True)
    for i, colour in enumerate(["red", "blue"]):
        Image.new("RGB", (8 + i, 8), colour).save(gallery / f"c1__m__{i}.png")
    (run_dir / "results.json").write_text('{"records": []}\n')
    (run_dir / "leaderboard_performance.csv").write_text("rank,backbone,AUC\n1,b,0.8\n")
    return tmp_path


def started(run_dir: Path, resumed: bool = False) -> RunStarted:
    return RunStarted(
        run_id=RUN_ID,
        run_dir=run_dir,
        task="demo",
        study_hash="f" * 64,
        started="2026-01-01T00:00:00+00:00",
        resumed=resumed,
        config={"task": "demo", "seeds": [0]},
        cells=("b x s (seed 0)", "b x t (seed 0)", "b x u (seed 0)"),
        provenance={"xaibench_version": "9.9", "components": {"backbones": {"b": {"v": "1"}}}},
    )


def cell(run_dir: Path, strategy: str, *, ok: bool = True, restored: bool = False):
    records = (
        (
            record("delta_region", 0.25, perturbation="zero", region="bone"),
            record("delta_region", 0.5, perturbation="zero", region="spine"),
            record("iou_region", 0.1, status="skipped", saliency="gradcam", region="bone"),
            {**record("auc", 0.75, category="performance"), "ci_low": None},
        )
        if ok
        else ()
    )
    files = sorted((run_dir / "cells" / "c1").rglob("*.png")) if ok else []
    return CellFinished(
        run_id=RUN_ID,
        label=f"b x {strategy} (seed 0)",
        backbone="b",
        strategy=strategy,
        seed=0,
        key=f"key-{strategy}",
        status="ok" if ok else "failed",
        error=None if ok else f"OSError: out of space in {run_dir}/cells/c1",
        from_checkpoint=restored,
        params={
            "backbone": "b",
            "strategy": strategy,
            "train": {"epochs": 1},
            "backbone_options": {"weights": str(run_dir.parent / "alice" / "w.safetensors")},
        },
        records=records,
        files=tuple(files),
        seconds=1.5,
    )


def finished(run_dir: Path) -> RunFinished:
    files = (run_dir / "leaderboard_performance.csv", run_dir / "results.json")
    return RunFinished(run_id=RUN_ID, run_dir=run_dir, status="failed", cells_failed=1, files=files)


def by_id(run_dir: Path) -> dict:
    runs = offline_runs(run_dir)
    assert all(r.exited for r in runs)  # every W&B run finished, its log read to the end
    return {r.id: r for r in runs}


def test_cells_and_study_logged_offline_and_nothing_outside_the_run(place):
    run_dir = place / "run"
    observer = WandbObserver()
    observer.run_started(started(run_dir))
    good, bad = cell(run_dir, "s"), cell(run_dir, "t", ok=False)
    for event in (good, bad):
        observer.cell_finished(event)
        assert wandb.run is None  # no global run left behind
    observer.run_finished(finished(run_dir))
    assert wandb.run is None

    runs = by_id(run_dir)
    assert len(runs) == 3
    ok = runs[wandb_id(RUN_ID, "key-s")]
    assert (ok.name, ok.group, ok.job_type, ok.project) == (
        "b x s (seed 0)",
        RUN_ID,
        "cell",
        "xaibench-demo",
    )
    assert ok.tags == ["b", "s", "seed-0", "ok"]
    assert ok.config["train"] == {"epochs": 1}
    assert ok.config["seed"] == 0
    assert ok.config["xaibench"]["cell_key"] == "key-s"
    assert ok.config["xaibench"]["backbone"] == {"v": "1"}
    assert ok.summary["explanation/delta_region/zero/bone"] == 0.25
    assert ok.summary["explanation/delta_region/zero/spine.ci_high"] == 0.6
    assert ok.summary["performance/auc"] == 0.75
    assert "performance/auc.ci_low" not in ok.summary  # no bound, no metric
    assert not any(k.startswith("explanation/iou_region") for k in ok.summary)  # skipped
    assert ok.summary["xaibench/records_left_out"] == 1
    expected, _ = metric_values(good.records)
    assert {k: ok.summary[k] for k in expected} == expected
    assert ok.summary["records/nrows"] == 4
    # the gallery: W&B's copies are the PNGs byte for byte
    media = {sha(ok.folder / "files" / f) for f in ok.files if f.startswith("media/images/")}
    assert media == {sha(p) for p in good.files}
    assert ok.summary["gallery/captions"] == [p.name for p in good.files]

    failed = runs[wandb_id(RUN_ID, "key-t")]
    assert "failed" in failed.tags
    assert failed.notes == "b x t (seed 0): OSError: out of space in ./cells/c1"
    assert ok.config["backbone_options"] == {"weights": ".../w.safetensors"}
    for run in runs.values():  # what W&B shows of each run holds no folder of this machine
        shown = json.dumps([run.config, run.summary, run.history, run.notes, run.tags])
        assert str(place) not in shown
    assert failed.summary["xaibench/status"] == "failed"

    study = runs[wandb_id(RUN_ID, "study")]
    assert (study.job_type, study.group) == ("study", RUN_ID)
    assert study.config["seeds"] == [0]
    assert study.config["xaibench"]["run_id"] == RUN_ID
    assert study.summary["xaibench/cells_failed"] == 1
    assert study.summary["leaderboard/performance/nrows"] == 1
    kept = study.folder / "files" / "results" / "results.json"
    assert kept.read_bytes() == (run_dir / "results.json").read_bytes()
    assert not kept.is_symlink()

    assert set(logged(run_dir)) == set(runs)
    # nothing written to HOME, the working folder, or next to the run folder
    assert list((place / "home").rglob("*")) == []
    assert list((place / "cwd").rglob("*")) == []
    assert sorted(p.name for p in place.iterdir()) == ["cwd", "home", "run"]


def test_restored_cells_already_logged_are_skipped(place):
    run_dir = place / "run"
    first = WandbObserver()
    first.run_started(started(run_dir))
    first.cell_finished(cell(run_dir, "s"))
    first.run_finished(finished(run_dir))
    before = sorted(p.name for p in (run_dir / "wandb").glob("offline-run-*"))

    again = WandbObserver()
    again.run_started(started(run_dir, resumed=True))
    again.cell_finished(cell(run_dir, "s", restored=True))  # logged before: skipped
    again.cell_finished(cell(run_dir, "u", restored=True))  # restored, never logged: logged
    again.run_finished(finished(run_dir))  # same results: the study is not logged again
    runs = offline_runs(run_dir)
    new = [r for r in runs if r.folder.name not in before]
    assert [r.id for r in new] == [wandb_id(RUN_ID, "key-u")]
    assert sorted(r.id for r in runs) == sorted(
        wandb_id(RUN_ID, w) for w in ("key-s", "key-u", "study")
    )


def test_options_and_a_user_run_left_alone(place, tmp_path):
    run_dir = place / "run"
    elsewhere = tmp_path / "elsewhere"
    user = wandb.init(mode="offline", dir=str(tmp_path / "cwd"), project="mine")
    try:
        observer = WandbObserver(
            project="proj", group="g1", tags=("extra",), dir=str(elsewhere), gallery=False
        )
        observer.run_started(started(run_dir))
        observer.cell_finished(cell(run_dir, "s"))
        assert wandb.run is user  # the user's run is still the current one, and open
        user.log({"still": 1})
    finally:
        user.finish()
    assert not (run_dir / "wandb").exists()
    (run,) = by_id(elsewhere).values()
    assert (run.project, run.group) == ("proj", "g1")
    assert run.tags[-1] == "extra"
    assert "gallery/count" not in run.summary
    assert not any(f.startswith("media/images/") for f in run.files)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="mode"):
        WandbObserver(mode="cloud")
    with pytest.raises(ValueError, match="projekt"):
        WandbObserver(projekt="x")


def test_markers_hold_no_paths(place):
    run_dir = place / "run"
    observer = WandbObserver()
    observer.run_started(started(run_dir))
    observer.cell_finished(cell(run_dir, "s"))
    for marker in (run_dir / "wandb" / "xaibench" / "logged").iterdir():
        assert str(place) not in marker.read_text()
        assert json.loads(marker.read_text())["job_type"] == "cell"
