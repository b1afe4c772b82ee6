"""The mlflow observer without a server: its naming rules and its de-duplication by cell key."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from xaibench_mlflow import naming
from xaibench_mlflow.observer import SECONDS, MlflowObserver, cell_metrics

from xaibench.observers.base import CellFinished

ALLOWED = re.compile(r"^[A-Za-z0-9_.\-/]+$")


def rec(metric, value=0.5, status="ok", **qualifiers):
    base = {"task": "t", "backbone": "b", "strategy": "s", "seed": 0, "category": "x", "n": 3}
    empty = {"ci_low": None, "ci_high": None, "saliency": None, "perturbation": None}
    return {"metric": metric, "value": value, "status": status, "region": None, **empty, **base,
            **qualifiers}  # fmt: skip


def test_flatten_params_nests_and_renders():
    config = {
        "train": {"lr": 0.002, "epochs": 1, "patience": None, "select_on": "val_auc"},
        "backbones": [{"name": "timm.a", "options": {"img_size": 32, "model_kwargs": {}}}],
        "seeds": [0, 1],
        "metrics": ["auc", "accuracy"],
        "random_init": True,
        "cache_dir": "/home/alice/cache/xaibench",
        "data": {"manifest": "C:\\Users\\alice\\m.csv", "relative": "data/m.csv"},
        "weights": "~/w.safetensors",
    }
    assert naming.flatten_params(config) == {
        "train.lr": "0.002",
        "train.epochs": "1",
        "train.patience": "null",
        "train.select_on": "val_auc",
        "backbones.0.name": "timm.a",
        "backbones.0.options.img_size": "32",
        "backbones.0.options.model_kwargs": "{}",
        "seeds": "[0, 1]",
        "metrics": '["auc", "accuracy"]',
        "random_init": "true",
        "cache_dir": "xaibench",
        "data.manifest": "m.csv",
        "data.relative": "data/m.csv",
        "weights": "w.safetensors",
    }


def test_flatten_params_cuts_long_values_and_cleans_keys():
    params = naming.flatten_params({"a": "x" * 7000, "odd key/?": 1}, max_length=500)
    assert params["a"] == "x" * 500
    assert params["odd_key"] == "1"
    long = naming.flatten_params({"k" * 300: 1})
    (key,) = long
    assert len(key) == naming.MAX_KEY_LENGTH


def test_metric_names_from_qualifiers():
    records = [
        rec("auc"),
        rec("delta_region", perturbation="zero", region="bone"),
        rec("iou_region", saliency="gradcam", region="bone"),
        rec("auc", **{"class": "Normal"}),
        rec("iou_region", saliency="grad cam(x)", region="left lung"),
    ]
    assert naming.metric_names(records) == {
        0: "auc",
        1: "delta_region/zero/bone",
        2: "iou_region/gradcam/bone",
        3: "auc/Normal",
        4: "iou_region/grad_cam_x/left_lung",
    }


def test_metric_name_clashes_are_resolved_uniquely():
    records = [
        rec("m", saliency="x", region="r"),  # same values under other qualifiers
        rec("m", perturbation="x", region="r"),
        rec("m", region="a(b"),  # equal once cleaned
        rec("m", region="a)b"),
        rec("m", region="r.ci_low"),  # a CI name of another record
        rec("m", region="r"),
        rec("m", region="same"),  # exact duplicates
        rec("m", region="same"),
        rec("xaibench.seconds"),  # reserved
    ]
    names = naming.metric_names(records, reserved={SECONDS})
    assert names[0] == "m/saliency-x/region-r"
    assert names[1] == "m/perturbation-x/region-r"
    every = [n + s for n in names.values() for s in ("", *naming.CI_SUFFIXES)]
    assert len(every) == len(set(every))
    assert SECONDS not in names.values()
    assert all(ALLOWED.match(n) and "//" not in n for n in every)
    assert naming.metric_names(records, reserved={SECONDS}) == names  # deterministic


def test_cell_metrics_log_ok_finite_records_and_their_cis():
    records = (
        {**rec("auc", 0.75), "ci_low": 0.5, "ci_high": 0.9},
        {**rec("macro_auc", 0.6)},  # no CI
        rec("pointing_game", None, status="skipped", region="bone"),
        rec("relevance_mass", float("nan"), region="bone"),
        rec("iou_region", 0.1, status="failed", region="bone"),
    )
    assert cell_metrics(records, 2.5) == {
        "auc": 0.75,
        "auc.ci_low": 0.5,
        "auc.ci_high": 0.9,
        "macro_auc": 0.6,
        SECONDS: 2.5,
    }


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("https://alice:s3cret-pw@mlflow.example.org/x", "https://***@mlflow.example.org/x"),
        ("http://token@127.0.0.1:5000", "http://***@127.0.0.1:5000"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("databricks", "databricks"),
    ],
)
def test_redact_uri(uri, shown):
    assert naming.redact_uri(uri) == shown


def test_scrub_text_removes_credentials_and_folders():
    uri = "http://alice:s3cret-pw@127.0.0.1:5000"
    run_dir = Path("/data/alice/runs/r1")
    text = (
        "API request to http://alice:s3cret-pw@127.0.0.1:5000/api/2.0/x failed; "
        "auth s3cret-pw; file /data/alice/runs/r1/cells/a.png\nsecond line"
    )
    line = naming.scrub_text(text, uri, run_dir)
    assert "s3cret" not in line
    assert "/data/alice" not in line
    assert "\n" not in line
    assert "http://***@127.0.0.1:5000/api/2.0/x" in line
    assert "r1/cells/a.png" in line


# --- de-duplication by cell key, with a stand-in for MlflowClient -----------------------------


class FakeClient:
    """Records the calls the observer makes for one cell."""

    def __init__(self):
        self.calls: list[tuple] = []

    def create_run(self, experiment_id, run_name=None, tags=None):
        self.calls.append(("create_run", run_name))
        return SimpleNamespace(info=SimpleNamespace(run_id="new"))

    def delete_run(self, run_id):
        self.calls.append(("delete_run", run_id))

    def log_batch(self, run_id, metrics=(), params=()):
        self.calls.append(("log_batch", run_id))

    def log_artifact(self, run_id, path, artifact_path=None):
        self.calls.append(("log_artifact", artifact_path))

    def set_terminated(self, run_id, status=None):
        self.calls.append(("set_terminated", run_id, status))


def observer_with(children):
    observer = MlflowObserver(tracking_uri="http://127.0.0.1:1")
    observer._client = FakeClient()
    observer._parent = "parent"
    observer._experiment_id = "1"
    observer._children = {"k": list(children)}
    return observer


def cell(status="ok", from_checkpoint=False):
    return CellFinished(
        run_id="r", label="b x s (seed 0)", backbone="b", strategy="s", seed=0, key="k",
        status=status, error=None if status == "ok" else "boom", from_checkpoint=from_checkpoint,
        params={"train": {"epochs": 1}}, records=(rec("auc", 0.7),), files=(),
    )  # fmt: skip


def test_a_restored_cell_logged_completely_is_skipped():
    observer = observer_with([("done", "FINISHED"), ("half", "RUNNING")])
    observer.cell_finished(cell(from_checkpoint=True))
    assert observer._client.calls == [("delete_run", "half")]
    assert observer._children["k"] == [("done", "FINISHED")]


def test_a_restored_cell_logged_halfway_is_logged_again():
    observer = observer_with([("half", "RUNNING")])
    observer.cell_finished(cell(from_checkpoint=True))
    calls = observer._client.calls
    assert calls[:2] == [("delete_run", "half"), ("create_run", "b x s (seed 0)")]
    assert calls[-1] == ("set_terminated", "new", "FINISHED")
    assert observer._children["k"] == [("new", "FINISHED")]


def test_a_computed_cell_replaces_the_run_of_an_earlier_try():
    observer = observer_with([("failed-before", "FAILED")])
    observer.cell_finished(cell())
    assert observer._client.calls[0] == ("delete_run", "failed-before")
    assert observer._children["k"] == [("new", "FINISHED")]


def test_a_failed_cell_ends_failed():
    observer = observer_with([])
    observer.cell_finished(cell(status="failed"))
    assert observer._client.calls[-1] == ("set_terminated", "new", "FAILED")
