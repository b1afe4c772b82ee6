"""The VinDr-CXR importer on fixtures in PhysioNet's and Kaggle's published layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_run import xaibench_cli
from image_files import write_dicom

from xaibench.data.importers.base import MISSING_IMAGE, ImportLayoutError, write_import
from xaibench.data.importers.vindr import GLOBAL_LABELS, KAGGLE_LABELS, LOCAL_LABELS, VinDrImporter
from xaibench.progress import NullProgress

A, B, C, D = (f"{k}a418190bc3fb1ef1633bf9678929b3" for k in "abcd")
E, F = (f"{k}10246a5ec7af151081d0cd6d65dc9" for k in "ef")
BOX_HEADER = "image_id,rad_id,class_name,x_min,y_min,x_max,y_max"
TRAIN_BOXES = [
    f"{A},R1,Cardiomegaly,691.0,1375.0,1653.0,1831.0",
    f"{A},R1,Aortic enlargement,1264.0,743.0,1611.0,1019.0",
    f"{A},R2,Cardiomegaly,700.5,1380.0,1650.0,1800.0",
    f"{A},R3,No finding,,,,",
    f"{B},R4,No finding,,,,",
    f"{B},R5,No finding,,,,",
    f"{B},R6,No finding,,,,",
    f"{C},R1,Nodule/Mass,10.0,20.0,30.0,50.0",
    f"{C},R1,Nodule/Mass,100.0,100.0,110.0,112.0",
    f"{C},R1,Nodule/Mass,5.0,5.0,5.0,9.0",  # zero width: dropped
    f"{C},R2,No finding,,,,",
    f"{C},R3,No finding,,,,",
    f"{D},R1,No finding,,,,",  # no image file
    f"{D}0,R1,No finding,,,,",  # not in the labels file
]
TEST_BOXES = [  # consensus labels: no rad_id column
    f"{E},Pleural effusion,1.0,2.0,11.0,22.0",
    f"{F},No finding,,,,",
]


def _label_rows(rows: list[tuple[str, str, set[str]]], *, test: bool) -> str:
    labels = [*LOCAL_LABELS, *GLOBAL_LABELS]
    # The test file spells one column differently, as published.
    names = ["Other disease" if test and c == "Other diseases" else c for c in labels]
    header = ",".join(["image_id", *([] if test else ["rad_id"]), *names])
    lines = [header]
    for image, reader, positive in rows:
        lead = [image] if test else [image, reader]
        lines.append(",".join(lead + ["1" if c in positive else "0" for c in labels]))
    return "\n".join(lines) + "\n"


def _physionet(root: Path, *, labels: bool = True) -> None:
    notes = root / "annotations"
    notes.mkdir(parents=True)
    (notes / "annotations_train.csv").write_text("\n".join([BOX_HEADER, *TRAIN_BOXES]) + "\n")
    (notes / "annotations_test.csv").write_text(
        "\n".join(["image_id,class_name,x_min,y_min,x_max,y_max", *TEST_BOXES]) + "\n"
    )
    if labels:
        train = [
            (A, "R1", {"Cardiomegaly", "Aortic enlargement", "COPD"}),
            (A, "R2", {"Cardiomegaly"}),
            (A, "R3", {"No finding"}),
            (B, "R4", {"No finding"}),
            (B, "R5", {"No finding"}),
            (B, "R6", {"No finding"}),
            (C, "R1", {"Nodule/Mass"}),
            (C, "R2", {"No finding"}),
            (C, "R3", {"No finding"}),
            (D, "R1", {"No finding"}),
        ]
        (notes / "image_labels_train.csv").write_text(_label_rows(train, test=False))
        test = [
            (E, "", {"Pleural effusion", "Pneumonia", "Other diseases"}),
            (F, "", {"No finding"}),
        ]
        (notes / "image_labels_test.csv").write_text(_label_rows(test, test=True))
    for part, ids in (("train", (A, B, C)), ("test", (E, F))):
        for image in ids:
            write_dicom(root / part / f"{image}.dicom", np.full((8, 8), 9, np.uint16))


def _frame(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False).set_index(
        "source_id"
    )


def test_physionet_union_of_readers(tmp_path: Path) -> None:
    root, out = tmp_path / "vindr", tmp_path / "out"
    _physionet(root)
    summary = write_import("vindr", VinDrImporter(), root, out, NullProgress())
    assert summary.excluded == {MISSING_IMAGE: 1, "not in image_labels_train.csv": 1}
    frame = _frame(out)
    assert list(frame.index) == [A, B, C, E, F]
    assert list(frame["image"]) == [f"train/{i}.dicom" for i in (A, B, C)] + [
        f"test/{i}.dicom" for i in (E, F)
    ]
    assert list(frame["patient_id"]) == list(frame.index)
    assert list(frame["source_split"]) == ["train"] * 3 + ["test"] * 2
    assert list(frame["split"]) == ["train"] * 3 + ["test"] * 2  # 10% of 3 images is none
    columns = list(pd.read_csv(out / "manifest.csv", nrows=0).columns)
    assert columns[:5] == ["image", "patient_id", "source_id", "split", "aortic_enlargement"]
    assert "other_diseases" in columns
    assert "other_disease" not in columns
    assert len([c for c in columns if c.startswith("box_")]) == 22
    # findings: any reader (union); no_finding only when nothing else is positive
    assert list(frame["cardiomegaly"]) == ["1", "0", "0", "0", "0"]
    assert list(frame["aortic_enlargement"]) == ["1", "0", "0", "0", "0"]
    assert list(frame["copd"]) == ["1", "0", "0", "0", "0"]
    assert list(frame["nodule_mass"]) == ["0", "0", "1", "0", "0"]
    assert list(frame["pneumonia"]) == ["0", "0", "0", "1", "0"]
    assert list(frame["other_diseases"]) == ["0", "0", "0", "1", "0"]
    assert list(frame["no_finding"]) == ["0", "1", "0", "0", "1"]
    # boxes: corners -> [x, y, w, h]; every reader's boxes; [] where the finding is absent
    assert json.loads(frame.at[A, "box_cardiomegaly"]) == [
        [691, 1375, 962, 456],
        [700.5, 1380, 949.5, 420],
    ]
    assert json.loads(frame.at[C, "box_nodule_mass"]) == [[10, 20, 20, 30], [100, 100, 10, 12]]
    assert json.loads(frame.at[E, "box_pleural_effusion"]) == [[1, 2, 10, 20]]
    assert frame.at[B, "box_cardiomegaly"] == "[]"
    assert frame.at[A, "box_pneumothorax"] == "[]"
    assert any("1 train box(es)" in note for note in summary.notes)
    sidecar = json.loads((out / "manifest.json").read_text())
    assert sidecar["options"] == {
        "readers": "union",
        "split": "auto",
        "val_fraction": 0.1,
        "seed": 0,
    }
    assert sidecar["excluded"] == {MISSING_IMAGE: 1, "not in image_labels_train.csv": 1}


def test_majority_of_readers(tmp_path: Path) -> None:
    root, out = tmp_path / "vindr", tmp_path / "out"
    _physionet(root)
    write_import("vindr", VinDrImporter(readers="majority"), root, out, NullProgress())
    frame = _frame(out)
    assert frame.at[A, "cardiomegaly"] == "1"  # 2 of 3 readers
    assert frame.at[A, "aortic_enlargement"] == "0"  # 1 of 3
    assert frame.at[A, "box_aortic_enlargement"] == "[]"
    assert frame.at[C, "nodule_mass"] == "0"
    assert frame.at[C, "no_finding"] == "1"
    assert frame.at[E, "pleural_effusion"] == "1"  # the test set's consensus is one reader
    assert len(json.loads(frame.at[A, "box_cardiomegaly"])) == 2


def test_one_radiologist(tmp_path: Path) -> None:
    root, out = tmp_path / "vindr", tmp_path / "out"
    _physionet(root)
    summary = write_import("vindr", VinDrImporter(readers="R2"), root, out, NullProgress())
    assert summary.excluded["not read by R2"] == 2  # B (read by R4, R5, R6) and D (R1)
    frame = _frame(out)
    assert list(frame.index) == [A, C, E, F]  # the test part keeps its consensus
    assert frame.at[A, "cardiomegaly"] == "1"
    assert frame.at[A, "aortic_enlargement"] == "0"  # R1's finding, not R2's
    assert frame.at[A, "copd"] == "0"
    assert json.loads(frame.at[A, "box_cardiomegaly"]) == [[700.5, 1380, 949.5, 420]]
    assert frame.at[C, "nodule_mass"] == "0"
    assert frame.at[C, "no_finding"] == "1"
    assert frame.at[E, "pleural_effusion"] == "1"


def test_split_options(tmp_path: Path) -> None:
    root = tmp_path / "vindr"
    _physionet(root)
    splits = []
    for k in range(2):
        out = tmp_path / f"out{k}"
        write_import("vindr", VinDrImporter(val_fraction=0.34), root, out, NullProgress())
        splits.append(list(_frame(out)["split"]))
    assert splits[0] == splits[1]  # seeded
    assert sorted(splits[0][:3]) == ["train", "train", "val"]
    assert splits[0][3:] == ["test", "test"]
    out = tmp_path / "none"
    summary = write_import("vindr", VinDrImporter(split="none"), root, out, NullProgress())
    frame = _frame(out)
    assert "split" not in frame.columns
    assert list(frame["source_split"]) == ["train"] * 3 + ["test"] * 2
    assert summary.rows == 5


def test_box_files_alone_give_local_findings_only(tmp_path: Path) -> None:
    root, out = tmp_path / "vindr", tmp_path / "out"
    _physionet(root, labels=False)
    write_import("vindr", VinDrImporter(), root, out, NullProgress())
    frame = _frame(out)
    assert "copd" not in frame.columns  # a global label: only the labels file has it
    assert frame.at[A, "cardiomegaly"] == "1"
    assert frame.at[C, "nodule_mass"] == "1"
    assert list(frame["no_finding"]) == ["0", "1", "0", "0", "1"]


def test_kaggle_layout(tmp_path: Path) -> None:
    root, out = tmp_path / "vindr", tmp_path / "out"
    root.mkdir()
    rows = [
        "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max",
        f"{A},No finding,14,R11,,,,",
        f"{A},No finding,14,R7,,,,",
        f"{A},No finding,14,R9,,,,",
        f"{B},Cardiomegaly,3,R10,691.0,1375.0,1653.0,1831.0",
        f"{B},No finding,14,R8,,,,",
        f"{B},No finding,14,R9,,,,",
    ]
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    for image in (A, B):
        write_dicom(root / "train" / f"{image}.dicom", np.full((8, 8), 9, np.uint16))
    write_import("vindr", VinDrImporter(), root, out, NullProgress())
    frame = _frame(out)
    findings = [c for c in frame.columns if c not in ("image", "patient_id", "split")]
    boxes = [c for c in findings if c.startswith("box_")]
    assert len(boxes) == len(KAGGLE_LABELS) == 14
    assert "box_rib_fracture" not in boxes  # not a challenge class: not "annotated, absent"
    assert list(frame["cardiomegaly"]) == ["0", "1"]
    assert list(frame["no_finding"]) == ["1", "0"]
    assert json.loads(frame.at[B, "box_cardiomegaly"]) == [[691, 1375, 962, 456]]
    assert list(frame["source_split"]) == ["train", "train"]
    assert "split" not in frame.columns  # auto: no test part, so no official split
    with pytest.raises(ImportLayoutError, match=r"split=official needs .*annotations_test\.csv"):
        write_import(
            "vindr", VinDrImporter(split="official"), root, out, NullProgress(), overwrite=True
        )


def test_wrong_layouts_fail_naming_the_file_or_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, out = tmp_path / "vindr", str(tmp_path / "out")
    root.mkdir()
    status, output = xaibench_cli(capsys, "data", "import", "vindr", str(root), "--out", out)
    assert status != 0
    assert "annotations/annotations_train.csv (or train.csv) not found" in output
    assert "Traceback" not in output
    (root / "annotations").mkdir()
    (root / "annotations" / "annotations_train.csv").write_text("image_id,rad_id,class_name\n")
    status, output = xaibench_cli(capsys, "data", "import", "vindr", str(root), "--out", out)
    assert status != 0
    assert "annotations/annotations_train.csv has no column 'x_min', 'y_min'" in output
    assert len(output.strip().splitlines()) == 1
    status, output = xaibench_cli(
        capsys, "data", "import", "vindr", str(root), "--out", out, "-O", "readers=all"
    )
    assert status != 0
    assert "readers" in output
    assert "a radiologist's rad_id such as 'R9'" in output


def test_vindr_manifest_loads(tmp_path: Path) -> None:
    """Needs the label-agnostic manifest with box_ regions and image_root (issue 18, K1)."""
    from xaibench.data.check import check_manifest

    root, out = tmp_path / "vindr", tmp_path / "out"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "annotations_train.csv").write_text(
        f"{BOX_HEADER}\n{A},R1,Cardiomegaly,2.0,3.0,10.0,12.0\n{B},R1,No finding,,,,\n"
    )
    for image in (A, B):
        write_dicom(root / "train" / f"{image}.dicom", np.ones((16, 16), np.uint16))
    write_import("vindr", VinDrImporter(split="none"), root, out, NullProgress())
    assert check_manifest(out / "manifest.csv", image_root=root) == []  # type: ignore[call-arg]
