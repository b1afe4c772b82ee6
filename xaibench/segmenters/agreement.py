"""Segmentation agreement: how close a segmenter's masks are to reference masks, per region.

Before trusting Δ_bone on a segmenter's bone masks, a user with some reference masks (the
phantom's, DRR's, JSRT/SCR's, their own) measures how well the segmenter reproduces them on
their images: ``xaibench data masks --evaluate`` calls :func:`evaluate_agreement`.

Per image and region, on the images' native pixel grid:

* **Dice** ``2|A ∩ B| / (|A| + |B|)``, in [0, 1]; undefined (NaN) when both masks are empty.
* **Boundary distances** between the masks' contours, in **pixels** (of the native grid; a
  cohort from detectors of different pixel sizes mixes scales, so compare like with like). A
  contour is a mask's pixels with a 4-neighbour outside it (the mask minus its erosion by
  the cross); the distance of a contour pixel to the other contour is read from
  :func:`scipy.ndimage.distance_transform_edt` (exact Euclidean distance).

  - **ASSD**, the average symmetric surface distance: the mean of both contours' distances to
    the other, pooled (``(Σ d(a, B) + Σ d(b, A)) / (|∂A| + |∂B|)``).
  - **HD95**, the 95th-percentile Hausdorff distance: the larger of the two directed 95th
    percentiles (MONAI's ``compute_hausdorff_distance(percentile=95)`` convention), robust
    to a few stray pixels where the plain Hausdorff distance (the maximum) is not.

  Both are undefined (NaN) when either mask is empty (Dice is then 0 unless both are).

Undefined values are left out of the mean and counted. The mean of each measure comes with a
percentile-bootstrap interval over images (:func:`xaibench.stats.intervals.bootstrap_mean_ci`,
seeded, 2000 resamples, 95% by default), like every per-image score of xaibench.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from xaibench.progress import Progress

#: The measures, in report order.
AGREEMENT_MEASURES: tuple[str, ...] = ("dice", "assd", "hd95")


def dice(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Dice coefficient of two boolean masks; NaN when both are empty."""
    a, b = np.asarray(reference, dtype=bool), np.asarray(candidate, dtype=bool)
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return math.nan
    return 2.0 * int(np.logical_and(a, b).sum()) / total


