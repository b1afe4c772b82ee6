"""What every report section reads: the runs and leaderboards, and small table helpers.

:class:`_Context` merges the runs for the section builders; the helpers fold interval columns,
tell missing values, and name and order cells.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from xaibench.leaderboard import Leaderboards
from xaibench.report import figures
from xaibench.report.html import format_cell
from xaibench.report.run_files import RunFiles

_CELL = ["backbone", "strategy", "seed"]


@dataclass(frozen=True)
class _Context:
    """Everything the section builders read, merged over the runs."""

    runs: Sequence[RunFiles]
    boards: Leaderboards
    base: Path | None

    @property
    def task(self) -> dict[str, Any]:
        return self.runs[0].task

    @property
    def records(self) -> list[dict[str, Any]]:
        return [rec for run in self.runs for rec in run.records]

    @property
    def cells(self) -> list[dict[str, Any]]:
        return [cell for run in self.runs for cell in run.document.get("cells", [])]

    @property
    def primary_region(self) -> str | None:
        regions = self.task.get("regions_of_interest") or []
        return str(regions[0]) if regions else None

    def analysis(self, name: str) -> pd.DataFrame:
        """One cross-cell table, rows of every run concatenated (empty when absent)."""
        rows = [row for run in self.runs for row in (run.analysis.get(name) or [])]
        return pd.DataFrame(rows)

    def intact_predictions(self) -> pd.DataFrame:
        frames = [run.intact_predictions() for run in self.runs]
        frames = [f for f in frames if not f.empty]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def shown_path(self, path: Path) -> str:
        """A run's path as the report shows it: relative to the report, so no home folders."""
        if self.base is None:
            return Path(path).name
        return Path(os.path.relpath(Path(path).resolve(), self.base.resolve())).as_posix()


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _fold_intervals(frame: pd.DataFrame) -> pd.DataFrame:
    """Join interval columns into their value: ``x`` + ``x_low``/``x_high`` -> ``x [lo, hi]``.

    Recognises ``<x>_low``/``<x>_high``, ``<x> low``/``<x> high``, and ``ci_low``/``ci_high``
    or ``low``/``high``, which belong to the column just before the lower bound. Tables from
    different analyses name their bounds differently; readers should see one convention.
    """
    columns = [str(c) for c in frame.columns]
    frame = frame.copy()
    frame.columns = columns
    pairs: list[tuple[str, str, str]] = []
    for col in columns:
        for low, high in ((f"{col}_low", f"{col}_high"), (f"{col} low", f"{col} high")):
            if low in columns and high in columns:
                pairs.append((col, low, high))
    for low, high in (("ci_low", "ci_high"), ("low", "high")):
        if low in columns and high in columns:
            position = columns.index(low)
            if position > 0 and columns[position - 1] not in {p[0] for p in pairs}:
                pairs.append((columns[position - 1], low, high))
    for col, low, high in pairs:
        frame[col] = [
            _with_interval(v, lo, hi)
            for v, lo, hi in zip(frame[col], frame[low], frame[high], strict=True)
        ]
        frame = frame.drop(columns=[low, high])
    return frame


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _with_interval(value: Any, low: Any, high: Any) -> str:
    text = format_cell(value)
    if _missing(value) or _missing(low) or _missing(high):
        return text
    return f"{text} [{float(low):.3f}, {float(high):.3f}]"


def _drop_constant_columns(frame: pd.DataFrame, keep: Sequence[str] = ()) -> pd.DataFrame:
    """Leave out bookkeeping columns that say the same thing on every row (e.g. ``reason``)."""
    drop = [
        c
        for c in frame.columns
        if c not in keep and c in ("reason", "index") and frame[c].isna().all()
    ]
    return frame.drop(columns=drop)


def _cell_name(row: Mapping[str, Any]) -> str:
    return figures.cell_label(row["backbone"], row["strategy"], row["seed"])


def _sort_cells(frame: pd.DataFrame, extra: Sequence[str] = ()) -> pd.DataFrame:
    keys = [c for c in [*_CELL, *extra] if c in frame]
    if not keys:
        return frame
    return frame.sort_values(keys, kind="stable", key=lambda s: s.astype(str)).reset_index(
        drop=True
    )
