"""The SIIM-ACR Pneumothorax importer on fixtures in its published layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_run import xaibench_cli
from siim_fixture import image_id, siim_encode, write_labels, write_siim_image

from xaibench.data.importers.base import MISSING_IMAGE, ImportLayoutError, write_import
from xaibench.data.importers.siim import MALFORMED, SiimImporter
from xaibench.progress import NullProgress


def _pixels(value: int = 1000) -> np.ndarray:
    return np.full((16, 16), value, dtype=np.uint16)


def _original_layout(root: Path) -> list[str]:
    """Five listed images: negative, one part, two parts, missing file, malformed cell."""
    ids = [image_id(k) for k in range(6)]
    header = {"ViewPosition": "PA", "PatientSex": "F", "PatientAge": "058Y"}
    for ident in ids[:3] + ids[4:5]:
        write_siim_image(root, ident, _pixels(), header=header)
    write_siim_image(root, ids[5], _pixels())  # on disk, not listed (a test image)
    write_labels(
        root,
        [
            (ids[0], "-1"),
            (ids[1], "5 3 10 2"),
            (ids[2], "0 4"),
            (ids[2], "200 6"),
            (ids[3], "1 1"),  # listed, no file
            (ids[4], "7 x"),  # malformed
        ],
    )
    return ids


def _frame(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)


def test_original_layout_groups_parts_and_marks_negatives(tmp_path: Path) -> None:
    root, out = tmp_path / "siim", tmp_path / "out"
    ids = _original_layout(root)
    summary = write_import("siim", SiimImporter(), root, out, NullProgress())
    assert summary.excluded == {MISSING_IMAGE: 1, MALFORMED: 1}
    frame = _frame(out)
    assert list(frame.columns) == [
        "image",
        "patient_id",
        "source_id",
        "view",
        "pneumothorax",
        "siim_rle_pneumothorax",
        "sex",
        "age",
    ]
    assert list(frame["source_id"]) == ids[:3]
    assert list(frame["patient_id"]) == ids[:3]
    assert frame["image"].iat[1] == f"dicom-images-train/{ids[1]}.2/{ids[1]}.1/{ids[1]}.dcm"
    assert list(frame["pneumothorax"]) == ["0", "1", "1"]
    assert list(frame["siim_rle_pneumothorax"]) == ["-1", "5 3 10 2", "0 4|200 6"]
    assert list(frame["view"]) == ["PA"] * 3
    assert list(frame["sex"]) == ["F"] * 3
    assert list(frame["age"]) == ["58"] * 3
    sidecar = json.loads((out / "manifest.json").read_text())
    assert sidecar["options"] == {"labels": "auto", "dicom_headers": True}
    assert sidecar["notes"][0] == "labels from train-rle.csv"
    assert any("own patient" in note for note in sidecar["notes"])


def test_stage_2_labels_with_a_flat_folder_and_no_headers(tmp_path: Path) -> None:
    root, out = tmp_path / "siim", tmp_path / "out"
    ids = [image_id(k) for k in range(3)]
    for ident in ids:
        write_siim_image(root, ident, _pixels(), flat_folder="stage_2_images")
    write_labels(
        root, [(ids[0], "-1"), (ids[1], "3 4"), (ids[1], "-1"), (ids[2], "-1")], stage_2=True
    )
    write_labels(root, [(ids[0], "1 1")])  # the older file, not chosen by 'auto'
    summary = write_import("siim", SiimImporter(dicom_headers=False), root, out, NullProgress())
    frame = _frame(out)
    assert list(frame.columns) == [
        "image",
        "patient_id",
        "source_id",
        "pneumothorax",
        "siim_rle_pneumothorax",
    ]
    assert list(frame["image"]) == [f"stage_2_images/{i}.dcm" for i in ids]
    assert list(frame["siim_rle_pneumothorax"]) == ["-1", "3 4", "-1"]
    assert summary.notes[0] == "labels from stage_2_train.csv"
    assert "1 '-1' row(s) next to encoded rows" in summary.notes[1]
    # Choosing the older file explicitly reads it instead.
    write_import(
        "siim",
        SiimImporter(labels="train-rle.csv", dicom_headers=False),
        root,
        out,
        NullProgress(),
        overwrite=True,
    )
    assert list(_frame(out)["siim_rle_pneumothorax"]) == ["1 1"]


def test_encoder_matches_torchxrayvisions_decoder() -> None:
    """The fixture's RLE decodes back through torchxrayvision's (Kaggle's) rle2mask logic."""
    rng = np.random.default_rng(3)
    mask = rng.random((12, 10)) > 0.6
    pairs = np.array(siim_encode(mask).split(), dtype=int)
    decoded = np.zeros(12 * 10)
    position = 0
    for start, length in zip(pairs[0::2], pairs[1::2], strict=True):
        position += start
        decoded[position : position + length] = 1
        position += length
    assert np.array_equal(decoded.reshape(10, 12).T.astype(bool), mask)


def test_symlinked_image_is_not_followed(tmp_path: Path) -> None:
    root, out = tmp_path / "siim", tmp_path / "out"
    outside = tmp_path / "outside"
    ids = [image_id(k) for k in range(2)]
    write_siim_image(root, ids[0], _pixels())
    target = write_siim_image(outside, ids[1], _pixels(), flat_folder="x")
    (root / "linked").mkdir()
    (root / "linked" / f"{ids[1]}.dcm").symlink_to(target)
    write_labels(root, [(ids[0], "-1"), (ids[1], "-1")])
    summary = write_import("siim", SiimImporter(dicom_headers=False), root, out, NullProgress())
    assert summary.rows == 1
    assert summary.excluded == {MISSING_IMAGE: 1}


def test_wrong_layouts_fail_naming_the_file_or_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "siim"
    root.mkdir()
    status, output = xaibench_cli(
        capsys, "data", "import", "siim", str(root), "--out", str(tmp_path / "o")
    )
    assert status != 0
    assert "train-rle.csv (or stage_2_train.csv) not found" in output
    assert "Traceback" not in output
    (root / "train-rle.csv").write_text("ImageId,Pixels\nx,-1\n")
    status, output = xaibench_cli(
        capsys, "data", "import", "siim", str(root), "--out", str(tmp_path / "o")
    )
    assert status != 0
    assert "train-rle.csv has no column 'EncodedPixels'" in output
    assert len(output.strip().splitlines()) == 1
    write_labels(root, [(image_id(0), "-1")])
    with pytest.raises(ImportLayoutError, match=r"none of the 1 images listed in train-rle\.csv"):
        write_import("siim", SiimImporter(), root, tmp_path / "o", NullProgress())


def test_siim_manifest_loads(tmp_path: Path) -> None:
    """Needs the label-agnostic manifest with siim_rle_ regions (issue 18, K1)."""
    from siim_fixture import pneumothorax_dataset

    from xaibench.data.check import check_manifest

    root, out = tmp_path / "siim", tmp_path / "out"
    pneumothorax_dataset(root, 6, size=16)
    write_import("siim", SiimImporter(), root, out, NullProgress())
    problems = check_manifest(out / "manifest.csv", image_root=root)  # type: ignore[call-arg]
    assert problems == []
