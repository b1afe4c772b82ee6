"""Mask quality control: find the images whose anatomy masks look wrong, by row.

A segmenter that fails on one radiograph in fifty (a lung missed under an effusion, a spine
broken into pieces, a mask mirrored) silently corrupts Δ and IoU for that image. Quality control
measures every anatomy mask of a cohort and lists the images outside plausible ranges, with
their 1-based CSV data rows, so a person can look at them (:func:`contact_sheet`) and exclude
them from explanation scoring (the ``qc_exclude`` manifest column, :mod:`xaibench.data.manifest`).

**Measures** (:func:`measure`), per image and region:

* ``area_fraction``: the share of the image the mask covers.
* ``components``: connected components, :func:`scipy.ndimage.label` with **8-connectivity**
  (a 3x3 structuring element), so a diagonal pixel bridge does not split a structure.
* ``lr_balance`` of a paired structure (:data:`PAIRS`: lungs, clavicles, scapulae), recorded
  under the pair's name (``lungs``): the left structure's share of the pair's area,
  ``left / (left + right)``, in [0, 1] (0.5: equal sizes). A share rather than the ratio
  ``left / right`` so it stays finite when one side is missing (which the empty rule reports).
* ``centroid_x``, ``centroid_y``: the mask's centroid in the lungs' bounding box (0 at its
  left or top edge, 1 at its right or bottom edge; outside the box below 0 or above 1). The
  lungs are the ``lungs`` mask, else ``left_lung | right_lung``; where ``left_lung`` or
  ``right_lung`` is given but empty, the box is no reference and the centroids are undefined.
* ``side``: the centroid's signed horizontal distance from the body's midline, in lung-box
  widths, positive towards the image's right. The midline is the spine's centroid column when
  a spine mask is present, else the centre of the lungs' box, else the image's centre column.

**Side convention.** xaibench follows the radiological convention for frontal (PA or AP) chest
films: the patient's **left is on the image's right** (the phantom's ``x`` axis points to the
image right, the patient's left: :mod:`xaibench.data.phantom_anatomy`). A ``left_*`` structure
must therefore have ``side > 0`` and a ``right_*`` one ``side < 0``; an image that breaks this
is flagged whatever the cohort (a mirrored mask or a flipped film). The heart is not held to a
side absolutely (dextrocardia exists); the cohort rule flags it when it is unusual.

**Rules** (:func:`quality_flags`):

* Absolute, always: an annotated anatomy mask that is empty; a left or right structure on the
  wrong side of the midline.
* Relative to the cohort, when at least :data:`MIN_COHORT` images have a value of that region
  and measure: a value outside ``median ± max(k · MAD, floor)``, where MAD is the median
  absolute deviation scaled by :data:`MAD_SCALE` (1.4826, so it estimates the standard
  deviation of normal data) and ``k`` defaults to :data:`DEFAULT_K` (3.5, Iglewicz and
  Hoaglin's cut-off for modified z-scores). The floor (:data:`FLOORS`) is the narrowest
  half-width of a range, so a cohort that agrees almost exactly (MAD near 0: every spine one
  component) does not flag every small deviation; ranges are clipped to the values a measure
  can take (``components`` from 1). The median and MAD are robust: up to half
  the cohort can be faulty without moving them much. On an image whose lung has an absolute
  flag (empty, wrong side), other regions' positions are not flagged: they are measured in the
  lungs' box, so they only echo the lung's fault.

**Grid.** :func:`run_quality` reads the masks through :class:`~xaibench.data.manifest.
ManifestDataset` at ``image_size`` (default 256, the run's default grid), which is what a run
scores and what makes cohorts of mixed detector sizes comparable; every measure but
``components`` is a ratio and hardly depends on the grid, and a fragment smaller than a grid
pixel is not counted. Exclusions in ``qc_exclude`` are ignored while measuring, so a
re-check still shows the excluded images.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from xaibench.data.values import printable
from xaibench.segmenters.quality_files import all_rows, contact_sheet, write_exclusions

if TYPE_CHECKING:
    import pandas as pd

    from xaibench.progress import Progress

#: Default ``k`` of the cohort ranges ``median ± k · MAD``.
DEFAULT_K = 3.5
#: Scales the MAD to estimate a normal distribution's standard deviation.
MAD_SCALE = 1.4826
#: Fewer images with a value than this and only the absolute rules apply (a median of a handful
#: of images is no reference).
MIN_COHORT = 10
#: Narrowest half-width of a cohort range per measure; ``area_fraction``'s is relative to the
#: median (30% of it), the others are absolute.
FLOORS: dict[str, float] = {
    "area_fraction": 0.3,
    "components": 2.0,
    "lr_balance": 0.1,
    "centroid_x": 0.1,
    "centroid_y": 0.1,
    "side": 0.1,
}
#: Paired structures: the pair's name -> (patient's left, patient's right).
PAIRS: dict[str, tuple[str, str]] = {
    "lungs": ("left_lung", "right_lung"),
    "clavicles": ("left_clavicle", "right_clavicle"),
    "scapulae": ("left_scapula", "right_scapula"),
}
#: Regions :func:`run_quality` measures by default: anatomy, whose masks every image should
#: have (finding regions such as a nodule's box are legitimately empty or anywhere).
ANATOMY_REGIONS: tuple[str, ...] = (
    "lungs",
    "left_lung",
    "right_lung",
    "heart",
    "spine",
    "ribs",
    "clavicles",
    "left_clavicle",
    "right_clavicle",
    "scapulae",
    "left_scapula",
    "right_scapula",
    "sternum",
    "bone",
    "mediastinum",
    "trachea",
    "aorta",
)
__all__ = [
    "ANATOMY_REGIONS",
    "DEFAULT_K",
    "FLOORS",
    "MAD_SCALE",
    "MEASURES",
    "MIN_COHORT",
    "PAIRS",
    "QualityFlag",
    "QualityReport",
    "contact_sheet",
    "measure",
    "quality_flags",
    "run_quality",
    "write_exclusions",
]

#: The measures, in report order.
MEASURES: tuple[str, ...] = (
    "area_fraction",
    "components",
    "lr_balance",
    "centroid_x",
    "centroid_y",
    "side",
)
_EIGHT = np.ones((3, 3), dtype=bool)
#: Values a measure can take; cohort ranges are clipped to them (a range of components never
#: starts below 1: no component is the empty rule's).
_DOMAINS: dict[str, tuple[float, float]] = {
    "area_fraction": (0.0, 1.0),
    "components": (1.0, math.inf),
    "lr_balance": (0.0, 1.0),
}
_LUNGS = frozenset({"lungs", "left_lung", "right_lung"})
_POSITIONS = frozenset({"centroid_x", "centroid_y", "side"})


@dataclass(frozen=True)
class QualityFlag:
    """One implausible value of one image's region.

    Attributes:
        row: 1-based CSV data row.
        sample_id: The row's sample id (``row00003``).
        region: The region.
        measure: One of :data:`MEASURES`.
        value: The image's value.
        low: Lower end of the plausible range (``-inf`` when open).
        high: Upper end (``inf`` when open).
        reason: One line for a person.
    """

    row: int
    sample_id: str
    region: str
    measure: str
    value: float
    low: float
    high: float
    reason: str

    @property
    def range(self) -> tuple[float, float]:
        """``(low, high)``."""
        return (self.low, self.high)

    def line(self) -> str:
        """``row 3 (left_lung): area_fraction 0 outside [...]: the mask is empty``."""
        return printable(f"row {self.row} ({self.region}, {self.measure}): {self.reason}")


@dataclass
class QualityReport:
    """Measures and flags of a cohort.

    Attributes:
        sample_ids: Per row, the sample id.
        measures: Per row, :func:`measure`'s result.
        flags: Every flag, by row.
        k: The ``k`` used.
        regions: The regions measured.
        relative: Whether the cohort rules applied (enough images).
        contact_sheet: The contact sheet written, if any.
    """

    sample_ids: list[str]
    measures: list[dict[str, dict[str, float]]]
    flags: list[QualityFlag]
    k: float
    regions: tuple[str, ...]
    relative: bool
    contact_sheet: Path | None = None

    @property
    def flagged_rows(self) -> list[int]:
        """The 1-based rows with at least one flag, ascending."""
        return sorted({f.row for f in self.flags})

    def exclusions(self) -> dict[int, str]:
        """Row -> a ``qc_exclude`` cell (``region: reason; ...``) for every flagged row.

        One entry per flagged region (its first flag's reason), ``;`` and ``:`` in reasons
        replaced so the cell parses back.
        """
        cells: dict[int, dict[str, str]] = {}
        for f in self.flags:
            reason = f"QC {f.measure}: {f.reason}".replace(";", ",").replace(":", " -")
            cells.setdefault(f.row, {}).setdefault(f.region, reason)
        return {
            row: "; ".join(f"{region}: {reason}" for region, reason in regions.items())
            for row, regions in sorted(cells.items())
        }

    def summary(self) -> dict[str, object]:
        """JSON-able summary for a sidecar (``manifest.json``'s ``qc``): settings and counts.

        Rows are 1-based CSV data rows; no file name or patient id.
        """
        per_region: dict[str, int] = {}
        for f in self.flags:
            per_region[f.region] = per_region.get(f.region, 0) + 1
        return {
            "k": self.k,
            "mad_scale": MAD_SCALE,
            "min_cohort": MIN_COHORT,
            "cohort_ranges": self.relative,
            "regions": list(self.regions),
            "images": len(self.sample_ids),
            "flags": len(self.flags),
            "flags_per_region": dict(sorted(per_region.items())),
            "flagged_rows": self.flagged_rows,
        }

    def table(self) -> pd.DataFrame:
        """The flags as a table (``row, sample_id, region, measure, value, low, high, reason``)."""
        import pandas as pd

        return pd.DataFrame(
            [
                {
                    "row": f.row,
                    "sample_id": f.sample_id,
                    "region": f.region,
                    "measure": f.measure,
                    "value": f.value,
                    "low": f.low,
                    "high": f.high,
                    "reason": f.reason,
                }
                for f in self.flags
            ],
            columns=["row", "sample_id", "region", "measure", "value", "low", "high", "reason"],
        )

    def lines(self) -> list[str]:
        """One printable line per flag, then a summary line."""
        out = [f.line() for f in self.flags]
        rows = self.flagged_rows
        scope = "" if self.relative else f" (cohort ranges need {MIN_COHORT} images)"
        out.append(
            f"quality: {len(self.flags)} flag{'s' if len(self.flags) != 1 else ''} on "
            f"{len(rows)} of {len(self.sample_ids)} images{scope}"
        )
        return out


def _bbox(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """``(x0, y0, x1, y1)`` of ``mask``'s pixels (pixel centres), or None when empty."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return None
    return float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())


def measure(masks: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Every measure of one image's region masks (boolean ``[H, W]``, one grid).

    Pass only the regions annotated on the image: an empty mask is taken as a fault.

    Returns:
        Region -> measure -> value; NaN where a measure is undefined (the centroid of an empty
        mask, a position without lungs). Pairs get ``lr_balance`` under the pair's name.
    """
    arrays = {r: np.asarray(m, dtype=bool) for r, m in masks.items()}
    if not arrays:
        return {}
    shape = next(iter(arrays.values())).shape
    lungs = arrays.get("lungs")
    if lungs is None and "left_lung" in arrays and "right_lung" in arrays:
        lungs = arrays["left_lung"] | arrays["right_lung"]
    box = _bbox(lungs) if lungs is not None else None
    if any(p in arrays and not arrays[p].any() for p in PAIRS["lungs"]):
        box = None  # one lung missing: its partner's box is no reference for positions
    spine = arrays.get("spine")
    if spine is not None and spine.any():
        midline = float(np.nonzero(spine)[1].mean())
    elif box is not None:
        midline = (box[0] + box[2]) / 2.0
    else:
        midline = (shape[1] - 1) / 2.0
    width = max(box[2] - box[0], 1.0) if box is not None else float(shape[1])
    height = max(box[3] - box[1], 1.0) if box is not None else float(shape[0])
    out: dict[str, dict[str, float]] = {}
    for region, mask in arrays.items():
        _, count = _label(mask)
        values = {"area_fraction": float(mask.mean()), "components": float(count)}
        ys, xs = np.nonzero(mask)
        cx = float(xs.mean()) if len(xs) else math.nan
        cy = float(ys.mean()) if len(ys) else math.nan
        values["side"] = (cx - midline) / width
        if box is not None:
            values["centroid_x"] = (cx - box[0]) / width
            values["centroid_y"] = (cy - box[1]) / height
        out[region] = values
    for pair, (left, right) in PAIRS.items():
        if left in arrays and right in arrays:
            a, b = float(arrays[left].sum()), float(arrays[right].sum())
            out.setdefault(pair, {})["lr_balance"] = a / (a + b) if a + b else math.nan
    return out


def _label(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components of ``mask`` with 8-connectivity (:func:`scipy.ndimage.label`)."""
    from scipy import ndimage

    labels, count = ndimage.label(mask, structure=_EIGHT)
    return labels, int(count)


def _side(region: str) -> int:
    """+1 for a patient's-left structure (image right), -1 for a right one, 0 otherwise."""
    if region.startswith("left_"):
        return 1
    if region.startswith("right_"):
        return -1
    return 0


def quality_flags(
    measures: Sequence[Mapping[str, Mapping[str, float]]],
    *,
    k: float = DEFAULT_K,
    min_cohort: int = MIN_COHORT,
    sample_ids: Sequence[str] | None = None,
) -> list[QualityFlag]:
    """Flags of a cohort's measures (one :func:`measure` result per row, in row order).

    Args:
        measures: Per image, region -> measure -> value.
        k: Half-width of the cohort ranges in scaled MADs.
        min_cohort: Fewest values of a region's measure for its cohort range to apply.
        sample_ids: Per image, its sample id (default ``row00001``, ...).

    Returns:
        The flags, by row, region and measure.
    """
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    ids = (
        list(sample_ids)
        if sample_ids is not None
        else [f"row{i + 1:05d}" for i in range(len(measures))]
    )
    flags: list[QualityFlag] = []
    absolute: set[tuple[int, str]] = set()
    for i, image in enumerate(measures):
        for region, found in image.items():
            area = found.get("area_fraction")
            if area is not None and area == 0:
                absolute.add((i, region))
                flags.append(
                    QualityFlag(i + 1, ids[i], region, "area_fraction", 0.0, 0.0, math.inf,
                                "the mask is empty (no pixel) although the region is annotated")
                )  # fmt: skip
                continue
            side = _side(region)
            value = found.get("side", math.nan)
            if side and not math.isnan(value) and side * value <= 0:
                absolute.add((i, region))
                where = "right" if side > 0 else "left"
                flags.append(
                    QualityFlag(
                        i + 1, ids[i], region, "side", value,
                        0.0 if side > 0 else -math.inf, math.inf if side > 0 else 0.0,
                        f"a patient's-{region.split('_')[0]} structure must lie on the image's "
                        f"{where} of the midline (radiological convention); is the mask or the "
                        "film mirrored?",
                    )
                )  # fmt: skip
    # Positions are measured in the lungs' box: where a lung is empty or mirrored, the other
    # regions' positions are consequences of that one fault, not faults of their own.
    lung_fault = {i for i, region in absolute if region in _LUNGS}
    regions = sorted({r for image in measures for r in image})
    for region in regions:
        for name in MEASURES:
            column = np.array(
                [image.get(region, {}).get(name, math.nan) for image in measures], dtype=float
            )
            rows = [
                int(i) for i in np.flatnonzero(~np.isnan(column)) if (i, region) not in absolute
            ]
            if len(rows) < min_cohort:
                continue
            cohort = column[rows]
            median = float(np.median(cohort))
            mad = MAD_SCALE * float(np.median(np.abs(cohort - median)))
            floor = FLOORS[name] * (abs(median) if name == "area_fraction" else 1.0)
            half = max(k * mad, floor)
            bottom, top = _DOMAINS.get(name, (-math.inf, math.inf))
            low, high = max(median - half, bottom), min(median + half, top)
            for i in rows:
                value = float(column[i])
                if low <= value <= high:
                    continue
                if name in _POSITIONS and i in lung_fault and region not in _LUNGS:
                    continue
                flags.append(
                    QualityFlag(
                        int(i) + 1, ids[i], region, name, value, low, high,
                        f"{name} {value:.4g} outside the cohort's range [{low:.4g}, {high:.4g}] "
                        f"(median {median:.4g} ± max({k:g}·MAD, {floor:.3g}))",
                    )
                )  # fmt: skip
    flags.sort(key=lambda f: (f.row, f.region, MEASURES.index(f.measure)))
    return flags


def _worst(report_flags: Sequence[QualityFlag], n: int) -> list[int]:
    """The 0-based rows with the most flags (ties: by row), at most ``n``."""
    counts: dict[int, int] = {}
    for f in report_flags:
        counts[f.row - 1] = counts.get(f.row - 1, 0) + 1
    return sorted(counts, key=lambda i: (-counts[i], i))[:n]


def run_quality(
    manifest: str | Path,
    *,
    image_root: str | Path | None = None,
    allow_outside_paths: bool = False,
    progress: Progress | None = None,
    k: float = DEFAULT_K,
    regions: Sequence[str] | None = None,
    image_size: int | None = 256,
    sheet: str | Path | None = None,
    worst: int = 16,
) -> QualityReport:
    """Measure a manifest's anatomy masks, flag implausible ones, optionally draw a sheet.

    Args:
        manifest: The manifest CSV.
        image_root: The folder its paths are relative to (default the CSV's).
        allow_outside_paths: As for :class:`~xaibench.data.manifest.ManifestDataset`.
        progress: Shows progress over the rows.
        k: Half-width of the cohort ranges in scaled MADs (:data:`DEFAULT_K`).
        regions: Regions to measure (default: the manifest's regions in
            :data:`ANATOMY_REGIONS`).
        image_size: The grid masks are measured on (default 256; None: native, every image
            the same size).
        sheet: Write the contact sheet of the worst images here (a PNG), when flags exist.
        worst: At most this many images on the sheet.

    Raises:
        ManifestError: The manifest has problems (``xaibench data check`` lists them).
        XaibenchError: An image or mask cannot be read, or a region is unknown.
    """
    from xaibench.errors import XaibenchError
    from xaibench.progress import NullProgress

    dataset = all_rows(
        manifest,
        image_root=image_root,
        allow_outside_paths=allow_outside_paths,
        image_size=image_size,
    )
    available = dataset.region_names
    if regions is None:
        chosen = tuple(r for r in available if r in ANATOMY_REGIONS)
    else:
        unknown = [r for r in regions if r not in available]
        if unknown:
            raise XaibenchError(
                f"quality control: region {unknown[0]!r} is not in manifest {manifest} "
                f"(it has: {', '.join(available) or 'none'})"
            )
        chosen = tuple(regions)
    annotated = {r: dataset.annotated(r) for r in chosen}
    progress = progress or NullProgress()
    ids: list[str] = []
    measures: list[dict[str, dict[str, float]]] = []
    for i in progress.track(range(len(dataset)), total=len(dataset), description="mask quality"):
        sample = dataset[i]
        ids.append(sample.sample_id)
        masks = {r: sample.regions[r].numpy() for r in chosen if annotated[r][i]}
        measures.append(measure(masks))
    flags = quality_flags(measures, k=k, sample_ids=ids)
    counts = [
        sum(
            1
            for image in measures
            if not math.isnan(image.get(r, {}).get("area_fraction", math.nan))
        )
        for r in chosen
    ]
    report = QualityReport(
        sample_ids=ids,
        measures=measures,
        flags=flags,
        k=k,
        regions=chosen,
        relative=bool(counts) and max(counts) >= MIN_COHORT,
    )
    if sheet is not None and flags:
        rows = _worst(flags, worst)
        images, tiles, captions = [], [], []
        for i in rows:
            sample = dataset[i]
            images.append(sample.image[0].numpy())
            # Derived wholes (lungs, bone) would hide their parts' outlines: parts only.
            drawn = [r for r in chosen if annotated[r][i] and r not in dataset.region_groups]
            tiles.append({r: sample.regions[r].numpy() for r in drawn})
            named = sorted({f.region for f in flags if f.row == i + 1})
            captions.append(f"{sample.sample_id}: {', '.join(named)}")
        report.contact_sheet = contact_sheet(images, tiles, captions, sheet)
    return report
