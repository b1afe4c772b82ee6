"""Run observers: when they are called, what they get, resume, and failures contained."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_run import xaibench_cli

import xaibench
from xaibench.errors import XaibenchError
from xaibench.observers.base import CellFinished, Observer, RunFinished, RunStarted
from xaibench.observers.dispatch import RunObservers, run_id
from xaibench.observers.select import create_observers, parse_observer_options
from xaibench.plugins import collect_components, get_plugin_manager

#: Two small cells: one tiny CNN x two strategies on a 48-image phantom at 32 px.
RUN: dict[str, Any] = {
    "task": "osteoporosis",
    "dataset": {
        "name": "phantom",
        "options": {"n_images": 48, "image_size": 32, "class_shares": [0.4, 0.3, 0.3]},
    },
    "backbones": [{"name": "test_resnet.random", "options": {"img_size": 32}}],
    "strategies": ["linear_probe", "full"],
    "saliency": ["saliency"],
    "perturbations": ["zero"],
    "train": {"epochs": 1, "batch_size": 16},
    "max_explain_images": 6,
    "gallery_images": 2,
    "sanity": {"images": 2, "steps": 2},
    "analysis": {"bootstrap": 100},
    "cache": False,
}


@pytest.fixture(scope="module")
def components():
    return collect_components(get_plugin_manager())


class Recorder(Observer):
    """Keeps every event, in order."""

    def model_post_init(self, context: Any) -> None:
        object.__setattr__(self, "events", [])

    def run_started(self, run: RunStarted) -> None:
        self.events.append(run)  # type: ignore[attr-defined]

    def cell_finished(self, cell: CellFinished) -> None:
        self.events.append(cell)  # type: ignore[attr-defined]

    def run_finished(self, run: RunFinished) -> None:
        self.events.append(run)  # type: ignore[attr-defined]


class Broken(Observer):
    """Raises in every event."""

    def run_started(self, run: RunStarted) -> None:
        raise ConnectionError("tracker down\nsecond line")


class Interrupting(Observer):
    """Stops the run like Ctrl-C when the first cell arrives."""

    def cell_finished(self, cell: CellFinished) -> None:
        raise KeyboardInterrupt


def _events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


DOC = Path(__file__).resolve().parents[1] / "docs" / "observers.md"


def _doc_observer() -> type[Observer]:
    """The observer class of docs/observers.md's example, executed."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    namespace: dict[str, Any] = {}
    exec(compile(blocks[0], str(DOC), "exec"), namespace)
    return namespace["PrintAUC"]


@pytest.fixture(scope="module")
def observed_run(tmp_path_factory):
    """One run with jsonl, a recorder and the docs' example observer, through the Python API."""
    out = tmp_path_factory.mktemp("observed") / "run"
    recorder = Recorder()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        run = xaibench.run(
            "osteoporosis",
            config=RUN,
            out=out,
            progress=False,
            observers=["jsonl", recorder, _doc_observer()(digits=4)],
        )
    object.__setattr__(recorder, "printed", printed.getvalue())
    return run, recorder, out


def test_the_docs_example_observer_runs(observed_run):
    run, recorder, _ = observed_run
    lines = recorder.printed.splitlines()
    assert lines[0] == "osteoporosis: 2 cells (resumed: False)"
    aucs = run.records[(run.records.metric == "auc")]
    assert len(lines) == 2 + len(aucs)
    assert lines[-1] == "ok: 2 cells, 0 failed"
    for _, row in aucs.iterrows():
        label = f"{row.backbone} x {row.strategy} (seed {row.seed})"
        assert f"{label}: AUC {row.value:.4f}" in lines


