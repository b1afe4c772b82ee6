"""Reading and checking a manifest: the CSV that describes a user's own images.

A manifest is a CSV with one row per image (the format is documented in ``docs/data.md``)::

    image,patient_id,t_score,split,mask_spine,mask_ribs,age
    images/0001.dcm,P1,-2.7,train,masks/0001_spine.png,masks/0001_ribs.png,71

Checking is split in two because reading 20,000 radiographs takes minutes:

* :func:`read_manifest` does the **cheap** checks — the CSV parses (strictly, see
  :mod:`xaibench.data.csvtext`), required columns exist, every path stays inside the manifest's
  folder and names a regular file with one link, labels and T-scores are valid, no image is
  listed twice (by file identity), splits are valid and keep each patient in one split, every
  class has images. :class:`~xaibench.data.manifest.ManifestDataset` runs it on construction
  and refuses to load on any problem.
* :func:`check_manifest` adds the **decode** checks — every image and mask is read: empty,
  corrupt or truncated files, images over the pixel budget (refused from the header, before
  decoding), colour or multi-frame images, compressed DICOM without a decoder, masks of another
  size than their image, masks that are empty or cover (almost) the whole image.
  ``xaibench data check`` runs it; a run meets the decoding problems one at a time while loading
  images (still before any training).

Both collect every problem instead of stopping at the first, each with its 1-based CSV data row
(the first line after the header is row 1) and column, so a user fixes a file in one pass.

**Containment.** Image and mask paths must resolve — after ``..``, ``~`` and symlinks — to a file
inside the manifest's folder (see :func:`outside_folder`). A manifest is data, often received
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
import re
import unicodedata
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from xaibench.data.csvtext import parse_csv
from xaibench.data.files import (
    Containment,
    FileRefusedError,
    read_plain_file,
)
from xaibench.data.files import (
    outside_folder as outside_folder,  # re-exported: the public containment rule
)
from xaibench.data.images import DEFAULT_MAX_PIXELS, ImageReadError, decode_image, decode_mask
from xaibench.data.splits import SPLITS
from xaibench.data.who import WHO_CLASSES, who_class
from xaibench.progress import NullProgress, Progress

#: Columns every manifest needs (besides ``t_score`` or ``label``).
REQUIRED_COLUMNS: tuple[str, str] = ("image", "patient_id")
#: Columns that carry the class; at least one must exist, and every row needs one of them.
LABEL_COLUMNS: tuple[str, str] = ("t_score", "label")
#: Prefix of mask columns: ``mask_<region>``.
MASK_PREFIX = "mask_"
#: Columns the dataset writes itself and a manifest may not define.
RESERVED_COLUMNS: tuple[str, ...] = ("sample_id",)
#: Accepted spellings of the split names (case-insensitive).
SPLIT_ALIASES: dict[str, str] = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
#: Regions whose union is ``bone`` when a manifest has no ``mask_bone`` column.
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
#: A T-score beyond this magnitude is almost certainly another quantity (BMD, age, Z-score x10).
T_SCORE_LIMIT = 10.0
#: A mask covering at least this share of its image is flagged: nearly every such mask is an
#: export error (inverted polarity, background saved as the region), and perturbing it perturbs
#: the whole image, so its Δ says nothing about the region. Real regions stay far below: the
#: lungs cover about a third of a chest radiograph, the union of bones about a quarter.
FULL_MASK_FRACTION = 0.99
#: A plain decimal number: digits, an optional point and exponent; ASCII only, so no ``1_0``
#: (Python's ``float`` reads it as 10), no ``0x10``, no Arabic-Indic or full-width digits.
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
#: Spellings of a non-finite float, reported as such rather than as "not a number".
_NON_FINITE = re.compile(r"[+-]?(?:nan|inf|infinity)", re.IGNORECASE)

_REGION_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a manifest.

    Attributes:
        row: 1-based CSV data row (the first line after the header is row 1), or None when the
            problem concerns the whole file.
        column: The column at fault, or None.
        message: What is wrong and, where it helps, how to fix it.
    """

    row: int | None
    column: str | None
    message: str


