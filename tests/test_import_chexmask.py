"""The CheXmask importer: its RLE convention, the join onto a manifest, quality, layout errors."""

from __future__ import annotations

import csv
import gzip
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_run import xaibench_cli
from PIL import Image
from pycocotools import mask as coco_mask

from xaibench.data.importers.base import ImportLayoutError, write_import
from xaibench.data.importers.chexmask import (
    BAD_RLE,
    DUPLICATE,
    LOW_DICE,
    NO_ROW,
    ChexmaskImporter,
    chexmask_to_coco,
    join_key,
)
from xaibench.escape import to_csv
from xaibench.progress import NullProgress

#: CheXmask's published column order for ChestX-Ray8 (PadChest swaps the two Dice columns).
COLUMNS = [
    "Image Index", "Dice RCA (Mean)", "Dice RCA (Max)", "Landmarks",
    "Left Lung", "Right Lung", "Heart", "Height", "Width",
]  # fmt: skip

# A 3 x 4 grid. "2 2 7 3": 1-based starts in row order -> flat 1, 2 and 6, 7, 8.
LEFT = np.array([[0, 1, 1, 0], [0, 0, 1, 1], [1, 0, 0, 0]], dtype=bool)
RIGHT = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=bool)  # "1 6"
HEART = np.array([[0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=bool)  # "5 1"


def _decode(cell: str) -> np.ndarray:
    """A COCO RLE JSON cell decoded by pycocotools (the independent reference)."""
    rle = json.loads(cell)
    with warnings.catch_warnings():
        # pycocotools 2.0.11's decoder trips NumPy 2's __array__ copy-keyword deprecation.
        warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
        decoded = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()})
    return np.asarray(decoded).astype(bool)


def test_rle_convention_known_answer() -> None:
    assert np.array_equal(_decode(chexmask_to_coco("2 2 7 3", 3, 4)), LEFT)
    assert np.array_equal(_decode(chexmask_to_coco("1 6", 3, 4)), RIGHT)
    assert _decode(chexmask_to_coco("1 12", 3, 4)).all()
    assert np.array_equal(_decode(chexmask_to_coco("5 1", 3, 4)), HEART)
    assert json.loads(chexmask_to_coco("5 1", 3, 4))["size"] == [3, 4]
    for bad in ("0 2", "12 2", "1", "a b", "", "3 -1", "99999999999999999999999 1"):
        with pytest.raises(ValueError, match=r"RLE"):
            chexmask_to_coco(bad, 3, 4)
    with pytest.raises(ValueError, match="grid"):
        chexmask_to_coco("1 1", 100_000, 100_000)


def test_join_keys_per_collection() -> None:
    assert join_key("nih", "images_001/images/00000001_000.png") == "00000001_000.png"
    assert join_key("nih", "00000001_000.png") == "00000001_000.png"
    published = "train/patient00001/study1/view1_frontal.jpg"
    assert join_key("chexpert", "CheXpert-v1.0/" + published) == published
    assert join_key("chexpert", "CheXpert-v1.0-small/" + published) == published
    assert join_key("chexpert", published) == published
    assert join_key("mimic", "files/p10/p1000/s5/abc-def.jpg") == "abc-def"
    assert join_key("vindr", "train/0a1b.dicom") == "0a1b"
    assert join_key("padchest", "0/123_45.png") == "123_45.png"


def _chexmask(root: Path, rows: list[list[str]], *, gz: bool = True) -> None:
    folder = root / "OriginalResolution"
    folder.mkdir(parents=True)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(rows)
    data = out.getvalue().encode()
    if gz:
        (folder / "ChestX-Ray8.csv.gz").write_bytes(gzip.compress(data))
    else:
        (folder / "ChestX-Ray8.csv").write_bytes(data)


def _record(image: str, dice: str, left: str = "2 2 7 3") -> list[str]:
    landmarks = ",".join(["12"] * 60_000)  # > 128 KiB: over csv's default field limit
    return [image, dice, "0.9", landmarks, left, "1 6", "5 1", "3", "4"]