def test_events_in_order_with_records_and_files(observed_run):
    _run, recorder, out = observed_run
    events = recorder.events
    assert [type(e).__name__ for e in events] == [
        "RunStarted",
        "CellFinished",
        "CellFinished",
        "RunFinished",
    ]
    started, *cells, finished = events
    document = json.loads((out / "results.json").read_text())
    state = json.loads((out / "run-state.json").read_text())
    assert started.run_id == run_id(state["study_hash"], state["started"])
    assert started.run_id == finished.run_id == cells[0].run_id
    assert started.resumed is False
    assert started.task == "osteoporosis"
    assert started.study_hash == state["study_hash"]
    assert started.started == state["started"]
    assert list(started.cells) == [c.label for c in cells]
    assert started.config == yaml.safe_load((out / "config.yaml").read_text())
    for cell in cells:
        assert cell.status == "ok"
        assert cell.error is None
        assert not cell.from_checkpoint
        mine = [
            r
            for r in document["records"]
            if r["backbone"] == cell.backbone and r["strategy"] == cell.strategy
        ]
        # the same records as results.json (NaN there is null; compare through JSON)
        assert json.loads(json.dumps(list(cell.records)).replace("NaN", "null")) == mine
        assert cell.params["strategy"] == cell.strategy
        assert cell.params["seed"] == cell.seed == 0
        assert cell.params["backbone_options"]["img_size"] == 32
        assert cell.params["train"]["epochs"] == 1
        assert cell.files
        assert all(p.is_file() and out.resolve() in p.parents for p in cell.files)
        assert any(p.suffix == ".png" for p in cell.files), "gallery PNGs are among the files"
    assert finished.status == "ok"
    assert finished.cells_failed == 0
    names = {p.name for p in finished.files}
    assert {"results.json", "predictions.csv", "leaderboard_performance.md"} <= names
    assert "run-state.json" not in names
    assert ".xaibench.lock" not in names


def test_jsonl_observer_writes_the_same_events_with_relative_paths(observed_run):
    _, recorder, out = observed_run
    lines = _events(out / "observer-events.jsonl")
    assert [e["event"] for e in lines] == [
        "run_started",
        "cell_finished",
        "cell_finished",
        "run_finished",
    ]
    cell = lines[1]
    assert cell["key"] == recorder.events[1].key
    assert cell["files"]
    assert all(not Path(f).is_absolute() for f in cell["files"])
    assert all((out / f).is_file() for f in cell["files"])
    assert str(out.resolve()) not in (out / "observer-events.jsonl").read_text()


def test_observers_change_nothing_in_the_results(observed_run, tmp_path):
    _, _, observed = observed_run
    plain = tmp_path / "plain"
    xaibench.run("osteoporosis", config=RUN, out=plain, progress=False)
    for name in ("predictions.csv", "explanations.csv", "leaderboard_performance.csv"):
        assert (plain / name).read_bytes() == (observed / name).read_bytes(), name
    plain_doc = json.loads((plain / "results.json").read_text())
    observed_doc = json.loads((observed / "results.json").read_text())
    assert plain_doc["config_hash"] == observed_doc["config_hash"]
    assert plain_doc["records"] == observed_doc["records"]
    assert yaml.safe_load((plain / "config.yaml").read_text()) == yaml.safe_load(
        (observed / "config.yaml").read_text()
    )


def test_a_failing_observer_is_dropped_and_the_run_goes_on(tmp_path):
    recorder = Recorder()
    logged: list[str] = []
    watchers = RunObservers({"broken": Broken(), "recorder": recorder}, logged.append)
    from xaibench.config import resolve_config

    config = resolve_config({**RUN, "metrics": ["auc"]})
    watchers.run_started(config, tmp_path, "2026-01-01T00:00:00+00:00", False, [], {}, {})
    watchers.run_finished(tmp_path, "ok", 0)
    assert [type(e).__name__ for e in recorder.events] == ["RunStarted", "RunFinished"]
    assert watchers.failures == {"broken": "run_started: ConnectionError: tracker down second line"}
    assert len(logged) == 1
    assert "observer broken failed in run_started" in logged[0]
    assert "\n" not in logged[0]


