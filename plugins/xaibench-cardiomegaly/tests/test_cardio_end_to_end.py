"""One tiny run of ``xaibench run cardiomegaly`` through the command line, in a subprocess.

8-16 s on two CPU cores (one cell, 120 images at 48 px), so it is not marked slow.
"""

import json
import subprocess
import sys

import yaml

#: One cell: a tiny random ResNet on 120 phantom images at 48 px, one epoch, the heart only.
TINY = {
    "dataset": {
        "name": "cardiac_phantom",
        "options": {"n_images": 120, "image_size": 48, "margin": 0.06},
    },
    "backbones": [{"name": "test_resnet.random", "options": {"img_size": 48}}],
    "strategies": ["full"],
    "saliency": ["saliency"],
    "perturbations": ["zero"],
    "metrics": ["auc", "delta_region", "iou_region"],
    "explain_regions": ["heart"],
    "perturb_regions": ["heart"],
    "complement_regions": [],
    "train": {"epochs": 1, "batch_size": 16},
    "max_explain_images": 8,
    "gallery_images": 0,
    "sanity": {"images": 0},
}


def _xaibench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xaibench", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_cli_run_scores_the_heart(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "run"
    proc = _xaibench("run", "cardiomegaly", "--config", str(config), "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr

    results = json.loads((out / "results.json").read_text())
    assert results["task"]["class_names"] == ["normal", "cardiomegaly"]
    assert results["task"]["regions_of_interest"][0] == "heart"
    assert results["dataset"]["name"] == "cardiac_phantom"
    for kind, name in (("tasks", "cardiomegaly"), ("datasets", "cardiac_phantom")):
        assert results["components"][kind][name]["distribution"] == "xaibench-cardiomegaly"
    assert [cell["status"] for cell in results["cells"]] == ["ok"]
    by_metric = {}
    for record in results["records"]:
        by_metric.setdefault(record["metric"], []).append(record)
    [delta] = by_metric["delta_region"]
    assert (delta["region"], delta["perturbation"], delta["status"]) == ("heart", "zero", "ok")
    assert "auc_intact" in delta["details"]
    [iou] = by_metric["iou_region"]
    assert (iou["region"], iou["saliency"], iou["status"]) == ("heart", "saliency", "ok")
    assert 0.0 <= iou["value"] <= 1.0
    [auc] = by_metric["auc"]
    assert auc["status"] == "ok"

    explainability = (out / "leaderboard_explainability.md").read_text()
    assert "Δ_heart (zero)" in explainability
    assert "IoU_heart (saliency)" in explainability
    assert "AUC" in (out / "leaderboard_performance.md").read_text()