def _layout(tmp_path: Path) -> tuple[Path, Path]:
    """A CheXmask folder and an NIH-style manifest written as an importer writes it."""
    chexmask = tmp_path / "chexmask"
    _chexmask(
        chexmask,
        [
            _record("00000001_000.png", "0.85"),
            _record("00000002_000.png", "0.65"),
            _record("00000003_000.png", "0.9", left="11 5"),  # runs past the 12-pixel grid
            _record("00000004_000.png", "0.9"),  # not in the manifest
            _record("00000001_000.png", "0.10"),  # listed twice: the first is used
        ],
    )
    frame = pd.DataFrame(
        {
            "image": [f"images_001/images/0000000{i}_000.png" for i in (1, 2, 3, 5)],
            "patient_id": ["1", "2", "3", "5"],
            "source_id": [
                "00000001_000.png",
                "images_001/images/00000002_000.png",
                "00000003_000.png",
                "00000005_000.png",
            ],
            "view": ["PA", "PA", "AP", "PA"],
            "effusion": ["1", "0", "0", "1"],
            "box_effusion": ["[[1, 1, 2, 1]]", "[]", "[]", ""],
            "comment": ["=HYPERLINK(1)", "", "", ""],
        }
    )
    manifest = tmp_path / "nih" / "manifest.csv"
    manifest.parent.mkdir()
    manifest.write_text(to_csv(frame))
    return chexmask, manifest


def _frame(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)


def test_chexmask_join_quality_and_counts(tmp_path: Path) -> None:
    chexmask, manifest = _layout(tmp_path)
    importer = ChexmaskImporter(manifest=str(manifest), collection="nih")
    summary = write_import("chexmask", importer, chexmask, tmp_path / "out", NullProgress())
    assert summary.rows == 4
    assert summary.excluded == {}
    notes = " | ".join(summary.notes)
    assert f"1 images: masks left empty, {LOW_DICE}" in notes
    assert f"1 images: masks left empty, {BAD_RLE}" in notes
    assert f"1 images: masks left empty, {NO_ROW}" in notes
    assert f"1 images: masks left empty, {DUPLICATE}" in notes
    frame = _frame(tmp_path / "out")
    assert list(frame.columns) == [
        "image", "patient_id", "source_id", "view", "box_effusion",
        "rle_left_lung", "rle_right_lung", "rle_heart", "effusion", "comment",
        "chexmask_dice_rca",
    ]  # fmt: skip
    first = frame.iloc[0]
    assert np.array_equal(_decode(first["rle_left_lung"]), LEFT)
    assert np.array_equal(_decode(first["rle_right_lung"]), RIGHT)
    assert np.array_equal(_decode(first["rle_heart"]), HEART)
    assert first["chexmask_dice_rca"] == "0.85"  # the first listing, not the duplicate's 0.10
    assert first["comment"] == "'=HYPERLINK(1)"  # escaped once, not twice
    assert first["box_effusion"] == "[[1, 1, 2, 1]]"
    low = frame.iloc[1]  # joined through its path's file name; Dice 0.65 < 0.7
    assert (low["rle_left_lung"], low["rle_heart"], low["chexmask_dice_rca"]) == ("", "", "0.65")
    assert frame["rle_left_lung"].iat[2] == ""  # invalid RLE
    assert frame["chexmask_dice_rca"].iat[2] == "0.9"
    assert (frame["rle_left_lung"].iat[3], frame["chexmask_dice_rca"].iat[3]) == ("", "")
    sidecar = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert sidecar["options"]["min_dice_rca"] == 0.7
    assert sidecar["options"]["collection"] == "nih"


def test_chexmask_options_threshold_and_unmatched(tmp_path: Path) -> None:
    chexmask, manifest = _layout(tmp_path)
    importer = ChexmaskImporter(
        manifest=str(manifest), collection="nih", min_dice_rca=0.6, unmatched="drop"
    )
    summary = write_import("chexmask", importer, chexmask, tmp_path / "out", NullProgress())
    assert summary.excluded == {NO_ROW: 1}
    frame = _frame(tmp_path / "out")
    assert list(frame["patient_id"]) == ["1", "2", "3"]
    assert np.array_equal(_decode(frame["rle_left_lung"].iat[1]), LEFT)  # 0.65 >= 0.6 now
    # Another collection's CSV is looked up by its own file name.
    other = ChexmaskImporter(manifest=str(manifest), collection="padchest")
    with pytest.raises(ImportLayoutError, match=r"OriginalResolution/Padchest\.csv"):
        write_import("chexmask", other, chexmask, tmp_path / "o2", NullProgress())


def test_chexmask_plain_csv_and_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, manifest = _layout(tmp_path)
    plain = tmp_path / "plain"
    _chexmask(plain, [_record("00000001_000.png", "0.8")], gz=False)
    status, output = xaibench_cli(
        capsys, "data", "import", "chexmask", str(plain), "--out", str(tmp_path / "out"),
        "-O", f"manifest={manifest}", "-O", "collection=nih",
    )  # fmt: skip
    assert status == 0, output
    assert "masks left empty, no CheXmask row" in output
    assert np.array_equal(_decode(_frame(tmp_path / "out")["rle_heart"].iat[0]), HEART)


