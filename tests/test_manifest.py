"""The manifest format: decoding, intensities, masks, splits, the checker, and a whole run."""

import csv
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_runs import cli, small_manifest_config
from PIL import Image
from pydicom.dataset import Dataset as DicomDataset
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGLSLossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from xaibench.config import resolve_config
from xaibench.data import manifest as manifest_module
from xaibench.data import manifest_regions
from xaibench.data.check import Problem, check_manifest, format_problem, format_problems
from xaibench.data.images import ImageReadError, decode_image
from xaibench.data.manifest import ManifestDataset, ManifestError
from xaibench.data.phantom import PhantomDataset
from xaibench.engine.benchmark import run_benchmark
from xaibench.engine.runner import prepare_data
from xaibench.errors import XaibenchError
from xaibench.progress import NullProgress
from xaibench.tasks.file_task import FileTask


def Osteoporosis() -> FileTask:  # noqa: N802 (the built-in task, as the class it replaced)
    """The built-in osteoporosis task (its task file)."""
    return FileTask(file="xaibench.tasks:osteoporosis.yaml")


RNG = np.random.default_rng(7)
PIXELS16 = RNG.integers(0, 65536, size=(12, 10), dtype=np.uint16)


# --- writers ---------------------------------------------------------------------------------


def save_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def save_dicom(
    path: Path,
    stored: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 16,
    slope: float | None = None,
    intercept: float | None = None,
    window: tuple[float, float] | None = None,
    voi_function: str | None = None,
    frames: int = 1,
    syntax=ExplicitVRLittleEndian,
) -> Path:
    """A minimal secondary-capture DICOM of unsigned 16-bit stored values."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = stored.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if slope is not None:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_function is not None:
        ds.VOILUTFunction = voi_function
    data = np.ascontiguousarray(stored, dtype="<u2").tobytes()
    ds.PixelData = encapsulate([data]) if syntax != ExplicitVRLittleEndian else data
    ds.save_as(path, enforce_file_format=True)
    return path


def write_manifest(folder: Path, rows: list[dict], name: str = "manifest.csv") -> Path:
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    path = folder / name
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows([{c: row.get(c, "") for c in columns} for row in rows])
    return path


def three_classes(folder: Path, images: list[str], **extra) -> list[dict]:
    """Rows for ``images`` whose T-scores cycle through the three classes (patients distinct)."""
    t_scores = [0.5, -1.8, -3.0]
    return [
        {"image": img, "patient_id": f"P{i}", "t_score": t_scores[i % 3], **extra}
        for i, img in enumerate(images)
    ]


def load(folder: Path, rows: list[dict], **options) -> ManifestDataset:
    """The dataset of ``rows``, plus a filler row (after them) per class they lack."""
    rows = list(rows)
    for k, t_score in enumerate((0.5, -1.8, -3.0)):
        if not any(float(r.get("t_score", "nan") or "nan") == t_score for r in rows):
            image = save_png(folder / "fillers" / f"{k}.png", np.zeros((4, 4), np.uint8))
            rows.append(
                {
                    "image": image.relative_to(folder).as_posix(),
                    "patient_id": f"F{k}",
                    "t_score": t_score,
                }
            )
    return ManifestDataset(path=str(write_manifest(folder, rows)), **options)


# --- intensities -----------------------------------------------------------------------------


def test_png_and_dicom_of_the_same_pixels_give_identical_images(tmp_path: Path):
    v = PIXELS16
    save_png(tmp_path / "a.png", v)
    save_dicom(tmp_path / "m2.dcm", v)
    save_dicom(tmp_path / "m1.dcm", 65535 - v, photometric="MONOCHROME1")
    # Rescale slope/intercept, inverted: bone bright again, and the scale is the stored range's.
    save_dicom(
        tmp_path / "m1_rescaled.dcm",
        65535 - v,
        photometric="MONOCHROME1",
        slope=2.0,
        intercept=-100.0,
    )
    names = ["a.png", "m2.dcm", "m1.dcm", "m1_rescaled.dcm"]
    for size in (None, 16):
        dataset = load(tmp_path, three_classes(tmp_path, names), image_size=size)
        images = [dataset[i].image for i in range(len(names))]
        assert images[0].shape == (1, *(v.shape if size is None else (size, size)))
        for name, image in zip(names[1:], images[1:], strict=True):
            assert np.array_equal(images[0].numpy(), image.numpy()), (name, size)
    expected = (v / 65535.0).astype(np.float32)
    assert np.array_equal(decode_image((tmp_path / "a.png").read_bytes(), "a.png"), expected)


def test_dicom_window_is_applied_in_rescaled_units(tmp_path: Path):
    v = PIXELS16.astype(np.float64)
    slope, intercept = 2.0, -100.0
    lo, hi = intercept, 65535 * slope + intercept  # the modality range of the stored values
    # LINEAR_EXACT maps [c - w/2, c + w/2] linearly onto the output range: here the whole range.
    window = ((lo + hi) / 2, hi - lo)
    for photometric, stored in (("MONOCHROME2", PIXELS16), ("MONOCHROME1", 65535 - PIXELS16)):
        path = save_dicom(
            tmp_path / f"{photometric}.dcm",
            stored,
            photometric=photometric,
            slope=slope,
            intercept=intercept,
            window=window,
            voi_function="LINEAR_EXACT",
        )
        image = decode_image(path.read_bytes(), path.name)
        np.testing.assert_allclose(image, v / 65535.0, atol=1e-6, rtol=0)
    # A narrow window saturates: values below it are black, above it white.
    narrow = save_dicom(
        tmp_path / "narrow.dcm",
        np.array([[0, 30000, 65535]], np.uint16),
        window=(30000.0, 1000.0),
        voi_function="LINEAR_EXACT",
    )
    np.testing.assert_allclose(decode_image(narrow.read_bytes(), "n"), [[0.0, 0.5, 1.0]])


def test_twelve_bit_dicom_is_scaled_by_bits_stored(tmp_path: Path):
    path = save_dicom(tmp_path / "a.dcm", np.array([[0, 1, 4095]], np.uint16), bits_stored=12)
    image = decode_image(path.read_bytes(), "a.dcm")
    assert image.tolist() == [[0.0, np.float32(1 / 4095), 1.0]]


def test_sixteen_bit_precision_survives_loading_and_resizing(tmp_path: Path):
    stripes = np.full((16, 16), 30000, np.uint16)
    stripes[:, 8:] = 30001
    save_png(tmp_path / "a.png", stripes)
    for size in (None, 16):
        image = load(tmp_path, three_classes(tmp_path, ["a.png"]), image_size=size)[0].image
        assert len(np.unique(image.numpy())) == 2
        assert image.max() - image.min() == pytest.approx(1 / 65535, rel=1e-3)


def test_eight_bit_rgb_and_jpeg_images_become_grey(tmp_path: Path):
    grey = RNG.integers(0, 256, size=(8, 8), dtype=np.uint8)
    save_png(tmp_path / "l.png", grey)
    save_png(tmp_path / "rgb_grey.png", np.stack([grey] * 3, axis=-1))
    colour = RNG.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    save_png(tmp_path / "rgb.png", colour)
    Image.fromarray(grey).save(tmp_path / "g.jpg", quality=100)
    names = ("l.png", "rgb_grey.png", "rgb.png", "g.jpg")
    read = {n: decode_image((tmp_path / n).read_bytes(), n) for n in names}
    assert np.array_equal(read["l.png"], grey / np.float32(255))
    assert np.array_equal(read["rgb_grey.png"], read["l.png"])
    luma = colour @ np.array([0.299, 0.587, 0.114]) / 255
    np.testing.assert_allclose(read["rgb.png"], luma, atol=1e-6)
    np.testing.assert_allclose(read["g.jpg"], grey / 255, atol=3 / 255)  # JPEG is lossy


def test_raw_dicom_without_preamble_or_file_meta_is_read(tmp_path: Path):
    ds = DicomDataset()
    ds.Rows, ds.Columns = 2, 3
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.arange(6, dtype="<u2").tobytes()
    ds.save_as(tmp_path / "raw.dcm", implicit_vr=True, little_endian=True)
    image = decode_image((tmp_path / "raw.dcm").read_bytes(), "raw.dcm")
    np.testing.assert_array_equal(image, (np.arange(6).reshape(2, 3) / 4095).astype(np.float32))


def test_unreadable_and_unsupported_dicom_files_are_named(tmp_path: Path):
    frames = save_dicom(tmp_path / "cine.dcm", np.zeros((2, 4, 4), np.uint16), frames=2)
    with pytest.raises(ImageReadError, match=r"cine\.dcm: multi-frame DICOM \(2 frames\)"):
        decode_image(frames.read_bytes(), "cine.dcm")
    if get_decoder(JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS decoder is installed here")
    jpegls = save_dicom(tmp_path / "ls.dcm", np.zeros((4, 4), np.uint16), syntax=JPEGLSLossless)
    with pytest.raises(ImageReadError, match=r"ls\.dcm: .*JPEG-LS.* install one of: .*pylibjpeg"):
        decode_image(jpegls.read_bytes(), "ls.dcm")
    (tmp_path / "junk.dcm").write_bytes(b"not dicom at all")
    with pytest.raises(ImageReadError, match=r"junk\.dcm"):
        decode_image((tmp_path / "junk.dcm").read_bytes(), "junk.dcm")


# --- masks and regions -----------------------------------------------------------------------


def test_masks_are_boolean_resized_nearest_and_bone_is_the_union_of_parts(tmp_path: Path):
    save_png(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    save_png(tmp_path / "b.png", np.zeros((4, 4), np.uint8))
    spine = np.zeros((4, 4), np.uint8)
    spine[:, 1] = 200
    ribs = np.zeros((4, 4), np.uint8)
    ribs[0, :] = 1
    save_png(tmp_path / "spine.png", spine)
    save_png(tmp_path / "ribs.png", ribs)
    save_png(tmp_path / "lungs.png", np.ones((4, 4), bool))
    rows = three_classes(tmp_path, ["a.png", "b.png"], mask_spine="spine.png")
    rows[0].update(mask_ribs="ribs.png", mask_lungs="lungs.png")  # b.png: ribs not annotated
    dataset = load(tmp_path, rows, image_size=16)
    assert dataset.region_names == ("bone", "spine", "ribs", "lungs")
    assert dict(dataset.region_groups) == {"bone": ("spine", "ribs")}
    first = dataset[0]
    for mask in first.regions.values():
        assert mask.dtype.is_floating_point is False
        assert mask.shape == (16, 16)
    nearest = np.kron(spine > 0, np.ones((4, 4), bool))
    assert np.array_equal(first.regions["spine"].numpy(), nearest)
    union = np.kron((spine > 0) | (ribs > 0), np.ones((4, 4), bool))
    assert np.array_equal(first.regions["bone"].numpy(), union)
    # Row 2 lacks ribs: its ribs and bone masks are empty and flagged as not annotated.
    second = dataset[1]
    assert not second.regions["ribs"].any()
    assert not second.regions["bone"].any()
    assert second.regions["spine"].any()
    assert dataset.annotated("bone").tolist()[:2] == [True, False]
    assert dataset.annotated("spine").tolist()[:2] == [True, True]


def test_mask_bone_column_wins_over_the_union(tmp_path: Path):
    save_png(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    save_png(tmp_path / "bone.png", np.eye(4, dtype=bool))
    save_png(tmp_path / "spine.png", np.ones((4, 4), bool))
    rows = three_classes(tmp_path, ["a.png"], mask_spine="spine.png", mask_bone="bone.png")
    dataset = load(tmp_path, rows, image_size=None)
    assert dataset.region_groups == {}
    assert np.array_equal(dataset[0].regions["bone"].numpy(), np.eye(4, dtype=bool))


def test_table_reads_no_image_and_hides_paths(tmp_path: Path, monkeypatch):
    save_png(tmp_path / "Jane_Doe.png", PIXELS16)
    rows = three_classes(tmp_path, ["Jane_Doe.png"], age=71, sex="F")

    def refuse(*args, **kwargs):
        raise AssertionError("table() decoded an image")

    monkeypatch.setattr(manifest_module, "decode_image", refuse)
    monkeypatch.setattr(manifest_regions, "decode_mask", refuse)
    table = load(tmp_path, rows).table()
    assert list(table.columns) == ["sample_id", "patient_id", "t_score", "age", "sex"]
    assert table["sample_id"].tolist() == ["row00001", "row00002", "row00003"]
    assert table["age"].tolist()[0] == 71.0
    assert "Jane" not in table.drop(columns="patient_id").to_csv()


def test_fingerprint_follows_file_bytes_not_location(tmp_path: Path):
    data = tmp_path / "data"
    save_png(data / "a.png", PIXELS16)
    for k in range(3):
        save_png(data / f"{k}.png", np.full((4, 4), k, np.uint8))
    csv_path = write_manifest(data, three_classes(data, ["a.png", "1.png", "2.png"]))
    before = ManifestDataset(path=str(csv_path)).fingerprint()
    shutil.copytree(data, tmp_path / "moved")
    moved = ManifestDataset(path=str(tmp_path / "moved" / "manifest.csv")).fingerprint()
    assert moved == before
    changed = PIXELS16.copy()
    changed[0, 0] ^= 1
    save_png(data / "a.png", changed)
    assert ManifestDataset(path=str(csv_path)).fingerprint() != before
    # Loading a sample hashes the bytes it decoded; the fingerprint is the same either way.
    dataset = ManifestDataset(path=str(csv_path))
    _ = dataset[0]
    assert dataset.fingerprint() == ManifestDataset(path=str(csv_path)).fingerprint()


# --- labels and splits -----------------------------------------------------------------------


def test_labels_by_name_or_index_and_t_scores_mix(tmp_path: Path):
    for name in "abcde":
        save_png(tmp_path / f"{name}.png", PIXELS16)
    rows = [
        {"image": "a.png", "patient_id": "1", "label": "Osteoporosis"},
        {"image": "b.png", "patient_id": "2", "label": "0"},
        {"image": "c.png", "patient_id": "3", "label": "1.0"},
        {"image": "d.png", "patient_id": "4", "t_score": "-2.5"},
        {"image": "e.png", "patient_id": "5", "t_score": "0.1", "label": "normal"},
    ]
    table = load(tmp_path, rows).table()
    # The manifest knows no class: the cells reach the task as written, the task reads them.
    assert table["label"].tolist()[:5] == ["Osteoporosis", "0", "1.0", "", "normal"]
    assert Osteoporosis().labels(table).tolist()[:5] == [2, 0, 1, 2, 0]


def test_task_labels_name_bad_rows():
    import pandas as pd

    table = pd.DataFrame({"t_score": [0.0, np.nan, np.nan], "label": ["", "severe", "2"]})
    with pytest.raises(
        XaibenchError, match=r"1 label problem.*row 2 \(label\): unknown label 'severe'"
    ):
        Osteoporosis().labels(table)
    table = pd.DataFrame({"t_score": [0.0, np.nan], "label": ["", ""]})
    with pytest.raises(XaibenchError, match=r"row 2 \(t_score / label\): no class"):
        Osteoporosis().labels(table)


def split_rows(splits: list[str]) -> list[dict]:
    t_scores = [0.5, -3.0, -1.8]
    return [
        {"image": f"{i}.png", "patient_id": f"P{i}", "t_score": t_scores[i % 3], "split": s}
        for i, s in enumerate(splits)
    ]


def test_a_split_column_makes_the_splits_and_missing_regions_are_skipped(
    tmp_path: Path, components
):
    splits = ["train"] * 4 + ["val"] * 2 + ["test"] * 4
    rows = split_rows(splits)
    for i, row in enumerate(rows):
        save_png(tmp_path / row["image"], np.full((8, 8), i, np.uint8))
        save_png(tmp_path / f"m{i}.png", np.eye(8, dtype=bool))
        row["mask_spine"] = f"m{i}.png"
        row["mask_lungs"] = f"m{i}.png" if i != 8 else ""  # one test image lacks lungs
    path = write_manifest(tmp_path, rows)
    config = resolve_config(
        components.tasks.create("osteoporosis").defaults(),
        {
            "dataset": {"name": "manifest", "options": {"path": str(path), "image_size": 16}},
            "explain_regions": ["bone", "lungs", "heart"],
            "perturb_regions": ["spine", "lungs"],
            "complement_regions": ["bone"],
        },
    )
    data = prepare_data(config, components, NullProgress())
    assert data.split_from_dataset
    for split in ("train", "val", "test"):
        expected = [f"row{i + 1:05d}" for i, s in enumerate(splits) if s == split]
        assert list(data.splits[split].sample_ids) == expected
    assert data.regions == {
        "explain_regions": ["bone", "lungs"],
        "perturb_regions": ["spine"],
        "complement_regions": ["bone"],
    }
    assert set(data.skipped_regions) == {"explain_regions", "perturb_regions"}
    assert "not provided by dataset 'manifest'" in data.skipped_regions["explain_regions"]["heart"]
    assert "1 of 4 test images" in data.skipped_regions["perturb_regions"]["lungs"]


def test_one_patient_in_two_splits_is_refused_naming_rows(tmp_path: Path):
    rows = split_rows(["train", "train", "test", "val"])
    rows[3]["patient_id"] = rows[0]["patient_id"]
    for row in rows:
        save_png(tmp_path / row["image"], PIXELS16)
    rows.append({**rows[1], "image": "1.png", "t_score": -1.5, "patient_id": "X"})
    with pytest.raises(ManifestError) as caught:
        load(tmp_path, rows)
    message = str(caught.value)
    split = "one patient_id is in more than one split: train (row 1), val (row 4)"
    assert f"row 4 (split): {split}" in message
    assert "row 5 (image): same image file as row 2" in message
    assert "P0" not in message


# --- the checker -----------------------------------------------------------------------------

FAULTS = {
    # row: (column, what the message says), rows 1-based; row 1 is clean.
    2: ("image", "file not found"),
    3: ("image", "not a readable image"),
    4: ("mask_spine", "mask is 3x3 pixels but its image is 8x8"),
    8: ("image", "same image file as row 1"),
    9: ("split", "more than one split"),
    10: ("split", "unknown split 'holdout'"),
    11: ("patient_id", "empty patient_id"),
    12: ("image", "multi-frame DICOM"),
    13: ("mask_spine", "file not found"),
}
#: Label faults: the manifest knows no class and passes them; the task reports them.
LABEL_FAULTS = {
    5: ("t_score", "not a number: 'abc'"),
    6: ("label", "unknown label 'severe'"),
    7: ("t_score / label", "no class"),
    14: ("t_score", "not a finite number: 'nan'"),
    15: ("label", "label 'osteoporosis' disagrees with t_score"),
}


def faulty_manifest(folder: Path, *, labels_only: bool = False) -> Path:
    """A manifest with :data:`FAULTS` and :data:`LABEL_FAULTS` (``labels_only``: the latter)."""
    good = np.zeros((8, 8), np.uint8)
    for i in range(1, 16):
        save_png(folder / f"{i}.png", good)
        save_png(folder / f"m{i}.png", np.eye(8, dtype=bool))
    if not labels_only:
        (folder / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    save_png(folder / "m4.png", np.eye(3, dtype=bool))  # 8 is no multiple of 3
    save_dicom(folder / "12.dcm", np.zeros((2, 8, 8), np.uint16), frames=2)
    rows = [
        {
            "image": f"{i}.png",
            "patient_id": f"P{i}",
            "t_score": "0.5",
            "label": "",
            "split": "train",
            "mask_spine": f"m{i}.png",
        }
        for i in range(1, 16)
    ]
    rows[4]["t_score"] = "abc"
    rows[5].update(t_score="", label="severe")
    rows[6].update(t_score="", label="")
    rows[13]["t_score"] = "nan"
    rows[14].update(t_score="-1.5", label="osteoporosis")
    rows[0]["t_score"] = "-1.5"  # osteopenia; no row is osteoporosis
    if labels_only:
        for row in rows:
            del row["split"], row["mask_spine"]
        return write_manifest(folder, rows)
    rows[1]["image"] = "missing.png"
    rows[7]["image"] = "1.png"
    rows[8].update(patient_id="P1", split="test")
    rows[9]["split"] = "holdout"
    rows[10]["patient_id"] = ""
    rows[11]["image"] = "12.dcm"
    rows[12]["mask_spine"] = "gone.png"
    return write_manifest(folder, rows)


def test_check_manifest_reports_every_seeded_fault_with_its_row(tmp_path: Path):
    problems = check_manifest(faulty_manifest(tmp_path))
    by_row = {p.row: p for p in problems if p.row is not None}
    assert sorted(by_row) == sorted(FAULTS)
    for row, (column, text) in FAULTS.items():
        assert by_row[row].column == column, row
        assert text in by_row[row].message, (row, by_row[row].message)
    # label faults and "no osteoporosis image" are the task's to find, not the manifest's
    assert [p.row for p in problems] == sorted(FAULTS)


def test_the_dataset_refuses_a_faulty_manifest_listing_cheap_problems(tmp_path: Path):
    path = faulty_manifest(tmp_path)
    with pytest.raises(ManifestError) as caught:
        ManifestDataset(path=str(path))
    message = str(caught.value)
    decode_only = {3, 4, 12}
    for row, (column, _) in FAULTS.items():
        assert (f"row {row} ({column})" in message) is (row not in decode_only), row
    assert "t_score" not in message
    assert "label" not in message


def test_whole_file_problems_and_formatting(tmp_path: Path):
    missing = check_manifest(tmp_path / "nope.csv")
    assert len(missing) == 1
    assert "manifest not found" in missing[0].message
    (tmp_path / "m.csv").write_text("image;patient_id;t_score\n")
    assert "comma-separated" in check_manifest(tmp_path / "m.csv")[0].message
    (tmp_path / "m.csv").write_text("Image,Label,mask_Bad-Name\na.png,normal,x.png\n")
    columns = {p.column for p in check_manifest(tmp_path / "m.csv")}
    assert columns == {"patient_id", "mask_bad-name"}
    problems = [Problem(i + 1, "image", "bad") for i in range(25)]
    text = format_problems([Problem(None, None, "whole"), *problems], limit=3)
    assert text.splitlines() == [
        "whole",
        "row 1 (image): bad",
        "row 2 (image): bad",
        "... and 23 more problems",
    ]
    assert format_problem(Problem(None, "split", "x")) == "column split: x"


def test_decode_problems_surface_while_loading_with_the_row(tmp_path: Path):
    save_png(tmp_path / "a.png", PIXELS16)
    (tmp_path / "b.png").write_bytes(b"garbage")
    dataset = load(tmp_path, three_classes(tmp_path, ["a.png", "b.png"]))
    _ = dataset[0]
    with pytest.raises(XaibenchError, match=r"row 2 \(image\): .*b\.png.*xaibench data check"):
        _ = dataset[1]


# --- a whole run -----------------------------------------------------------------------------

PHANTOM_REGIONS = ("spine", "ribs", "clavicles", "lungs", "heart")  # bone: derived


def phantom_manifest(folder: Path, fmt: str) -> Path:
    """The phantom's images as 16-bit PNG or DICOM (every other one MONOCHROME1), with masks."""
    phantom = PhantomDataset(n_images=60, image_size=32, class_shares=(0.4, 0.3, 0.3))
    table = phantom.table()
    rows = []
    for i in range(len(phantom)):
        sample = phantom[i]
        pixels = np.round(sample.image[0].numpy().astype(np.float64) * 65535).astype(np.uint16)
        if fmt == "png":
            image = save_png(folder / "images" / f"{i}.png", pixels)
        elif i % 2:
            image = save_dicom(
                folder / "images" / f"{i}.dcm", 65535 - pixels, photometric="MONOCHROME1"
            )
        else:
            image = save_dicom(folder / "images" / f"{i}.dcm", pixels)
        row = {
            "image": image.relative_to(folder).as_posix(),
            "patient_id": table["patient_id"][i],
            "t_score": repr(float(table["t_score"][i])),
        }
        for region in PHANTOM_REGIONS:
            mask = save_png(folder / "masks" / f"{i}_{region}.png", sample.regions[region].numpy())
            row[f"mask_{region}"] = mask.relative_to(folder).as_posix()
        rows.append(row)
    return write_manifest(folder, rows)


