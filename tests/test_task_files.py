"""Task files (issue 18 items 1 and 4): the spec, expansion, loading, exclusions, the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from cli_runs import TINY_PHANTOM_RUN, cli

from xaibench.data.phantom import PhantomDataset
from xaibench.errors import XaibenchError
from xaibench.plugins import TASK_PATHS_ENV, PluginSelection, collect_components, get_plugin_manager
from xaibench.progress import NullProgress
from xaibench.run_data import empty_regions, prepare_data
from xaibench.tasks.file_task import FileTask
from xaibench.tasks.spec import TaskFileError, load_spec

#: A small binary task on the phantom, by T-score (a file a user could write).
SMALL_TASK: dict[str, Any] = {
    "name": "low_bone",
    "display_name": "Low bone density",
    "classes": ["fine", "low"],
    "positive": "low",
    "labels": {
        "numeric": {
            "column": "t_score",
            "classes": {"fine": {"above": -1.5}, "low": {"max": -1.5}},
            "fallback": "label",
        }
    },
    "regions": {"primary": "bone", "others": ["spine"]},
    "defaults": {k: v for k, v in TINY_PHANTOM_RUN.items() if k != "task"}
    | {"metrics": ["auc", "delta_region"], "perturbations": ["zero"], "perturb_regions": ["bone"]},
}

FINDINGS_TASK: dict[str, Any] = {
    "name": "chest",
    "labels": {"findings": {"columns": ["edema", "effusion"], "uncertain": "exclude"}},
    "regions": {"primary": {"name": "{finding}", "finding": True}, "others": ["lungs"]},
    "defaults": {"explain_regions": ["{finding}", "lungs"]},
}


def _write(folder: Path, spec: dict[str, Any], name: str = "task.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _problems(tmp_path: Path, spec: dict[str, Any]) -> list[str]:
    with pytest.raises(TaskFileError) as info:
        load_spec(str(_write(tmp_path, spec)))
    return info.value.items


def test_unknown_keys_get_did_you_mean_at_every_level(tmp_path: Path):
    spec = {
        **SMALL_TASK,
        "clases": ["a"],
        "labels": {"numeric": {**SMALL_TASK["labels"]["numeric"], "falback": "x"}},
    }
    spec["regions"] = {"primary": {"name": "bone", "findng": True}}
    problems = _problems(tmp_path, spec)
    assert any(p.startswith("clases: unknown key; did you mean 'classes'?") for p in problems)
    assert any(
        p.startswith("labels.numeric.falback: unknown key; did you mean 'fallback'?")
        for p in problems
    )
    assert any(
        p.startswith("regions.primary.findng: unknown key; did you mean 'finding'?")
        for p in problems
    )


def test_class_names_are_checked_with_did_you_mean(tmp_path: Path):
    assert _problems(tmp_path, {**SMALL_TASK, "positive": "lo"}) == [
        "positive 'lo' is not a class; did you mean 'low'? (classes: fine, low; or one_vs_rest)"
    ]
    numeric = {
        **SMALL_TASK["labels"]["numeric"],
        "classes": {"fine": {"min": 0}, "lwo": {"max": -1}},
    }
    problems = _problems(tmp_path, {**SMALL_TASK, "labels": {"numeric": numeric}})
    assert "'lwo' is not a class; did you mean 'low'?" in problems[0]


def test_a_findings_file_may_not_name_classes_and_needs_one_rule(tmp_path: Path):
    problems = _problems(tmp_path, {**FINDINGS_TASK, "classes": ["a", "b"]})
    assert "leave out 'classes' and 'positive'" in problems[0]
    problems = _problems(tmp_path, {**SMALL_TASK, "labels": {}})
    assert "give exactly one label rule" in problems[0]


def test_findings_expand_to_one_binary_task_each(tmp_path: Path):
    path = str(_write(tmp_path, FINDINGS_TASK))
    spec, _ = load_spec(path)
    assert spec.task_names() == ["chest:edema", "chest:effusion"]
    task = FileTask(file=path, finding="effusion")
    assert task.class_names == ("no_effusion", "effusion")
    assert task.positive_class == "effusion"
    assert task.positive_index == 1
    assert task.regions_of_interest == ("effusion", "lungs")
    assert task.finding_regions == ("effusion",)
    assert task.label_columns == ("effusion",)
    assert task.defaults() == {"task": "chest:effusion", "explain_regions": ["effusion", "lungs"]}
    with pytest.raises(XaibenchError, match="run one of: chest:edema, chest:effusion"):
        FileTask(file=path)
    with pytest.raises(XaibenchError, match="did you mean 'edema'"):
        FileTask(file=path, finding="edma")


def test_one_vs_rest_makes_a_task_per_class(tmp_path: Path):
    path = str(_write(tmp_path, {**SMALL_TASK, "positive": "one_vs_rest"}))
    spec, _ = load_spec(path)
    assert spec.task_names() == ["low_bone:fine", "low_bone:low"]
    task = FileTask(file=path, finding="fine")
    assert task.class_names == ("fine", "low")
    assert task.positive_class == "fine"


def test_task_files_register_from_folders_and_travel_in_the_selection(tmp_path: Path):
    _write(tmp_path, SMALL_TASK, "small.yaml")
    _write(tmp_path, FINDINGS_TASK, "chest.yml")
    (tmp_path / "notes.txt").write_text("not a task")
    selection = PluginSelection(task_paths=(str(tmp_path),))
    assert PluginSelection.from_env(selection.to_env()) == selection  # what a worker reads
    components = collect_components(get_plugin_manager(entry_points=False, selection=selection))
    assert {"low_bone", "chest:edema", "chest:effusion", "osteoporosis"} <= set(
        components.tasks.names()
    )
    entry = components.tasks.get("low_bone")
    assert entry.provider.plugin == "task-file:small.yaml"
    assert entry.provider.distribution == "task-file"
    assert (
        entry.provider.version
        == __import__("hashlib").sha256((tmp_path / "small.yaml").read_bytes()).hexdigest()[:12]
    )
    assert components.tasks.create("chest:edema").class_names == ("no_edema", "edema")


def test_a_task_file_named_like_a_builtin_collides(tmp_path: Path):
    _write(tmp_path, {**SMALL_TASK, "name": "osteoporosis"})
    selection = PluginSelection(task_paths=(str(tmp_path),))
    with pytest.raises(XaibenchError, match="registered twice"):
        collect_components(get_plugin_manager(entry_points=False, selection=selection))


def test_excluded_rows_leave_the_run_before_splitting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    """An uncertain or blank finding is in no split, and the run counts it per reason."""
    from xaibench.config import resolve_config

    table = PhantomDataset(n_images=60, image_size=32, class_shares=[0.4, 0.3, 0.3]).table()
    finding = np.where(table["t_score"] <= -1.5, "1", "0").astype(object)
    finding[[3, 10, 11]] = "-1"
    finding[[20]] = ""
    original = PhantomDataset.table

    def with_finding(self: PhantomDataset) -> pd.DataFrame:
        return original(self).assign(low=finding)

    monkeypatch.setattr(PhantomDataset, "table", with_finding)
    path = _write(
        tmp_path, {"name": "phantom_findings", "labels": {"findings": {"columns": ["low"]}}}
    )
    selection = PluginSelection(task_paths=(str(path),))
    components = collect_components(get_plugin_manager(entry_points=False, selection=selection))
    config = resolve_config(TINY_PHANTOM_RUN, {"task": "phantom_findings:low", "metrics": ["auc"]})
    data = prepare_data(config, components, NullProgress())
    assert data.excluded == {"uncertain": 3, "blank": 1}
    assert sum(s["images"] for s in data.split_sizes.values()) == 60 - 4
    ids = {i for split in data.splits.values() for i in split.sample_ids}
    dropped = set(table["sample_id"].iloc[[3, 10, 11, 20]])
    assert not ids & dropped
    from xaibench.engine.benchmark import run_benchmark

    doc = run_benchmark(config, components, tmp_path / "run", NullProgress()).document
    assert doc["dataset"]["excluded_rows"] == {"uncertain": 3, "blank": 1}
    assert doc["task"]["class_names"] == ["no_low", "low"]
    assert doc["task"]["file"]["file"] == "task.yaml"


def test_a_finding_region_needs_a_mask_on_positive_test_images_only():
    coverage = {"lesion": np.array([0.0, 0.2, 0.0, 0.1]), "lungs": np.array([0.3, 0.0, 0.3, 0.3])}
    regions = {"perturb_regions": ["lesion", "lungs"], "explain_regions": ["lesion"]}
    positive = np.array([False, True, False, True])
    found = empty_regions(regions, coverage, finding_regions=("lesion",), positive=positive)
    assert found == {
        "perturb_regions": {
            "lungs": "region 'lungs' is empty on 1 of 4 test images; perturbation tests need it "
            "on every test image"
        }
    }
    positive[0] = True  # a positive image without the lesion: the Δ would be diluted
    found = empty_regions(regions, coverage, finding_regions=("lesion",), positive=positive)
    assert found["perturb_regions"]["lesion"].startswith(
        "region 'lesion' is empty on 1 of 3 positive test images"
    )
    # Without the finding flag, the negatives' empty masks skip it (as before).
    assert "lesion" in empty_regions(regions, coverage)["perturb_regions"]


def test_label_columns_are_never_strata():
    task = FileTask(file="xaibench.tasks:osteoporosis.yaml")
    assert task.label_columns == ("t_score", "label")


@pytest.mark.slow  # three runs of the command (about 30 s)
def test_run_a_task_file_records_its_name_and_hash_not_its_folder(tmp_path: Path):
    """``xaibench run my_task.yaml``; ``--resume`` finishes it; an edited file is another study."""
    folder = tmp_path / "private-jane-doe"
    folder.mkdir()
    path = _write(folder, SMALL_TASK, "low.yaml")
    out = tmp_path / "run"
    env_before = os.environ.get(TASK_PATHS_ENV)
    proc = cli("run", str(path), "--out", str(out), "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert os.environ.get(TASK_PATHS_ENV) == env_before
    doc = json.loads((out / "results.json").read_text())
    digest = __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    assert doc["task"]["name"] == "low_bone"
    assert doc["task"]["file"] == {"file": "low.yaml", "sha256": digest, "spec_version": "1"}
    assert doc["components"]["tasks"]["low_bone"]["display_name"] == "Low bone density"
    for file in out.rglob("*"):
        if file.is_file() and file.suffix in (".json", ".yaml", ".csv", ".md", ".html"):
            assert "jane-doe" not in file.read_text(errors="replace"), file
    proc = cli("run", str(path), "--out", str(out), "--resume", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    path.write_text(path.read_text() + "# edited\n")
    proc = cli("run", str(path), "--out", str(out), "--resume", "--quiet", cwd=tmp_path)
    assert proc.returncode == 2
    assert "or the task file changed" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_validate_lists_every_problem_of_a_task_file(tmp_path: Path):
    from xaibench.engine.validation import is_task_document, validate_task_file

    components = collect_components(get_plugin_manager(entry_points=False))
    good = _write(tmp_path, SMALL_TASK, "small.yaml")
    assert is_task_document(good)
    assert validate_task_file(good, components).problems == []
    bad = {
        **SMALL_TASK,
        "regions": {"primary": "bnoe"},
        "grids": {"big": {"backbones": ["test_resnt.random"]}},
    }
    problems = validate_task_file(_write(tmp_path, bad, "bad.yaml"), components).problems
    assert problems[0] == (
        "regions.primary: dataset 'phantom' has no region 'bnoe'; did you mean 'bone'? "
        "(it has: bone, spine, ribs, clavicles, scapulae, sternum, lungs, heart, shortcut)"
    )
    assert problems[1].startswith(
        "grids.big: backbones[0]: unknown backbone 'test_resnt.random'; "
        "did you mean 'test_resnet.random'"
    )
    assert len(problems) == 2


def test_ls_lists_included_task_files_and_a_missing_folder_is_one_line(tmp_path: Path):
    _write(tmp_path, SMALL_TASK, "small.yaml")
    proc = cli("ls", "tasks", "--include-tasks", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("low_bone"))
    assert "Low bone density" in line
    assert "[task-file " in line
    proc = cli("ls", "tasks", "--include-tasks", "nowhere", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == "xaibench: error: task file or folder 'nowhere' does not exist\n"


def test_data_check_with_a_task_file_adds_its_label_problems(tmp_path: Path):
    """``data check MANIFEST --task FILE``: the task's bad cells, by row, with the manifest's."""
    from PIL import Image

    for i in range(3):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "m.csv").write_text(
        "image,patient_id,t_score,grade\n0.png,a,-1.0,mild\n1.png,b,-2.0,severe?\n2.png,c,-3.0,\n"
    )
    spec = {"name": "grading", "classes": ["mild", "severe"], "positive": "severe"}
    _write(tmp_path, {**spec, "labels": {"column": "grade"}}, "grading.yaml")
    proc = cli("data", "check", "m.csv", "--quick", "--task", "grading.yaml", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[:2] == [
        "row 2 (grade): unknown label 'severe?'; use one of mild, severe or 0-1",
        "row 3 (grade): no class: the row needs a grade",
    ]


def test_a_task_file_edited_during_a_run_stops_it(tmp_path: Path):
    """Each process reads the file again: it must be the one the run was hashed with."""
    from xaibench.config import resolve_config

    path = _write(tmp_path, SMALL_TASK, "small.yaml")
    selection = PluginSelection(task_paths=(str(path),))
    components = collect_components(get_plugin_manager(entry_points=False, selection=selection))
    config = resolve_config(components.tasks.create("low_bone").defaults())
    stale = config.model_copy(update={"task_sha256": "0" * 64})
    assert stale.config_hash() != config.config_hash()  # the file's hash is part of the study
    assert "task_sha256" not in stale.model_dump()  # and never of config.yaml
    with pytest.raises(
        XaibenchError, match=r"task file 'small\.yaml' changed since the run started"
    ):
        prepare_data(stale, components, NullProgress())
