"""Segmentation agreement (issue 19 item 5): Dice, ASSD and HD95 with known answers."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.spatial.distance import cdist
from skimage.metrics import hausdorff_distance
from skimage.segmentation import find_boundaries

from xaibench.errors import XaibenchError
from xaibench.segmenters.agreement import (
    agreement,
    boundary_distances,
    dice,
    evaluate_agreement,
)


def _points(shape: tuple[int, int], *where: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for y, x in where:
        mask[y, x] = True
    return mask


def test_dice_known_answers() -> None:
    """A 4x4 square against itself shifted by one column: 12 of 16 overlap, Dice 0.75."""
    a = np.zeros((10, 10), bool)
    a[2:6, 2:6] = True
    b = np.roll(a, 1, axis=1)
    assert dice(a, b) == pytest.approx(24 / 32)
    assert dice(a, a) == 1.0
    assert dice(a, np.zeros_like(a)) == 0.0
    assert math.isnan(dice(np.zeros_like(a), np.zeros_like(a)))


def test_boundary_distances_known_answers() -> None:
    """Single pixels: the distance between them; an outlier pixel: mean and percentile."""
    assert boundary_distances(_points((8, 8), (0, 0)), _points((8, 8), (3, 4))) == (5.0, 5.0)
    one = _points((20, 20), (5, 5))
    two = _points((20, 20), (5, 5), (5, 15))
    # one -> two: [0]; two -> one: [0, 10]. ASSD = 10 / 3; HD95 = max(0, 0.95 * 10).
    assd, hd95 = boundary_distances(one, two)
    assert assd == pytest.approx(10 / 3)
    assert hd95 == pytest.approx(9.5)
    assert boundary_distances(one, two, percentile=100)[1] == pytest.approx(10.0)
    assert all(math.isnan(v) for v in boundary_distances(one, np.zeros_like(one)))


def test_identical_masks_agree_perfectly() -> None:
    """Dice 1, both distances 0."""
    rng = np.random.default_rng(0)
    mask = rng.random((32, 32)) > 0.6
    assert agreement(mask, mask) == {"dice": 1.0, "assd": 0.0, "hd95": 0.0}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_distances_match_independent_computations(seed: int) -> None:
    """Hausdorff vs scikit-image; ASSD vs brute-force distances between contour points."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    a = ndimage.binary_opening(rng.random((40, 40)) > 0.55)
    b = ndimage.binary_opening(rng.random((40, 40)) > 0.55)
    ca = find_boundaries(a, mode="inner", connectivity=1)
    cb = find_boundaries(b, mode="inner", connectivity=1)
    hd = boundary_distances(a, b, percentile=100)[1]
    assert hd == pytest.approx(hausdorff_distance(ca, cb))
    d = cdist(np.argwhere(ca), np.argwhere(cb))
    expected = (d.min(axis=1).sum() + d.min(axis=0).sum()) / (d.shape[0] + d.shape[1])
    assert boundary_distances(a, b)[0] == pytest.approx(expected)


def _manifest(folder: Path, n: int = 8) -> Path:
    """Reference spine masks and a segmenter's (shifted on odd rows); lungs identical."""
    (folder / "m").mkdir(parents=True)
    rows = []
    for i in range(n):
        Image.fromarray(np.full((32, 32), 100, np.uint8)).save(folder / f"{i}.png")
        spine = np.zeros((32, 32), bool)
        spine[4 : 20 + i, 14:18] = True
        guess = np.roll(spine, i % 2, axis=1)
        lung = np.zeros((32, 32), bool)
        lung[5:25, 3:12] = True
        row = {"image": f"{i}.png", "patient_id": f"P{i}"}
        for column, mask in (
            ("mask_spine", spine),
            ("mask_spine_xrv", guess),
            ("mask_left_lung", lung),
            ("mask_left_lung_xrv", lung),
        ):
            name = f"m/{i}_{column}.png"
            Image.fromarray(mask.astype(np.uint8) * 255).save(folder / name)
            row[column] = name
        rows.append(row)
    path = folder / "manifest.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_evaluate_agreement_on_a_manifest(tmp_path: Path) -> None:
    """Per-image values, means with intervals that cover them, Dice 1.0 for identical masks."""
    path = _manifest(tmp_path / "data")
    report = evaluate_agreement(
        path,
        {"spine": ("mask_spine", "mask_spine_xrv"), "left_lung": ("mask_left_lung",
                                                                  "mask_left_lung_xrv")},
    )  # fmt: skip
    table = report.table().set_index(["region", "measure"])
    assert table.loc[("left_lung", "dice"), "mean"] == 1.0
    assert table.loc[("left_lung", "hd95"), "mean"] == 0.0
    spine = report.per_image[report.per_image["region"] == "spine"]
    assert len(spine) == 8
    # Even rows identical; odd rows shifted by one column: Dice 2·3w/(2·4w) = 0.75.
    assert list(spine["dice"]) == pytest.approx([1.0, 0.75] * 4)
    row = table.loc[("spine", "dice")]
    assert row["mean"] == pytest.approx(0.875)
    assert row["ci_low"] <= row["mean"] <= row["ci_high"]
    assert row["ci_low"] < row["ci_high"]
    assert row["n"] == 8
    again = evaluate_agreement(path, {"spine": ("mask_spine", "mask_spine_xrv")})
    assert again.rows[0] == report.rows[0]  # seeded bootstrap: the same interval
    lines = report.lines()
    assert any(line.startswith("spine") and "dice" in line for line in lines)
    csv_path = report.to_csv(tmp_path / "agreement.csv")
    assert csv_path.read_text().splitlines()[0] == "region,measure,mean,ci_low,ci_high,n,undefined"


def test_evaluate_agreement_unknown_column(tmp_path: Path) -> None:
    """A column that is not a region column is a one-line error naming it."""
    path = _manifest(tmp_path / "data", n=2)
    with pytest.raises(XaibenchError, match="column 'mask_heart'"):
        evaluate_agreement(path, {"heart": ("mask_heart", "mask_spine_xrv")})