def format_problem(problem: Problem) -> str:
    """One line for ``problem``: ``row 3 (image): file not found: ...``.

    Control and format characters (newlines, escape sequences, bidirectional overrides) are
    written as escapes: messages quote the user's cells and file names.
    """
    if problem.row is not None:
        where = f"row {problem.row}" + (f" ({problem.column})" if problem.column else "")
        return printable(f"{where}: {problem.message}")
    if problem.column is not None:
        return printable(f"column {problem.column}: {problem.message}")
    return printable(problem.message)


def printable(text: str) -> str:
    """``text`` with every control, format, surrogate or separator character escaped."""
    if text.isprintable():
        return text
    return "".join(
        ch
        if ch.isprintable() or ch == " "
        else ascii(ch)[1:-1]
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp")
        else ch
        for ch in text
    )


def parse_decimal(text: str) -> float | None:
    """The value of a plain decimal number (``-2.5``, ``+1``, ``.5``, ``-2.5e0``), else None.

    Stricter than :func:`float`, which also reads ``1_0`` (as 10), ``nan``, ``inf`` and digits
    of any script: a T-score cell that is not written as a plain number is a problem to show,
    not a value to guess. Surrounding spaces are ignored.
    """
    text = text.strip()
    return float(text) if _DECIMAL.fullmatch(text) else None


def format_problems(problems: Sequence[Problem], limit: int | None = 20) -> str:
    """One line per problem, at most ``limit`` of them and then ``... and N more``.

    Args:
        problems: The problems, in the order to show.
        limit: Lines to show before summarising the rest; None shows all.
    """
    shown = problems if limit is None else problems[:limit]
    lines = [format_problem(p) for p in shown]
    rest = len(problems) - len(shown)
    if rest:
        lines.append(f"... and {rest} more problem{'s' if rest != 1 else ''}")
    return "\n".join(lines)


def parse_label(value: object, class_names: Sequence[str] = WHO_CLASSES) -> int | None:
    """The class index of a ``label`` cell: a class name (any case) or its index, else None.

    Integers written as floats (``2.0``, as spreadsheets export them) are accepted.
    """
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip()
    lowered = [name.lower() for name in class_names]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    number = parse_decimal(text)
    if number is None:
        return None
    if number.is_integer() and 0 <= number < len(class_names):
        return int(number)
    return None


def normalise_split(value: object) -> str | None:
    """``train``, ``val`` or ``test`` for an accepted spelling (see :data:`SPLIT_ALIASES`)."""
    return SPLIT_ALIASES.get(str(value).strip().lower())


def split_problems(patient_ids: Sequence[str] | np.ndarray, splits: Sequence[str]) -> list[Problem]:
    """Problems of a given split column: unknown values, and patients in more than one split.

    A patient whose images straddle splits would be tested on after being trained on, which
    inflates every score. The message names rows, not the patient id, so it can be pasted
    anywhere.

    Args:
        patient_ids: One id per row.
        splits: One split value per row (any accepted spelling).

    Returns:
        Problems with 1-based row numbers (row ``i + 1`` for position ``i``).
    """
    problems: list[Problem] = []
    rows_by_patient: dict[str, dict[str, list[int]]] = {}
    for i, (pid, value) in enumerate(zip(patient_ids, splits, strict=True)):
        split = normalise_split(value)
        if split is None:
            problems.append(
                Problem(
                    i + 1,
                    "split",
                    f"unknown split {str(value).strip()!r}; use train, val or test",
                )
            )
            continue
        if str(pid).strip():  # an empty patient_id is reported on its own
            rows_by_patient.setdefault(str(pid), {}).setdefault(split, []).append(i + 1)
    for by_split in rows_by_patient.values():
        if len(by_split) < 2:
            continue
        parts = [f"{name} ({_rows(by_split[name])})" for name in SPLITS if name in by_split]
        first = min(min(rows) for rows in by_split.values())
        home = next(name for name, rows in by_split.items() if first in rows)
        offending = min(min(rows) for name, rows in by_split.items() if name != home)
        problems.append(
            Problem(
                offending,
                "split",
                "one patient_id is in more than one split: "
                f"{', '.join(parts)}; all images of a patient must be in one split",
            )
        )
    return problems


