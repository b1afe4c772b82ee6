"""Reading and checking a manifest: the CSV that describes a user's own images.

A manifest is a CSV with one row per image (the format is documented in ``docs/data.md``)::

    image,patient_id,t_score,split,mask_spine,box_nodule,age
    images/0001.dcm,P1,-2.7,train,masks/0001_spine.png,"[[10, 20, 30, 40]]",71

The manifest knows no class: label columns (``t_score``, ``label``, one column per finding) are
metadata here, and the task reads and checks them (``Task.labels``).

Checking is split in two because reading 20,000 radiographs takes minutes:

* :func:`read_manifest` does the **cheap** checks — the CSV parses (strictly, see
  :mod:`xaibench.data.csvtext`), required columns exist, every path stays inside the manifest's
  folder (or the ``image_root`` given) and names a regular file with one link, region columns
  are one per region and their annotation cells parse (:mod:`xaibench.data.region_formats`), no
  image is listed twice (by file identity), splits are valid and keep each patient in one
  split. :class:`~xaibench.data.manifest.ManifestDataset` runs it on construction and refuses
  to load on any problem.
* :func:`check_manifest` adds the **decode** checks — every image and mask is read: empty,
  corrupt or truncated files, images over the pixel budget (refused from the header, before
  decoding), colour or multi-frame images, compressed DICOM without a decoder, masks of another
  size than their image (other than an exact integer fraction), annotations that do not fit
  their image, mask files that are empty, regions that cover (almost) the whole image.
  ``xaibench data check`` runs it; a run meets the decoding problems one at a time while loading
  images (still before any training).

Both collect every problem instead of stopping at the first, each with its 1-based CSV data row
(the first line after the header is row 1) and column, so a user fixes a file in one pass.

**Containment.** Image and mask paths must resolve — after ``..``, ``~`` and symlinks — to a file
inside the manifest's folder, or inside the ``image_root`` the user gives (``--image-root``; never
read from a file) (see :func:`outside_folder`). A manifest is data, often received
from someone else, and the benchmark reads, hashes and decodes every file it names; without this
rule a crafted manifest (``../../home/me/.ssh/id_rsa``, an absolute path, or a symlink planted in
the data folder) would make xaibench open arbitrary files of whoever runs it, and turn its error
messages ("not a readable image: ...", "file not found: ...") into a probe of that user's disk.
Paths outside are reported as problems and never opened, not even to test that they exist.
``allow_outside_paths`` (``--allow-outside-paths`` on the command line) lifts the rule for a
manifest the user wrote themselves over a shared image store. :mod:`xaibench.data.files` has the
rules for what a path may be (regular file, one hard link) and how a file is read (opened once,
checked on its descriptor).

**Messages** are one line each and free of control characters (:func:`format_problem` escapes
them), so a crafted cell cannot rewrite the terminal or forge lines of the report.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from xaibench.data.csvtext import parse_csv
from xaibench.data.files import Containment, FileRefusedError, outside_folder, read_plain_file
from xaibench.data.images import DEFAULT_MAX_PIXELS, ImageReadError, decode_image
from xaibench.data.manifest_regions import (
    BONE_PARTS,
    QC_EXCLUDE_COLUMN,
    RegionSource,
    decode_region,
    exclusion_sources,
    region_columns,
    region_layout,
    region_sources,
)
from xaibench.data.region_formats import AnnotationError
from xaibench.data.values import (
    SPLIT_ALIASES,
    T_SCORE_LIMIT,
    Problem,
    format_problem,
    format_problems,
    normalise_split,
    parse_decimal,
    parse_label,
    printable,
    split_problems,
    typed_column,
)
from xaibench.progress import NullProgress, Progress

__all__ = [  # value helpers live in xaibench.data.values, re-exported here
    "BONE_PARTS",
    "FULL_MASK_FRACTION",
    "IDENTIFIER_COLUMNS",
    "MASK_PREFIX",
    "REQUIRED_COLUMNS",
    "RESERVED_COLUMNS",
    "SPLIT_ALIASES",
    "T_SCORE_LIMIT",
    "ManifestRows",
    "Problem",
    "RegionSource",
    "check_manifest",
    "format_problem",
    "format_problems",
    "normalise_split",
    "outside_folder",
    "outside_problem",
    "parse_decimal",
    "parse_label",
    "printable",
    "read_manifest",
    "split_problems",
]

#: Columns every manifest needs.
REQUIRED_COLUMNS: tuple[str, str] = ("image", "patient_id")
#: Identifier columns: kept in :attr:`ManifestRows.frame`, never metadata, strata or table
#: columns (``source_id``: the source dataset's own image id, written by importers).
IDENTIFIER_COLUMNS: tuple[str, ...] = ("source_id",)
#: Prefix of mask-file columns: ``mask_<region>`` (other formats:
#: :data:`~xaibench.data.region_formats.REGION_PREFIXES`).
MASK_PREFIX = "mask_"
#: Columns the dataset writes itself and a manifest may not define.
RESERVED_COLUMNS: tuple[str, ...] = ("sample_id",)
#: A mask covering at least this share of its image is flagged: nearly every such mask is an
#: export error (inverted polarity, background saved as the region), and perturbing it perturbs
#: the whole image, so its Δ says nothing about the region. Real regions stay far below: the
#: lungs cover about a third of a chest radiograph, the union of bones about a quarter.
FULL_MASK_FRACTION = 0.99


@dataclass(frozen=True)
class ManifestRows:
    """A manifest read and cheaply checked: resolved paths and parsed values, one per row.

    Attributes:
        path: The CSV file (absolute).
        root: The folder image and mask paths are relative to and must stay inside (absolute):
            the ``image_root`` given, else the CSV's folder.
        csv_sha256: Hash of the CSV's bytes (annotation cells included).
        frame: The CSV as stripped strings, lower-cased column names, empty cells as ``""``,
            one leading ``'`` removed from every cell (the formula escape of
            :func:`xaibench.escape.csv_text`).
        images: Absolute path of every row's image.
        regions: Region -> its source column (:class:`RegionSource`), every region column.
        split: Per-row split name, when the manifest has a ``split`` column.
        metadata: The other columns (labels, age, sex, view, ...), numbers where a column is
            numeric; not ``source_id`` nor ``qc_exclude``.
        exclusions: The ``qc_exclude`` column: region -> {0-based row: reason} (images a
            person excluded from that region's explanation scores, ``docs/data.md``).
    """

    path: Path
    root: Path
    csv_sha256: str
    frame: pd.DataFrame
    images: tuple[Path, ...]
    regions: dict[str, RegionSource]
    split: tuple[str, ...] | None
    metadata: dict[str, pd.Series]
    exclusions: dict[str, dict[int, str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)


def _unescape(cell: str) -> str:
    """``cell`` without the one leading ``'`` :func:`xaibench.escape.csv_text` adds."""
    return cell[1:] if cell.startswith("'") else cell


def read_manifest(
    path: str | Path,
    *,
    allow_outside_paths: bool = False,
    image_root: str | Path | None = None,
) -> tuple[ManifestRows | None, list[Problem]]:
    """Read a manifest and run every check that needs no image decoding.

    The manifest knows no class: labels are the task's (``Task.labels``), read from
    :attr:`ManifestRows.metadata`.

    Args:
        path: The CSV file.
        allow_outside_paths: Accept image and mask paths that resolve outside the image root.
            Off by default: such a path is a problem (:func:`outside_problem`) and the file is
            not even tested for existence (see the module docstring).
        image_root: The folder image and mask paths are relative to and must stay inside;
            default the CSV's folder. Given by the user, never read from a file.

    Returns:
        The parsed manifest (None when the file or its required columns are unusable) and the
        problems found; the manifest is only fit to load when the list is empty.
    """
    csv = _expand(Path(path))
    problems: list[Problem] = []
    root = csv.resolve().parent
    if image_root is not None:
        root = _expand(Path(image_root)).resolve()
        if not root.is_dir():
            return None, [Problem(None, None, f"image root {image_root} is not a folder")]
    try:
        raw = read_plain_file(csv, what="manifest")
    except FileRefusedError as exc:
        return None, [Problem(None, None, str(exc))]
    text = parse_csv(raw)
    if text.fatal:
        return None, [Problem(*finding) for finding in text.findings]
    frame = pd.DataFrame(text.rows, columns=pd.Index(text.header, dtype=object), dtype=str)
    original = [str(c) for c in frame.columns]
    columns = [c.strip().lower() for c in original]
    if len(columns) == 1 and any(sep in original[0] for sep in (";", "\t")):
        return None, [
            Problem(None, None, "the header has one column; the manifest must be comma-separated")
        ]
    seen: set[str] = set()
    for name in columns:
        if name in seen:
            problems.append(Problem(None, name, "column appears twice (names ignore case)"))
        seen.add(name)
    if problems:
        return None, problems
    frame.columns = pd.Index(columns)
    frame = frame.apply(lambda col: col.str.strip().map(_unescape))
    if frame.empty:
        problems.append(Problem(None, None, "the manifest has no rows"))
    for name in REQUIRED_COLUMNS:
        if name not in frame.columns:
            problems.append(Problem(None, name, "required column is missing"))
    for name in RESERVED_COLUMNS:
        if name in frame.columns:
            problems.append(Problem(None, name, "column name is reserved; rename it"))
    found, header_problems = region_columns(columns)
    problems.extend(header_problems)
    if problems:
        return None, problems
    # Rows the parser found wrong (not UTF-8, too many values); the row checks go on.
    problems.extend(Problem(*finding) for finding in text.findings)

    files = Containment(root, allow_outside_paths=allow_outside_paths)
    images = tuple(files.path(v) for v in frame["image"])
    first_row: dict[object, int] = {}
    for i, (cell, image) in enumerate(zip(frame["image"], images, strict=True)):
        row = i + 1
        if not cell:
            problems.append(Problem(row, "image", "empty image path"))
            continue
        problem = files.problem(cell)
        if problem is not None:
            problems.append(Problem(row, "image", problem))
        # Duplicates by file identity, so a symlink or another spelling of a file counts.
        key = (files.identity(cell) if problem is None else None) or image
        if key in first_row:
            problems.append(
                Problem(row, "image", f"same image file as row {first_row[key]} (listed twice)")
            )
        else:
            first_row[key] = row
    for i, pid in enumerate(frame["patient_id"]):
        if not pid:
            problems.append(Problem(i + 1, "patient_id", "empty patient_id"))

    regions, region_problems = region_sources(frame, found, files)
    problems.extend(region_problems)
    split: tuple[str, ...] | None = None
    if "split" in frame.columns:
        problems.extend(split_problems(frame["patient_id"].to_numpy(), list(frame["split"])))
        split = tuple(normalise_split(v) or "" for v in frame["split"])
    exclusions, exclusion_problems = exclusion_sources(
        frame, set(regions) | set(region_layout(regions)[0])
    )
    problems.extend(exclusion_problems)
    known = {
        *REQUIRED_COLUMNS,
        *IDENTIFIER_COLUMNS,
        QC_EXCLUDE_COLUMN,
        "split",
        *(column for _, column in found.values()),
    }
    metadata = {c: typed_column(frame[c]) for c in frame.columns if c not in known}
    problems.sort(key=lambda p: (p.row is not None, p.row or 0))
    return (
        ManifestRows(
            path=csv.resolve(),
            root=root,
            csv_sha256=hashlib.sha256(raw).hexdigest(),
            frame=frame,
            images=images,
            regions=regions,
            split=split,
            metadata=metadata,
            exclusions=exclusions,
        ),
        problems,
    )


def _expand(path: Path) -> Path:
    """``path`` with ``~`` expanded where it can be (an unknown user leaves it as written)."""
    try:
        return path.expanduser()
    except RuntimeError:
        return path


def outside_problem(root: Path, row: int, column: str, cell: str) -> Problem | None:
    """The problem of a manifest cell whose file must not be read, or None.

    A path that leaves the manifest's folder ``root`` (the message quotes the cell as written, so
    the user finds it in their CSV, says where it leads and whether a symlink took it there, and
    gives both fixes), a symlink loop, a missing or special file, or one with several hard links
    (:meth:`~xaibench.data.files.Containment.problem`).

    Args:
        root: The manifest's folder.
        row: 1-based CSV data row.
        column: ``image`` or ``mask_<region>``.
        cell: The cell's text.
    """
    problem = Containment(root).problem(cell, cached=False)
    return None if problem is None else Problem(row, column, problem)


def check_manifest(
    path: str | Path,
    *,
    decode: bool = True,
    progress: Progress | None = None,
    allow_outside_paths: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    image_root: str | Path | None = None,
) -> list[Problem]:
    """Check a manifest completely: the cheap checks, then (``decode``) every image and region.

    Decoding finds empty, corrupt or truncated files, images over the pixel budget (from their
    header, before decoding), colour images with no grey meaning, multi-frame or compressed DICOM
    that cannot be decoded, masks of another size than their image (an exact integer fraction
    of it is upsampled, not a problem), annotations that do not fit their image (an RLE of
    another size, counts that do not cover the image, boxes or polygon points outside it), mask
    files that are empty, and regions that cover at least :data:`FULL_MASK_FRACTION` of their
    image. A file whose path leaves the image root is reported and never opened.

    Empty and (almost) full masks are problems, not warnings: a mask file that marks nothing is
    an export error (an image without the region is written as an empty cell, and one annotated
    as free of a finding as an explicit empty annotation such as ``[]``, which is no problem),
    and one that marks everything is almost always inverted; either would make a region's
    scores meaningless, and the fix is one edit of the CSV or the mask.

    Args:
        path: The CSV file.
        decode: Also read every image and region (slow for large cohorts, but complete).
        progress: Shows progress over the rows while decoding.
        allow_outside_paths: Accept paths outside the image root and multiply-linked files
            (``xaibench data check --allow-outside-paths``); see :func:`read_manifest`.
        max_pixels: The pixel budget of one image or mask (``--max-pixels``); see
            :data:`~xaibench.data.images.DEFAULT_MAX_PIXELS`.
        image_root: The folder paths are relative to (``--image-root``); default the CSV's.

    Returns:
        Every problem found, whole-file problems first, then by row; empty when the manifest
        is fit to run.
    """
    rows, problems = read_manifest(
        path, allow_outside_paths=allow_outside_paths, image_root=image_root
    )
    if rows is None or not decode:
        return problems
    progress = progress or NullProgress()
    with warnings.catch_warnings():
        # pydicom and Pillow warn about odd header values of files they still read; a check
        # reports what stops a file from being used, one line each, and nothing else.
        warnings.simplefilter("ignore")
        decoded = _decode_problems(rows, problems, progress, allow_outside_paths, max_pixels)
    merged = problems + decoded
    merged.sort(key=lambda p: (p.row is not None, p.row or 0))
    return merged


def _decode_problems(
    rows: ManifestRows,
    problems: list[Problem],
    progress: Progress,
    allow_outside_paths: bool,
    max_pixels: int,
) -> list[Problem]:
    """Decode every file and annotation of ``rows`` whose cell has no problem yet."""
    files = Containment(rows.root, allow_outside_paths=allow_outside_paths)
    broken = {(p.row, p.column) for p in problems}
    decoded: list[Problem] = []
    for i in progress.track(range(len(rows)), total=len(rows), description="checking images"):
        row = i + 1
        shape: tuple[int, int] | None = None
        if (row, "image") not in broken:
            image_path = rows.images[i]
            try:
                data = files.read(str(rows.frame["image"].iat[i]))
                image = decode_image(data, str(image_path), max_pixels=max_pixels)
                shape = (int(image.shape[0]), int(image.shape[1]))
            except (ImageReadError, FileRefusedError) as exc:
                decoded.append(Problem(row, "image", str(exc)))
        for region, source in rows.regions.items():
            column = source.column
            if not source.annotated[i] or (row, column) in broken:
                continue
            cell = str(rows.frame[column].iat[i])
            if shape is None:
                if source.format == "mask":  # still read it: a broken mask is its own problem
                    _check_mask_alone(files, cell, source, i, max_pixels, decoded)
                continue
            name = str(source.paths[i]) if source.paths is not None else column
            try:
                mask = decode_region(
                    source, cell, shape, partial(files.read, cell), max_pixels, name
                )
            except (AnnotationError, FileRefusedError) as exc:
                decoded.append(Problem(row, column, str(exc)))
                continue
            coverage = _coverage_problem(mask, name, region, empty=source.format == "mask")
            if coverage is not None:
                decoded.append(Problem(row, column, coverage))
    return decoded


def _check_mask_alone(
    files: Containment,
    cell: str,
    source: RegionSource,
    i: int,
    max_pixels: int,
    decoded: list[Problem],
) -> None:
    """Decode a mask file whose image could not be read, so its own problems show too."""
    from xaibench.data.images import decode_mask

    name = str(source.paths[i]) if source.paths is not None else cell
    try:
        mask = decode_mask(files.read(cell), name, max_pixels=max_pixels)
    except (ImageReadError, FileRefusedError) as exc:
        decoded.append(Problem(i + 1, source.column, str(exc)))
        return
    coverage = _coverage_problem(mask, name, source.region, empty=True)
    if coverage is not None:
        decoded.append(Problem(i + 1, source.column, coverage))


def _coverage_problem(mask: np.ndarray, name: str, region: str, *, empty: bool) -> str | None:
    """Why a mask is unusable as a region: it covers almost all of its image, or it is empty.

    Emptiness is a problem of mask files only (``empty``): an explicit empty annotation is one.
    """
    inside = int(np.count_nonzero(mask))
    if inside == 0:
        if not empty:
            return None
        return (
            f"{name}: the mask is empty (no pixel inside); leave the cell empty if the image "
            f"has no annotation of {region}"
        )
    share = inside / mask.size
    if share >= FULL_MASK_FRACTION:
        return (
            f"{name}: the mask covers {100 * share:.1f}% of the image (at least "
            f"{100 * FULL_MASK_FRACTION:g}% is flagged); is it inverted (region 0, background "
            "non-zero)? Perturbing it would perturb the whole image"
        )
    return None
