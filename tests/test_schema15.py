"""Results schema 1.5: readers accept the new fields and sections and refuse malformed ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_runs import write_fake_run
from fake_runs15 import write_fake_run_15

from xaibench.engine.results import SCHEMA_VERSION
from xaibench.errors import XaibenchError
from xaibench.evidence import evidence_agreement
from xaibench.report.run_files import READABLE_SCHEMAS, load_run


@pytest.fixture(scope="module")
def run15(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("schema15") / "run"
    write_fake_run_15(path, {"strong": 3.0, "weak": 0.5}, n=120)
    doc = json.loads((path / "results.json").read_text())
    doc["evidence"] = evidence_agreement(doc["records"])
    (path / "results.json").write_text(json.dumps(doc))
    return path


def test_the_schema_is_1_5_and_older_versions_stay_readable(tmp_path):
    assert SCHEMA_VERSION == "1.5"
    assert READABLE_SCHEMAS == ("1.0", "1.1", "1.2", "1.3", "1.4", "1.5")
    old = write_fake_run(tmp_path / "old", {"x": 1.0})  # a 1.3 file
    for version in ("1.0", "1.4"):
        doc = json.loads((old / "results.json").read_text())
        doc["schema_version"] = version
        (old / "results.json").write_text(json.dumps(doc))
        assert load_run(old).document["schema_version"] == version


def test_a_1_5_run_is_read_with_its_new_fields(run15):
    run = load_run(run15)
    assert run.document["schema_version"] == "1.5"
    assert run.explanations["chance"].dtype.kind == "f"
    controls = run.predictions[run.predictions["region"].str.contains("#control")]
    assert set(controls["region"]) == {"bone#control0", "bone#control1"}
    iou = next(r for r in run.records if r["metric"] == "iou_region")
    assert {"chance", "normalised", "normalised_ci", "p_chance"} <= set(iou["details"])
    assert len(run.document["evidence"]) == 2  # one per cell (gradcam)


def _broken(run15: Path, tmp_path: Path, edit) -> Path:
    target = tmp_path / "broken"
    target.mkdir()
    doc = json.loads((run15 / "results.json").read_text())
    edit(doc)
    (target / "results.json").write_text(json.dumps(doc))
    return target


def _iou(doc):
    return next(r for r in doc["records"] if r["metric"] == "iou_region")


def _delta(doc):
    return next(r for r in doc["records"] if r["metric"] == "delta_region")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: _iou(d)["details"].update(normalised="0.3"),
            r"record \d+: details: 'normalised' must be a number or null",
        ),
        (
            lambda d: _iou(d)["details"].update(normalised_ci=[0.1]),
            "'normalised_ci' must be a \\[low, high\\] pair",
        ),
        (
            lambda d: _iou(d)["details"].update(chance_exact="yes"),
            "'chance_exact' must be true, false or null",
        ),
        (
            lambda d: _delta(d)["details"].update(specific_ci="[0, 1]"),
            "'specific_ci' must be a \\[low, high\\] pair",
        ),
        (
            lambda d: _delta(d)["details"].update(control_deltas=[0.1, "x"]),
            "'control_deltas' must be a list of numbers or null",
        ),
        (
            lambda d: _delta(d)["details"].update(control_draws=-1),
            "'control_draws' must be a whole number",
        ),
        (
            lambda d: _iou(d)["details"].update(p_chance=1.5),
            "'p_chance' must be a number from 0 to 1 or null",
        ),
        (lambda d: d.update(evidence={"a": 1}), "'evidence' must be a list of objects"),
        (lambda d: d["evidence"][0].pop("saliency"), "evidence row 0 has no 'saliency'"),
        (
            lambda d: d["evidence"][0]["regions"][0].update(needed="yes"),
            "evidence row 0, region 0: 'needed' must be true, false or null",
        ),
        (
            lambda d: d["cells"][0].update(fit={"selection_curve": [1, 2]}),
            "cell 0: fit: 'selection_curve' must be a list of objects",
        ),
    ],
)
def test_malformed_new_fields_are_refused_naming_file_and_record(run15, tmp_path, edit, message):
    broken = _broken(run15, tmp_path, edit)
    with pytest.raises(XaibenchError, match=message) as info:
        load_run(broken)
    assert "results.json" in str(info.value)
    assert "\n" not in str(info.value)