def _rows(rows: Sequence[int]) -> str:
    shown = ", ".join(str(r) for r in rows[:10])
    more = f", ... ({len(rows)} rows)" if len(rows) > 10 else ""
    return f"row{'s' if len(rows) > 1 else ''} {shown}{more}"


@dataclass(frozen=True)
class ManifestRows:
    """A manifest read and cheaply checked: resolved paths and parsed values, one per row.

    Attributes:
        path: The CSV file (absolute).
        csv_sha256: Hash of the CSV's bytes.
        frame: The CSV as stripped strings, lower-cased column names, empty cells as ``""``.
        images: Absolute path of every row's image.
        masks: Region -> per-row absolute mask path, or None where the cell is empty (that
            image has no annotation of the region).
        t_score: Per-row T-score, NaN where absent (only when the column exists).
        label: Per-row class name from the ``label`` column, ``""`` where absent (only when
            the column exists).
        classes: Per-row class index (from the T-score if present, else the label).
        split: Per-row split name, when the manifest has a ``split`` column.
        metadata: The other columns (age, sex, view, ...), numbers where a column is numeric.
    """

    path: Path
    csv_sha256: str
    frame: pd.DataFrame
    images: tuple[Path, ...]
    masks: dict[str, tuple[Path | None, ...]]
    t_score: np.ndarray | None
    label: tuple[str, ...] | None
    classes: np.ndarray
    split: tuple[str, ...] | None
    metadata: dict[str, pd.Series]

    def __len__(self) -> int:
        return len(self.images)


