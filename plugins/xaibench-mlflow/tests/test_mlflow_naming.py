"""The naming rules of the mlflow observer, without a server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from xaibench_mlflow import naming
from xaibench_mlflow.observer import SECONDS, cell_metrics

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
