"""A manifest's cells: problems and how they read, numbers, labels, splits, metadata.

The reading rules of :mod:`xaibench.data.check` for values (files are
:mod:`xaibench.data.files`, the CSV text :mod:`xaibench.data.csvtext`):

* a :class:`Problem` names its 1-based data row and column, and prints as one line of plain
  text (:func:`format_problem` escapes control characters quoted from cells and file names);
* a T-score (and a numeric label), read by a task, is a plain decimal number
  (:func:`parse_decimal`), never
  ``1_0``, ``0x10`` or digits of another script, which Python's ``float`` would accept;
* a patient must stay in one split (:func:`split_problems`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from xaibench.data.splits import SPLITS
from xaibench.data.who import WHO_CLASSES

if TYPE_CHECKING:  # pandas is imported where it is used: task files load without it
    import pandas as pd

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

#: A T-score beyond this magnitude is almost certainly another quantity (BMD, age, Z-score x10).
T_SCORE_LIMIT = 10.0

#: A plain decimal number: digits, an optional point and exponent; ASCII only, so no ``1_0``
#: (Python's ``float`` reads it as 10), no ``0x10``, no Arabic-Indic or full-width digits.
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
#: Spellings of a non-finite float, reported as such rather than as "not a number".
_NON_FINITE = re.compile(r"[+-]?(?:nan|inf|infinity)", re.IGNORECASE)


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


def typed_column(column: pd.Series) -> pd.Series:
    """Numbers where every non-empty cell is a plain decimal (age, weight), else the strings.

    Plain as :func:`parse_decimal` reads them, so ``nan``, ``inf`` or ``1_0`` keep the column
    as text and whoever reads it (a task's label rule) can quote the cell as written. Empty
    cells of a numeric column are NaN.
    """
    import pandas as pd

    filled = column[column != ""]
    if len(filled) and filled.str.strip().str.fullmatch(_DECIMAL.pattern).all():
        return pd.to_numeric(column.replace("", np.nan), errors="coerce").astype(float)
    return column


def t_score_problem(value: object) -> tuple[float | None, str | None]:
    """A T-score cell's value, or why it is not one (for tasks that read T-scores).

    ``value`` is a table cell: a float (NaN: empty) where the whole column is numeric, else
    text read strictly (:func:`parse_decimal`). A value beyond :data:`T_SCORE_LIMIT` is a
    problem: it is almost certainly another quantity.

    Returns:
        ``(value, None)``, ``(None, None)`` for an empty cell, or ``(None, problem)``.
    """
    if isinstance(value, float | int | np.floating | np.integer) and not isinstance(value, bool):
        number = float(value)
        if np.isnan(number):
            return None, None
        cell = repr(number)
    else:
        cell = str(value).strip()
        if not cell:
            return None, None
        parsed = parse_decimal(cell)
        if parsed is None:
            finite = "a finite" if _NON_FINITE.fullmatch(cell) else "a"
            return None, f"not {finite} number: {cell!r}"
        number = parsed
    if not np.isfinite(number):  # 1e999
        return None, f"not a finite number: {cell!r}"
    if abs(number) > T_SCORE_LIMIT:
        return None, (
            f"{number:g} is outside [-{T_SCORE_LIMIT:g}, {T_SCORE_LIMIT:g}]; is this column a "
            "T-score?"
        )
    return number, None
