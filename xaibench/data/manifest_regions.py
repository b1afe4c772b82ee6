"""A manifest's regions: which column gives each, which are derived, and one row's masks.

* **Sources.** Every region has at most one source column, ``<format>_<region>`` with a format of
  :data:`~xaibench.data.region_formats.REGION_PREFIXES` (mask files, COCO RLE, SIIM RLE,
  polygons, boxes). An empty cell means the image has no annotation of the region; a non-empty
  one — a mask file, or an explicit empty annotation such as ``[]`` or SIIM's ``-1`` — means it
  has one (:attr:`RegionSource.annotated`). A column without a single non-empty cell is absent.
* **Derived regions** (:data:`DERIVED_REGIONS`): where the manifest has no column for the
  whole, ``lungs`` is ``left_lung | right_lung``, ``clavicles`` is ``left_clavicle |
  right_clavicle`` and ``bone`` is the union of the :data:`BONE_PARTS` present (a derived
  ``clavicles`` included). A derived region is the union of the parts present, and is annotated
  on an image only where every one of them is (elsewhere its mask is empty). ``heart`` is never
  derived.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from xaibench.data.files import Containment
from xaibench.data.images import ImageReadError, decode_mask
from xaibench.data.region_formats import (
    AnnotationError,
    fit_mask,
    parse_annotation,
    rasterise,
    region_column,
)
from xaibench.data.values import Problem

#: Regions whose union is ``bone`` when a manifest has no ``bone`` column.
BONE_PARTS: tuple[str, ...] = (
    "spine",
    "vertebrae",
    "ribs",
    "clavicles",
    "scapulae",
    "sternum",
    "humeri",
    "pelvis",
    "femurs",
)
#: Derived regions and their parts, in the order they are derived (a part may be derived).
DERIVED_REGIONS: dict[str, tuple[str, ...]] = {
    "lungs": ("left_lung", "right_lung"),
    "clavicles": ("left_clavicle", "right_clavicle"),
    "bone": BONE_PARTS,
}
_REGION_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class RegionSource:
    """The column a region comes from.

    Attributes:
        region: The region's name.
        format: ``mask``, ``rle``, ``siim_rle``, ``polygon`` or ``box``.
        column: The manifest column.
        annotated: Per row, whether the cell is non-empty (the image has an annotation).
        paths: Per row, the mask file's absolute path (``mask`` only; None where empty).
    """

    region: str
    format: str
    column: str
    annotated: np.ndarray
    paths: tuple[Path | None, ...] | None = None


def region_columns(columns: list[str]) -> tuple[dict[str, tuple[str, str]], list[Problem]]:
    """Region -> ``(format, column)`` of a manifest's columns, and the header's problems.

    Problems: a region name that is not lower-case letters, digits and ``_``, and two source
    columns for one region.
    """
    found: dict[str, tuple[str, str]] = {}
    problems: list[Problem] = []
    for column in columns:
        parsed = region_column(column)
        if parsed is None:
            continue
        fmt, region = parsed
        if not _REGION_NAME.match(region):
            prefix = column[: len(column) - len(region)]
            problems.append(
                Problem(
                    None,
                    column,
                    f"region names after {prefix!r} must start with a lower-case letter and "
                    "hold only lower-case letters, digits and '_'",
                )
            )
        elif region in found:
            problems.append(
                Problem(
                    None,
                    column,
                    f"region {region!r} already comes from column {found[region][1]!r}; give "
                    "one source column per region",
                )
            )
        else:
            found[region] = (fmt, column)
    return found, problems


def region_sources(
    frame: pd.DataFrame, columns: dict[str, tuple[str, str]], files: Containment
) -> tuple[dict[str, RegionSource], list[Problem]]:
    """Read each region column's cells: mask paths checked, annotations parsed (no image).

    Args:
        frame: The manifest as stripped strings.
        columns: :func:`region_columns`' result.
        files: Containment of the image root, for mask paths.

    Returns:
        The sources (every region column, annotated or not) and the problems, by row.
    """
    sources: dict[str, RegionSource] = {}
    problems: list[Problem] = []
    for region, (fmt, column) in columns.items():
        cells = frame[column]
        annotated = (cells != "").to_numpy(dtype=bool)
        paths: tuple[Path | None, ...] | None = None
        if fmt == "mask":
            paths = tuple(files.path(v) if v else None for v in cells)
        for i in np.flatnonzero(annotated):
            cell = str(cells.iat[i])
            if fmt == "mask":
                problem = files.problem(cell)
            else:
                try:
                    parse_annotation(fmt, cell)
                    problem = None
                except AnnotationError as exc:
                    problem = str(exc)
            if problem is not None:
                problems.append(Problem(int(i) + 1, column, problem))
        sources[region] = RegionSource(region, fmt, column, annotated, paths)
    return sources, problems


def region_layout(
    sources: dict[str, RegionSource],
) -> tuple[tuple[str, ...], dict[str, tuple[str, ...]]]:
    """Region names (``bone`` first, then the given ones, then other derived) and derivations.

    Returns:
        The names and ``{derived region: parts}`` (parts in the order they are given).
    """
    given = [r for r, s in sources.items() if s.annotated.any()]
    present = set(given)
    groups: dict[str, tuple[str, ...]] = {}
    for whole, parts in DERIVED_REGIONS.items():
        if whole in present:
            continue
        have = tuple(p for p in (*given, *groups) if p in parts)
        if have:
            groups[whole] = have
            present.add(whole)
    names = [*given, *(r for r in groups if r != "bone")]
    if "bone" in present:
        names = ["bone", *(r for r in names if r != "bone")]
    return tuple(names), groups


def region_annotated(
    sources: dict[str, RegionSource], groups: dict[str, tuple[str, ...]], region: str
) -> np.ndarray:
    """Per row, whether ``region`` is annotated (a derived one: every part is)."""
    if region in groups:
        flags = np.ones(len(next(iter(sources.values())).annotated), dtype=bool)
        for part in groups[region]:
            flags &= region_annotated(sources, groups, part)
        return flags
    return sources[region].annotated.copy()


def decode_region(
    source: RegionSource,
    cell: str,
    shape: tuple[int, int],
    read: Callable[[], bytes],
    max_pixels: int,
    name: str | None = None,
) -> np.ndarray:
    """One row's mask of a given region on its image's native grid (``shape``).

    Args:
        source: The region's column.
        cell: The row's (non-empty) cell.
        shape: The image's native size.
        read: Reads the mask file's bytes (``mask`` format; checked on its descriptor).
        max_pixels: Pixel budget of a mask file.
        name: The mask file's name in messages (default: the cell).

    Raises:
        AnnotationError: The mask or annotation cannot be read or does not fit the image.
        FileRefusedError: The mask file may not be read.
    """
    if source.format != "mask":
        return rasterise(parse_annotation(source.format, cell), shape)
    name = name or cell
    try:
        mask = decode_mask(read(), name, max_pixels=max_pixels)
    except ImageReadError as exc:
        raise AnnotationError(str(exc)) from None
    fitted = fit_mask(mask, shape)
    if fitted is None:
        raise AnnotationError(
            f"{name}: mask is {mask.shape[0]}x{mask.shape[1]} pixels but its image is "
            f"{shape[0]}x{shape[1]}; masks must be on the image's pixel grid (or an exact "
            "integer fraction of it, upsampled)"
        )
    return fitted


def derive(
    masks: dict[str, np.ndarray],
    annotated: dict[str, bool],
    groups: dict[str, tuple[str, ...]],
    shape: tuple[int, int],
) -> None:
    """Add each derived region's mask to ``masks``, in place.

    A derived mask is the union of its parts where every part is annotated, else empty;
    ``annotated`` gains the derived regions' flags.
    """
    for whole, parts in groups.items():
        flag = all(annotated[p] for p in parts)
        mask = np.zeros(shape, dtype=bool)
        if flag:
            for part in parts:
                mask |= masks[part]
        masks[whole] = mask
        annotated[whole] = flag


#: The manifest column listing, per image, regions excluded from explanation scoring.
QC_EXCLUDE_COLUMN = "qc_exclude"


def parse_exclusions(cell: str) -> dict[str, str]:
    """A ``qc_exclude`` cell as region -> reason.

    The cell lists ``region: reason`` pairs separated by ``;`` (``left_lung: empty mask;
    spine: 7 components``); an empty cell excludes nothing.

    Raises:
        ValueError: A pair without ``:``, an empty region or reason, or a region twice.
    """
    out: dict[str, str] = {}
    for part in cell.split(";"):
        if not part.strip():
            continue
        region, sep, reason = part.partition(":")
        region, reason = region.strip().lower(), reason.strip()
        if not sep or not region or not reason:
            raise ValueError(
                f"{part.strip()!r} is not 'region: reason' (pairs are separated by ';')"
            )
        if not _REGION_NAME.match(region):
            raise ValueError(f"{region!r} is not a region name")
        if region in out:
            raise ValueError(f"region {region!r} is listed twice")
        out[region] = reason
    return out


def exclusion_sources(
    frame: pd.DataFrame, known: set[str]
) -> tuple[dict[str, dict[int, str]], list[Problem]]:
    """The ``qc_exclude`` column read: region -> {0-based row: reason}, and its problems.

    ``known`` holds the region names a manifest may exclude (its region columns' and the
    derivable ones); a name outside it is a problem (a typo would silently exclude nothing).
    """
    out: dict[str, dict[int, str]] = {}
    problems: list[Problem] = []
    if QC_EXCLUDE_COLUMN not in frame.columns:
        return out, problems
    for i, cell in enumerate(frame[QC_EXCLUDE_COLUMN]):
        try:
            pairs = parse_exclusions(str(cell))
        except ValueError as exc:
            problems.append(Problem(i + 1, QC_EXCLUDE_COLUMN, str(exc)))
            continue
        for region, reason in pairs.items():
            if region not in known:
                problems.append(
                    Problem(
                        i + 1,
                        QC_EXCLUDE_COLUMN,
                        f"region {region!r} has no column in the manifest (regions: "
                        f"{', '.join(sorted(known)) or 'none'})",
                    )
                )
                continue
            out.setdefault(region, {})[i] = reason
    return out, problems
