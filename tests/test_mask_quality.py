"""Mask quality control (issue 19 item 4): planted faults are flagged with their rows.

The fixture is a cohort of 12 phantom radiographs at 64 px with their exact masks, the lungs
and clavicles split at the spine into the patient's left (image right, the radiological
convention the phantom follows) and right. Three rows carry planted faults: row 3 an empty left
lung, row 5 a left lung mirrored onto the image's left, row 7 a spine cut into slices.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from tests.cli_run import xaibench_cli
from xaibench.data.check import read_manifest
from xaibench.data.manifest import ManifestDataset, ManifestError
from xaibench.data.phantom import PhantomDataset
from xaibench.segmenters.quality import (
    DEFAULT_K,
    MAD_SCALE,
    measure,
    quality_flags,
    run_quality,
)

N = 12
EMPTY_ROW, MIRRORED_ROW, FRAGMENTED_ROW = 3, 5, 7
REGIONS = ("left_lung", "right_lung", "heart", "spine", "left_clavicle", "right_clavicle")


def _phantom_masks(n: int) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
    PhantomDataset.disk_cache = False
    try:
        dataset = PhantomDataset(n_images=n, image_size=64, seed=0)
        out = []
        for i in range(n):
            sample = dataset[i]
            masks = {r: sample.regions[r].numpy().astype(bool) for r in sample.regions}
            midline = round(np.nonzero(masks["spine"])[1].mean())
            right_half = np.zeros_like(masks["lungs"])
            right_half[:, midline:] = True  # the image's right: the patient's left
            split = {
                "left_lung": masks["lungs"] & right_half,
                "right_lung": masks["lungs"] & ~right_half,
                "heart": masks["heart"],
                "spine": masks["spine"],
                "left_clavicle": masks["clavicles"] & right_half,
                "right_clavicle": masks["clavicles"] & ~right_half,
            }
            out.append((sample.image[0].numpy(), split))
        return out
    finally:
        PhantomDataset.disk_cache = True


@pytest.fixture(scope="module")
def cohort() -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """Clean phantom masks (image, region masks) for 12 rows."""
    return _phantom_masks(N)


def plant_faults(
    cohort: list[tuple[np.ndarray, dict[str, np.ndarray]]], *, empty: bool = True
) -> list[dict[str, np.ndarray]]:
    """The masks with the faults planted (rows are 1-based)."""
    masks = [{r: m.copy() for r, m in ms.items()} for _, ms in cohort]
    if empty:
        masks[EMPTY_ROW - 1]["left_lung"][:] = False
    masks[MIRRORED_ROW - 1]["left_lung"] = np.fliplr(masks[MIRRORED_ROW - 1]["left_lung"])
    spine = masks[FRAGMENTED_ROW - 1]["spine"]
    spine[::3, :] = False  # a slice missing every third row: many pieces
    return masks


def write_manifest(
    folder: Path,
    cohort: list[tuple[np.ndarray, dict[str, np.ndarray]]],
    masks: list[dict[str, np.ndarray]],
    *,
    qc_exclude: dict[int, str] | None = None,
) -> Path:
    """PNG images and 0/255 masks under ``folder`` and the manifest listing them."""
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, ((image, _), region_masks) in enumerate(zip(cohort, masks, strict=True)):
        name = f"img{i + 1:02d}.png"
        Image.fromarray((image * 255).round().astype(np.uint8)).save(folder / name)
        row = {"image": name, "patient_id": f"P{i + 1}"}
        for region in REGIONS:
            path = f"masks/{i + 1:02d}_{region}.png"
            Image.fromarray(region_masks[region].astype(np.uint8) * 255).save(folder / path)
            row[f"mask_{region}"] = path
        if qc_exclude is not None:
            row["qc_exclude"] = qc_exclude.get(i + 1, "")
        rows.append(row)
    path = folder / "manifest.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


# --- measures, by hand ----------------------------------------------------------------------


def test_measures_known_answers() -> None:
    """Area, 8-connected components, balance, centroid and side of a drawn image."""
    shape = (20, 20)
    right_lung = np.zeros(shape, bool)
    right_lung[2:12, 2:6] = True  # image left: the patient's right, 40 pixels
    left_lung = np.zeros(shape, bool)
    left_lung[2:12, 12:18] = True  # image right: the patient's left, 60 pixels
    spine = np.zeros(shape, bool)
    spine[1:19, 9] = True  # the midline, column 9
    spine[5, 9] = False  # two pieces
    diagonal = np.zeros(shape, bool)
    diagonal[15, 15] = diagonal[16, 16] = True  # touching by a corner: one 8-component
    m = measure(
        {"left_lung": left_lung, "right_lung": right_lung, "spine": spine, "heart": diagonal}
    )
    assert m["left_lung"]["area_fraction"] == pytest.approx(60 / 400)
    assert m["spine"]["components"] == 2
    assert m["heart"]["components"] == 1  # 4-connectivity would say 2
    assert ndimage.label(diagonal)[1] == 2  # (scipy's default, 4-connectivity, for contrast)
    assert m["lungs"]["lr_balance"] == pytest.approx(60 / 100)
    # lungs' box: x 2..17 (width 15), y 2..11 (height 9); left lung centroid (14.5, 6.5)
    assert m["left_lung"]["centroid_x"] == pytest.approx((14.5 - 2) / 15)
    assert m["left_lung"]["centroid_y"] == pytest.approx((6.5 - 2) / 9)
    assert m["left_lung"]["side"] == pytest.approx((14.5 - 9) / 15)
    assert m["right_lung"]["side"] == pytest.approx((3.5 - 9) / 15)
    empty = measure({"heart": np.zeros(shape, bool)})
    assert empty["heart"]["area_fraction"] == 0
    assert math.isnan(empty["heart"]["side"])


def test_cohort_range_is_median_plus_k_scaled_mads() -> None:
    """The range is median ± k·1.4826·MAD when that is wider than the floor."""
    values = [0.20, 0.21, 0.22, 0.23, 0.24, 0.25, 0.26, 0.27, 0.28, 0.29, 0.90]
    measures = [{"heart": {"area_fraction": v}} for v in values]
    flags = quality_flags(measures, k=DEFAULT_K)
    median = float(np.median(values))
    mad = MAD_SCALE * float(np.median(np.abs(np.array(values) - median)))
    half = max(DEFAULT_K * mad, 0.3 * median)
    assert [(f.row, f.region, f.measure) for f in flags] == [(11, "heart", "area_fraction")]
    assert flags[0].range == pytest.approx((median - half, median + half))
    # Below the minimum cohort size only the absolute rules apply.
    assert quality_flags(measures[-5:]) == []
    assert [f.row for f in quality_flags([*measures[-5:], {"heart": {"area_fraction": 0.0}}])] == [
        6
    ]


# --- the planted faults ---------------------------------------------------------------------


def test_planted_faults_are_flagged_with_their_rows(
    cohort: list[tuple[np.ndarray, dict[str, np.ndarray]]],
) -> None:
    """Rows 3, 5 and 7 are flagged for the planted fault; the clean rows for nothing."""
    flags = quality_flags([measure(m) for m in plant_faults(cohort)])
    found = {(f.row, f.region, f.measure) for f in flags}
    assert (EMPTY_ROW, "left_lung", "area_fraction") in found
    assert (MIRRORED_ROW, "left_lung", "side") in found
    assert (FRAGMENTED_ROW, "spine", "components") in found
    assert {f.row for f in flags} == {EMPTY_ROW, MIRRORED_ROW, FRAGMENTED_ROW}
    empty = next(f for f in flags if f.row == EMPTY_ROW and f.region == "left_lung")
    assert "empty" in empty.reason
    assert empty.value == 0
    side = next(
        f for f in flags if (f.row, f.region, f.measure) == (MIRRORED_ROW, "left_lung", "side")
    )
    assert side.value < 0
    assert side.range == (0.0, math.inf)
    pieces = next(f for f in flags if f.row == FRAGMENTED_ROW and f.measure == "components")
    assert pieces.value > pieces.high


def test_clean_cohort_has_no_flags(cohort: list[tuple[np.ndarray, dict[str, np.ndarray]]]) -> None:
    """The exact phantom masks are all plausible."""
    assert quality_flags([measure(m) for _, m in cohort]) == []


def test_run_quality_reads_the_manifest_and_draws_the_sheet(
    tmp_path: Path, cohort: list[tuple[np.ndarray, dict[str, np.ndarray]]]
) -> None:
    """Through the manifest: the same rows, sample ids, and a contact sheet PNG."""
    path = write_manifest(tmp_path / "data", cohort, plant_faults(cohort))
    sheet = tmp_path / "sheet.png"
    report = run_quality(path, image_size=None, sheet=sheet)
    assert report.flagged_rows == [EMPTY_ROW, MIRRORED_ROW, FRAGMENTED_ROW]
    assert report.relative
    assert set(report.regions) == {*REGIONS, "lungs", "clavicles", "bone"}  # bone derived
    assert {f.sample_id for f in report.flags} == {"row00003", "row00005", "row00007"}
    assert report.contact_sheet == sheet
    with Image.open(sheet) as image:
        assert image.format == "PNG"
        assert image.mode == "RGB"
        assert image.width == 4 * 192
    cells = report.exclusions()
    assert sorted(cells) == [EMPTY_ROW, MIRRORED_ROW, FRAGMENTED_ROW]
    assert cells[EMPTY_ROW].startswith("left_lung: ")
    table = report.table()
    assert list(table["row"]) == [f.row for f in report.flags]
    assert report.lines()[-1].startswith(f"quality: {len(report.flags)} flags on 3 of 12")
    summary = report.summary()
    assert summary["flagged_rows"] == [EMPTY_ROW, MIRRORED_ROW, FRAGMENTED_ROW]
    assert summary["flags"] == len(report.flags)
    assert json.loads(json.dumps(summary)) == summary


# --- qc_exclude -----------------------------------------------------------------------------


def test_qc_exclude_removes_a_region_from_scoring(
    tmp_path: Path, cohort: list[tuple[np.ndarray, dict[str, np.ndarray]]]
) -> None:
    """An excluded image is not annotated for the region (and its derived wholes)."""
    from xaibench.run_data import qc_exclusions

    masks = plant_faults(cohort)
    path = write_manifest(
        tmp_path / "data", cohort, masks, qc_exclude={MIRRORED_ROW: "left_lung: mirrored"}
    )
    dataset = ManifestDataset(path=str(path), image_size=None)
    i = MIRRORED_ROW - 1
    assert not dataset.annotated("left_lung")[i]
    assert dataset.annotated("left_lung").sum() == N - 1
    assert not dataset.annotated("lungs")[i]
    assert dataset.annotated("right_lung")[i]
    assert dataset.excluded("lungs") == {i: "left_lung: mirrored"}
    sample = dataset[i]
    assert not sample.regions["left_lung"].any()
    assert not sample.regions["lungs"].any()
    assert sample.regions["right_lung"].any()
    assert "qc_exclude" not in dataset.table().columns  # not a label or metadata column
    # Quality control still sees the excluded mask.
    raw = dataset.ignoring_exclusions()
    assert raw.annotated("left_lung").all()
    assert raw[i].regions["left_lung"].any()
    # The run counts the exclusion per reason on the test images only.
    assert qc_exclusions(dataset, ["lungs", "heart"], np.arange(N)) == {
        "lungs": {"left_lung: mirrored": 1}
    }
    assert qc_exclusions(dataset, ["lungs"], np.array([0, 1])) == {}


def test_usable_regions_skips_perturbation_of_an_excluded_region(
    tmp_path: Path, cohort: list[tuple[np.ndarray, dict[str, np.ndarray]]]
) -> None:
    """Δ needs the region on every test image: skipped with qc_exclude named; IoU keeps it."""
    from types import SimpleNamespace

    from xaibench.run_data import usable_regions

    path = write_manifest(
        tmp_path / "data", cohort, plant_faults(cohort), qc_exclude={7: "spine: fragmented"}
    )
    dataset = ManifestDataset(path=str(path), image_size=None)
    config = SimpleNamespace(
        explain_regions=["spine"],
        perturb_regions=["spine", "heart"],
        complement_regions=[],
        dataset=SimpleNamespace(name="manifest"),
    )
    usable, skipped = usable_regions(config, dataset, np.arange(N))  # type: ignore[arg-type]
    assert usable["explain_regions"] == ["spine"]
    assert usable["perturb_regions"] == ["heart"]
    assert "1 excluded by qc_exclude" in skipped["perturb_regions"]["spine"]


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("left_lung mirrored", "is not 'region: reason'"),
        ("kidney: odd", "region 'kidney' has no column"),
        ("spine: a; spine: b", "listed twice"),
    ],
)
def test_bad_qc_exclude_cells_are_problems_by_row(
    tmp_path: Path,
    cohort: list[tuple[np.ndarray, dict[str, np.ndarray]]],
    cell: str,
    message: str,
) -> None:
    """A cell that does not parse or names an unknown region is a problem of its row."""
    masks = [m for _, m in cohort]
    path = write_manifest(tmp_path / "data", cohort, masks, qc_exclude={4: cell})
    _, problems = read_manifest(path)
    assert [(p.row, p.column) for p in problems] == [(4, "qc_exclude")]
    assert message in problems[0].message
    with pytest.raises(ManifestError):
        ManifestDataset(path=str(path))


# --- data check ------------------------------------------------------------------------------


def test_data_check_reports_a_quality_section(
    tmp_path: Path,
    cohort: list[tuple[np.ndarray, dict[str, np.ndarray]]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Flags are listed by row; they do not change the exit status; exclusions are written."""
    path = write_manifest(tmp_path / "data", cohort, plant_faults(cohort, empty=False))
    out = tmp_path / "data" / "excluded.csv"
    sheet = tmp_path / "sheet.png"
    status, output = xaibench_cli(
        capsys, "data", "check", str(path), "--write-exclusions", str(out),
        "--quality-sheet", str(sheet),
    )  # fmt: skip
    assert status == 0, output
    assert f"row {MIRRORED_ROW} (left_lung, side)" in output
    assert f"row {FRAGMENTED_ROW} (spine, components)" in output
    assert sheet.is_file()
    dataset = ManifestDataset(path=str(out))
    assert not dataset.annotated("spine")[FRAGMENTED_ROW - 1]
    assert sorted(i + 1 for i in dataset.excluded("left_lung")) == [MIRRORED_ROW]
    status, output = xaibench_cli(capsys, "data", "check", str(path), "--no-quality")
    assert status == 0
    assert "quality" not in output
    status, output = xaibench_cli(
        capsys, "data", "check", str(path), "--quick", "--write-exclusions", str(out)
    )
    assert status == 2
    assert "--write-exclusions needs the quality control" in output
    status, output = xaibench_cli(capsys, "data", "check", str(path), "--quality-k", "0")
    assert status == 2
    assert "--quality-k" in output
    # With a problem (row 3's empty mask file) quality control waits for the fix.
    bad = write_manifest(tmp_path / "bad", cohort, plant_faults(cohort))
    status, output = xaibench_cli(capsys, "data", "check", str(bad))
    assert status == 1
    assert "quality: skipped until the problems are fixed" in output
    assert "row 3 (mask_left_lung)" in output