def _contour(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def surface_distances(
    reference: np.ndarray, candidate: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Distances (pixels) of each contour pixel of one mask to the other mask's contour.

    Returns:
        ``(reference -> candidate, candidate -> reference)``; empty arrays when either mask is
        empty.
    """
    from scipy import ndimage

    a, b = np.asarray(reference, dtype=bool), np.asarray(candidate, dtype=bool)
    if not a.any() or not b.any():
        return np.zeros(0), np.zeros(0)
    ca, cb = _contour(a), _contour(b)
    to_b = ndimage.distance_transform_edt(~cb)
    to_a = ndimage.distance_transform_edt(~ca)
    return np.asarray(to_b[ca], dtype=float), np.asarray(to_a[cb], dtype=float)


def boundary_distances(
    reference: np.ndarray, candidate: np.ndarray, *, percentile: float = 95.0
) -> tuple[float, float]:
    """``(ASSD, HD at percentile)`` in pixels; NaN when either mask is empty.

    ``percentile=100`` gives the Hausdorff distance.
    """
    ab, ba = surface_distances(reference, candidate)
    if not len(ab):
        return math.nan, math.nan
    assd = float((ab.sum() + ba.sum()) / (len(ab) + len(ba)))
    hd = max(float(np.percentile(ab, percentile)), float(np.percentile(ba, percentile)))
    return assd, hd


def agreement(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Dice, ASSD and HD95 of one image's pair of masks."""
    assd, hd95 = boundary_distances(reference, candidate)
    return {"dice": dice(reference, candidate), "assd": assd, "hd95": hd95}


@dataclass(frozen=True)
class AgreementRow:
    """The mean of one measure of one region over images.

    Attributes:
        region: The label of the pair (the region).
        measure: ``dice``, ``assd`` or ``hd95``.
        mean: The mean over images where it is defined (NaN when none).
        ci_low: Lower end of the bootstrap interval (NaN with fewer than 2 values).
        ci_high: Upper end.
        n: Images where it is defined.
        undefined: Images compared where it is not (empty masks).
    """

    region: str
    measure: str
    mean: float
    ci_low: float
    ci_high: float
    n: int
    undefined: int


@dataclass
class AgreementReport:
    """Agreement per image and its summary per region.

    Attributes:
        per_image: One row per compared image and region: ``sample_id``, ``region``, ``dice``,
            ``assd``, ``hd95``.
        rows: The summary, one row per region and measure.
        pairs: Region -> ``(reference column, segmenter column)``.
        level: Confidence level of the intervals.
    """

    per_image: pd.DataFrame
    rows: list[AgreementRow]
    pairs: dict[str, tuple[str, str]]
    level: float

    def table(self) -> pd.DataFrame:
        """The summary as a table (``region, measure, mean, ci_low, ci_high, n, undefined``)."""
        import pandas as pd

        return pd.DataFrame(
            [vars(r) for r in self.rows],
            columns=["region", "measure", "mean", "ci_low", "ci_high", "n", "undefined"],
        )

    def lines(self) -> list[str]:
        """The summary as aligned text lines (Dice unitless, distances in pixels)."""
        from xaibench.data.values import printable

        out = [f"{'region':<16} {'measure':<10} {'mean':>8}  {f'{self.level:.0%} CI':<20} {'n':>6}"]
        for r in self.rows:
            name = r.measure if r.measure == "dice" else f"{r.measure} px"
            ci = f"[{r.ci_low:.3f}, {r.ci_high:.3f}]" if not math.isnan(r.ci_low) else "(n < 2)"
            extra = f"  ({r.undefined} undefined)" if r.undefined else ""
            out.append(
                printable(f"{r.region:<16} {name:<10} {r.mean:>8.3f}  {ci:<20} {r.n:>6}{extra}")
            )
        return out

    def to_csv(self, path: str | Path) -> Path:
        """Write the summary table as CSV (cells escaped, :mod:`xaibench.escape`)."""
        from xaibench.escape import to_csv

        out = Path(path)
        out.write_text(to_csv(self.table()), encoding="utf-8")
        return out


def summarise(
    per_image: pd.DataFrame,
    regions: Sequence[str],
    *,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> list[AgreementRow]:
    """Mean and bootstrap interval of each measure per region (NaN values left out)."""
    from xaibench.stats.intervals import bootstrap_mean_ci

    rows: list[AgreementRow] = []
    for region in regions:
        part = per_image[per_image["region"] == region]
        for name in AGREEMENT_MEASURES:
            values = part[name].to_numpy(dtype=float)
            defined = values[~np.isnan(values)]
            mean = float(defined.mean()) if len(defined) else math.nan
            low = high = math.nan
            if len(defined) >= 2:
                low, high = bootstrap_mean_ci(defined, resamples=resamples, level=level, seed=seed)
            rows.append(
                AgreementRow(
                    region, name, mean, low, high, len(defined), len(values) - len(defined)
                )
            )
    return rows


def evaluate_agreement(
    manifest: str | Path,
    pairs: Mapping[str, tuple[str, str]],
    *,
    image_root: str | Path | None = None,
    allow_outside_paths: bool = False,
    progress: Progress | None = None,
    image_size: int | None = None,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> AgreementReport:
    """Compare a manifest's segmenter masks with its reference masks, per region.

    Args:
        manifest: The manifest CSV.
        pairs: Label (usually the region) -> ``(reference column, segmenter column)``, each a
            region source column of the manifest (``mask_spine``, ``rle_spine``, ...).
        image_root: The folder its paths are relative to (default the CSV's).
        allow_outside_paths: As for :class:`~xaibench.data.manifest.ManifestDataset`.
        progress: Shows progress over the rows.
        image_size: The grid masks are compared on; None (default) keeps each image's native
            grid, so distances are in the image's own pixels.
        resamples: Bootstrap resamples.
        level: Confidence level.
        seed: Seed of the bootstrap.

    Only images where both columns of a pair are annotated are compared (``qc_exclude`` is
    ignored: agreement judges the segmenter, not the scoring).

    Raises:
        XaibenchError: A column is not a region column of the manifest.
        ManifestError: The manifest has problems.
    """
    import pandas as pd

    from xaibench.data.region_formats import region_column
    from xaibench.errors import XaibenchError
    from xaibench.progress import NullProgress
    from xaibench.segmenters.quality_files import all_rows

    dataset = all_rows(
        manifest,
        image_root=image_root,
        allow_outside_paths=allow_outside_paths,
        image_size=image_size,
    )
    regions: dict[str, tuple[str, str]] = {}
    for label, columns in pairs.items():
        names = []
        for column in columns:
            parsed = region_column(column.strip().lower())
            if parsed is None or parsed[1] not in dataset.region_names:
                raise XaibenchError(
                    f"--evaluate: column {column!r} is not a region column with annotations "
                    f"in manifest {manifest} (regions: {', '.join(dataset.region_names)})"
                )
            names.append(parsed[1])
        regions[label] = (names[0], names[1])
    both = {
        label: dataset.annotated(ref) & dataset.annotated(seg)
        for label, (ref, seg) in regions.items()
    }
    records: list[dict[str, object]] = []
    progress = progress or NullProgress()
    for i in progress.track(range(len(dataset)), total=len(dataset), description="agreement"):
        if not any(flags[i] for flags in both.values()):
            continue
        sample = dataset[i]
        for label, (ref, seg) in regions.items():
            if not both[label][i]:
                continue
            values = agreement(sample.regions[ref].numpy(), sample.regions[seg].numpy())
            records.append({"sample_id": sample.sample_id, "region": label, **values})
    per_image = pd.DataFrame(records, columns=["sample_id", "region", *AGREEMENT_MEASURES])
    rows = summarise(per_image, list(regions), resamples=resamples, level=level, seed=seed)
    return AgreementReport(per_image, rows, dict(pairs), level)
