"""A finished run directory as Python objects: :class:`Run` (``xaibench.run``, ``xaibench.load``).

Everything is read through the readers the leaderboards and the report use
(:func:`xaibench.report.run_files.load_run`: the results document checked, the CSVs read back
through :func:`xaibench.escape.csv_frame_back`), and the leaderboards are rebuilt from the files
by :func:`xaibench.leaderboard.build_leaderboards` with the settings the run's own
``leaderboard.json`` records, so a notebook shows the numbers the files and the CLI show.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from xaibench.errors import XaibenchError

if TYPE_CHECKING:
    from xaibench.leaderboard import Leaderboards
    from xaibench.report.run_files import RunFiles

#: The two leaderboards of a run.
BOARDS = ("performance", "explainability")

#: Columns of :attr:`Run.records` and their pandas dtypes (``docs/results-schema.md``).
_RECORD_TYPES: dict[str, str] = {
    "task": "string", "dataset": "string", "backbone": "string", "strategy": "string",
    "seed": "Int64", "metric": "string", "category": "string", "saliency": "string",
    "perturbation": "string", "region": "string", "value": "float64", "ci_low": "float64",
    "ci_high": "float64", "n": "Int64", "status": "string", "higher_is_better": "boolean",
    "random_init": "boolean", "reason": "string",
}  # fmt: skip

#: Text columns of the per-image tables.
_TABLE_TEXT = (
    "backbone", "strategy", "split", "sample_id", "perturbation", "region", "metric", "saliency",
)  # fmt: skip

#: What identifies a record: the keys :meth:`Run.compare` aligns two runs on.
COMPARE_KEYS = ("backbone", "strategy", "seed", "metric", "saliency", "perturbation", "region")

#: Gallery tiles shown by :meth:`Run._repr_html_`.
_REPR_TILES = 3


class CellsFailedError(XaibenchError):
    """Some cells of a run failed (every result was still written); ``run`` holds the run.

    The CLI's exit status 1: ``xaibench.run(..., check=False)`` returns the run instead.
    """

    exit_code = 1

    def __init__(self, message: str, run: Run) -> None:
        super().__init__(message)
        self.run = run


@dataclass(eq=False)  # holds DataFrames: two runs are equal only when they are one
class Run:
    """One run directory: its records, per-image tables, leaderboards and configuration.

    Build it with :func:`xaibench.run` or :func:`xaibench.load`, not directly.

    Attributes:
        path: The run directory.
    """

    path: Path
    _files: RunFiles = field(repr=False)
    _boards: Leaderboards | None = field(default=None, repr=False)

    @classmethod
    def from_dir(cls, run_dir: str | Path) -> Run:
        """Read ``run_dir`` (or its ``results.json``).

        Raises:
            XaibenchError: It is not a readable run directory (the message names the file).
        """
        from xaibench.report.run_files import load_run

        files = load_run(Path(run_dir))
        return cls(files.path, files)

    def __repr__(self) -> str:
        task = self._files.task.get("name")
        return f"Run({str(self.path)!r}, task={task!r}, cells={len(self.cells)})"

    @property
    def config(self) -> dict[str, Any]:
        """The resolved run configuration (``config.yaml``, as recorded in ``results.json``)."""
        import copy

        return copy.deepcopy(dict(self._files.document.get("config") or {}))

    @property
    def task(self) -> dict[str, Any]:
        """``name``, ``class_names``, ``positive_class``, ``regions_of_interest``."""
        return self._files.task

    @property
    def cells(self) -> pd.DataFrame:
        """One row per cell: ``backbone``, ``strategy``, ``seed``, ``status``, ``error``."""
        rows = [
            {k: cell.get(k) for k in ("backbone", "strategy", "seed", "status", "error")}
            for cell in self._files.document.get("cells", [])
        ]
        frame = pd.DataFrame(rows, columns=["backbone", "strategy", "seed", "status", "error"])
        return frame.astype(
            {"backbone": "string", "strategy": "string", "seed": "Int64", "status": "string",
             "error": "string"}
        )  # fmt: skip

    @property
    def records(self) -> pd.DataFrame:
        """The flat metric records of ``results.json``, one row each, with typed columns.

        Text columns are pandas ``string`` (``<NA>`` where a record has none: the intact
        condition's ``perturbation``), ``seed`` and ``n`` ``Int64``, ``value``, ``ci_low`` and
        ``ci_high`` ``float64`` (NaN where undefined), flags ``boolean``; ``details`` holds each
        record's details object (chance levels, normalised scores; ``docs/results-schema.md``).
        """
        records = self._files.records
        columns = [*_RECORD_TYPES, "details"]
        frame = pd.DataFrame([{k: rec.get(k) for k in columns} for rec in records], columns=columns)
        frame["details"] = [dict(rec.get("details") or {}) for rec in records]
        return frame.astype(_RECORD_TYPES)

    @property
    def predictions(self) -> pd.DataFrame:
        """``predictions.csv``: one row per cell x image x condition; ``prob_<class>`` floats."""
        return _typed_table(self._files.predictions)

    @property
    def explanations(self) -> pd.DataFrame:
        """``explanations.csv``: per-image explanation scores; ``value`` float (NaN: undefined)."""
        return _typed_table(self._files.explanations)

    def leaderboard(self, which: str = "performance") -> pd.DataFrame:
        """The ``performance`` or ``explainability`` leaderboard, one row per cell (numbers).

        Rebuilt from the run's files with the settings its ``leaderboard.json`` records, so the
        numbers are those of ``leaderboard_<which>.csv`` (which rounds them to 6 decimals).

        Raises:
            XaibenchError: ``which`` is neither leaderboard.
        """
        if which not in BOARDS:
            import difflib

            close = difflib.get_close_matches(str(which), BOARDS, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise XaibenchError(f"unknown leaderboard {which!r}{hint} (leaderboards: "
                                f"{', '.join(BOARDS)})")  # fmt: skip
        frame: pd.DataFrame = getattr(self._leaderboards(), which)
        return frame.copy()

    def _leaderboards(self) -> Leaderboards:
        if self._boards is None:
            from xaibench.leaderboard import build_leaderboards, committed_settings

            settings = committed_settings(self.path)
            self._boards = build_leaderboards(
                [self._files],
                alpha=float(settings.get("alpha", 0.05)),
                resamples=int(settings.get("resamples", 1000)),
                seed=int(settings.get("seed", 0)),
            )
        return self._boards

    def compare(self, other: Run) -> pd.DataFrame:
        """This run's records beside ``other``'s, aligned on what identifies a record.

        One row per record key (:data:`COMPARE_KEYS`) in either run: ``value``, ``ci_low``,
        ``ci_high`` and ``status`` of each (suffixes ``_a`` for this run, ``_b`` for
        ``other``; missing where a run has no such record) and ``difference`` = ``value_b -
        value_a``. For a joint ranking of different cells of one study, use ``xaibench
        leaderboard RUN_A RUN_B``.

        Raises:
            XaibenchError: The runs are of different tasks (their metrics mean other things).
        """
        if not isinstance(other, Run):
            raise XaibenchError(f"compare needs a Run, not {type(other).__name__}")
        mine, theirs = self.task.get("name"), other.task.get("name")
        if mine != theirs:
            raise XaibenchError(
                f"runs {str(self.path)!r} and {str(other.path)!r} are of different tasks "
                f"({mine!r} vs {theirs!r}); their numbers are not comparable"
            )
        kept = [*COMPARE_KEYS, "value", "ci_low", "ci_high", "status"]
        a = self.records[kept].copy()
        b = other.records[kept].copy()
        for frame in (a, b):  # NA keys would never match: the intact condition has none
            for key in COMPARE_KEYS:
                if key != "seed":
                    frame[key] = frame[key].fillna("")
        merged = a.merge(b, on=list(COMPARE_KEYS), how="outer", suffixes=("_a", "_b"))
        merged["difference"] = merged["value_b"] - merged["value_a"]
        return merged.sort_values(list(COMPARE_KEYS), kind="stable").reset_index(drop=True)

    def _repr_html_(self) -> str:
        """The headline leaderboards and a few gallery tiles, for notebooks (all escaped)."""
        from xaibench.cli.run_command import _headline_column
        from xaibench.leaderboard import display_frame
        from xaibench.report.html import escape, figure, table_html

        boards = self._leaderboards()
        primary = (self.task.get("regions_of_interest") or [None])[0]
        parts = [
            f"<div class='xaibench-run'><p><b>xaibench run</b> <code>{escape(self.path)}</code>"
            f": task <code>{escape(self.task.get('name'))}</code>, {len(self.cells)} cell(s)"
            "</p>"
        ]
        for name in BOARDS:
            shown = display_frame(getattr(boards, name))
            if name == "explainability" and primary:
                shown = shown[[c for c in shown.columns if _headline_column(str(c), primary)]]
            parts.append(table_html(shown, caption=f"{name.capitalize()} leaderboard"))
        for entry in self._files.galleries[:_REPR_TILES]:
            path = Path(entry["path"])
            if path.is_file():
                label = (f"{entry.get('backbone')} x {entry.get('strategy')} (seed "
                         f"{entry.get('seed')}): {entry.get('saliency')}")  # fmt: skip
                try:
                    parts.append(figure(path.read_bytes(), alt=label, caption=label))
                except XaibenchError:
                    continue  # not a PNG: left out, as the report does
        parts.append("</div>")
        return "".join(parts)


def _typed_table(frame: pd.DataFrame) -> pd.DataFrame:
    """A per-image table with ``string`` text columns and an integer ``seed``."""
    frame = frame.copy()
    for column in _TABLE_TEXT:
        if column in frame:
            frame[column] = frame[column].astype("string")
    if "seed" in frame:
        frame["seed"] = pd.to_numeric(frame["seed"]).astype("Int64")
    for column in ("label", "target", "image_index"):
        if column in frame and pd.api.types.is_integer_dtype(frame[column]):
            frame[column] = frame[column].astype("Int64")
    return frame
