"""The importer contract: a public chest X-ray collection's published layout -> a manifest.

``xaibench data import SOURCE ROOT --out DIR`` turns the files a user downloaded from a public
collection (NIH ChestX-ray14, CheXpert, SIIM-ACR, ...) into a manifest (``docs/data.md``) that
any task can run on. An importer reads the collection's own label and annotation files as
published and returns one row of text cells per image; :func:`write_import` writes
``DIR/manifest.csv`` and ``DIR/manifest.json`` (provenance: source, importer version, options,
counts of rows kept and excluded per reason) and **nothing else**: no image is copied, converted
or modified, so the manifest points at the user's files where they are.

Paths in the manifest are relative to ``ROOT``; run it with ``--image-root ROOT`` (the manifest
dataset's ``image_root`` option), which keeps every path inside the folder the user named.

Rules every importer follows, so the collections behave alike:

* **Layout first.** Every published file the importer needs is looked up before anything is
  read; a missing file or column raises :class:`ImportLayoutError`, one line naming the file
  (relative to ROOT) or the column and file, with what was expected.
* **Missing images are excluded, not fatal.** The published label files list every image, and
  users often hold part of a collection (NIH ships 12 archives); a row whose image file is not
  under ROOT is left out and counted as ``image file not found``. When none is found, the layout
  is wrong and the import fails naming an expected path.
* **Paths stay inside ROOT.** A path from a published file that leads outside ROOT (``..``, a
  symlink) is excluded as ``path outside ROOT``; its file is never opened.
* **Policies are options and are counted.** Views (frontal only by default), uncertain labels,
  duplicates: each importer documents its policy per quirk in its docstring and ``docs/data.md``,
  exposes the choice as an option, and counts what each policy excluded.
* **Cells are text.** Findings are written as ``1``/``0``/``-1``/blank after the importer's
  documented mapping; regions in the manifest's formats (``mask_``, ``rle_``, ``siim_rle_``,
  ``polygon_``, ``box_``).
"""

from __future__ import annotations

import gzip
import io
import json
import os
from abc import abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from xaibench.component import Component
from xaibench.errors import XaibenchError

if TYPE_CHECKING:
    import pandas as pd

    from xaibench.progress import Progress

#: Columns every imported manifest starts with, in this order (those present).
LEADING_COLUMNS: tuple[str, ...] = ("image", "patient_id", "source_id", "view", "split")

#: Exclusion reasons shared by every importer.
MISSING_IMAGE = "image file not found"
OUTSIDE_ROOT = "path outside ROOT"

#: The manifest file names :func:`write_import` writes.
MANIFEST_NAME = "manifest.csv"
SIDECAR_NAME = "manifest.json"


class ImportLayoutError(XaibenchError):
    """ROOT does not hold the collection's published layout (a file or column is missing)."""


@dataclass
class ImportedRows:
    """What an importer read: manifest rows as text, and what its policies left out.

    Attributes:
        rows: One dict of column -> text cell per image kept (``image`` relative to ROOT and
            ``patient_id`` are required; empty strings are empty cells).
        excluded: Reason -> number of images (or label rows) left out for it.
        notes: Further facts for the sidecar and the terminal (one line each).
    """

    rows: list[dict[str, str]]
    excluded: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def exclude(self, reason: str, count: int = 1) -> None:
        """Count ``count`` images left out for ``reason``."""
        if count:
            self.excluded[reason] = self.excluded.get(reason, 0) + count


