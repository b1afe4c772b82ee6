"""Mistakes rejected before torch is imported, and ``validate``'s one pass (issue 21 item 5).

Each command runs in a fresh interpreter with ``-X importtime``, which lists every module
imported: a rejection must name the mistake in one line, exit 2 and list no ``torch``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from xaibench.component_checks import well_formed_refs
from xaibench.early_checks import check_file, check_folder, check_names
from xaibench.engine.validation import validate_config_file
from xaibench.errors import UnknownComponentError, XaibenchError

#: A line of ``-X importtime`` for the ``torch`` package itself.
_TORCH = re.compile(r"\|\s+torch$")


def _xaibench(tmp_path: Path, *args: str) -> tuple[int, list[str], bool]:
    """Exit status, the lines that are not importtime's, and whether torch was imported."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "xaibench", *args],
        capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    lines = (done.stdout + done.stderr).splitlines()
    torch = any(_TORCH.search(line) for line in lines if line.startswith("import time:"))
    said = [line for line in lines if not line.startswith("import time:")]
    return done.returncode, said, torch


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--saliency", "gradcma"],
            "xaibench: error: unknown saliency method 'gradcma'; did you mean 'gradcam'",
        ),
        (["--metric", "rnk"], "xaibench: error: unknown metric 'rnk'"),
        (["-b", "resnet_5O"], "xaibench: error: unknown backbone 'resnet_5O'"),
        (["-s", "lineer_probe"], "xaibench: error: unknown strategy 'lineer_probe'"),
        (["--perturbation", "blurr"], "xaibench: error: unknown perturbation 'blurr'"),
        (["--executor", "rayy"], "xaibench: error: unknown executor 'rayy'; did you mean 'ray'?"),
        (["--data", "missing.csv"], "xaibench: error: --data: manifest not found: missing.csv"),
        (["--config", "missing.yaml"], "xaibench: error: cannot read config file 'missing.yaml'"),
        (
            ["--data", "here.csv", "--image-root", "nowhere"],
            "xaibench: error: --image-root: image folder not found: nowhere",
        ),
        (
            ["--calibration", "missing.json"],
            "xaibench: error: --calibration: calibration not found: missing.json",
        ),
    ],
)
def test_run_rejects_before_torch_is_imported(tmp_path, args, message):
    (tmp_path / "here.csv").write_text("image_path,label,patient_id\n")
    code, said, torch = _xaibench(tmp_path, "run", "osteoporosis", "--quiet", "-o", "out", *args)
    assert code == 2
    assert len(said) == 1, said
    assert said[0].startswith(message), said
    assert not torch
    assert not (tmp_path / "out").exists()


def test_a_missing_manifest_in_a_config_file_is_named_by_its_key(tmp_path):
    (tmp_path / "mine.yaml").write_text(
        "dataset: {name: manifest, options: {path: gone/manifest.csv}}\n"
    )
    code, said, torch = _xaibench(tmp_path, "run", "osteoporosis", "--config", "mine.yaml")
    assert code == 2
    assert said == ["xaibench: error: dataset.options.path: manifest not found: gone/manifest.csv"]
    assert not torch


def test_validate_of_a_missing_file_does_not_import_torch(tmp_path):
    code, said, torch = _xaibench(tmp_path, "validate", "bad.yaml")
    assert code == 2
    assert len(said) == 1, said
    assert "bad.yaml" in said[0]
    assert not torch


def test_file_checks_name_the_option(tmp_path):
    with pytest.raises(XaibenchError, match=r"^--data: .* is a folder, not a manifest file$"):
        check_file(tmp_path, "--data", "manifest")
    (tmp_path / "f").write_text("")
    with pytest.raises(XaibenchError, match=r"^--image-root: .*f is not a folder$"):
        check_folder(tmp_path / "f", "--image-root", "image folder")
    check_file(tmp_path / "f", "--data", "manifest")  # a file passes
    check_folder(tmp_path, "--image-root", "image folder")


def test_check_names_imports_no_component(components):
    from xaibench.config import resolve_config

    config = resolve_config(
        components.tasks.create("osteoporosis").defaults(), {"metrics": ["auc", "aucc"]}
    )
    with pytest.raises(UnknownComponentError, match="unknown metric 'aucc'; did you mean 'auc'"):
        check_names(config, components)


def test_well_formed_entries_are_kept_around_schema_errors():
    merged = {
        "saliency": ["gradcam", 3, {"name": "occlusion", "colour": 1}],
        "dataset": {"name": "phantom"},
        "executor": "local",
        "backbones": "not a list",
    }
    found = [(kind, where, ref.name) for kind, where, ref in well_formed_refs(merged)]
    assert found == [
        ("saliency", "saliency[0]", "gradcam"),
        ("datasets", "dataset", "phantom"),
        ("executors", "executor", "local"),
    ]


_FOUR_PROBLEMS = (
    "task: osteoporosis\n"
    "train: {epochs: -1}\n"
    "backbones: [{name: test_resnet.random, options: {img_sz: 32}}]\n"
    "strategies: [linear_probe, {name: lora, options: {rnk: 8}}]\n"
    "saliency: [gradcam, gradcma]\n"
)


def test_validate_lists_schema_and_component_problems_in_one_pass(tmp_path, components):
    path = tmp_path / "study.yaml"
    path.write_text(_FOUR_PROBLEMS)
    report = validate_config_file(path, components)
    assert report.problems[0] == "train.epochs: Input should be greater than or equal to 1"
    rest = report.problems[1:]
    assert len(rest) == 3, report.problems
    assert rest[0].startswith(
        "backbones[0]: bad options for backbone 'test_resnet.random': img_sz: unknown option; "
        "did you mean 'img_size'?"
    )
    assert rest[1].startswith(
        "strategies[1]: bad options for strategy 'lora': rnk: unknown option; did you mean 'rank'?"
    )
    assert rest[2].startswith(
        "saliency[1]: unknown saliency method 'gradcma'; did you mean 'gradcam'"
    )


def test_validate_command_exits_2_with_every_problem(tmp_path):
    (tmp_path / "study.yaml").write_text("colour: blue\n" + _FOUR_PROBLEMS)
    done = subprocess.run(
        [sys.executable, "-m", "xaibench", "validate", "study.yaml"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert done.returncode == 2
    text = done.stdout + done.stderr
    for where in ("colour:", "train.epochs:", "backbones[0]:", "strategies[1]:", "saliency[1]:"):
        assert f"  - {where}" in text, text
    assert "5 problems" in text
    assert "Traceback" not in text