@pytest.mark.slow
def test_run_honours_qc_exclude(tmp_path: Path, components: object) -> None:
    """Excluded images get no spine score (NaN, counted with the reason); Δ_spine is skipped."""
    import pandas as pd

    from tests.test_manifest import phantom_manifest
    from xaibench.config import resolve_config
    from xaibench.engine.benchmark import run_benchmark

    path = phantom_manifest(tmp_path / "data", "png")
    frame = pd.read_csv(path, dtype=str)
    frame["qc_exclude"] = ["spine: in pieces (QC)" if i % 3 == 0 else "" for i in range(len(frame))]
    frame.to_csv(path, index=False)
    config = resolve_config(
        components.tasks.create("osteoporosis").defaults(),  # type: ignore[attr-defined]
        {
            "dataset": {"name": "manifest", "options": {"path": str(path), "image_size": 32}},
            "backbones": [{"name": "test_resnet.random", "options": {"img_size": 32}}],
            "strategies": ["full"],
            "saliency": ["saliency"],
            "perturbations": ["zero"],
            "explain_regions": ["spine", "heart"],
            "perturb_regions": ["spine", "bone", "heart"],
            "complement_regions": [],
            "train": {"epochs": 1, "batch_size": 16},
            "max_explain_images": 100,
            "sanity": {"images": 0},
            "gallery_images": 0,
        },
    )
    outcome = run_benchmark(config, components, tmp_path / "run")  # type: ignore[arg-type]
    assert not outcome.failed, outcome.failed[0].error
    dataset = ManifestDataset(path=str(path), image_size=32)
    records = outcome.document["records"]
    iou = {r["region"]: r for r in records if r["metric"] == "iou_region"}
    details = iou["spine"]["details"]["qc_excluded"]
    assert list(details["reasons"]) == ["in pieces (QC)"]
    assert "qc_excluded" not in iou["heart"]["details"]
    assert iou["spine"]["n"] == iou["heart"]["n"] - details["images"]
    assert details["images"] > 0
    deltas = {
        r["region"] for r in records if r["metric"] == "delta_region" and r["value"] is not None
    }
    assert "heart" in deltas
    assert not deltas & {"spine", "bone"}
    skipped = json.dumps(outcome.document).count("excluded by qc_exclude")
    assert skipped >= 2  # spine and bone, with the reason
    assert len(dataset.excluded("bone")) == 20