def test_png_and_dicom_manifests_of_the_phantom_give_the_same_run(tmp_path: Path, components):
    values = {}
    for fmt in ("png", "dicom"):
        path = phantom_manifest(tmp_path / fmt, fmt)
        config = resolve_config(
            components.tasks.create("osteoporosis").defaults(),
            {
                "dataset": {"name": "manifest", "options": {"path": str(path), "image_size": 32}},
                "backbones": [{"name": "test_resnet.random", "options": {"img_size": 32}}],
                "strategies": ["full"],
                "saliency": ["saliency"],
                "perturbations": ["zero"],
                "train": {"epochs": 1, "batch_size": 16},
                "max_explain_images": 6,
                "sanity": {"images": 0},
                "gallery_images": 0,
            },
        )
        outcome = run_benchmark(config, components, tmp_path / f"run_{fmt}")
        assert not outcome.failed, outcome.failed[0].error
        values[fmt] = {
            (r["metric"], r["saliency"], r["perturbation"], r["region"]): r["value"]
            for r in outcome.document["records"]
        }
    assert values["png"] == values["dicom"]
    assert values["png"][("auc", None, None, None)] is not None
    assert ("iou_region", "saliency", None, "bone") in values["png"]
    results = (tmp_path / "run_png" / "predictions.csv").read_text()
    assert "P0000" not in results
    # t_score is a column of the manifest's table but the task's label: never a stratum
    strata = "".join(p.read_text() for p in (tmp_path / "run_png").rglob("strata_*.csv"))
    assert "t_score" not in strata
    assert re.search(r",row\d{5},", results)


