"""NIH ChestX-ray14 importer on a fixture in the published layout (synthetic values)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_run import xaibench_cli
from PIL import Image

from xaibench.data.importers.base import MISSING_IMAGE, ImportLayoutError, write_import
from xaibench.data.importers.nih import NOT_IN_SPLIT_LISTS, NIHChestXray14
from xaibench.progress import NullProgress

# The published header, with its unquoted bracketed commas (v2020 file).
HEADER_V2020 = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
    "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]\n"
)
# The 2017 file: the same header and rows, each line ending with an empty column.
HEADER_2017 = HEADER_V2020.rstrip("\n") + ",\n"
ENTRIES = [
    # name, labels, follow-up, patient, age, sex, view
    ("00000001_000.png", "Cardiomegaly", "0", "1", "57", "M", "PA"),
    ("00000001_001.png", "Cardiomegaly|Effusion", "1", "1", "58", "M", "PA"),
    ("00000002_000.png", "No Finding", "0", "2", "81", "F", "AP"),
    ("00000003_000.png", "Pleural_Thickening|Infiltration", "0", "3", "414", "F", "PA"),
    ("00000004_000.png", "Mass", "0", "4", "30", "F", "AP"),  # listed, image missing
    ("00000005_000.png", "Nodule", "0", "5", "44", "M", "PA"),  # in neither split list
]
PRESENT = {  # image -> archive folder
    "00000001_000.png": "images_001",
    "00000001_001.png": "images_001",
    "00000002_000.png": "images_001",
    "00000003_000.png": "images_002",
    "00000005_000.png": "images_002",
}


def _layout(root: Path, *, version: str = "v2020", boxes: bool = True) -> Path:
    """Write the published NIH layout under ``root`` (Kaggle's images_NNN/images/ folders)."""
    root.mkdir(parents=True)
    trailing = "," if version == "2017" else ""
    lines = [
        f"{n},{lab},{fu},{p},{age},{sex},{view},1024,1024,0.143,0.143{trailing}\n"
        for n, lab, fu, p, age, sex, view in ENTRIES
    ]
    name = "Data_Entry_2017_v2020.csv" if version == "v2020" else "Data_Entry_2017.csv"
    header = HEADER_V2020 if version == "v2020" else HEADER_2017
    (root / name).write_text(header + "".join(lines))
    if boxes:
        (root / "BBox_List_2017.csv").write_text(
            "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
            "00000001_000.png,Cardiomegaly,2.5,3.25,10.0,8.0\n"
            "00000001_001.png,Effusion,1.0,1.0,4.0,4.0\n"
            "00000001_001.png,Effusion,20.0,1.0,4.0,5.5\n"
            "00000003_000.png,Infiltrate,5.0,6.0,7.0,8.0\n"
        )
    (root / "train_val_list.txt").write_text(
        "00000001_000.png\n00000001_001.png\n00000003_000.png\n00000004_000.png\n"
    )
    (root / "test_list.txt").write_text("00000002_000.png\n")
    for image, archive in PRESENT.items():
        folder = root / archive / "images"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((32, 32), 90, np.uint8)).save(folder / image)
    return root


def _import(tmp_path: Path, root: Path, **options: object) -> tuple[pd.DataFrame, dict]:
    out = tmp_path / "out"
    write_import("nih", NIHChestXray14(**options), root, out, NullProgress(), overwrite=True)
    frame = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    return frame.set_index("source_id", drop=False), json.loads((out / "manifest.json").read_text())


def test_nih_labels_boxes_views_and_split(tmp_path: Path) -> None:
    root = _layout(tmp_path / "nih")
    frame, sidecar = _import(tmp_path, root)
    assert list(frame.columns[:5]) == ["image", "patient_id", "source_id", "view", "split"]
    assert list(frame.columns[5:20]) == list(NIHChestXray14.findings)
    assert {"age", "sex", "follow_up"} <= set(frame.columns)
    assert list(frame.index) == [
        "00000001_000.png",
        "00000001_001.png",
        "00000002_000.png",
        "00000003_000.png",
    ]
    row = frame.loc["00000001_001.png"]
    assert row["image"] == "images_001/images/00000001_001.png"
    assert (row["patient_id"], row["view"], row["follow_up"], row["age"], row["sex"]) == (
        "1", "PA", "1", "58", "M"
    )  # fmt: skip
    assert (row["cardiomegaly"], row["effusion"], row["mass"], row["no_finding"]) == (
        "1", "1", "0", "0"
    )  # fmt: skip
    assert frame.loc["00000003_000.png", "image"] == "images_002/images/00000003_000.png"
    assert frame.loc["00000003_000.png", "pleural_thickening"] == "1"
    assert frame.loc["00000002_000.png", "no_finding"] == "1"
    assert frame.loc["00000003_000.png", "age"] == ""  # 414: a typo, blanked
    # Two boxes of one finding on one image are one cell; coordinates as published.
    assert json.loads(row["box_effusion"]) == [[1.0, 1.0, 4.0, 4.0], [20.0, 1.0, 4.0, 5.5]]
    assert json.loads(frame.loc["00000001_000.png", "box_cardiomegaly"]) == [[2.5, 3.25, 10, 8]]
    assert json.loads(frame.loc["00000003_000.png", "box_infiltration"]) == [[5, 6, 7, 8]]
    # Box-list images: label 0 -> [] (annotated, absent); label 1 without a box -> blank.
    assert frame.loc["00000001_000.png", "box_pneumothorax"] == "[]"
    assert frame.loc["00000001_001.png", "box_cardiomegaly"] == ""
    # Images outside the box list are not annotated.
    assert frame.loc["00000002_000.png", "box_effusion"] == ""
    assert not any(c.startswith("box_") and c[4:] not in NIHChestXray14.regions for c in frame)
    # Official test list -> test; the train_val patients are train or val, by patient.
    assert frame.loc["00000002_000.png", "split"] == "test"
    assert set(frame["split"]) <= {"train", "val", "test"}
    assert frame.loc["00000001_000.png", "split"] == frame.loc["00000001_001.png", "split"]
    assert sidecar["excluded"] == {MISSING_IMAGE: 1, NOT_IN_SPLIT_LISTS: 1}
    assert sidecar["options"]["split"] == "official"
    assert any("4 boxes on 3 images" in note for note in sidecar["notes"])
    assert any("1 ages above 120" in note for note in sidecar["notes"])


