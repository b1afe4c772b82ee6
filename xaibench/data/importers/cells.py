"""Text cells shared by several importers: box lists, numbers, DICOM header fields, folder walks.

Boxes are written in the manifest's ``box_`` format (``[[x, y, w, h], ...]`` in native pixels,
``docs/data.md``); numbers are written as the shortest text that reads back to the same value
(``691`` for ``691.0``, ``900.96`` as published), so a manifest stays readable and exact.

DICOM header fields (view, sex, age) are read with pydicom's ``stop_before_pixels`` and
``specific_tags``: a header read costs a few kilobytes per file, no pixel is decoded.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

#: Which manifest column each DICOM header keyword fills.
HEADER_COLUMNS: dict[str, str] = {"ViewPosition": "view", "PatientSex": "sex", "PatientAge": "age"}


def number_text(value: float) -> str:
    """The shortest text of a finite number: ``691`` for 691.0, ``900.96`` for 900.96."""
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def parse_number(text: str) -> float | None:
    """A finite number from a published cell, or None when the cell is empty or not a number."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def box_cell(boxes: Sequence[Sequence[float]]) -> str:
    """A ``box_`` cell: JSON list of ``[x, y, w, h]`` boxes (``[]`` = annotated, none)."""
    return json.dumps([[number_text(v) for v in box] for box in boxes]).replace('"', "")


def dicom_age(text: str) -> str:
    """Years from a DICOM Age String (``043Y``) or a bare number (``43``); else empty.

    Ages in months, weeks or days (``006M``) are left empty rather than rounded to 0 years.
    """
    text = text.strip().upper()
    if text.endswith("Y"):
        text = text[:-1]
    return str(int(text)) if text.isdigit() else ""


def dicom_header_cells(path: Path) -> dict[str, str]:
    """``view``, ``sex`` and ``age`` cells from a DICOM file's header (empty where absent).

    Nothing but the header is read; a file pydicom cannot parse gives empty cells (the image
    itself is checked by ``xaibench data check``).
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    cells = dict.fromkeys(HEADER_COLUMNS.values(), "")
    # Published headers break the standard harmlessly (RSNA's PatientAge '43' is not a valid
    # Age String); pydicom warns on reading them, the value is still what we want.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            dataset = pydicom.dcmread(
                path, stop_before_pixels=True, specific_tags=list(HEADER_COLUMNS), force=True
            )
            values = {k: str(dataset.get(k, "") or "").strip() for k in HEADER_COLUMNS}
        except (OSError, InvalidDicomError, ValueError, EOFError):
            return cells
    for keyword, column in HEADER_COLUMNS.items():
        value = values[keyword]
        cells[column] = dicom_age(value) if keyword == "PatientAge" else value.upper()
    return cells


def walk_files(root: Path, suffixes: Iterable[str]) -> dict[str, str]:
    """Every regular file under ``root`` ending in one of ``suffixes``: stem -> relative path.

    Symbolic links (files and folders) are not followed, so every path stays inside ROOT.
    When a stem occurs twice, the first path in sorted order wins (deterministic).
    """
    ends = tuple(s.lower() for s in suffixes)
    found: dict[str, str] = {}
    for folder, folders, files in os.walk(root, followlinks=False):
        folders.sort()
        for name in sorted(files):
            if not name.lower().endswith(ends):
                continue
            path = Path(folder) / name
            if path.is_symlink() or not path.is_file():
                continue
            stem = name[: name.rfind(".")]
            found.setdefault(stem, path.relative_to(root).as_posix())
    return found
