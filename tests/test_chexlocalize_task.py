"""The ``chexlocalize:<finding>`` task family end to end on an imported CheXpert + CheXlocalize
fixture: the manifest's official splits are used, the cut-off is tuned on the validation
images, and mIoU and hit rate are recorded on the pathology's segmentation (issue 18 item 5).

The fixture follows the published layouts (CheXpert's ``train.csv``/``valid.csv`` under
``CheXpert-v1.0``; CheXlocalize's ``CheXpert/{val,test}_labels.csv``, its image copies and
``CheXlocalize/gt_segmentations_{val,test}.json``) with synthetic 32 px images; a pleural
effusion is a bright patch exactly where its segmentation says.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from cli_run import xaibench_cli
from PIL import Image
from pycocotools import mask as coco_mask

OBS = (
    "No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,Lung Lesion,Edema,"
    "Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,Fracture,"
    "Support Devices"
)
REGIONS = (
    "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Lesion", "Airspace Opacity", "Edema",
    "Consolidation", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Support Devices",
)  # fmt: skip
SIZE = 32
EFFUSION = OBS.split(",").index("Pleural Effusion")

TINY = {
    "dataset": {"name": "manifest", "options": {"image_size": SIZE}},
    "backbones": [{"name": "test_resnet.random", "options": {"img_size": SIZE}}],
    "strategies": ["full"],
    "saliency": ["saliency", "random"],
    "train": {"epochs": 3, "batch_size": 16},
    "gallery_images": 0,
    "sanity": {"images": 0},
    "analysis": {"drift_grid": 0, "bootstrap": 0},
    "chance": {"draws": 1},
}


def _rle(mask: np.ndarray) -> dict:
    encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(n) for n in encoded["size"]], "counts": encoded["counts"].decode()}


def _lesion(rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), bool)
    y, x = rng.integers(4, SIZE - 14, size=2)
    mask[y : y + 10, x : x + 10] = True
    return mask


def _image(path: Path, mask: np.ndarray | None, rng: np.random.Generator) -> None:
    pixels = rng.normal(90, 12, (SIZE, SIZE))
    if mask is not None:
        pixels[mask] += 110
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)


def _cells(effusion: bool, sep: str = "1.0") -> str:
    zero = "0.0" if sep == "1.0" else "0"
    cells = [zero] * len(OBS.split(","))
    cells[EFFUSION] = sep if effusion else zero
    return ",".join(cells)


def _layout(root: Path, n_train: int, n_val: int, n_test: int) -> None:
    rng = np.random.default_rng(3)
    header = f"Path,Sex,Age,Frontal/Lateral,AP/PA,{OBS}\n"
    data = root / "CheXpert-v1.0"
    lines = []
    for i in range(n_train):
        effusion = i % 2 == 0
        path = f"train/patient{i + 1:05d}/study1/view1_frontal.jpg"
        _image(data / path, _lesion(rng) if effusion else None, rng)
        lines.append(f"CheXpert-v1.0/{path},Female,60,Frontal,PA,{_cells(effusion)}\n")
    data.mkdir(parents=True, exist_ok=True)
    (data / "train.csv").write_text(header + "".join(lines))
    segmentations: dict[str, dict] = {"val": {}, "test": {}}
    split_lines: dict[str, list[str]] = {"val": [], "test": []}
    for split, count, first in (("val", n_val, 64541), ("test", n_test, 64741)):
        for i in range(count):
            effusion = i % 2 == 0
            patient = f"patient{first + i}"
            mask = _lesion(rng) if effusion else None
            folder = "valid" if split == "val" else "test"
            relative = f"{folder}/{patient}/study1/view1_frontal.jpg"
            _image(root / "CheXpert" / relative.replace("valid/", "val/"), mask, rng)
            if split == "val":
                _image(data / relative, mask, rng)
                split_lines[split].append(
                    f"CheXpert-v1.0/{relative},Male,70,Frontal,AP,{_cells(effusion)}\n"
                )
            else:
                split_lines[split].append(f"{relative},{_cells(effusion, '1')}\n")
            if effusion:  # CheXlocalize lists the images with a positive label
                empty = np.zeros((SIZE, SIZE), bool)
                segmentations[split][f"{patient}_study1_view1_frontal"] = {
                    region: _rle(mask if region == "Pleural Effusion" else empty)
                    for region in REGIONS
                }
    (data / "valid.csv").write_text(header + "".join(split_lines["val"]))
    (root / "CheXpert" / "val_labels.csv").write_text(header + "".join(split_lines["val"]))
    (root / "CheXpert" / "test_labels.csv").write_text(
        f"Path,{OBS}\n" + "".join(split_lines["test"])
    )
    (root / "CheXlocalize").mkdir()
    for split in ("val", "test"):
        (root / "CheXlocalize" / f"gt_segmentations_{split}.json").write_text(
            json.dumps(segmentations[split])
        )


def test_chexlocalize_family_runs_on_an_imported_chexpert_fixture(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, imported, out = tmp_path / "chexpert", tmp_path / "imported", tmp_path / "run"
    _layout(root, n_train=48, n_val=16, n_test=24)
    status, output = xaibench_cli(
        capsys, "data", "import", "chexpert", str(root), "--out", str(imported), "--quiet"
    )
    assert status == 0, output
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    status, output = xaibench_cli(
        capsys,
        "run",
        "chexlocalize:pleural_effusion",
        "--config",
        str(config),
        "--data",
        str(imported / "manifest.csv"),
        "--image-root",
        str(root),
        "--out",
        str(out),
        "--quiet",
    )
    assert status == 0, output
    doc = json.loads((out / "results.json").read_text())
    # The manifest's official splits: CheXpert train, CheXlocalize val and test.
    sizes = doc["dataset"]["splits"]
    assert {s: sizes[s]["images"] for s in ("train", "val", "test")} == {
        "train": 48,
        "val": 16,
        "test": 24,
    }
    records = [r for r in doc["records"] if r["status"] == "ok"]
    scored = {
        (r["metric"], r["saliency"])
        for r in records
        if r.get("region") == "pleural_effusion" and r["metric"].startswith("chexlocalize")
    }
    assert scored == {
        (metric, method)
        for metric in ("chexlocalize_miou", "chexlocalize_miou_tuned", "chexlocalize_hit_rate")
        for method in ("saliency", "random")
    }
    tuned = [r for r in records if r["metric"] == "chexlocalize_miou_tuned"]
    for record in tuned:
        details = record["details"]
        assert details["tuning_split"] == "val"
        assert details["tuned_threshold"] in [round(t, 1) for t in np.arange(0.2, 0.8, 0.1)]
    hits = [r for r in records if r["metric"] == "chexlocalize_hit_rate"]
    assert all(0.0 <= r["value"] <= 1.0 for r in hits)