class Importer(Component):
    """Reads one public collection's published layout (subclass per collection).

    Options are pydantic fields (``views``, ``uncertain``, ...), validated like every
    component's, and recorded in the sidecar.

    Attributes:
        homepage: Where the collection is downloaded from.
        download: What the user must download and how ROOT must look (for the docs and for
            layout errors).
        regions: Region names the collection provides (the docs' table).
        findings: Finding columns it writes, in order (snake_case).
        image_root_hint: What ``--image-root`` must name when it is not ROOT (an importer that
            joins annotations onto another collection's manifest); empty: ROOT.
    """

    homepage: ClassVar[str] = ""
    download: ClassVar[str] = ""
    regions: ClassVar[tuple[str, ...]] = ()
    findings: ClassVar[tuple[str, ...]] = ()
    image_root_hint: ClassVar[str] = ""

    @abstractmethod
    def read(self, root: Path, progress: Progress) -> ImportedRows:
        """Read the collection under ``root`` (resolved, a directory) and return its rows.

        Raises:
            ImportLayoutError: A published file or column is missing.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement read()")


# --- helpers for importers ------------------------------------------------------------------


def _first_inside(
    root: Path, candidates: tuple[str, ...], kind: Callable[[Path], bool]
) -> Path | None:
    """The first of ``candidates`` of that ``kind`` (file, folder) inside ``root``, or None."""
    base = root.resolve()
    for candidate in candidates:
        path = root / candidate
        if kind(path) and path.resolve().is_relative_to(base):
            return path
    return None


def _missing(candidates: tuple[str, ...]) -> str:
    """The first candidate and, in brackets, the others: what a layout error names."""
    others = f" (or {', '.join(candidates[1:])})" if len(candidates) > 1 else ""
    return f"{candidates[0]}{others}"


def source_file(root: Path, *candidates: str, source: str) -> Path:
    """The first of ``candidates`` (paths relative to ``root``) that is a file inside ``root``.

    Several candidates cover a collection's published variants (``.csv`` or ``.csv.gz``, a
    renamed folder).

    Raises:
        ImportLayoutError: None exists; the message names the first candidate (and the others).
    """
    path = _first_inside(root, candidates, Path.is_file)
    if path is None:
        raise ImportLayoutError(
            f"{source}: {_missing(candidates)} not found under {root}; is ROOT the folder the "
            f"collection was downloaded to? (`xaibench data import --list` shows each layout)"
        )
    return path


def source_folder(root: Path, *candidates: str, source: str) -> Path:
    """The first of ``candidates`` that is a folder inside ``root``.

    Raises:
        ImportLayoutError: None exists.
    """
    path = _first_inside(root, candidates, Path.is_dir)
    if path is None:
        raise ImportLayoutError(
            f"{source}: folder {_missing(candidates)} not found under {root}; is ROOT the "
            "folder the collection was downloaded to?"
        )
    return path


def read_table(
    path: Path,
    required: Iterable[str],
    *,
    root: Path,
    source: str,
    sep: str = ",",
) -> pd.DataFrame:
    """A published CSV (plain or ``.gz``) as strings, with its ``required`` columns checked.

    Cells are stripped; empty cells are ``""``. Column names are kept as published.

    Raises:
        ImportLayoutError: The file cannot be parsed, or a required column is missing (named
            with the file, relative to ``root``).
    """
    import pandas as pd

    shown = _relative(path, root)
    try:
        raw = path.read_bytes()
        if path.name.endswith(".gz"):
            raw = gzip.decompress(raw)
        frame = pd.read_csv(
            io.BytesIO(raw),
            dtype=str,
            keep_default_na=False,
            sep=sep,
            encoding="utf-8-sig",
        )
    except (OSError, ValueError, UnicodeDecodeError, EOFError) as exc:
        raise ImportLayoutError(f"{source}: {shown} cannot be read as CSV: {exc}") from None
    frame.columns = pd.Index([str(c).strip() for c in frame.columns])
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ImportLayoutError(
            f"{source}: {shown} has no column {', '.join(repr(c) for c in missing)} "
            f"(it has: {', '.join(map(str, frame.columns[:12]))}"
            f"{', ...' if len(frame.columns) > 12 else ''})"
        )
    for column in frame.columns:
        frame[column] = frame[column].astype(str).str.strip()
    return frame


def read_json(path: Path, *, root: Path, source: str) -> Any:
    """A published JSON file (plain or ``.gz``).

    Raises:
        ImportLayoutError: The file is not valid JSON.
    """
    try:
        raw = path.read_bytes()
        if path.name.endswith(".gz"):
            raw = gzip.decompress(raw)
        return json.loads(raw)
    except (OSError, ValueError, EOFError) as exc:
        raise ImportLayoutError(
            f"{source}: {_relative(path, root)} is not valid JSON: {exc}"
        ) from None


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


class ImageFinder:
    """Which image paths (relative to ROOT) exist as regular files inside ROOT.

    Folder listings are read once per folder (a collection has 100,000 images in a few
    folders), so checking every row costs one ``os.scandir`` per folder, not a ``stat`` per row.
    """

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._listing: dict[str, frozenset[str] | None] = {}
        self._folders: dict[str, Path] = {}

    def status(self, relative: str) -> str | None:
        """None when ``relative`` names a regular file inside ROOT, else the exclusion reason."""
        if not relative or relative.startswith(("/", "\\")) or "\0" in relative:
            return OUTSIDE_ROOT
        parts = Path(relative).parts
        if ".." in parts:
            return OUTSIDE_ROOT
        folder = os.path.dirname(relative)
        names = self._listing.get(folder, ())
        if names == ():
            names = self._list(folder)
        if names is None or os.path.basename(relative) not in names:
            return MISSING_IMAGE
        return None

    def _list(self, folder: str) -> frozenset[str] | None:
        try:
            path = self._resolved(folder)
            if not path.is_relative_to(self.root):
                listing: frozenset[str] | None = None
            else:
                with os.scandir(path) as entries:
                    listing = frozenset(e.name for e in entries if e.is_file(follow_symlinks=False))
        except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
            listing = None
        self._listing[folder] = listing
        return listing

    def _resolved(self, folder: str) -> Path:
        """``folder`` (relative to ROOT) with symlinks followed, built from its resolved parent.

        CheXpert has about 190,000 study folders under 65,000 patient folders: resolving each
        path from scratch costs a ``stat`` per component (22 s there); building on the parent's
        cached resolution costs one ``lstat`` per folder, and a full ``resolve`` only where a
        component is a symlink.
        """
        if folder in ("", "."):
            return self.root
        cached = self._folders.get(folder)
        if cached is None:
            parent, name = os.path.split(folder)
            cached = self._resolved(parent) / name
            if cached.is_symlink():
                cached = cached.resolve()
            self._folders[folder] = cached
        return cached


def keep_present(
    rows: Sequence[dict[str, str]], root: Path, imported: ImportedRows, *, source: str
) -> list[dict[str, str]]:
    """The rows whose ``image`` exists under ``root``; the others are counted as excluded.

    Raises:
        ImportLayoutError: Rows were given but not one image exists (the layout is wrong); the
            message names the first expected path.
    """
    finder = ImageFinder(root)
    kept: list[dict[str, str]] = []
    for row in rows:
        reason = finder.status(row["image"])
        if reason is None:
            kept.append(row)
        else:
            imported.exclude(reason)
    if rows and not kept:
        raise ImportLayoutError(
            f"{source}: none of the {len(rows)} images listed was found under {root} "
            f"(expected e.g. {root / rows[0]['image']}); is ROOT the folder the collection was "
            "downloaded to?"
        )
    return kept


# --- writing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportSummary:
    """What :func:`write_import` wrote."""

    manifest: Path
    sidecar: Path
    rows: int
    excluded: Mapping[str, int]
    notes: tuple[str, ...]


def write_import(
    source: str,
    importer: Importer,
    root: Path,
    out: Path,
    progress: Progress,
    *,
    overwrite: bool = False,
) -> ImportSummary:
    """Run ``importer`` on ``root`` and write ``out/manifest.csv`` and ``out/manifest.json``.

    Raises:
        ImportLayoutError: ROOT's layout is wrong.
        XaibenchError: ROOT is not a folder, ``out`` already holds a manifest (and not
            ``overwrite``), or the importer returned no row or a row without an image or
            patient id.
    """
    import pandas as pd

    from xaibench import __version__
    from xaibench.escape import to_csv

    if not root.is_dir():
        raise XaibenchError(f"{source}: ROOT {root} is not a folder")
    manifest, sidecar = out / MANIFEST_NAME, out / SIDECAR_NAME
    if not overwrite:
        for path in (manifest, sidecar):
            if path.exists() or path.is_symlink():
                raise XaibenchError(f"{path} already exists; pass --overwrite to replace it")
    imported = importer.read(root.resolve(), progress)
    if not imported.rows:
        reasons = ", ".join(f"{n} {r}" for r, n in imported.excluded.items()) or "none listed"
        raise XaibenchError(f"{source}: no image left to import (excluded: {reasons})")
    for i, row in enumerate(imported.rows):
        if not row.get("image") or not row.get("patient_id"):
            raise XaibenchError(f"{source}: importer row {i + 1} has no image or patient_id")
    columns = _column_order(imported.rows, importer.findings)
    frame = pd.DataFrame([[row.get(c, "") for c in columns] for row in imported.rows], dtype=object)
    frame.columns = pd.Index(columns)
    out.mkdir(parents=True, exist_ok=True)
    _write_text(manifest, to_csv(frame))
    payload = {
        "format": "xaibench-import",
        "format_version": "1",
        "xaibench_version": __version__,
        "source": source,
        "importer": type(importer).__name__,
        "importer_version": importer.version,
        "options": importer.options(),
        "rows": len(imported.rows),
        "excluded": dict(sorted(imported.excluded.items())),
        "notes": list(imported.notes),
        "columns": columns,
        "paths_relative_to": "ROOT (run with --image-root ROOT)",
    }
    _write_text(sidecar, json.dumps(payload, indent=2) + "\n")
    return ImportSummary(
        manifest, sidecar, len(imported.rows), dict(imported.excluded), tuple(imported.notes)
    )


def _column_order(rows: Sequence[Mapping[str, str]], findings: Sequence[str]) -> list[str]:
    """Leading columns, findings in the importer's order, then the rest as first seen."""
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(key, None)
    region_prefixes = ("mask_", "rle_", "siim_rle_", "polygon_", "box_")
    leading = [c for c in LEADING_COLUMNS if c in seen]
    finding_columns = [c for c in findings if c in seen]
    regions = [c for c in seen if c.startswith(region_prefixes)]
    placed = {*leading, *finding_columns, *regions}
    rest = [c for c in seen if c not in placed]
    return [*leading, *finding_columns, *regions, *rest]


def _write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, so a crash leaves no half file."""
    temporary = path.with_name(f".{path.name}.partial")
    temporary.write_text(text, encoding="utf-8", newline="")
    os.replace(temporary, path)
