"""The JSRT + SCR importer on a fixture in JSRT's and SCR's published layout."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_run import xaibench_cli
from PIL import Image

from xaibench.data.importers.base import MISSING_IMAGE, ImportLayoutError, write_import
from xaibench.data.importers.jsrt import DUPLICATE, NOT_IN_SCR, JsrtImporter
from xaibench.progress import NullProgress

OBJECTS = ("left lung", "right lung", "heart", "left clavicle", "right clavicle")

# CLNDAT_EN.txt as published: tab-separated, no header, CRLF; '?' unknown; the record of
# JPCLN003 follows JPCLN002's diagnosis without a line break (a known quirk of the file).
CLNDAT = (
    "JPCLN001.IMG\t5\t15\t53\tmale\t1634\t692\tmalignant\tl.upper lobe\tlung cancer\r\n"
    "JPCLN002.IMG\t3\t20\t?\tfemale\t500\t600\tbenign\tr.lower lobe\thematoma"
    "JPCLN003.IMG\t2\t?\t60\tmale\t100\t100\tmalignant\tr.upper lobe\tlung cancer\r\n"
    "JPCLN004.IMG\t4\t10\t70\tfemale\t1000\t1000\tbenign\tl.lower lobe\ttuberculoma\r\n"
    "JPCLN001.IMG\t5\t15\t53\tmale\t1634\t692\tmalignant\tl.upper lobe\tlung cancer\r\n"
)
# CNNDAT_EN.TXT (upper-case ending in some copies): fields separated by runs of spaces.
CNNDAT = (
    "JPCNN001.IMG    58    male    non-nodule\r\nJPCNN002.IMG    41    female    non-nodule\r\n"
)


def _gif(size: int = 8) -> bytes:
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[size // 4 : size // 2, size // 4 : size // 2] = 255
    out = io.BytesIO()
    Image.fromarray(mask).save(out, format="GIF")
    return out.getvalue()


def _layout(root: Path, *, image_bytes: bytes = b"raw", mask_size: int = 8) -> None:
    """JSRT + SCR: images in All247images/, clinical files at ROOT, SCR folds in scratch/."""
    (root / "All247images").mkdir(parents=True)
    for name in ("JPCLN001", "JPCLN002", "JPCLN003", "JPCNN001", "JPCNN002"):
        (root / "All247images" / f"{name}.IMG").write_bytes(image_bytes)
    (root / "CLNDAT_EN.txt").write_bytes(CLNDAT.encode())
    (root / "CNNDAT_EN.TXT").write_bytes(CNNDAT.encode())
    folds = {
        1: ["JPCLN001", "JPCLN003", "JPCNN001"],
        2: ["JPCLN002", "JPCLN004", "JPCNN002"],
    }
    gif = _gif(mask_size)
    for fold, names in folds.items():
        for folder in OBJECTS:
            base = root / "scratch" / f"fold{fold}" / "masks" / folder
            base.mkdir(parents=True)
            for name in names:
                if name == "JPCNN002" and folder == "heart":
                    continue  # one object missing: the image lacks a full SCR set
                (base / f"{name}.gif").write_bytes(gif)


def _manifest(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False).set_index(
        "patient_id", drop=False
    )


def test_jsrt_rows_labels_masks_and_exclusions(tmp_path: Path) -> None:
    root = tmp_path / "jsrt"
    _layout(root)
    (root / "All247images" / "JPCNN093.IMG").write_bytes(b"raw")  # on disk, not listed
    summary = write_import("jsrt", JsrtImporter(), root, tmp_path / "out", NullProgress())
    assert summary.excluded == {NOT_IN_SCR: 1, MISSING_IMAGE: 1, DUPLICATE: 1}
    assert "1 .IMG files under ROOT are not in the clinical files" in " ".join(summary.notes)
    frame = _manifest(tmp_path / "out")
    assert list(frame.columns[:6]) == [
        "image",
        "patient_id",
        "source_id",
        "view",
        "nodule",
        "malignant",
    ]
    assert list(frame["patient_id"]) == ["JPCLN001", "JPCLN002", "JPCLN003", "JPCNN001"]
    first = frame.loc["JPCLN001"]
    assert first["image"] == "All247images/JPCLN001.IMG"
    assert first["source_id"] == "JPCLN001.IMG"
    assert first["view"] == "PA"
    assert (first["nodule"], first["malignant"], first["sex"], first["age"]) == (
        "1",
        "1",
        "M",
        "53",
    )
    assert (first["nodule_x"], first["nodule_y"], first["nodule_size_mm"]) == ("1634", "692", "15")
    assert first["nodule_subtlety"] == "5"
    assert first["scr_fold"] == "1"
    assert first["mask_left_lung"] == "scratch/fold1/masks/left lung/JPCLN001.gif"
    assert first["mask_right_clavicle"] == "scratch/fold1/masks/right clavicle/JPCLN001.gif"
    assert first["mask_heart"] == "scratch/fold1/masks/heart/JPCLN001.gif"
    # 15 mm / 0.175 mm = 85.71 px square centred on (1634, 692).
    assert json.loads(first["box_nodule"]) == [[1591.1, 649.1, 85.7, 85.7]]
    second = frame.loc["JPCLN002"]
    assert (second["malignant"], second["sex"], second["age"]) == ("0", "F", "")  # '?' age
    assert second["scr_fold"] == "2"
    assert json.loads(second["box_nodule"]) == [[442.9, 542.9, 114.3, 114.3]]
    # The record glued to the previous one is read; its unknown size leaves the box blank.
    third = frame.loc["JPCLN003"]
    assert (third["age"], third["nodule_size_mm"], third["box_nodule"]) == ("60", "", "")
    plain = frame.loc["JPCNN001"]
    assert (plain["nodule"], plain["malignant"], plain["box_nodule"]) == ("0", "", "[]")
    assert (plain["sex"], plain["age"], plain["nodule_x"]) == ("M", "58", "")
    sidecar = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert sidecar["options"] == {"masks": "required", "nodule_box": True}


def test_jsrt_options_change_masks_and_box(tmp_path: Path) -> None:
    root = tmp_path / "jsrt"
    _layout(root)
    importer = JsrtImporter(masks="optional", nodule_box=False)
    summary = write_import("jsrt", importer, root, tmp_path / "out", NullProgress())
    assert summary.excluded == {MISSING_IMAGE: 1, DUPLICATE: 1}
    frame = _manifest(tmp_path / "out")
    assert "box_nodule" not in frame.columns
    incomplete = frame.loc["JPCNN002"]
    assert incomplete["mask_left_lung"] == ""
    assert incomplete["mask_heart"] == ""
    assert incomplete["scr_fold"] == ""


def test_jsrt_without_scr_needs_masks_optional(tmp_path: Path) -> None:
    root = tmp_path / "jsrt"
    _layout(root)
    import shutil

    shutil.rmtree(root / "scratch")
    with pytest.raises(ImportLayoutError, match=r"scratch/fold1/masks and scratch/fold2/masks"):
        write_import("jsrt", JsrtImporter(), root, tmp_path / "out", NullProgress())
    summary = write_import(
        "jsrt", JsrtImporter(masks="optional"), root, tmp_path / "out", NullProgress()
    )
    assert summary.rows == 5


def test_jsrt_bad_clinical_record_is_named(tmp_path: Path) -> None:
    root = tmp_path / "jsrt"
    _layout(root)
    (root / "CNNDAT_EN.TXT").write_text("JPCNN001.IMG    58    robot    non-nodule\n")
    with pytest.raises(
        ImportLayoutError, match=r"CNNDAT_EN\.TXT: the record of JPCNN001\.IMG: sex"
    ):
        write_import("jsrt", JsrtImporter(), root, tmp_path / "out", NullProgress())


def test_jsrt_wrong_layout_fails_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "not_jsrt"
    root.mkdir()
    (root / "JPCLN001.IMG").write_bytes(b"x")
    status, output = xaibench_cli(
        capsys, "data", "import", "jsrt", str(root), "--out", str(tmp_path / "out")
    )
    assert status != 0
    assert "CLNDAT_EN.txt" in output
    assert "not found" in output
    assert "Traceback" not in output
    assert len(output.strip().splitlines()) == 1
    # SCR folds present but one object folder missing: named.
    _layout(tmp_path / "jsrt")
    (tmp_path / "jsrt" / "scratch/fold2/masks/heart").rename(tmp_path / "jsrt" / "heart")
    status, output = xaibench_cli(
        capsys, "data", "import", "jsrt", str(tmp_path / "jsrt"), "--out", str(tmp_path / "o2")
    )
    assert status != 0
    assert "has no folder 'heart'" in output


def test_jsrt_manifest_loads(tmp_path: Path) -> None:
    """Needs K1 (manifest helper): label-agnostic reader, image_root, mask upsampling 2x."""
    from xaibench.data.check import check_manifest

    root = tmp_path / "jsrt"
    raw = np.full((2048, 2048), 3000, dtype=">u2").tobytes()
    _layout(root, image_bytes=raw, mask_size=1024)
    write_import("jsrt", JsrtImporter(), root, tmp_path / "out", NullProgress())
    problems = check_manifest(tmp_path / "out" / "manifest.csv", image_root=root)  # type: ignore[call-arg]
    assert problems == []
