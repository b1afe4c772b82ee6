"""Reading and checking a manifest: the CSV that describes a user's own images.

A manifest is a CSV with one row per image (the format is documented in ``docs/data.md``)::

    image,patient_id,t_score,split,mask_spine,mask_ribs,age
    images/0001.dcm,P1,-2.7,train,masks/0001_spine.png,masks/0001_ribs.png,71

Checking is split in two because reading 20,000 radiographs takes minutes:

* :func:`read_manifest` does the **cheap** checks — the CSV parses, required columns exist, every
  path stays inside the manifest's folder, every file exists, labels and T-scores are valid, no
  image is listed twice, splits are valid and keep each patient in one split, every class has
  images. :class:`~xaibench.data.manifest.
  ManifestDataset` runs it on construction and refuses to load on any problem.
* :func:`check_manifest` adds the **decode** checks — every image and mask is read: corrupt files,
  colour or multi-frame images, compressed DICOM without a decoder, masks of another size than
  their image. ``xaibench data check`` runs it; a run meets the same problems one at a time while
  loading images (still before any training).

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
manifest the user wrote themselves over a shared image store.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from xaibench.data.images import ImageReadError, decode_image, decode_mask
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
    """One line for ``problem``: ``row 3 (image): file not found: ...``."""
    if problem.row is not None:
        where = f"row {problem.row}" + (f" ({problem.column})" if problem.column else "")
        return f"{where}: {problem.message}"
    if problem.column is not None:
        return f"column {problem.column}: {problem.message}"
    return problem.message


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
    try:
        number = float(text)
    except ValueError:
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
    csv = Path(path).expanduser()
    problems: list[Problem] = []
    if not csv.is_file():
        return None, [Problem(None, None, f"manifest not found: {csv}")]
    raw = csv.read_bytes()
    try:
        frame = pd.read_csv(
            csv,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            skipinitialspace=True,
            encoding="utf-8-sig",
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        return None, [Problem(None, None, f"cannot parse {csv} as CSV: {exc}")]
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

    root = csv.resolve().parent
    contained = _Containment(root)
    n = len(frame)
    images = tuple(_resolve(root, v) for v in frame["image"])
    first_row: dict[Path, int] = {}
    for i, (cell, image) in enumerate(zip(frame["image"], images, strict=True)):
        row = i + 1
        if not cell:
            problems.append(Problem(row, "image", "empty image path"))
            continue
        escape = None if allow_outside_paths else contained.problem(row, "image", cell)
        if escape is not None:
            problems.append(escape)
        elif not image.is_file():
            problems.append(Problem(row, "image", f"file not found: {image}"))
        if image in first_row:
            problems.append(
                Problem(row, "image", f"same image file as row {first_row[image]} (listed twice)")
            )
        else:
            first_row[image] = row
    for i, pid in enumerate(frame["patient_id"]):
        if not pid:
            problems.append(Problem(i + 1, "patient_id", "empty patient_id"))

    masks: dict[str, tuple[Path | None, ...]] = {}
    for column in mask_columns:
        paths = tuple(_resolve(root, v) if v else None for v in frame[column])
        for i, (cell, mask) in enumerate(zip(frame[column], paths, strict=True)):
            if mask is None:
                continue
            escape = None if allow_outside_paths else contained.problem(i + 1, column, cell)
            if escape is not None:
                problems.append(escape)
            elif not mask.is_file():
                problems.append(Problem(i + 1, column, f"file not found: {mask}"))
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


def _resolve(root: Path, cell: str) -> Path:
    """Absolute path of a cell, relative to the manifest's folder; backslashes read as ``/``."""
    path = Path(cell.replace("\\", "/")).expanduser()
    return Path(os.path.normpath(path if path.is_absolute() else root / path))


def outside_folder(root: Path, path: Path) -> Path | None:
    """Where ``path`` really leads, if that is outside the folder ``root``; else None.

    Both are resolved first (``..`` collapsed, every symlink followed, also for files that do
    not exist), so ``a/../../x``, an absolute path elsewhere, and a symlink inside ``root`` that
    points out of it all count as outside, while ``a/../b.png`` and a symlink to another file
    inside ``root`` do not. ``root`` itself is resolved too, so a manifest folder reached through
    a symlink is no obstacle.

    Args:
        root: The manifest's folder.
        path: An image or mask path, absolute or relative to ``root``.

    Returns:
        The resolved path when it lies outside ``root`` (for the message), else None. A path
        that cannot be resolved (a symlink loop) is returned as given: containment cannot be
        shown, so it counts as outside.
    """
    try:
        target = (root / path).resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
        return root / path
    return None if target.is_relative_to(root.resolve()) else target


