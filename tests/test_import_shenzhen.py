"""The Shenzhen importer on a fixture in the NLM's layout plus the separate lung-mask set."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_run import xaibench_cli
from PIL import Image

from xaibench.data.importers.base import ImportLayoutError, write_import
from xaibench.data.importers.nlm_tb import BAD_NAME
from xaibench.data.importers.shenzhen import ShenzhenImporter
from xaibench.progress import NullProgress


def _png(size: int = 16, square: bool = False) -> bytes:
    array = np.zeros((size, size), dtype=np.uint8)
    if square:
        array[4:12, 2:14] = 255
    else:
        array[:] = np.arange(size, dtype=np.uint8)[:, None] * 8
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


#: First lines as the set writes them, quirks included (typo, comma, no space, no unit).
READINGS = {
    "CHNCXR_0001_0": "male 45yrs\nnormal\n",
    "CHNCXR_0002_0": "femal 35yr\nnormal\n",
    "CHNCXR_0003_1": "female,28yrs\nPTB in the left upper field\n",
    "CHNCXR_0004_1": "male38yrs\nbilateral secondary PTB\n",
    "CHNCXR_0005_0": "male 5 months\nnormal\n",
    "CHNCXR_0006_1": "\nSTB,ATB in the right upper field\n",
}


def _layout(root: Path, masks: str = "shcxr-lung-mask/mask/mask") -> None:
    """ROOT holds ChinaSet_AllFiles/ and the Kaggle copy of the mask set."""
    base = root / "ChinaSet_AllFiles"
    (base / "CXR_png").mkdir(parents=True)
    (base / "ClinicalReadings").mkdir()
    (root / masks).mkdir(parents=True)
    for name, text in READINGS.items():
        (base / "CXR_png" / f"{name}.png").write_bytes(_png())
        (base / "ClinicalReadings" / f"{name}.txt").write_text(text)
        if name != "CHNCXR_0003_1":  # the mask set covers 566 of 662 images
            (root / masks / f"{name}_mask.png").write_bytes(_png(square=True))
    (base / "CXR_png" / "Thumbs.db").write_bytes(b"x")
    (base / "CXR_png" / "CHNCXR_0007_2.png").write_bytes(_png())  # not a label digit
    (base / "NLM-ChinaCXRSet-ReadMe.docx").write_bytes(b"x")


def _frame(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)


def test_shenzhen_rows_labels_readings_masks(tmp_path: Path) -> None:
    root = tmp_path / "tb"
    _layout(root)
    summary = write_import("shenzhen", ShenzhenImporter(), root, tmp_path / "out", NullProgress())
    assert summary.excluded == {BAD_NAME: 1}
    frame = _frame(tmp_path / "out")
    assert list(frame.columns) == [
        "image", "patient_id", "source_id", "view", "tuberculosis", "mask_lungs", "sex", "age",
    ]  # fmt: skip
    assert list(frame["tuberculosis"]) == ["0", "0", "1", "1", "0", "1"]
    assert list(frame["sex"]) == ["M", "F", "F", "M", "M", ""]
    assert list(frame["age"]) == ["45", "35", "28", "38", "0.42", ""]
    assert frame["image"].iat[0] == "ChinaSet_AllFiles/CXR_png/CHNCXR_0001_0.png"
    assert frame["mask_lungs"].iat[0] == "shcxr-lung-mask/mask/mask/CHNCXR_0001_0_mask.png"
    assert frame["mask_lungs"].iat[2] == ""
    assert list(frame["patient_id"]) == list(frame["source_id"])
    notes = " | ".join(summary.notes)
    assert "1 images have no lung mask in shcxr-lung-mask/mask/mask" in notes
    sidecar = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert sidecar["source"] == "shenzhen"
    assert sidecar["options"] == {"masks_folder": None}
    assert sidecar["excluded"] == {BAD_NAME: 1}
    assert "1 readings give no sex or no age" in notes


def test_shenzhen_mask_symlinked_from_outside_root_is_not_used(tmp_path: Path) -> None:
    root = tmp_path / "tb"
    _layout(root)
    outside = tmp_path / "outside_mask.png"
    outside.write_bytes(_png(square=True))
    (root / "shcxr-lung-mask/mask/mask/CHNCXR_0003_1_mask.png").symlink_to(outside)
    write_import("shenzhen", ShenzhenImporter(), root, tmp_path / "out", NullProgress())
    assert _frame(tmp_path / "out")["mask_lungs"].iat[2] == ""


def test_shenzhen_masks_folder_option(tmp_path: Path) -> None:
    root = tmp_path / "tb"
    _layout(root, masks="my_masks")
    summary = write_import("shenzhen", ShenzhenImporter(), root, tmp_path / "a", NullProgress())
    assert set(_frame(tmp_path / "a")["mask_lungs"]) == {""}  # not found by default names
    assert any("no lung mask folder found" in note for note in summary.notes)
    importer = ShenzhenImporter(masks_folder="my_masks")
    write_import("shenzhen", importer, root, tmp_path / "b", NullProgress())
    assert _frame(tmp_path / "b")["mask_lungs"].iat[0] == "my_masks/CHNCXR_0001_0_mask.png"
    with pytest.raises(ImportLayoutError, match=r"masks_folder '\.\./elsewhere' is not a folder"):
        write_import(
            "shenzhen",
            ShenzhenImporter(masks_folder="../elsewhere"),
            root,
            tmp_path / "c",
            NullProgress(),
        )


def test_shenzhen_wrong_layout_fails_naming_the_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "tb"
    (root / "ChinaSet_AllFiles" / "images").mkdir(parents=True)
    status, output = xaibench_cli(
        capsys, "data", "import", "shenzhen", str(root), "--out", str(tmp_path / "out")
    )
    assert status != 0
    assert "CXR_png not found" in output
    assert "ChinaSet_AllFiles/CXR_png" in output
    assert "Traceback" not in output
    assert len(output.strip().splitlines()) == 1


def test_shenzhen_manifest_loads(tmp_path: Path) -> None:
    """Needs K1 (manifest helper): label-agnostic reader, image_root, derived ``lungs``."""
    from xaibench.data.check import check_manifest

    root = tmp_path / "tb"
    _layout(root)
    write_import("shenzhen", ShenzhenImporter(), root, tmp_path / "out", NullProgress())
    problems = check_manifest(tmp_path / "out" / "manifest.csv", image_root=root)  # type: ignore[call-arg]
    assert problems == []
