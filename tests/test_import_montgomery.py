"""The Montgomery County importer on a fixture in the NLM's published layout."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_run import xaibench_cli
from PIL import Image

from xaibench.data.importers.base import write_import
from xaibench.data.importers.montgomery import MontgomeryImporter
from xaibench.data.importers.nlm_tb import BAD_NAME
from xaibench.progress import NullProgress


def _png(size: int = 16, square: bool = False) -> bytes:
    array = np.zeros((size, size), dtype=np.uint8)
    if square:
        array[4:10, 3:8] = 255
    else:
        array[:] = np.arange(size, dtype=np.uint8)[None, :] * 8
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def _layout(root: Path) -> None:
    """MontgomerySet/ under ROOT: CXR_png, ClinicalReadings (CRLF), ManualMask/left|rightMask."""
    base = root / "MontgomerySet"
    for sub in ("CXR_png", "ClinicalReadings", "ManualMask/leftMask", "ManualMask/rightMask"):
        (base / sub).mkdir(parents=True)
    readings = {
        "MCUCXR_0001_0": "Patient's Sex: M\r\nPatient's Age: 040Y\r\nnormal\r\n",
        "MCUCXR_0002_1": "Patient's Sex: F\r\nPatient's Age: 006M\r\n\r\ncavitary TB\r\n",
        "MCUCXR_0003_0": "Patient's Sex: O\r\nPatient's Age: \r\nnormal\r\n",
    }
    for name in ("MCUCXR_0001_0", "MCUCXR_0002_1", "MCUCXR_0003_0", "MCUCXR_0004_1"):
        (base / "CXR_png" / f"{name}.png").write_bytes(_png())
        if name in readings:
            (base / "ClinicalReadings" / f"{name}.txt").write_text(readings[name], newline="")
        for side in ("leftMask", "rightMask"):
            if name == "MCUCXR_0004_1" and side == "rightMask":
                continue
            (base / "ManualMask" / side / f"{name}.png").write_bytes(_png(square=True))
    (base / "CXR_png" / "Thumbs.db").write_bytes(b"x")
    (base / "CXR_png" / "MCUCXR_0005_0 (copy).png").write_bytes(_png())


def test_montgomery_rows_labels_masks(tmp_path: Path) -> None:
    root = tmp_path / "nlm"
    _layout(root)
    summary = write_import(
        "montgomery", MontgomeryImporter(), root, tmp_path / "out", NullProgress()
    )
    assert summary.excluded == {BAD_NAME: 1}
    frame = pd.read_csv(tmp_path / "out/manifest.csv", dtype=str, keep_default_na=False)
    assert list(frame.columns) == [
        "image", "patient_id", "source_id", "view", "tuberculosis",
        "mask_left_lung", "mask_right_lung", "sex", "age",
    ]  # fmt: skip
    assert list(frame["source_id"]) == [
        "MCUCXR_0001_0", "MCUCXR_0002_1", "MCUCXR_0003_0", "MCUCXR_0004_1",
    ]  # fmt: skip
    assert list(frame["patient_id"]) == list(frame["source_id"])  # one image per patient
    assert list(frame["tuberculosis"]) == ["0", "1", "0", "1"]
    assert list(frame["sex"]) == ["M", "F", "", ""]
    assert list(frame["age"]) == ["40", "0.5", "", ""]
    assert frame["image"].iat[0] == "MontgomerySet/CXR_png/MCUCXR_0001_0.png"
    assert frame["mask_left_lung"].iat[1] == "MontgomerySet/ManualMask/leftMask/MCUCXR_0002_1.png"
    assert frame["mask_right_lung"].iat[1] == "MontgomerySet/ManualMask/rightMask/MCUCXR_0002_1.png"
    assert frame["mask_right_lung"].iat[3] == ""
    assert frame["mask_left_lung"].iat[3] != ""
    assert set(frame["view"]) == {"PA"}
    notes = " | ".join(summary.notes)
    assert "1 images have no clinical reading" in notes
    assert "1 readings give no sex or no age" in notes
    assert "1 lung masks missing" in notes


def test_montgomery_wrong_layout_fails_naming_the_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "empty"
    (root / "images").mkdir(parents=True)
    status, output = xaibench_cli(
        capsys, "data", "import", "montgomery", str(root), "--out", str(tmp_path / "out")
    )
    assert status != 0
    assert "folder CXR_png not found" in output
    assert "Traceback" not in output
    (root / "MontgomerySet" / "CXR_png").mkdir(parents=True)
    status, output = xaibench_cli(
        capsys, "data", "import", "montgomery", str(root), "--out", str(tmp_path / "out")
    )
    assert status != 0
    assert "MontgomerySet/ClinicalReadings not found" in output
    (root / "MontgomerySet" / "ClinicalReadings").mkdir()
    status, output = xaibench_cli(
        capsys, "data", "import", "montgomery", str(root), "--out", str(tmp_path / "out")
    )
    assert status != 0
    assert "holds no MCUCXR_NNNN_0.png" in output


def test_montgomery_manifest_loads(tmp_path: Path) -> None:
    """Needs K1 (manifest helper): label-agnostic reader and image_root."""
    from xaibench.data.check import check_manifest

    root = tmp_path / "nlm"
    _layout(root)
    write_import("montgomery", MontgomeryImporter(), root, tmp_path / "out", NullProgress())
    problems = check_manifest(tmp_path / "out" / "manifest.csv", image_root=root)  # type: ignore[call-arg]
    assert problems == []