class _Containment:
    """:func:`outside_folder` for many paths under one resolved ``root``.

    Resolving follows every component of a path, which for 20,000 rows of deep paths costs
    seconds; most rows share their folders, so each folder is resolved once and only the file
    name itself is looked at per row (followed when it is a symlink). Meant for one pass over
    a manifest: a folder swapped for a symlink afterwards is caught by the re-check before each
    file is read (:class:`~xaibench.data.manifest.ManifestDataset`).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._folders: dict[Path, Path] = {}

    def outside(self, path: Path) -> Path | None:
        """The resolved ``path`` when outside :attr:`root`, else None.

        ``path`` comes from :func:`_resolve`: absolute and normalised (no ``..``); anything else
        takes the plain :func:`outside_folder`.
        """
        if not path.is_absolute() or ".." in path.parts:
            return outside_folder(self.root, path)
        try:
            folder = self._folders.get(path.parent)
            if folder is None:
                folder = self._folders[path.parent] = path.parent.resolve()
            target = folder / path.name
            if target.is_symlink():
                target = target.resolve()
        except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
            return path
        return None if target.is_relative_to(self.root) else target

    def problem(self, row: int, column: str, cell: str) -> Problem | None:
        """The problem of ``cell`` when its path leaves :attr:`root` (:func:`outside_problem`)."""
        path = _resolve(self.root, cell)
        target = self.outside(path)
        if target is None:
            return None
        via = "through a symlink " if path.is_relative_to(self.root) else ""
        return Problem(
            row,
            column,
            f"path {cell!r} leads {via}outside the manifest's folder {self.root} (to {target}); "
            f"move the file into {self.root} and give its path relative to the manifest, "
            "or pass --allow-outside-paths (dataset option allow_outside_paths: true) "
            "if you trust this manifest",
        )


def outside_problem(root: Path, row: int, column: str, cell: str) -> Problem | None:
    """The problem of a manifest cell whose path leaves the manifest's folder ``root``, or None.

    The message quotes the cell as written (so the user finds it in their CSV), says where it
    leads and whether a symlink took it there, and gives both fixes.

    Args:
        root: The manifest's folder.
        row: 1-based CSV data row.
        column: ``image`` or ``mask_<region>``.
        cell: The cell's text.
    """
    return _Containment(root.resolve()).problem(row, column, cell)


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
            try:
                value = float(cell)
            except ValueError:
                problems.append(Problem(i + 1, "t_score", f"not a number: {cell!r}"))
                continue
            if not np.isfinite(value):
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
) -> list[Problem]:
    """Check a manifest completely: the cheap checks, then (``decode``) every image and mask.

    Decoding finds corrupt or truncated files, colour images with no grey meaning, multi-frame
    or compressed DICOM that cannot be decoded, and masks of another size than their image.
    A file whose path leaves the manifest's folder is reported and never decoded.

    Args:
        path: The CSV file.
        decode: Also read every image and mask (slow for large cohorts, but complete).
        class_names: Classes in label order.
        progress: Shows progress over the rows while decoding.
        allow_outside_paths: Accept paths outside the manifest's folder (``xaibench data check
            --allow-outside-paths``); see :func:`read_manifest`.

    Returns:
        Every problem found, whole-file problems first, then by row; empty when the manifest
        is fit to run.
    """
    rows, problems = read_manifest(path, class_names, allow_outside_paths=allow_outside_paths)
    if rows is None or not decode:
        return problems
    progress = progress or NullProgress()
    broken = {(p.row, p.column) for p in problems}
    decoded: list[Problem] = []
    for i in progress.track(range(len(rows)), total=len(rows), description="checking images"):
        row = i + 1
        shape: tuple[int, ...] | None = None
        if (row, "image") not in broken:
            image_path = rows.images[i]
            try:
                shape = decode_image(image_path.read_bytes(), str(image_path)).shape
            except (ImageReadError, OSError) as exc:
                decoded.append(Problem(row, "image", str(exc)))
        for region, paths in rows.masks.items():
            column = MASK_PREFIX + region
            mask_path = paths[i]
            if mask_path is None or (row, column) in broken:
                continue
            try:
                mask = decode_mask(mask_path.read_bytes(), str(mask_path))
            except (ImageReadError, OSError) as exc:
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
    merged = problems + decoded
    merged.sort(key=lambda p: (p.row is not None, p.row or 0))
    return merged
