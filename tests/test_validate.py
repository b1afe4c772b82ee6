"""``xaibench validate CONFIG``: every problem of a study file at once, without running it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xaibench.config import resolve_config
from xaibench.engine.validation import validate_config_file
from xaibench.errors import InvalidOptionsError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xaibench", "validate", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )


def test_a_valid_file_resolves_like_run(tmp_path, components):
    path = _write(
        tmp_path,
        "task: osteoporosis\nbackbones: [test_resnet.random]\nstrategies: [linear_probe]\n"
        "train: {epochs: 2}\n",
    )
    report = validate_config_file(path, components)
    assert report.ok, report.problems
    assert report.cells == 1
    assert report.config is not None
    assert report.config.train.epochs == 2
    # the task's defaults fill in the rest, as for `xaibench run osteoporosis --config`
    assert [m.name for m in report.config.metrics][:2] == ["auc", "accuracy"]
    kinds = {row["kind"] for row in report.components}
    assert kinds == {
        "backbones", "strategies", "saliency", "perturbations", "metrics", "datasets", "executors"
    }  # fmt: skip


def test_every_problem_is_listed_at_once_naming_its_key(tmp_path, components):
    path = _write(
        tmp_path,
        "task: osteoporosis\n"
        "backbones: [test_resnet.random, dinov3_tiny.random]\n"
        "strategies: [linear_probe, {name: lora, options: {rnk: 8}}]\n"
        "saliency: [gradcma]\n"
        "metrics: [auc, {name: auc, label: auc_boot, options: {ci_method: jackknife}}]\n"
        "dataset: {name: phantom, options: {n_images: -3}}\n"
        "trian: {epochs: 1}\n",
    )
    report = validate_config_file(path, components)
    assert not report.ok
    text = "\n".join(report.problems)
    assert "trian: unknown key; did you mean 'train'?" in text
    assert "backbones[1]: unknown backbone 'dinov3_tiny.random'; did you mean" in text
    assert (
        "strategies[1]: bad options for strategy 'lora': rnk: unknown option; "
        "did you mean 'rank'?" in text
    )
    assert "saliency[0]: unknown saliency method 'gradcma'; did you mean 'gradcam'" in text
    assert any(p.startswith("metrics[1]: bad options for metric 'auc'") for p in report.problems)
    assert any(p.startswith("dataset: bad options for dataset 'phantom'") for p in report.problems)
    assert len(report.problems) == 6


def test_a_region_the_dataset_lacks_is_a_warning(tmp_path, components):
    """A run skips such a region with a recorded reason, so validation warns and passes."""
    path = _write(tmp_path, "task: osteoporosis\nexplain_regions: [bone, hart]\n")
    report = validate_config_file(path, components)
    assert report.ok
    assert len(report.warnings) == 1
    assert report.warnings[0].startswith(
        "explain_regions[1]: dataset 'phantom' has no region 'hart'; did you mean 'heart'?"
    )


def test_nested_unknown_keys_get_did_you_mean():
    with pytest.raises(InvalidOptionsError) as info:
        resolve_config({"task": "t", "train": {"epochz": 2}, "sanity": {"imags": 3}})
    assert "train.epochz: unknown key; did you mean 'epochs'?" in info.value.problems
    assert "sanity.imags: unknown key; did you mean 'images'?" in info.value.problems


def test_missing_weights_and_task_problems(tmp_path, components):
    path = _write(tmp_path, "task: osteoporsis\n")
    report = validate_config_file(path, components)
    assert len(report.problems) == 1
    assert report.problems[0].startswith(
        "task: unknown task 'osteoporsis'; did you mean 'osteoporosis'?"
    )
    none = validate_config_file(_write(tmp_path, "backbones: [test_vit.random]\n"), components)
    assert none.problems == ["task: missing (add 'task: <name>' to the file, or --task)"]
    weights = validate_config_file(
        _write(tmp_path, "task: osteoporosis\nbackbones: [rad_dino]\n"), components
    )
    assert len(weights.problems) == 1
    assert "backbones[0]" in weights.problems[0]
    assert "no weights found" in weights.problems[0]


def test_cli_exit_status_and_json(tmp_path):
    good = _write(tmp_path, "task: osteoporosis\nbackbones: [test_resnet.random]\n")
    proc = _cli(str(good))
    assert proc.returncode == 0, proc.stderr
    assert f"{good}: ok: task osteoporosis" in proc.stdout
    assert "test_resnet.random" in proc.stdout
    as_json = json.loads(_cli(str(good), "--json").stdout)
    assert as_json["ok"] is True
    assert as_json["cells"] == 3
    assert as_json["config"]["backbones"] == [
        {"name": "test_resnet.random", "options": {}, "label": None, "spec": None}
    ]

    bad = tmp_path / "bad.yaml"
    bad.write_text("task: osteoporosis\nsaliency: [gradcma]\nperturbations: [zeroo]\n")
    proc = _cli(str(bad))
    assert proc.returncode == 2
    assert "2 problems" in proc.stderr
    assert "saliency[0]" in proc.stderr
    assert "perturbations[0]" in proc.stderr
    assert "Traceback" not in proc.stderr
    missing = _cli(str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2
    assert "nope.yaml" in missing.stderr


def test_several_files_merge_in_order(tmp_path, components):
    base = tmp_path / "base.yaml"
    base.write_text("task: osteoporosis\nbackbones: [test_resnet.random]\ntrain: {epochs: 3}\n")
    over = tmp_path / "over.yaml"
    over.write_text("train: {epochs: 5}\nseeds: [0, 1]\n")
    report = validate_config_file([base, over], components)
    assert report.ok, report.problems
    assert report.config is not None
    assert report.config.train.epochs == 5
    assert report.cells == 2 * 3


def test_run_takes_several_config_files_and_names_the_wrong_one(tmp_path):
    """A second --config used to replace the first silently; now they merge, and are checked."""
    base = tmp_path / "base.yaml"
    base.write_text("task: osteoporosis\n")
    other = tmp_path / "other.yaml"
    other.write_text("task: cardiomegaly\n")
    proc = subprocess.run(
        [sys.executable, "-m", "xaibench", "run", "osteoporosis",
         "--config", str(base), "--config", str(other), "--out", str(tmp_path / "never")],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "other.yaml' is for task 'cardiomegaly'" in proc.stderr
    assert not (tmp_path / "never").exists()


def test_unknown_name_hint_names_the_listing_command(components):
    from xaibench.errors import UnknownComponentError

    with pytest.raises(UnknownComponentError) as info:
        components.saliency.get("gradcma")
    assert "see `xaibench ls saliency`" in str(info.value)
