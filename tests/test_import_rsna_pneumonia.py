"""The RSNA Pneumonia Detection importer on a fixture in the challenge's published layout."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_run import xaibench_cli
from image_files import write_dicom

from xaibench.data.importers.base import MISSING_IMAGE, write_import
from xaibench.data.importers.rsna_pneumonia import INCONSISTENT, RsnaPneumoniaImporter
from xaibench.progress import NullProgress

IDS = [f"{k:08x}-14fd-4e49-80ba-63a80b6bddd{k}" for k in range(7)]
LABELS = [
    # patientId, x, y, width, height, Target
    (IDS[0], "", "", "", "", "0"),
    (IDS[1], "264.0", "152.0", "213.0", "379.0", "1"),
    (IDS[1], "562.0", "152.5", "256.0", "453.0", "1"),  # a second box of the same image
    (IDS[2], "", "", "", "", "0"),
    (IDS[3], "10.0", "10.0", "5.0", "5.0", "1"),
    (IDS[3], "", "", "", "", "0"),  # conflicting Target
    (IDS[4], "1.0", "2.0", "0.0", "4.0", "1"),  # zero width
    (IDS[5], "", "", "", "", "0"),  # listed, no image file
    (IDS[6], "", "", "", "", "1"),  # Target 1 without a box
]
CLASSES = {
    IDS[0]: "Normal",
    IDS[1]: "Lung Opacity",
    IDS[2]: "No Lung Opacity / Not Normal",
}


def _layout(root: Path, *, stage: str = "stage_2", info: bool = True) -> None:
    root.mkdir(parents=True)
    lines = ["patientId,x,y,width,height,Target"] + [",".join(row) for row in LABELS]
    (root / f"{stage}_train_labels.csv").write_text("\n".join(lines) + "\n")
    if info:
        rows = [f"{i},{CLASSES.get(i, 'Lung Opacity')}" for i, *_ in LABELS]
        (root / f"{stage}_detailed_class_info.csv").write_text(
            "patientId,class\n" + "\n".join(rows) + "\n"
        )
    for k, ident in enumerate(IDS):
        if k == 5:
            continue
        header = {"ViewPosition": "AP" if k % 2 else "PA", "PatientSex": "M", "PatientAge": "43"}
        with warnings.catch_warnings():  # '43' is RSNA's PatientAge, not a valid DICOM AS
            warnings.simplefilter("ignore")
            write_dicom(
                root / f"{stage}_train_images" / f"{ident}.dcm",
                np.full((8, 8), 100, np.uint16),
                header=header,
            )


def test_boxes_grouped_per_image_and_negatives_empty(tmp_path: Path) -> None:
    root, out = tmp_path / "rsna", tmp_path / "out"
    _layout(root)
    summary = write_import("rsna_pneumonia", RsnaPneumoniaImporter(), root, out, NullProgress())
    assert summary.excluded == {INCONSISTENT: 3, MISSING_IMAGE: 1}
    frame = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    assert list(frame.columns) == [
        "image",
        "patient_id",
        "source_id",
        "view",
        "pneumonia",
        "normal",
        "box_pneumonia",
        "rsna_class",
        "sex",
        "age",
    ]
    assert list(frame["source_id"]) == IDS[:3]
    assert list(frame["image"]) == [f"stage_2_train_images/{i}.dcm" for i in IDS[:3]]
    assert list(frame["pneumonia"]) == ["0", "1", "0"]
    assert list(frame["normal"]) == ["1", "0", "0"]
    assert json.loads(frame["box_pneumonia"].iat[1]) == [
        [264, 152, 213, 379],
        [562, 152.5, 256, 453],
    ]
    assert list(frame["box_pneumonia"])[::2] == ["[]", "[]"]
    assert list(frame["rsna_class"]) == ["normal", "lung_opacity", "no_lung_opacity_not_normal"]
    assert list(frame["view"]) == ["PA", "AP", "PA"]
    assert list(frame["age"]) == ["43"] * 3
    sidecar = json.loads((out / "manifest.json").read_text())
    assert sidecar["options"] == {"dicom_headers": True}
    assert sidecar["excluded"] == {INCONSISTENT: 3, MISSING_IMAGE: 1}


def test_stage_1_without_class_file_or_headers(tmp_path: Path) -> None:
    root, out = tmp_path / "rsna", tmp_path / "out"
    _layout(root, stage="stage_1", info=False)
    summary = write_import(
        "rsna_pneumonia", RsnaPneumoniaImporter(dicom_headers=False), root, out, NullProgress()
    )
    frame = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    assert list(frame.columns) == ["image", "patient_id", "source_id", "pneumonia", "box_pneumonia"]
    assert frame["image"].iat[0] == f"stage_1_train_images/{IDS[0]}.dcm"
    assert summary.notes[0] == "labels from stage_1_train_labels.csv"
    assert any("no detailed class file" in n for n in summary.notes)


def test_wrong_layouts_fail_naming_the_file_or_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, out = tmp_path / "rsna", str(tmp_path / "out")
    root.mkdir()
    status, output = xaibench_cli(
        capsys, "data", "import", "rsna_pneumonia", str(root), "--out", out
    )
    assert status != 0
    assert "stage_2_train_labels.csv (or stage_1_train_labels.csv) not found" in output
    assert "Traceback" not in output
    (root / "stage_2_train_labels.csv").write_text("patientId,x,y,width,height\na,,,,\n")
    status, output = xaibench_cli(
        capsys, "data", "import", "rsna_pneumonia", str(root), "--out", out
    )
    assert status != 0
    assert "stage_2_train_labels.csv has no column 'Target'" in output
    assert len(output.strip().splitlines()) == 1


def test_rsna_pneumonia_manifest_loads(tmp_path: Path) -> None:
    """Needs the label-agnostic manifest with box_ regions and image_root (issue 18, K1)."""
    from xaibench.data.check import check_manifest

    root, out = tmp_path / "rsna", tmp_path / "out"
    root.mkdir()
    (root / "stage_2_train_labels.csv").write_text(
        "patientId,x,y,width,height,Target\na,,,,,0\nb,2.0,3.0,4.0,5.0,1\nb,1.0,1.0,2.0,2.0,1\n"
    )
    for ident in "ab":
        write_dicom(root / "stage_2_train_images" / f"{ident}.dcm", np.ones((16, 16), np.uint16))
    write_import("rsna_pneumonia", RsnaPneumoniaImporter(), root, out, NullProgress())
    assert check_manifest(out / "manifest.csv", image_root=root) == []  # type: ignore[call-arg]