# --- the command line ------------------------------------------------------------------------


def test_data_check_lists_every_fault_and_run_refuses_before_training(tmp_path: Path):
    path = faulty_manifest(tmp_path)
    proc = cli("data", "check", str(path), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    for row, (column, text) in FAULTS.items():
        assert f"row {row} ({column}): " in proc.stdout, row
        assert text in proc.stdout, row
    assert f"{len(FAULTS)} problems" in proc.stdout  # label faults are the task's
    # the run stops before any training, names the rows, and leaves no run directory
    proc = cli("run", "osteoporosis", "--data", str(path), "--quiet", cwd=tmp_path)
    assert proc.returncode == 2
    assert "row 2 (image): file not found" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "epoch" not in proc.stdout + proc.stderr
    assert not (tmp_path / "xaibench-runs").exists()
    # a manifest whose only faults are labels: the task refuses it, before training, by row
    labels = faulty_manifest(tmp_path / "labels", labels_only=True)
    assert check_manifest(labels) == []
    proc = cli("run", "osteoporosis", "--data", str(labels), "--quiet", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    for row, (column, text) in LABEL_FAULTS.items():
        assert f"row {row} ({column}): {text}" in proc.stderr, row
    assert "Traceback" not in proc.stderr
    assert "epoch" not in proc.stdout + proc.stderr
    assert not (tmp_path / "xaibench-runs").exists()
    clean = phantom_manifest(tmp_path / "clean", "png")
    proc = cli("data", "check", str(clean), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout
    assert "no problems found" in proc.stdout


def test_run_with_data_option_on_png_and_dicom_manifests(tmp_path: Path):
    """`xaibench run osteoporosis --data`: the same pixels as PNG and as DICOM, the same numbers."""
    import json

    small = small_manifest_config(tmp_path)
    values = {}
    for fmt in ("png", "dicom"):
        path = phantom_manifest(tmp_path / fmt, fmt)
        out = tmp_path / f"run-{fmt}"
        proc = cli(
            "run", "osteoporosis", "--data", str(path), "--config", str(small),
            "--out", str(out), "--quiet", cwd=tmp_path,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        doc = json.loads((out / "results.json").read_text())
        assert doc["dataset"]["name"] == "manifest"
        assert doc["dataset"]["options"]["image_size"] == 32
        values[fmt] = {
            (r["metric"], r["perturbation"], r["saliency"], r["region"]): r["value"]
            for r in doc["records"]
        }
        # patient ids and file paths never reach the outputs
        text = (out / "results.json").read_text() + (out / "predictions.csv").read_text()
        assert "images/" not in text
        with path.open() as handle:
            patients = {row["patient_id"] for row in csv.DictReader(handle)}
        assert not patients & set(re.findall(r"[\w-]+", text))
    assert values["png"] == values["dicom"]
    assert values["png"][("auc", None, None, None)] is not None


def test_metadata_columns_are_the_strata_and_the_label_source_is_not(tmp_path: Path):
    from xaibench.stats.strata import strata_from_table

    images = [f"i{k}.png" for k in range(6)]
    for name in images:
        save_png(tmp_path / name, np.zeros((4, 4), np.uint8))
    rows = three_classes(tmp_path, images)
    for k, row in enumerate(rows):
        row["site"] = "A" if k < 3 else "B"
        row["age"] = 50 + k
    dataset = load(tmp_path, rows)
    # The manifest offers every column; the run leaves out the task's label columns.
    assert set(dataset.strata_columns) == {"t_score", "site", "age"}
    assert "t_score" in Osteoporosis().label_columns
    assert "patient_id" not in dataset.strata_columns
    strata = strata_from_table(dataset.table(), dataset.strata_columns, min_level=1)
    assert strata["site"].value_counts().to_dict() == {"A": 3, "B": 3}