def read_manifest(
    path: str | Path,
    class_names: Sequence[str] = WHO_CLASSES,
    *,
    allow_outside_paths: bool = False,
) -> tuple[ManifestRows | None, list[Problem]]:
    """Read a manifest and run every check that needs no image decoding.

    Args:
        path: The CSV file; image and mask paths in it are relative to its folder.
        class_names: Classes in label order; ``label`` cells must name one (or give its index).
        allow_outside_paths: Accept image and mask paths that resolve outside the manifest's
            folder. Off by default: such a path is a problem (:func:`outside_problem`) and the
            file is not even tested for existence (see the module docstring).

    Returns:
        The parsed manifest (None when the file or its required columns are unusable) and the
        problems found; the manifest is only fit to load when the list is empty.
    """
    csv = _expand(Path(path))
    problems: list[Problem] = []
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
    frame = frame.apply(lambda col: col.str.strip())
    if frame.empty:
        problems.append(Problem(None, None, "the manifest has no rows"))
    for name in REQUIRED_COLUMNS:
        if name not in frame.columns:
            problems.append(Problem(None, name, "required column is missing"))
    if not any(name in frame.columns for name in LABEL_COLUMNS):
        problems.append(
            Problem(None, None, "the manifest needs a 't_score' or a 'label' column (or both)")
        )
    for name in RESERVED_COLUMNS:
        if name in frame.columns:
            problems.append(Problem(None, name, "column name is reserved; rename it"))
    mask_columns = [c for c in frame.columns if c.startswith(MASK_PREFIX)]
    for column in mask_columns:
        if not _REGION_NAME.match(column[len(MASK_PREFIX) :]):
            problems.append(
                Problem(
                    None,
                    column,
                    "region names after 'mask_' must be lower-case letters, digits and '_'",
                )
            )
    if problems:
        return None, problems
    # Rows the parser found wrong (not UTF-8, too many values); the row checks go on.
    problems.extend(Problem(*finding) for finding in text.findings)

    root = csv.resolve().parent
    files = Containment(root, allow_outside_paths=allow_outside_paths)
    n = len(frame)
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

    masks: dict[str, tuple[Path | None, ...]] = {}
    for column in mask_columns:
        paths = tuple(files.path(v) if v else None for v in frame[column])
        for i, cell in enumerate(frame[column]):
            if cell:
                problem = files.problem(cell)
                if problem is not None:
                    problems.append(Problem(i + 1, column, problem))
        masks[column[len(MASK_PREFIX) :]] = paths

    t_score, label, classes = _classes(frame, class_names, problems)
    split: tuple[str, ...] | None = None
    if "split" in frame.columns:
        problems.extend(split_problems(frame["patient_id"].to_numpy(), list(frame["split"])))
        split = tuple(normalise_split(v) or "" for v in frame["split"])
    if n:
        for index, name in enumerate(class_names):
            if not (classes == index).any():
                problems.append(
                    Problem(
                        None,
                        None,
                        f"no image has class {name!r}; every class needs images "
                        "(its one-vs-rest AUC is undefined without them)",
                    )
                )
    known = {*REQUIRED_COLUMNS, *LABEL_COLUMNS, "split", *mask_columns}
    metadata = {c: _typed(frame[c]) for c in frame.columns if c not in known}
    problems.sort(key=lambda p: (p.row is not None, p.row or 0))
    return (
        ManifestRows(
            path=csv.resolve(),
            csv_sha256=hashlib.sha256(raw).hexdigest(),
            frame=frame,
            images=images,
            masks=masks,
            t_score=t_score,
            label=label,
            classes=classes,
            split=split,
            metadata=metadata,
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


def _typed(column: pd.Series) -> pd.Series:
    """Numbers where every non-empty cell is a number (age, weight), else the strings."""
    filled = column[column != ""]
    numbers = pd.to_numeric(filled, errors="coerce")
    if len(filled) and numbers.notna().all():
        return pd.to_numeric(column.replace("", np.nan), errors="coerce").astype(float)
    return column


def _classes(
    frame: pd.DataFrame, class_names: Sequence[str], problems: list[Problem]
) -> tuple[np.ndarray | None, tuple[str, ...] | None, np.ndarray]:
    """Parse ``t_score`` and ``label``; a row needs one valid value, and both must agree."""
    n = len(frame)
    classes = np.full(n, -1, dtype=np.int64)
    t_score: np.ndarray | None = None
    label: tuple[str, ...] | None = None
    t_class = np.full(n, -1, dtype=np.int64)
    if "t_score" in frame.columns:
        t_score = np.full(n, np.nan)
        for i, cell in enumerate(frame["t_score"]):
            if not cell:
                continue
            value = parse_decimal(cell)
            if value is None:
                finite = "a finite" if _NON_FINITE.fullmatch(cell) else "a"
                problems.append(Problem(i + 1, "t_score", f"not {finite} number: {cell!r}"))
                continue
            if not np.isfinite(value):  # 1e999
                problems.append(Problem(i + 1, "t_score", f"not a finite number: {cell!r}"))
            elif abs(value) > T_SCORE_LIMIT:
                problems.append(
                    Problem(
                        i + 1,
                        "t_score",
                        f"{value:g} is outside [-{T_SCORE_LIMIT:g}, {T_SCORE_LIMIT:g}]; "
                        "is this column a T-score?",
                    )
                )
            else:
                t_score[i] = value
        defined = np.isfinite(t_score)
        t_class[defined] = who_class(t_score[defined])
    label_class = np.full(n, -1, dtype=np.int64)
    if "label" in frame.columns:
        names = []
        for i, cell in enumerate(frame["label"]):
            if not cell:
                names.append("")
                continue
            index = parse_label(cell, class_names)
            if index is None:
                problems.append(
                    Problem(
                        i + 1,
                        "label",
                        f"unknown label {cell!r}; use one of {', '.join(class_names)} "
                        f"or 0-{len(class_names) - 1}",
                    )
                )
                names.append("")
            else:
                label_class[i] = index
                names.append(class_names[index])
        label = tuple(names)
    for i in range(n):
        t_cell = frame["t_score"].iat[i] if "t_score" in frame.columns else ""
        l_cell = frame["label"].iat[i] if "label" in frame.columns else ""
        if not t_cell and not l_cell:
            present = [c for c in LABEL_COLUMNS if c in frame.columns]
            problems.append(
                Problem(i + 1, " / ".join(present), "no class: the row needs a t_score or a label")
            )
        elif t_class[i] >= 0 and label_class[i] >= 0 and t_class[i] != label_class[i]:
            problems.append(
                Problem(
                    i + 1,
                    "label",
                    f"label {l_cell!r} disagrees with t_score {t_cell} "
                    f"({class_names[t_class[i]]}); give one or make them agree",
                )
            )
    classes = np.where(t_class >= 0, t_class, label_class)
    return t_score, label, classes


def check_manifest(
    path: str | Path,
    *,
    decode: bool = True,
    class_names: Sequence[str] = WHO_CLASSES,
    progress: Progress | None = None,
    allow_outside_paths: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> list[Problem]:
    """Check a manifest completely: the cheap checks, then (``decode``) every image and mask.

    Decoding finds empty, corrupt or truncated files, images over the pixel budget (from their
    header, before decoding), colour images with no grey meaning, multi-frame or compressed DICOM
    that cannot be decoded, masks of another size than their image, and masks that are empty or
    cover at least :data:`FULL_MASK_FRACTION` of their image. A file whose path leaves the
    manifest's folder is reported and never opened.

    Empty and (almost) full masks are problems, not warnings: a mask file that marks nothing is
    an export error (an image without the region is written as an empty cell), and one that marks
    everything is almost always inverted; either would make a region's scores meaningless, and
    the fix is one edit of the CSV or the mask.

    Args:
        path: The CSV file.
        decode: Also read every image and mask (slow for large cohorts, but complete).
        class_names: Classes in label order.
        progress: Shows progress over the rows while decoding.
        allow_outside_paths: Accept paths outside the manifest's folder and multiply-linked
            files (``xaibench data check --allow-outside-paths``); see :func:`read_manifest`.
        max_pixels: The pixel budget of one image or mask (``--max-pixels``); see
            :data:`~xaibench.data.images.DEFAULT_MAX_PIXELS`.

    Returns:
        Every problem found, whole-file problems first, then by row; empty when the manifest
        is fit to run.
    """
    rows, problems = read_manifest(path, class_names, allow_outside_paths=allow_outside_paths)
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
    """Decode every file of ``rows`` whose cell has no problem yet (:func:`check_manifest`)."""
    files = Containment(rows.path.parent, allow_outside_paths=allow_outside_paths)
    broken = {(p.row, p.column) for p in problems}
    decoded: list[Problem] = []
    for i in progress.track(range(len(rows)), total=len(rows), description="checking images"):
        row = i + 1
        shape: tuple[int, ...] | None = None
        if (row, "image") not in broken:
            image_path = rows.images[i]
            try:
                data = files.read(str(rows.frame["image"].iat[i]))
                shape = decode_image(data, str(image_path), max_pixels=max_pixels).shape
            except (ImageReadError, FileRefusedError) as exc:
                decoded.append(Problem(row, "image", str(exc)))
        for region, paths in rows.masks.items():
            column = MASK_PREFIX + region
            mask_path = paths[i]
            if mask_path is None or (row, column) in broken:
                continue
            try:
                data = files.read(str(rows.frame[column].iat[i]))
                mask = decode_mask(data, str(mask_path), max_pixels=max_pixels)
            except (ImageReadError, FileRefusedError) as exc:
                decoded.append(Problem(row, column, str(exc)))
                continue
            if shape is not None and mask.shape != shape:
                decoded.append(
                    Problem(
                        row,
                        column,
                        f"mask is {mask.shape[0]}x{mask.shape[1]} pixels but its image is "
                        f"{shape[0]}x{shape[1]}; masks must be on the image's pixel grid",
                    )
                )
                continue
            coverage = _coverage_problem(mask, str(mask_path), region)
            if coverage is not None:
                decoded.append(Problem(row, column, coverage))
    return decoded


def _coverage_problem(mask: np.ndarray, name: str, region: str) -> str | None:
    """Why a mask is unusable as a region: empty, or covering almost all of its image."""
    inside = int(np.count_nonzero(mask))
    if inside == 0:
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