def test_an_interrupted_run_tells_the_observers(tmp_path):
    recorder = Recorder()
    with pytest.raises(KeyboardInterrupt):
        xaibench.run(
            "osteoporosis",
            config=RUN,
            out=tmp_path / "run",
            progress=False,
            observers=[Interrupting(), recorder],
        )
    kinds = [type(e).__name__ for e in recorder.events]
    assert kinds[0] == "RunStarted"
    assert kinds[-1] == "RunFinished"
    assert recorder.events[-1].status == "interrupted"
    assert recorder.events[-1].error == "KeyboardInterrupt"
    assert recorder.events[-1].files == ()


@pytest.mark.slow
def test_killed_and_resumed_run_marks_restored_cells(tmp_path):
    """Killed right after the first cell was observed; the resume restores it, computes one."""
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(RUN))
    out = tmp_path / "run"
    command = [sys.executable, "-m", "xaibench", "run", "osteoporosis", "--quiet"]
    killed = subprocess.run(
        [*command, "--config", str(config), "-o", str(out), "--observer", "jsonl"],
        env={**os.environ, "XAIBENCH_FAILPOINT": "observed:1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -9, killed.stderr
    first = _events(out / "observer-events.jsonl")
    assert [e["event"] for e in first] == ["run_started", "cell_finished"]
    resumed = subprocess.run(
        [*command, "--resume", "-o", str(out), "--observer", "jsonl"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr
    events = _events(out / "observer-events.jsonl")[2:]
    assert [e["event"] for e in events] == [
        "run_started",
        "cell_finished",
        "cell_finished",
        "run_finished",
    ]
    assert events[0]["resumed"] is True
    assert events[0]["run_id"] == first[0]["run_id"]
    assert events[0]["started"] == first[0]["started"]
    assert events[1]["key"] == first[1]["key"]
    assert events[1]["from_checkpoint"] is True
    assert events[2]["key"] != first[1]["key"]
    assert events[2]["from_checkpoint"] is False
    assert events[3]["status"] == "ok"


def test_observer_options_parse_and_check(components):
    assert parse_observer_options(["jsonl.path=/tmp/x.jsonl", "mlflow.nested=false"]) == {
        "jsonl": {"path": "/tmp/x.jsonl"},
        "mlflow": {"nested": False},
    }
    for bad in ("jsonl=1", "jsonl.=1", ".path=1", "jsonl.path"):
        with pytest.raises(XaibenchError, match=r"write NAME\.KEY=VALUE"):
            parse_observer_options([bad])
    with pytest.raises(XaibenchError, match=r"jsonll.*did you mean.*jsonl"):
        create_observers(components, ["jsonll"])
    with pytest.raises(XaibenchError, match="given twice"):
        create_observers(components, ["jsonl", "jsonl"])
    with pytest.raises(XaibenchError, match="not among the run's observers"):
        create_observers(components, [], {"jsonl": {"path": "x"}})
    with pytest.raises(XaibenchError, match="no observer of this run takes a tracking URI"):
        create_observers(components, ["jsonl"], tracking_uri="http://127.0.0.1:5000")
    with pytest.raises(XaibenchError, match="pathh"):
        create_observers(components, ["jsonl"], {"jsonl": {"pathh": "x"}})
    made = create_observers(components, ["jsonl"], {"jsonl": {"path": "e.jsonl"}})
    assert made["jsonl"].path == "e.jsonl"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--observer", "jsonll"], "did you mean"),
        (["--observer", "jsonl", "--tracking-uri", "http://x"], "takes a tracking URI"),
        (["--observer-option", "jsonl.path=x"], "add --observer jsonl"),
        (["--observer", "jsonl", "--observer-option", "jsonl"], "NAME.KEY=VALUE"),
    ],
)
def test_cli_refuses_bad_observers_in_one_line(capsys, tmp_path, args, message):
    code, output = xaibench_cli(capsys, "run", "osteoporosis", "-o", str(tmp_path / "r"), *args)
    assert code == 2
    assert message in output
    assert len(output.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists(), "refused before the run folder is made"


def test_ls_lists_observers(capsys):
    code, output = xaibench_cli(capsys, "ls", "observers")
    assert code == 0
    assert "jsonl" in output
