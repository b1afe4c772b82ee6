"""CheXpert (+ CheXlocalize) importer on fixtures in the published layouts (synthetic values)."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_run import xaibench_cli
from PIL import Image
from pycocotools import mask as coco_mask

from xaibench.data.importers.base import (
    MISSING_IMAGE,
    OUTSIDE_ROOT,
    ImportLayoutError,
    write_import,
)
from xaibench.data.importers.chexpert import SAME_STUDY, VIEW_CONFLICT, CheXpert
from xaibench.progress import NullProgress

OBS = (
    "No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,Lung Lesion,Edema,"
    "Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,Fracture,"
    "Support Devices"
)
HEADER = f"Path,Sex,Age,Frontal/Lateral,AP/PA,{OBS}\n"
H, W = 12, 16  # full-size images of the fixture
# 14 cells: no finding, enl. cardiomed., cardiomegaly, lung opacity, lesion, edema, consol.,
# pneumonia, atelectasis, pneumothorax, effusion, pleural other, fracture, support devices
TRAIN = [
    ("train/patient00001/study1/view1_frontal.jpg", "Female,68,Frontal,AP",
     "1.0,,,,,,,,,0.0,,,,1.0"),
    ("train/patient00001/study1/view2_lateral.jpg", "Female,68,Lateral,",
     "1.0,,,,,,,,,0.0,,,,1.0"),
    ("train/patient00002/study1/view1_frontal.jpg", "Male,0,Frontal,PA",
     ",,-1.0,1.0,,-1.0,-1.0,,-1.0,,-1.0,,1.0,"),
    ("train/patient00002/study1/view2_frontal.jpg", "Male,0,Frontal,AP",
     ",,-1.0,1.0,,-1.0,-1.0,,-1.0,,-1.0,,1.0,"),
    ("train/patient00003/study1/view1_frontal.jpg", "Unknown,50,Frontal,LL",
     ",,,,,,,,,1.0,,,,"),
    ("train/patient00004/study1/view1_frontal.jpg", "Female,40,Frontal,PA",
     ",,1.0,,,,,,,,,,,"),  # listed, image missing
]  # fmt: skip
VALID = [
    ("valid/patient64541/study1/view1_frontal.jpg", "Male,73,Frontal,AP",
     "0.0,1.0,1.0,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0"),
    ("valid/patient64542/study1/view1_frontal.jpg", "Male,70,Frontal,PA",
     "1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0"),
    ("valid/patient64542/study1/view2_lateral.jpg", "Male,70,Lateral,",
     "1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0"),
]  # fmt: skip
TEST = [  # CheXlocalize's test CSV: Path and labels only; radiologists' 0/1 labels
    ("test/patient64741/study1/view1_frontal.jpg", "0,0,0,0,0,0,0,0,0,1,0,0,0,1"),
    ("test/patient64742/study1/view1_frontal.jpg", "0,0,1,0,0,0,0,0,0,0,0,0,0,0"),  # no seg
    ("test/patient64743/study1/view1_frontal.jpg", "1,0,0,0,0,0,0,0,0,0,0,0,0,0"),
]
REGIONS = (
    "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Lesion", "Airspace Opacity", "Edema",
    "Consolidation", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Support Devices",
)  # fmt: skip


def _rle(mask: np.ndarray) -> dict:
    encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(n) for n in encoded["size"]], "counts": encoded["counts"].decode()}


def _box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


def _segmentation(positive: dict[str, np.ndarray]) -> dict:
    """All ten pathologies, all-zero RLE where absent (as CheXlocalize publishes them)."""
    return {p: _rle(positive.get(p, np.zeros((H, W), np.uint8))) for p in REGIONS}


def _image(path: Path, size: tuple[int, int] = (H, W)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size, 120, np.uint8)).save(path)


def _layout(
    root: Path, *, folder: str = "CheXpert-v1.0", chexlocalize: bool = True, size=(H, W)
) -> Path:
    """CheXpert's release under ``root/folder`` and CheXlocalize's download under ``root``."""
    data = root / folder
    data.mkdir(parents=True)
    for name, rows in (("train.csv", TRAIN), ("valid.csv", VALID)):
        lines = [f"CheXpert-v1.0-small/{p},{meta},{cells}\n" for p, meta, cells in rows]
        (data / name).write_text(HEADER + "".join(lines))
    for relative, _, _ in TRAIN[:-1] + VALID:
        _image(data / relative, size)
    if chexlocalize:
        lines = [f"CheXpert-v1.0/{p},{meta},{cells}\n" for p, meta, cells in VALID]
        (root / "CheXpert").mkdir()
        (root / "CheXpert" / "val_labels.csv").write_text(HEADER + "".join(lines))
        (root / "CheXpert" / "test_labels.csv").write_text(
            f"Path,{OBS}\n" + "".join(f"{p},{cells}\n" for p, cells in TEST)
        )
        for relative, _, _ in VALID:
            _image(root / "CheXpert" / relative.replace("valid/", "val/"))
        for relative, _ in TEST:
            _image(root / "CheXpert" / relative)
        seg = root / "CheXlocalize"
        seg.mkdir()
        val = {
            "patient64541_study1_view1_frontal": _segmentation(
                {
                    "Enlarged Cardiomediastinum": _box(2, 8, 4, 12),
                    "Cardiomegaly": _box(3, 9, 3, 13),
                    "Airspace Opacity": _box(0, 4, 0, 4) | _box(8, 12, 12, 16),
                }
            )
        }
        drawn = {"Pneumothorax": _box(0, 3, 1, 6), "Support Devices": _box(5, 6, 2, 9)}
        test = {"patient64741_study1_view1_frontal": _segmentation(drawn)}
        (seg / "gt_segmentations_val.json").write_text(json.dumps(val))
        (seg / "gt_segmentations_test.json").write_text(json.dumps(test))
    return root


def _import(tmp_path: Path, root: Path, **options: object) -> tuple[pd.DataFrame, dict]:
    out = tmp_path / "out"
    write_import("chexpert", CheXpert(**options), root, out, NullProgress(), overwrite=True)
    frame = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    return frame.set_index("source_id", drop=False), json.loads((out / "manifest.json").read_text())


def _decode(cell: str) -> np.ndarray:
    rle = json.loads(cell)
    with warnings.catch_warnings():  # pycocotools' __array__ under NumPy 2
        warnings.simplefilter("ignore", DeprecationWarning)
        return coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()})


def test_chexpert_with_chexlocalize(tmp_path: Path) -> None:
    root = _layout(tmp_path / "data")
    frame, sidecar = _import(tmp_path, root)
    assert list(frame.columns[:5]) == ["image", "patient_id", "source_id", "view", "split"]
    assert list(frame.columns[5:19]) == list(CheXpert.findings)
    assert [c for c in frame.columns if c.startswith("rle_")] == [
        f"rle_{r}" for r in CheXpert.regions
    ]
    assert list(frame.index) == [
        "patient00001_study1_view1_frontal",
        "patient00002_study1_view1_frontal",
        "patient00002_study1_view2_frontal",
        "patient64541_study1_view1_frontal",
        "patient64542_study1_view1_frontal",
        "patient64741_study1_view1_frontal",
        "patient64742_study1_view1_frontal",
        "patient64743_study1_view1_frontal",
    ]
    train = frame.loc["patient00002_study1_view1_frontal"]
    # The CSV says CheXpert-v1.0-small/...; the folder found is CheXpert-v1.0.
    assert train["image"] == "CheXpert-v1.0/train/patient00002/study1/view1_frontal.jpg"
    assert (train["patient_id"], train["view"], train["split"], train["sex"]) == (
        "patient00002", "PA", "train", "Male"
    )  # fmt: skip
    assert train["age"] == ""  # CheXpert's 0 = unknown
    assert (train["cardiomegaly"], train["lung_opacity"], train["pneumonia"]) == ("-1", "1", "")
    assert train["no_finding"] == ""
    assert train["fracture"] == "1"
    assert frame.loc["patient00001_study1_view1_frontal", "no_finding"] == "1"
    assert frame.loc["patient00001_study1_view1_frontal", "view"] == "AP"
    assert all(frame.loc["patient00001_study1_view1_frontal", f"rle_{r}"] == "" for r in
               CheXpert.regions)  # fmt: skip
    # val: CheXpert's valid.csv rows, images from CheXlocalize's copy.
    val = frame.loc["patient64541_study1_view1_frontal"]
    assert val["split"] == "val"
    assert val["image"] == "CheXpert/val/patient64541/study1/view1_frontal.jpg"
    np.testing.assert_array_equal(_decode(val["rle_cardiomegaly"]), _box(3, 9, 3, 13))
    np.testing.assert_array_equal(
        _decode(val["rle_lung_opacity"]), _box(0, 4, 0, 4) | _box(8, 12, 12, 16)
    )
    assert val["rle_pneumothorax"] == "[]"  # published as all zeros: annotated, absent
    # An image without a segmentation entry and no positive label: annotated, all absent.
    assert all(frame.loc["patient64542_study1_view1_frontal", f"rle_{r}"] == "[]" for r in
               CheXpert.regions)  # fmt: skip
    test = frame.loc["patient64741_study1_view1_frontal"]
    assert (test["split"], test["view"], test["sex"], test["age"]) == ("test", "FRONTAL", "", "")
    assert test["image"] == "CheXpert/test/patient64741/study1/view1_frontal.jpg"
    assert (test["pneumothorax"], test["support_devices"], test["edema"]) == ("1", "1", "0")
    np.testing.assert_array_equal(_decode(test["rle_pneumothorax"]), _box(0, 3, 1, 6))
    # Positive label without a segmentation (CheXlocalize's patient65086 quirk): not annotated.
    quirk = frame.loc["patient64742_study1_view1_frontal"]
    assert quirk["rle_cardiomegaly"] == ""
    assert quirk["rle_edema"] == "[]"
    assert sidecar["excluded"] == {
        "view LATERAL not selected": 2,
        VIEW_CONFLICT: 1,
        MISSING_IMAGE: 1,
    }
    notes = " | ".join(sidecar["notes"])
    assert "1 positive labels without a CheXlocalize segmentation" in notes
    assert "2 ages of 0" in notes
    assert "CheXpert from CheXpert-v1.0/" in notes


def test_chexpert_uncertain_policies(tmp_path: Path) -> None:
    root = _layout(tmp_path / "data", chexlocalize=False)
    image = "patient00002_study1_view1_frontal"
    cells = {}
    for policy in ("keep", "ignore", "zeros", "ones"):
        frame, sidecar = _import(tmp_path, root, uncertain=policy)
        cells[policy] = (frame.loc[image, "cardiomegaly"], frame.loc[image, "lung_opacity"])
        assert sidecar["options"]["uncertain"] == policy
    assert cells == {
        "keep": ("-1", "1"),
        "ignore": ("", "1"),
        "zeros": ("0", "1"),
        "ones": ("1", "1"),
    }
    frame, _ = _import(tmp_path, root, uncertain={"atelectasis": "ones", "edema": "zeros"})
    row = frame.loc[image]
    assert (row["atelectasis"], row["edema"], row["cardiomegaly"]) == ("1", "0", "-1")
    with pytest.raises(Exception, match="unknown finding 'atelectasys'"):
        CheXpert(uncertain={"atelectasys": "ones"})


def test_chexpert_views_studies_and_root_variants(tmp_path: Path) -> None:
    root = _layout(tmp_path / "data", chexlocalize=False)
    frame, sidecar = _import(tmp_path, root, views="all")
    assert "patient00001_study1_view2_lateral" in frame.index
    assert frame.loc["patient00003_study1_view1_frontal", "view"] == ""  # Frontal + LL
    assert set(frame["split"]) == {"train", "val"}
    assert not [c for c in frame.columns if c.startswith("rle_")]
    lateral, _ = _import(tmp_path, root, views="lateral")
    assert set(lateral["view"]) == {"LATERAL"}
    first, sidecar = _import(tmp_path, root, studies="first")
    assert "patient00002_study1_view2_frontal" not in first.index
    assert "patient00002_study1_view1_frontal" in first.index
    assert sidecar["excluded"][SAME_STUDY] == 1
    # ROOT = the dataset folder itself (-small): paths relative to it.
    small = _layout(tmp_path / "small", folder="CheXpert-v1.0-small", chexlocalize=False)
    frame, _ = _import(tmp_path, small / "CheXpert-v1.0-small")
    assert frame.loc["patient64541_study1_view1_frontal", "image"] == (
        "valid/patient64541/study1/view1_frontal.jpg"
    )


def test_chexpert_chexlocalize_options_and_sizes(tmp_path: Path) -> None:
    root = _layout(tmp_path / "data")
    off, _ = _import(tmp_path, root, chexlocalize=False)
    assert set(off["split"]) == {"train", "val"}
    assert not [c for c in off.columns if c.startswith("rle_")]
    # CheXlocalize alone: val and test from its own CSVs and images.
    shutil.rmtree(root / "CheXpert-v1.0")
    alone, _ = _import(tmp_path, root)
    assert set(alone["split"]) == {"val", "test"}
    assert alone.loc["patient64541_study1_view1_frontal", "sex"] == "Male"
    assert alone.loc["patient64541_study1_view1_frontal", "rle_cardiomegaly"].startswith("{")
    # -small images (another size) and no CheXlocalize copy of val: the RLE cannot apply.
    small = _layout(tmp_path / "small", folder="CheXpert-v1.0-small", size=(6, 8))
    shutil.rmtree(small / "CheXpert" / "val")
    frame, sidecar = _import(tmp_path, small)
    row = frame.loc["patient64541_study1_view1_frontal"]
    assert row["image"].startswith("CheXpert-v1.0-small/valid/")
    assert row["rle_cardiomegaly"] == ""
    assert row["rle_pneumothorax"] == ""
    assert any("1 images differ in size" in note for note in sidecar["notes"])
    (small / "CheXpert" / "test_labels.csv").unlink()
    frame, sidecar = _import(tmp_path, small)
    assert set(frame["split"]) == {"train", "val"}
    assert "CheXpert/test_labels.csv not found: no CheXlocalize test images" in sidecar["notes"]
    with pytest.raises(ImportLayoutError, match=r"CheXlocalize/gt_segmentations_val\.json"):
        _import(tmp_path, _layout(tmp_path / "bare", chexlocalize=False), chexlocalize=True)


def test_chexpert_bad_cells_name_file_and_row(tmp_path: Path) -> None:
    root = _layout(tmp_path / "data")
    train = root / "CheXpert-v1.0" / "train.csv"
    train.write_text(train.read_text().replace(",-1.0,1.0,,-1.0,", ",-1.0,2.0,,-1.0,", 1))
    with pytest.raises(ImportLayoutError, match=r"train\.csv row 3 \(Lung Opacity\): '2\.0'"):
        _import(tmp_path, root)
    seg = root / "CheXlocalize" / "gt_segmentations_test.json"
    seg.write_text(json.dumps({"patient64741_study1_view1_frontal": {"Edema": {"size": [1]}}}))
    with pytest.raises(ImportLayoutError, match=r"\[patient64741_study1_view1_frontal\]\[Edema\]"):
        _import(tmp_path, root)


def test_chexpert_wrong_layout_fails_on_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "data"
    (root / "CheXpert-v1.0").mkdir(parents=True)
    out = str(tmp_path / "out")
    status, output = xaibench_cli(capsys, "data", "import", "chexpert", str(root), "--out", out)
    assert status != 0
    assert "CheXpert-v1.0/train.csv (or CheXpert-v1.0-small/train.csv, train.csv) not found" in (
        output
    )
    assert "Traceback" not in output
    (root / "CheXpert-v1.0" / "train.csv").write_text(HEADER)
    status, output = xaibench_cli(capsys, "data", "import", "chexpert", str(root), "--out", out)
    assert status != 0
    assert "CheXpert-v1.0/valid.csv not found" in output
    (root / "CheXpert-v1.0" / "valid.csv").write_text(HEADER.replace(",Edema", ""))
    status, output = xaibench_cli(capsys, "data", "import", "chexpert", str(root), "--out", out)
    assert status != 0
    assert "valid.csv has no column 'Edema'" in output
    assert "Traceback" not in output


def test_chexpert_manifest_loads(tmp_path: Path) -> None:
    """Needs the label-agnostic manifest with rle_ regions (K1, helper "manifest")."""
    from xaibench.data.check import check_manifest

    root = _layout(tmp_path / "data")
    out = tmp_path / "out"
    write_import("chexpert", CheXpert(), root, out, NullProgress())
    problems = check_manifest(out / "manifest.csv", image_root=root)  # type: ignore[call-arg]
    assert problems == []


def test_chexpert_paths_leaving_root_are_excluded_unopened(tmp_path: Path) -> None:
    root = _layout(tmp_path / "data", chexlocalize=False)
    outside = tmp_path / "outside" / "patient00009" / "study1"
    _image(outside / "view1_frontal.jpg")
    train = root / "CheXpert-v1.0" / "train.csv"
    escape = "CheXpert-v1.0-small/train/../../../outside/patient00009/study1/view1_frontal.jpg"
    train.write_text(train.read_text() + f"{escape},Male,50,Frontal,PA,1.0{',' * 13}\n")
    frame, sidecar = _import(tmp_path, root)
    assert sidecar["excluded"][OUTSIDE_ROOT] == 1
    assert not frame["image"].str.contains("outside").any()
