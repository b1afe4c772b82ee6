"""``xaibench run ... --observer wandb``, offline, killed after its first cell and resumed.

One tiny run (two cells) in a subprocess whose HOME is an empty folder, with no WANDB_* folder
variables and no API key: killed right after its first cell was observed
(``XAIBENCH_FAILPOINT=observed:1``), then resumed. What W&B holds is read back from its offline
run folders and compared with the run's ``results.json`` and files.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml
from wandb_files import offline_runs
from xaibench_wandb.naming import metric_key
from xaibench_wandb.observer import logged

TINY = {
    "dataset": {
        "name": "phantom",
        "options": {"n_images": 40, "image_size": 32, "class_shares": [0.4, 0.3, 0.3]},
    },
    "backbones": [{"name": "test_resnet.random", "options": {"img_size": 32}}],
    "strategies": ["linear_probe"],
    "seeds": [0, 1],
    "saliency": ["gradcam"],
    "perturbations": ["zero"],
    "train": {"epochs": 1, "batch_size": 16},
    "max_explain_images": 4,
}

#: Variables that would point W&B (or the tests' caches) somewhere other than HOME's defaults.
CLEARED = (
    "WANDB_DIR",
    "WANDB_CACHE_DIR",
    "WANDB_CONFIG_DIR",
    "WANDB_DATA_DIR",
    "WANDB_ARTIFACT_DIR",
    "WANDB_API_KEY",
    "XDG_CACHE_HOME",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XAIBENCH_FAILPOINT",
)


def xaibench(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "xaibench", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    root = tmp_path_factory.mktemp("wandb-cli")
    home = root / "home"
    home.mkdir()
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    out = root / "run"
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env.update(
        HOME=str(home),
        WANDB_MODE="offline",
        HF_HUB_OFFLINE="1",
        XAIBENCH_CACHE_DIR=str(root / "xaibench-cache"),
        HF_HOME=str(root / "hf"),
        MPLCONFIGDIR=str(root / "matplotlib"),
    )
    args = ["osteoporosis", "-o", str(out), "--observer", "wandb", "--quiet"]
    first = xaibench(
        "run", "--config", str(config), *args, env={**env, **{CLEARED[-1]: "observed:1"}}
    )
    assert first.returncode == -signal.SIGKILL, first.stderr
    killed = SimpleNamespace(runs=offline_runs(out), logged=dict(logged(out)))
    second = xaibench("run", *args, "--resume", env=env)
    assert second.returncode == 0, second.stderr
    return SimpleNamespace(out=out, home=home, killed=killed, runs=offline_runs(out))


@pytest.mark.slow
def test_killed_after_the_first_cell_it_is_logged_and_marked(session):
    (run,) = session.killed.runs
    assert run.job_type == "cell"
    assert run.exited
    assert list(session.killed.logged) == [run.id]


@pytest.mark.slow
def test_resume_logs_no_cell_twice(session):
    first = session.killed.runs[0]
    ids = [r.id for r in session.runs]
    assert len(ids) == len(set(ids)) == 3  # two cells and the study, one W&B run each
    assert [r.folder for r in session.runs if r.id == first.id] == [first.folder]
    assert sorted(r.job_type for r in session.runs) == ["cell", "cell", "study"]
    assert len({r.group for r in session.runs}) == 1
    assert set(logged(session.out)) == set(ids)


@pytest.mark.slow
def test_each_cell_logs_results_json_records(session):
    records = json.loads((session.out / "results.json").read_text())["records"]
    cells = [r for r in session.runs if r.job_type == "cell"]
    assert sorted(r.config["seed"] for r in cells) == [0, 1]
    for run in cells:
        assert run.config["train"]["epochs"] == 1
        assert run.config["backbone_options"]["img_size"] == 32
        mine = [
            r
            for r in records
            if (r["backbone"], r["strategy"], r["seed"])
            == (run.config["backbone"], run.config["strategy"], run.config["seed"])
        ]
        ok = [r for r in mine if r["status"] == "ok" and r["value"] is not None]
        assert ok
        assert len(ok) < len(mine)  # some records are not ok: they are left out, and counted
        assert run.summary["xaibench/records_left_out"] == len(mine) - len(ok)
        assert run.summary["records/nrows"] == len(mine)
        metrics = {k for k in run.summary if k.split("/")[0] in {"performance", "explanation"}}
        expected = set()
        for r in ok:
            key = metric_key(r)
            assert run.summary[key] == r["value"], key
            expected.add(key)
            for bound in ("ci_low", "ci_high"):
                if r[bound] is not None:
                    assert run.summary[f"{key}.{bound}"] == r[bound], key
                    expected.add(f"{key}.{bound}")
        assert metrics == expected
        auc = next(r for r in ok if r["metric"] == "auc")
        assert run.summary["performance/auc"] == auc["value"]
        assert run.tags == [
            run.config["backbone"],
            run.config["strategy"],
            f"seed-{run.config['seed']}",
            "ok",
        ]


@pytest.mark.slow
def test_gallery_pngs_are_in_the_runs_media(session):
    for run in (r for r in session.runs if r.job_type == "cell"):
        seed = run.config["seed"]
        (cell_dir,) = (session.out / "cells").glob(f"*__seed{seed}__*")
        pngs = sorted((cell_dir / "gallery").glob("*.png"))
        assert pngs
        media = {sha(run.folder / "files" / f) for f in run.files if f.startswith("media/images")}
        assert media == {sha(p) for p in pngs}
        assert run.summary["gallery/captions"] == [p.name for p in pngs]


@pytest.mark.slow
def test_study_run_holds_the_leaderboards_and_results(session):
    (study,) = (r for r in session.runs if r.job_type == "study")
    assert study.summary["xaibench/status"] == "ok"
    assert study.summary["xaibench/cells"] == 2
    # the two seeds' rows and their aggregate row, as in the run's own leaderboard file
    board = pd.read_csv(session.out / "leaderboard_performance.csv")
    assert len(board) == 3
    assert board["aggregate"].tolist().count(True) == 1
    assert study.summary["leaderboard/performance/nrows"] == len(board)
    kept = study.folder / "files" / "results" / "results.json"
    assert kept.read_bytes() == (session.out / "results.json").read_bytes()


@pytest.mark.slow
def test_nothing_written_to_home(session):
    assert list(session.home.rglob("*")) == []


def test_bad_option_is_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    proc = xaibench(
        "run",
        "osteoporosis",
        "-o",
        str(tmp_path / "run"),
        "--observer",
        "wandb",
        "--observer-option",
        "wandb.mode=cloud",
        env={**env, "HOME": str(tmp_path)},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "wandb" in proc.stderr
    assert "mode" in proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_wandb_sync_finds_every_run(session):
    """``wandb sync --dry-run`` (no upload, no network) would sync each offline run folder."""
    folders = sorted(str(r.folder) for r in session.runs)
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    proc = subprocess.run(
        [sys.executable, "-m", "wandb", "sync", "--dry-run", *folders],
        capture_output=True,
        text=True,
        env={**env, "HOME": str(session.home)},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    said = proc.stdout + proc.stderr
    assert f"Would sync {len(folders)} run(s)" in said
    for run in session.runs:
        assert f"run-{run.id}.wandb" in said
    assert list(session.home.rglob("*")) == []
