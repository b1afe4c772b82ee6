"""The mlflow observer against a live MLflow tracking server (``conftest.mlflow_server``).

Runs are read back through ``MlflowClient`` and compared with the run folder's results.json.
One server and one two-cell run (module-scoped fixtures, ~1 min together on two cores) serve
most tests; the tests that need the server or run a benchmark are marked ``slow``.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient
from xaibench_mlflow.observer import NO_URI, MlflowObserver

import xaibench
from xaibench.cli import main
from xaibench.errors import InvalidOptionsError
from xaibench.plugins import collect_components, get_plugin_manager

#: Two cells at 32 px, one saliency method and one perturbation: a gallery and CI'd metrics.
TINY = {
    "task": "osteoporosis",
    "dataset": {
        "name": "phantom",
        "options": {"n_images": 60, "image_size": 32, "class_shares": [0.4, 0.3, 0.3]},
    },
    "backbones": [{"name": "test_resnet.random", "options": {"img_size": 32}}],
    "strategies": ["linear_probe", "full"],
    "saliency": ["saliency"],
    "perturbations": ["zero"],
    "train": {"epochs": 1, "batch_size": 16},
    "max_explain_images": 6,
    "gallery_images": 2,
    "sanity": {"images": 0},
    "analysis": {"bootstrap": 50},
    "cache": False,
}
ONE_CELL = {**TINY, "strategies": ["linear_probe"], "gallery_images": 0}
SECRET = "Sup3rSecretPw"


def write_config(folder: Path, config: dict[str, Any]) -> Path:
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """``xaibench ARGS`` in this process: exit status and output."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(list(args))
    out = capsys.readouterr()
    return int(done.value.code or 0), out.out + out.err


def search(client: MlflowClient, experiment: str, filter_string: str = "") -> list[Any]:
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r}"
    return list(
        client.search_runs(
            [found.experiment_id], filter_string, ViewType.ACTIVE_ONLY, max_results=1000
        )
    )


def parents_and_children(client: MlflowClient, experiment: str) -> tuple[list[Any], list[Any]]:
    runs = search(client, experiment)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def expected_name(record: dict[str, Any]) -> str:
    """The metric name the README documents, by hand for this grid (no clashes, clean values)."""
    parts = [record["metric"]] + [
        record[q] for q in ("saliency", "perturbation", "region") if record[q] is not None
    ]
    return "/".join(parts)


def json_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


# --- without a server -------------------------------------------------------------------------


