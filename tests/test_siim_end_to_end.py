"""Acceptance (issue 18): a pneumothorax task from one YAML file runs end to end on SIIM data.

A fixture in SIIM-ACR's published layout (``train-rle.csv``, nested DICOM folders) whose
pneumothorax images carry a bright planted lesion exactly where their RLE says is imported
with ``xaibench data import siim``, then ``docs/tasks/examples/pneumothorax.yaml`` runs on the
manifest with a tiny grid. The run must report Δ and IoU on the ``pneumothorax`` region.

Needs the label-agnostic manifest with ``siim_rle_`` regions and ``--image-root`` (K1) and task
files (K2); it passes once both are merged.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from cli_run import xaibench_cli
from siim_fixture import pneumothorax_dataset

REPO = Path(__file__).resolve().parents[1]
TASK_FILE = REPO / "docs" / "tasks" / "examples" / "pneumothorax.yaml"

TINY = {
    "dataset": {"name": "manifest", "options": {"image_size": 48}},
    "backbones": [{"name": "test_resnet.random", "options": {"img_size": 48}}],
    "strategies": ["linear_probe", "full"],
    "saliency": ["saliency"],
    "perturbations": ["mean"],
    "metrics": ["auc", "delta_region", "iou_region"],
    "explain_regions": ["pneumothorax"],
    "perturb_regions": ["pneumothorax"],
    "train": {"epochs": 2, "batch_size": 16},
    "max_explain_images": 12,
    "gallery_images": 0,
    # What this test does not check, off to keep it fast.
    "sanity": {"images": 0},
    "analysis": {"drift_grid": 0, "bootstrap": 0},
    "chance": {"draws": 1},
    "controls": {"draws": 0},
}


def test_pneumothorax_task_runs_on_an_imported_siim_fixture(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, imported, out = tmp_path / "siim", tmp_path / "imported", tmp_path / "run"
    _, masks = pneumothorax_dataset(root, 40, size=48, seed=7)
    status, output = xaibench_cli(
        capsys, "data", "import", "siim", str(root), "--out", str(imported), "--quiet"
    )
    assert status == 0, output
    manifest = imported / "manifest.csv"
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    assert len(frame) == 40
    assert (frame["pneumothorax"] == "1").sum() == len(masks) == 20

    # The manifest's RLE decodes to the planted lesion (K1's reader, not the fixture's).
    from xaibench.data.region_formats import parse_annotation, rasterise

    for ident, mask in masks.items():
        cell = frame.loc[frame["source_id"] == ident, "siim_rle_pneumothorax"].iat[0]
        assert np.array_equal(rasterise(parse_annotation("siim_rle", cell), mask.shape), mask)

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    status, output = xaibench_cli(
        capsys,
        "run",
        str(TASK_FILE),
        "--config",
        str(config),
        "--data",
        str(manifest),
        "--image-root",
        str(root),
        "--out",
        str(out),
        "--quiet",
    )
    assert status == 0, output
    doc = json.loads((out / "results.json").read_text())
    records = doc["records"]
    assert all(c["status"] == "ok" for c in doc["cells"])
    deltas = [r for r in records if r["metric"] == "delta_region" and r["status"] == "ok"]
    ious = [r for r in records if r["metric"] == "iou_region" and r["status"] == "ok"]
    assert {r["region"] for r in deltas} == {"pneumothorax"}
    assert {r["region"] for r in ious} == {"pneumothorax"}
    assert {r["strategy"] for r in ious} == {"linear_probe", "full"}
    assert all(0.0 <= r["value"] <= 1.0 for r in ious)
    assert any(r["metric"] == "auc" for r in records)