def test_nih_val_fraction_moves_whole_patients(tmp_path: Path) -> None:
    root = _layout(tmp_path / "nih")
    none_val, _ = _import(tmp_path, root, val_fraction=0.0)
    assert set(none_val["split"]) == {"train", "test"}
    most_val, _ = _import(tmp_path, root, val_fraction=0.9)
    assert (most_val["split"] == "val").sum() == 3  # both train_val patients (3 images)
    assert most_val.loc["00000002_000.png", "split"] == "test"


def test_nih_options_change_what_is_written(tmp_path: Path) -> None:
    root = _layout(tmp_path / "nih")
    pa_only, sidecar = _import(tmp_path, root, views=["PA"])
    assert set(pa_only["view"]) == {"PA"}
    assert sidecar["excluded"]["view AP not selected"] == 2  # one of them has no file
    no_split, sidecar = _import(tmp_path, root, split="none")
    assert "split" not in no_split.columns
    assert no_split.loc["00000002_000.png", "source_split"] == "test"
    assert no_split.loc["00000005_000.png", "source_split"] == ""  # kept, in neither list
    assert NOT_IN_SPLIT_LISTS not in sidecar["excluded"]
    negatives, _ = _import(tmp_path, root, negative_boxes=True)
    assert negatives.loc["00000002_000.png", "box_effusion"] == "[]"
    assert negatives.loc["00000001_000.png", "box_effusion"] == "[]"
    no_boxes, _ = _import(tmp_path, root, boxes=False)
    assert not [c for c in no_boxes.columns if c.startswith("box_")]


def test_nih_2017_file_and_no_box_list(tmp_path: Path) -> None:
    root = _layout(tmp_path / "nih", version="2017", boxes=False)
    frame, sidecar = _import(tmp_path, root)
    assert len(frame) == 4
    assert not [c for c in frame.columns if c.startswith("box_")]
    assert "Unnamed" not in " ".join(frame.columns)
    assert any("Data_Entry_2017.csv" in note for note in sidecar["notes"])
    with pytest.raises(ImportLayoutError, match=r"BBox_List_2017\.csv not found"):
        _import(tmp_path, root, boxes=True)


def test_nih_single_images_folder(tmp_path: Path) -> None:
    root = _layout(tmp_path / "nih")
    (root / "images").mkdir()
    for image, archive in PRESENT.items():
        (root / archive / "images" / image).rename(root / "images" / image)
    frame, _ = _import(tmp_path, root)
    assert frame.loc["00000003_000.png", "image"] == "images/00000003_000.png"


def test_nih_bad_cells_name_file_and_row(tmp_path: Path) -> None:
    root = _layout(tmp_path / "nih")
    entries = root / "Data_Entry_2017_v2020.csv"
    entries.write_text(entries.read_text().replace("Cardiomegaly|Effusion", "Cardiomegaly|Efusion"))
    with pytest.raises(ImportLayoutError, match=r"Data_Entry_2017_v2020\.csv row 2 .*'Efusion'"):
        _import(tmp_path, root)
    root = _layout(tmp_path / "nih2")
    boxes = root / "BBox_List_2017.csv"
    boxes.write_text(boxes.read_text().replace("20.0,1.0,4.0,5.5", "20.0,1.0,0,5.5"))
    with pytest.raises(ImportLayoutError, match=r"BBox_List_2017\.csv row 3: the box .*positive"):
        _import(tmp_path, root)


def test_nih_wrong_layout_fails_on_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "nih"
    root.mkdir()
    out = str(tmp_path / "out")
    status, output = xaibench_cli(capsys, "data", "import", "nih", str(root), "--out", out)
    assert status != 0
    assert "Data_Entry_2017_v2020.csv (or Data_Entry_2017.csv) not found" in output
    assert "Traceback" not in output
    (root / "Data_Entry_2017_v2020.csv").write_text("Image Index,Finding Labels\nx.png,Mass\n")
    status, output = xaibench_cli(capsys, "data", "import", "nih", str(root), "--out", out)
    assert status != 0
    assert "train_val_list.txt not found" in output  # split: official needs the lists
    status, output = xaibench_cli(
        capsys, "data", "import", "nih", str(root), "--out", out, "-O", "split=none"
    )
    assert status != 0
    assert "has no column 'Follow-up #'" in output
    assert "Traceback" not in output
    root = _layout(tmp_path / "nih2")
    status, output = xaibench_cli(
        capsys, "data", "import", "nih", str(root), "--out", out, "-O", "views=[PA]"
    )
    assert status == 0, output
    assert "excluded 2: view AP not selected" in output


def test_nih_manifest_loads(tmp_path: Path) -> None:
    """Needs the label-agnostic manifest with box_ regions (K1, helper "manifest")."""
    from xaibench.data.check import check_manifest

    root = _layout(tmp_path / "nih")
    out = tmp_path / "out"
    write_import("nih", NIHChestXray14(), root, out, NullProgress())
    problems = check_manifest(out / "manifest.csv", image_root=root)  # type: ignore[call-arg]
    assert problems == []