def test_chexmask_wrong_layouts_fail_naming_file_or_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chexmask, manifest = _layout(tmp_path)
    options = ("-O", f"manifest={manifest}", "-O", "collection=nih")

    def run(root: Path) -> str:
        status, output = xaibench_cli(
            capsys, "data", "import", "chexmask", str(root), "--out", str(tmp_path / "o"), *options
        )
        assert status != 0
        assert "Traceback" not in output
        assert len(output.strip().splitlines()) == 1
        return output

    empty = tmp_path / "empty"
    empty.mkdir()
    assert "OriginalResolution/ChestX-Ray8.csv" in run(empty)
    (empty / "Preprocessed").mkdir()
    (empty / "Preprocessed" / "ChestX-Ray8.csv").write_text(",".join(COLUMNS) + "\n")
    assert "only Preprocessed/ChestX-Ray8.csv found" in run(empty)
    no_heart = tmp_path / "no_heart"
    (no_heart / "OriginalResolution").mkdir(parents=True)
    (no_heart / "OriginalResolution" / "ChestX-Ray8.csv").write_text(
        ",".join(c for c in COLUMNS if c != "Heart") + "\n"
    )
    assert "has no column 'Heart'" in run(no_heart)
    # The manifest: a missing source_id, a region already present, a broken CSV.
    manifest.write_text("image,patient_id\na.png,1\n")
    assert "has no column 'source_id'" in run(chexmask)
    manifest.write_text("image,patient_id,source_id,mask_heart\na.png,1,a.png,h.png\n")
    assert "already has column 'mask_heart'" in run(chexmask)
    manifest.write_text('image,patient_id,source_id\n"a.png,1,a.png\n')
    assert "row 1" in run(chexmask)
    status, output = xaibench_cli(
        capsys, "data", "import", "chexmask", str(chexmask), "--out", str(tmp_path / "o"),
        "-O", f"manifest={tmp_path / 'nowhere.csv'}", "-O", "collection=nih",
    )  # fmt: skip
    assert status != 0
    assert "option manifest" in output


def test_chexmask_manifest_loads(tmp_path: Path) -> None:
    """Needs K1 (manifest helper): rle_ columns decoded with pycocotools at the image's size."""
    from xaibench.data.check import check_manifest

    chexmask, manifest = _layout(tmp_path)
    images = manifest.parent / "images_001" / "images"
    images.mkdir(parents=True)
    for i in (1, 2, 3, 5):
        grey = np.full((3, 4), 40 * i, dtype=np.uint8)
        Image.fromarray(grey).save(images / f"0000000{i}_000.png")
    importer = ChexmaskImporter(manifest=str(manifest), collection="nih")
    write_import("chexmask", importer, chexmask, tmp_path / "out", NullProgress())
    written = tmp_path / "out" / "manifest.csv"
    problems = check_manifest(written, image_root=manifest.parent)  # type: ignore[call-arg]
    assert problems == []


def test_chexmask_padchest_column_order_is_read_by_name(tmp_path: Path) -> None:
    """PadChest's CSV puts ``Dice RCA (Max)`` before ``Dice RCA (Mean)``; columns go by name."""
    root = tmp_path / "chexmask" / "OriginalResolution"
    root.mkdir(parents=True)
    header = ["ImageID", "Dice RCA (Max)", "Dice RCA (Mean)", "Landmarks"]
    header += ["Left Lung", "Right Lung", "Heart", "Height", "Width"]
    image_id = "216840111366964013217898866992011332134237003_01-031-075.png"
    rows = [header, [image_id, "0.95", "0.55", "1,2", "2 2 7 3", "1 6", "5 1", "3", "4"]]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    (root / "Padchest.csv").write_text(out.getvalue())
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"image,patient_id,source_id\n0/{image_id},p1,{image_id}\n")
    importer = ChexmaskImporter(manifest=str(manifest), collection="padchest")
    write_import("chexmask", importer, root.parent, tmp_path / "out", NullProgress())
    row = _frame(tmp_path / "out").iloc[0]
    assert row["chexmask_dice_rca"] == "0.55"  # the mean, not the max
    assert row["rle_left_lung"] == ""  # 0.55 < 0.7