def test_registered_lazily_through_the_entry_point():
    code = (
        "import sys\n"
        "from xaibench.plugins import collect_components, get_plugin_manager\n"
        "entry = collect_components(get_plugin_manager(load_plugins='mlflow')).observers.get("
        "'mlflow')\n"
        "print(entry.provider.distribution, entry.provider.version, 'mlflow' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    assert done.stdout.split() == ["xaibench-mlflow", "0.1.0", "False"]


def test_options_are_validated(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    entry = collect_components(get_plugin_manager(load_plugins="mlflow")).observers.get("mlflow")
    with pytest.raises(InvalidOptionsError, match="experimnet: unknown option; did you mean"):
        entry.create({"tracking_uri": "http://h", "experimnet": "x"})
    with pytest.raises(InvalidOptionsError, match="param_max_length"):
        entry.create({"tracking_uri": "http://h", "param_max_length": 10})
    observer = entry.create({"tracking_uri": f"http://u:{SECRET}@h:1"})
    assert SECRET not in repr(observer)
    assert SECRET not in str(observer.options())


def test_no_tracking_uri_is_a_usage_error_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "run"
    code, text = cli(
        capsys, "run", "osteoporosis", "--config", str(write_config(tmp_path, ONE_CELL)),
        "-o", str(out), "--quiet", "--observer", "mlflow",
    )  # fmt: skip
    assert code == 2
    assert text.strip().splitlines()[-1].endswith(NO_URI)
    assert "Traceback" not in text
    assert not out.exists()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Exception, match="no tracking URI"):
        MlflowObserver()
    assert not (tmp_path / "mlruns").exists()


# --- one run, read back -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def logged(mlflow_server, tmp_path_factory):
    """The two-cell run logged to experiment ``tiny`` (and to jsonl, for its run id)."""
    out = tmp_path_factory.mktemp("tiny") / "tiny-run"
    xaibench.run(
        "osteoporosis",
        config=TINY,
        out=out,
        observers={"mlflow": {"experiment": "tiny"}, "jsonl": {}},
        tracking_uri=mlflow_server,
        progress=False,
    )
    results = json.loads((out / "results.json").read_text())
    events = [json.loads(line) for line in (out / "observer-events.jsonl").read_text().split("\n")
              if line]  # fmt: skip
    return {
        "dir": out,
        "client": MlflowClient(tracking_uri=mlflow_server),
        "results": results,
        "events": events,
    }


def child_of(logged, cell: dict[str, Any]) -> Any:
    _, children = parents_and_children(logged["client"], "tiny")
    (child,) = [
        c
        for c in children
        if c.data.tags["xaibench.strategy"] == cell["strategy"]
        and c.data.tags["xaibench.seed"] == str(cell["seed"])
    ]
    return child


@pytest.mark.slow
def test_one_parent_and_one_nested_run_per_cell(logged):
    parents, children = parents_and_children(logged["client"], "tiny")
    assert len(parents) == 1
    assert len(children) == 2
    (parent,) = parents
    assert parent.info.run_name == "tiny-run"
    assert parent.info.status == "FINISHED"
    labels = [e["label"] for e in logged["events"] if e["event"] == "cell_finished"]
    keys = {e["label"]: e["key"] for e in logged["events"] if e["event"] == "cell_finished"}
    assert sorted(c.info.run_name for c in children) == sorted(labels)
    for child in children:
        tags = child.data.tags
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.status == "FINISHED"
        assert tags["xaibench.status"] == "ok"
        assert tags["xaibench.cell_key"] == keys[child.info.run_name]
        assert tags["xaibench.backbone"] == "test_resnet.random"
        assert tags["xaibench.random_init"] == "true"


@pytest.mark.slow
def test_parent_tags_are_provenance_and_params_the_configuration(logged):
    (parent,), _ = parents_and_children(logged["client"], "tiny")
    started = next(e for e in logged["events"] if e["event"] == "run_started")
    tags, params = parent.data.tags, parent.data.params
    assert tags["xaibench.run_id"] == started["run_id"]
    assert tags["xaibench.study_hash"] == started["study_hash"]
    assert tags["xaibench.task"] == "osteoporosis"
    assert tags["xaibench.version"] == xaibench.__version__
    assert tags["xaibench.resumed"] == "false"
    backbone = logged["results"]["components"]["backbones"]["test_resnet.random"]
    assert tags["xaibench.component.backbones.test_resnet.random"] == (
        f"{backbone['distribution']} {backbone['version']} (v{backbone['component_version']})"
    )
    config = logged["results"]["config"]
    assert params["train.lr"] == str(config["train"]["lr"])
    assert params["split.seed"] == "0"
    assert params["seeds"] == "[0]"
    assert params["backbones.0.name"] == "test_resnet.random"
    assert params["backbones.0.options.img_size"] == "32"
    assert params["dataset.options.n_images"] == "60"
    assert params["strategies.1.name"] == "full"
    assert params["cache_dir"] == "null"
    assert not any(v.startswith("/") for v in params.values())
    assert parent.data.metrics == {"cells": 2.0, "cells_failed": 0.0}


@pytest.mark.slow
def test_cell_params_are_its_resolved_options(logged):
    options = logged["results"]["component_options"]
    train = logged["results"]["config"]["train"]
    for cell in logged["results"]["cells"]:
        params = child_of(logged, cell).data.params
        assert params["task"] == "osteoporosis"
        assert params["dataset"] == "phantom"
        assert params["seed"] == str(cell["seed"])
        assert params["strategy"] == cell["strategy"]
        assert params["saliency"] == '["saliency"]'
        assert params["perturbations"] == '["zero"]'
        backbone = options["backbones"]["test_resnet.random"]
        assert backbone["img_size"] == 32
        assert params["backbone_options.img_size"] == "32"
        for key, value in backbone.items():
            if value != {}:
                assert params[f"backbone_options.{key}"] == json_text(value), key
        for key, value in options["strategies"][cell["strategy"]].items():
            assert params[f"strategy_options.{key}"] == json_text(value), key
        for key, value in train.items():
            assert params[f"train.{key}"] == json_text(value), key
        assert params["train.epochs"] == "1"


@pytest.mark.slow
def test_metrics_and_cis_equal_results_json(logged):
    records = logged["results"]["records"]
    for cell in logged["results"]["cells"]:
        child = child_of(logged, cell)
        mine = [
            r for r in records if r["strategy"] == cell["strategy"] and r["seed"] == cell["seed"]
        ]
        expected: dict[str, float] = {}
        for r in mine:
            if r["status"] == "ok" and r["value"] is not None and math.isfinite(r["value"]):
                expected[expected_name(r)] = r["value"]
                if r["ci_low"] is not None:
                    expected[expected_name(r) + ".ci_low"] = r["ci_low"]
                    expected[expected_name(r) + ".ci_high"] = r["ci_high"]
        metrics = dict(child.data.metrics)
        assert metrics.pop("xaibench.seconds") >= 0
        assert metrics == pytest.approx(expected, rel=1e-12, abs=0)
        assert any(k.endswith(".ci_low") for k in metrics)
        assert any(k.startswith("delta_region/zero/") for k in metrics)
        tags = child.data.tags
        assert int(tags["xaibench.records"]) == len(mine)
        assert int(tags["xaibench.records_not_logged"]) == len(mine) - len(
            [k for k in expected if not k.endswith((".ci_low", ".ci_high"))]
        )


@pytest.mark.slow
def test_artifacts_are_the_gallery_and_the_results(logged, tmp_path):
    client = logged["client"]
    for cell in logged["results"]["cells"]:
        child = child_of(logged, cell)
        folder = next((logged["dir"] / "cells").glob(f"*__{cell['strategy']}__seed0__*"))
        pngs = sorted(p.name for p in (folder / "gallery").glob("*.png"))
        assert pngs, "the run made no gallery"
        logged_pngs = sorted(a.path for a in client.list_artifacts(child.info.run_id, "gallery"))
        assert logged_pngs == [f"gallery/{name}" for name in pngs]
        assert [a.path for a in client.list_artifacts(child.info.run_id)] == ["gallery"]
    (parent,), _ = parents_and_children(client, "tiny")
    results = sorted(a.path for a in client.list_artifacts(parent.info.run_id, "results"))
    assert results == [
        "results/config.yaml",
        "results/leaderboard_explainability.csv",
        "results/leaderboard_explainability.md",
        "results/leaderboard_performance.csv",
        "results/leaderboard_performance.md",
        "results/results.json",
    ]
    copy = client.download_artifacts(parent.info.run_id, "results/results.json", str(tmp_path))
    assert Path(copy).read_bytes() == (logged["dir"] / "results.json").read_bytes()


# --- the environment, credentials, a server that is down -------------------------------------


@pytest.mark.slow
def test_uri_from_the_environment_and_its_password_is_never_logged(
    mlflow_server, tmp_path, capsys, monkeypatch
):
    port = mlflow_server.rsplit(":", 1)[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://alice:{SECRET}@127.0.0.1:{port}")
    out = tmp_path / "env-run"
    code, text = cli(
        capsys, "run", "osteoporosis", "--config", str(write_config(tmp_path, ONE_CELL)),
        "-o", str(out), "--quiet", "--observer", "mlflow",
        "--observer-option", "mlflow.experiment=from-env",
    )  # fmt: skip
    assert code == 0, text
    parents, children = parents_and_children(MlflowClient(mlflow_server), "from-env")
    assert len(parents) == 1
    assert len(children) == 1
    assert children[0].info.status == "FINISHED"
    assert children[0].data.metrics["auc"] >= 0
    for run in parents + children:
        for key, value in {**run.data.tags, **run.data.params}.items():
            assert SECRET not in f"{key}={value}", key
    assert SECRET not in text
    for path in out.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


@pytest.mark.slow
def test_a_server_that_is_down_warns_and_the_run_completes(
    closed_port, tmp_path, capsys, monkeypatch
):
    # MLflow's own retries would take minutes; the observer also checks /health first.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    out = tmp_path / "down-run"
    code, text = cli(
        capsys, "run", "osteoporosis", "--config", str(write_config(tmp_path, ONE_CELL)),
        "-o", str(out), "--quiet", "--observer", "mlflow",
        "--tracking-uri", f"http://bob:{SECRET}@127.0.0.1:{closed_port}",
    )  # fmt: skip
    assert code == 0, text
    warnings = [line for line in text.splitlines() if "observer mlflow failed" in line]
    assert warnings
    assert "not reachable" in warnings[0]
    assert "http://***@127.0.0.1:" in warnings[0]
    assert SECRET not in text
    assert "Traceback" not in text
    results = json.loads((out / "results.json").read_text())
    assert [c["status"] for c in results["cells"]] == ["ok"]


# --- killed and resumed -----------------------------------------------------------------------


@pytest.mark.slow
def test_kill_and_resume_logs_each_cell_once(mlflow_server, tmp_path, capsys):
    client = MlflowClient(mlflow_server)
    out = tmp_path / "killed"
    base = [sys.executable, "-m", "xaibench", "run", "osteoporosis", "--quiet",
            "--observer", "mlflow", "--tracking-uri", mlflow_server,
            "--observer-option", "mlflow.experiment=resumed"]  # fmt: skip
    env = {**os.environ, "XAIBENCH_FAILPOINT": "observed:1"}
    config = write_config(tmp_path, TINY)
    first = subprocess.run(
        [*base, "--config", str(config), "-o", str(out)],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert first.returncode == -signal.SIGKILL, first.stderr
    parents, children = parents_and_children(client, "resumed")
    assert len(parents) == 1
    assert parents[0].info.status == "RUNNING"
    assert len(children) == 1
    assert children[0].info.status == "FINISHED"
    kept = children[0]
    # A copy of that cell's run left half-logged, as by a kill while logging it: replaced.
    experiment = client.get_experiment_by_name("resumed").experiment_id
    stale = client.create_run(experiment, run_name="stale", tags={
        "mlflow.parentRunId": parents[0].info.run_id,
        "xaibench.cell_key": kept.data.tags["xaibench.cell_key"],
    })  # fmt: skip
    # An earlier session that was interrupted left its error on the parent: cleared on resume.
    client.set_tag(parents[0].info.run_id, "xaibench.error", "KeyboardInterrupt")

    code, text = cli(capsys, *base[3:], "--resume", "--out", str(out))  # in this process
    assert code == 0, text
    assert "observer mlflow failed" not in text

    parents, children = parents_and_children(client, "resumed")
    assert len(parents) == 1
    assert parents[0].info.status == "FINISHED"
    assert parents[0].data.tags["xaibench.resumed"] == "true"
    assert parents[0].data.tags["xaibench.status"] == "ok"
    assert "xaibench.error" not in parents[0].data.tags
    assert len(children) == 2
    assert all(c.info.status == "FINISHED" for c in children)
    assert len({c.data.tags["xaibench.cell_key"] for c in children}) == 2
    assert kept.info.run_id in {c.info.run_id for c in children}  # restored: not logged again
    assert client.get_run(stale.info.run_id).info.lifecycle_stage == "deleted"
    for run in children:
        assert set(run.data.metrics) >= {"auc", "auc.ci_low", "auc.ci_high"}
        for key in run.data.metrics:
            assert len(client.get_metric_history(run.info.run_id, key)) == 1, key
    for key in ("cells", "cells_failed"):
        assert len(client.get_metric_history(parents[0].info.run_id, key)) == 1
    results = json.loads((out / "results.json").read_text())
    for cell in results["cells"]:
        (child,) = [c for c in children if c.data.tags["xaibench.strategy"] == cell["strategy"]]
        ok = [r for r in results["records"]
              if r["strategy"] == cell["strategy"] and r["metric"] == "auc"]  # fmt: skip
        assert child.data.metrics["auc"] == pytest.approx(ok[0]["value"], rel=1e-12)
