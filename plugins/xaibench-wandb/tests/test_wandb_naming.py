"""Metric keys, W&B ids and project names (no wandb needed), and a plugin that imports no wandb."""

import math
import subprocess
import sys

from xaibench_wandb.naming import (
    metric_key,
    metric_values,
    project_name,
    public,
    public_text,
    tag,
    wandb_id,
)


def rec(metric, value=0.5, category="explanation", status="ok", **qualifiers):
    return {
        "category": category,
        "metric": metric,
        "value": value,
        "ci_low": 0.25,
        "ci_high": 0.75,
        "status": status,
        "backbone": "b",
        "strategy": "s",
        "seed": 0,
        "details": {"x": 1},
        "reason": None,
        "n": 10,
        **qualifiers,
    }


def test_metric_key_orders_qualifiers_and_ignores_identity_fields():
    r = rec("delta_region", perturbation="zero", region="bone", saliency=None)
    assert metric_key(r) == "explanation/delta_region/zero/bone"
    r = rec("iou_region", saliency="gradcam", region="a/b", perturbation=None, **{"class": "c1"})
    assert metric_key(r) == "explanation/iou_region/gradcam/a_b/c1"
    assert metric_key(rec("auc", category="performance", stratum="young")) == (
        "performance/auc/stratum=young"
    )


def test_metric_values_ci_names_skips_and_duplicates():
    records = [
        rec("auc", 0.8, category="performance"),
        rec("auc", 0.7, category="performance"),  # same qualifiers: made unique in order
        rec("ppv", float("nan"), category="performance"),
        rec("npv", 0.4, category="performance", status="skipped"),
        {**rec("sens", 0.6, category="performance"), "ci_low": None, "ci_high": math.inf},
    ]
    values, left_out = metric_values(records)
    assert values == {
        "performance/auc": 0.8,
        "performance/auc.ci_low": 0.25,
        "performance/auc.ci_high": 0.75,
        "performance/auc~2": 0.7,
        "performance/auc~2.ci_low": 0.25,
        "performance/auc~2.ci_high": 0.75,
        "performance/sens": 0.6,
    }
    assert left_out == 2


def test_ids_are_deterministic_and_distinct():
    assert wandb_id("run1", "cellkey") == wandb_id("run1", "cellkey")
    assert len(wandb_id("run1", "cellkey")) == 16
    ids = {wandb_id(r, w) for r in ("run1", "run2") for w in ("cellkey", "other", "study")}
    assert len(ids) == 6


def test_project_name_and_tags():
    assert project_name("osteoporosis") == "xaibench-osteoporosis"
    assert project_name("my task/v2:x") == "xaibench-my-task-v2-x"
    assert tag("x" * 70) == "x" * 63 + "~"
    assert tag("ok") == "ok"


def test_importing_the_plugin_imports_no_wandb():
    code = (
        "import sys, xaibench_wandb, xaibench_wandb.naming; "
        "print('wandb' in sys.modules, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_registered_as_observer():
    from xaibench_wandb.observer import WandbObserver

    from xaibench.plugins import collect_components, get_plugin_manager

    observers = collect_components(get_plugin_manager())["observers"]
    assert observers.get("wandb").load() is WandbObserver
    assert observers.create("wandb", {}).mode == "offline"


def test_public_values_hold_no_paths_or_passwords(tmp_path):
    run_dir = tmp_path / "run"
    value = {
        "weights": "/home/alice/models/m.safetensors",
        "inside": str(run_dir / "cells" / "x.png"),
        "nested": [{"cache_dir": "~/cache"}],
        "uri": "https://bob:s3cret@host:5000/path",
        "plain": "gradcam",
        "number": 3,
    }
    assert public(value, run_dir) == {
        "weights": ".../m.safetensors",
        "inside": "cells/x.png",
        "nested": [{"cache_dir": ".../cache"}],
        "uri": "https://***@host:5000/path",
        "plain": "gradcam",
        "number": 3,
    }


def test_public_text(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", "/home/alice")
    text = f"OSError: {tmp_path}/run/cells/a.npz and /home/alice/w.pt, see http://u:p@h/x"
    assert public_text(text, tmp_path / "run") == (
        "OSError: ./cells/a.npz and ~/w.pt, see http://***@h/x"
    )
