"""The headline view: one short table of every cell that fits a 100-column terminal.

Per cell (backbone x strategy, the seed only when the tables hold several; with several seeds
one row per backbone x strategy aggregated over them, ``, 3 seeds``: the per-seed rows are in
``--wide`` and the files; :mod:`xaibench.leaderboard.seed_rows`): the AUC tier, the
AUC, the headline specific Δ (the explainability ranking column: headline perturbation on the
task's primary region) and, per saliency method, the chance-normalised localisation score on the
primary region with the method's sanity and trust badges. A value with a CI is shown as
``0.72 ±0.08``: two decimals and the **wider** half of the interval (``max(high - value,
value - low)``), so the interval shown always contains the recorded one; the exact bounds are in
the full table (``--wide``) and the files. Rows follow the performance table (best AUC first).

The rows are plain strings (:class:`HeadlineView`), rendered by :func:`headline_markdown` into
``leaderboard_*.md`` and by :mod:`xaibench.leaderboard.terminal` into the terminal.
Runs of results schema 1.4 and older have no specific Δ or normalised score: the view then
shows the raw Δ and the raw localisation column, and says so in its header.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from xaibench.escape import markdown_text
from xaibench.headline import LOCALISATION_PREFERENCE
from xaibench.leaderboard.build import Leaderboards
from xaibench.leaderboard.columns import (
    _EXPLANATION_LABELS,
    AGGREGATE_COLUMN,
    BEATS_CHANCE_SUFFIX,
    CELL_COLUMNS,
    CHANCE_MARK,
    NORMALISED_PREFIX,
)
from xaibench.leaderboard.display import to_markdown

#: Shown for a missing value (as in the full tables).
MISSING = "–"  # noqa: RUF001 (en dash: a missing value, not a minus)
#: After a cell whose weights were randomly initialised.
RANDOM_MARK = "*"
#: Between a backbone and its strategy.
TIMES = " × "  # noqa: RUF001 (multiplication sign)


@dataclass(frozen=True)
class MethodRow:
    """One saliency method of a cell: its localisation score and badges, as shown."""

    method: str
    localisation: tuple[str, str]  # (value, half-width or "")
    sanity: str
    trust: str


@dataclass(frozen=True)
class CellRow:
    """One cell of the headline view: its names, tier and headline values, as shown."""

    backbone: str
    strategy: str
    seed: str  # "" unless the tables hold several seeds
    random_init: bool
    tier: str
    auc: tuple[str, str]
    delta: tuple[str, str]
    methods: list[MethodRow] = field(default_factory=list)
    n_seeds: int = 1  # above 1: a row aggregated over this many seeds


@dataclass(frozen=True)
class HeadlineView:
    """The headline table: rows, the column headers of its values and the notes under it."""

    rows: list[CellRow]
    delta_header: str | None  # "sΔ_bone (mean)", "Δ_bone (zero)" or None: no Δ column
    localisation_header: str | None  # "nRMA_bone", "IoU_bone" or None
    has_trust: bool
    level: float
    notes: list[str]


def ci_text(value: Any, low: Any, high: Any) -> tuple[str, str]:
    """``("0.72", "±0.08")``: two decimals, the wider half of the CI; :data:`MISSING` if missing.

    The half-width is ``max(high - value, value - low)`` (absolute values: a bootstrap interval
    need not contain its point estimate), so ``value ± half`` contains ``[low, high]``.
    """
    if _missing(value):
        return MISSING, ""
    number = float(value)
    text = f"{number:.2f}"
    if text == "-0.00":
        text = "0.00"
    if _missing(low) or _missing(high):
        return text, ""
    half = max(abs(float(high) - number), abs(number - float(low)))
    return text, f"±{half:.2f}"


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value))


def sanity_text(badge: Any) -> str:
    """A sanity badge in at most 13 characters: ``fail (model, target)`` -> ``fail (both)``.

    Controls (``random``, ``edge``, ...) read ``control: <verdict>``; the checks they failed
    are in the full table.
    """
    if _missing(badge) or not str(badge):
        return MISSING
    text = str(badge)
    if text.startswith("control"):
        verdict = re.match(r"control \((n/a|\w+)", text)
        return f"control: {verdict.group(1)}" if verdict else "control"
    return text.replace("(model, target)", "(both)")


def trust_text(badge: Any) -> str:
    """A trust badge without its metrics: ``trusted (RMA, PG)`` -> ``trusted``."""
    if _missing(badge) or not str(badge):
        return MISSING
    return str(badge).split(" (")[0]


def _localisation_columns(
    frame: pd.DataFrame, primary: str | None, preferred: str | None
) -> tuple[str | None, dict[str, str]]:
    """The localisation label on the primary region (``nRMA_bone``) and its column per method.

    The metric of the evidence check (``preferred``) first, then
    :data:`~xaibench.headline.LOCALISATION_PREFERENCE`; normalised columns before raw ones.
    """
    if not primary:
        return None, {}
    order = [m for m in (preferred, *LOCALISATION_PREFERENCE) if m]
    for metric in dict.fromkeys(order):
        label = _EXPLANATION_LABELS.get(metric, metric)
        for prefix in (NORMALISED_PREFIX, ""):
            head = f"{prefix}{label}_{primary} ("
            found = {
                str(c)[len(head) : -1]: str(c)
                for c in frame.columns
                if str(c).startswith(head) and str(c).endswith(")")
            }
            if found:
                return f"{prefix}{label}_{primary}", found
    return None, {}


def _methods(frame: pd.DataFrame, localisation: dict[str, str]) -> list[str]:
    badged = [
        str(c)[len(prefix) : -1]
        for c in frame.columns
        for prefix in ("sanity (", "trust (")
        if str(c).startswith(prefix)
    ]
    return list(dict.fromkeys([*localisation, *badged]))


def headline_view(lb: Leaderboards) -> HeadlineView:
    """The headline rows of ``lb``: every performance row, in its order, with its values."""
    perf, expl = lb.performance, lb.explainability
    primary = ((lb.meta.get("task") or {}).get("regions_of_interest") or [None])[0]
    delta_col = (lb.meta.get("ranking") or {}).get("explainability")
    if delta_col is not None and not str(delta_col).startswith(("sΔ", "Δ")):
        delta_col = None
    headline = lb.meta.get("headline") or {}
    loc_label, loc_cols = _localisation_columns(expl, primary, headline.get("localisation_metric"))
    methods = _methods(expl, loc_cols)
    has_trust = any(str(c).startswith("trust (") for c in expl.columns)
    per_seed = perf[~perf[AGGREGATE_COLUMN]] if AGGREGATE_COLUMN in perf else perf
    several_seeds = len({*per_seed.get("seed", pd.Series(dtype=object)).tolist()}) > 1
    counts = per_seed.groupby(["backbone", "strategy"]).size().to_dict() if len(perf) else {}
    by_cell = {_row_key(r): r for _, r in expl.iterrows()}
    rows = []
    for _, prow in _shown_rows(perf).iterrows():
        erow = by_cell.get(_row_key(prow))
        aggregate = bool(prow.get(AGGREGATE_COLUMN, False))
        method_rows = []
        for method in methods:
            col = loc_cols.get(method)
            loc = _value(erow, col)
            if _not_shown_to_beat_chance(erow, col):
                loc = (loc[0], f"{loc[1]} {CHANCE_MARK}".strip())
            method_rows.append(
                MethodRow(
                    method=method,
                    localisation=loc,
                    sanity=sanity_text(_get(erow, f"sanity ({method})")),
                    trust=trust_text(_get(erow, f"trust ({method})")),
                )
            )
        rows.append(
            CellRow(
                backbone=str(prow["backbone"]),
                strategy=str(prow["strategy"]),
                seed=str(prow["seed"]) if several_seeds and not aggregate else "",
                random_init=prow.get("weights") == "random init",
                tier=MISSING if _missing(prow.get("tier")) else str(int(prow["tier"])),
                auc=_value(prow, "AUC" if "AUC" in perf else None),
                delta=_value(erow, delta_col),
                methods=method_rows,
                n_seeds=int(counts[(prow["backbone"], prow["strategy"])]) if aggregate else 1,
            )
        )
    return HeadlineView(
        rows=rows,
        delta_header=delta_col,
        localisation_header=loc_label,
        has_trust=has_trust,
        level=float(lb.meta.get("level", 0.95)),
        notes=_notes(lb, delta_col, loc_label, rows),
    )


def _row_key(row: pd.Series) -> tuple[Any, ...]:
    """A row's cell, with ``"aggregate"`` for the seed of a row aggregated over seeds."""
    if bool(row.get(AGGREGATE_COLUMN, False)):
        return (row["backbone"], row["strategy"], "aggregate")
    return tuple(row[c] for c in CELL_COLUMNS)


def _shown_rows(perf: pd.DataFrame) -> pd.DataFrame:
    """The rows the view shows: per backbone x strategy its seed aggregate where it has one.

    Aggregates first (best AUC first), then the per-seed rows of cells without an aggregate.
    """
    if AGGREGATE_COLUMN not in perf:
        return perf
    aggregated = perf[perf[AGGREGATE_COLUMN]]
    pooled = set(zip(aggregated["backbone"], aggregated["strategy"], strict=True))
    single = [
        not agg and (b, s) not in pooled
        for b, s, agg in zip(
            perf["backbone"], perf["strategy"], perf[AGGREGATE_COLUMN], strict=True
        )
    ]
    return pd.concat([aggregated, perf[single]])


def _not_shown_to_beat_chance(row: pd.Series | None, column: str | None) -> bool:
    verdict = _get(row, f"{column}{BEATS_CHANCE_SUFFIX}") if column else None
    return not _missing(verdict) and not bool(verdict)


def _get(row: pd.Series | None, column: str | None) -> Any:
    if row is None or column is None or column not in row.index:
        return None
    return row[column]


def _value(row: pd.Series | None, column: str | None) -> tuple[str, str]:
    return ci_text(_get(row, column), _get(row, f"{column} low"), _get(row, f"{column} high"))


def _notes(
    lb: Leaderboards, delta: str | None, localisation: str | None, rows: Sequence[CellRow]
) -> list[str]:
    level = round(float(lb.meta.get("level", 0.95)) * 100)
    notes = [
        f"Best AUC first; tier: cells whose AUC does not differ significantly from the tier's "
        f"best (Holm-adjusted paired tests) share it. ±: the wider half of the {level}% CI."
    ]
    if delta and delta.startswith("sΔ"):
        notes.append(
            f"{delta}: specific Δ, the AUC lost when the region is perturbed minus the loss when "
            "area-matched regions elsewhere are (headline perturbation: the lowest off-target "
            "cost)."
        )
    elif delta:
        notes.append(f"{delta}: Δ, the AUC lost when the region is perturbed (no controls).")
    if localisation and localisation.startswith(NORMALISED_PREFIX):
        notes.append(
            f"{localisation}: chance-normalised localisation, 0 at chance, 1 at the metric's "
            f"best; {CHANCE_MARK}: not shown to beat chance."
        )
    elif localisation:
        notes.append(f"{localisation}: raw localisation score (the run records no chance level).")
    if any(r.n_seeds > 1 for r in rows):
        notes.append(
            "n seeds: the mean over the seeds of each seed's value; its ± from a two-level "
            "bootstrap (seeds, then test images); no tier (the tests compare single models); "
            "per-seed rows in --wide and the files."
        )
    if any(r.random_init for r in rows):
        notes.append(
            f"{RANDOM_MARK}: randomly initialised weights, which say nothing about a pretrained "
            "model."
        )
    return notes


def seed_text(row: CellRow) -> str:
    """``, seed 1`` (one of several seeds), ``, 3 seeds`` (an aggregate), or empty."""
    if row.n_seeds > 1:
        return f", {row.n_seeds} seeds"
    return f", seed {row.seed}" if row.seed else ""


def cell_text(row: CellRow) -> str:
    """Backbone and strategy (:data:`TIMES`), the seed or seeds, the random-init mark."""
    seed = seed_text(row)
    mark = RANDOM_MARK if row.random_init else ""
    return f"{row.backbone}{TIMES}{row.strategy}{seed}{mark}"


def headline_frame(view: HeadlineView) -> pd.DataFrame:
    """The view as one string per table cell: a row per cell and saliency method.

    A cell's second and later method rows leave the cell's own columns empty.
    """
    columns = ["tier", "cell", "AUC"]
    if view.delta_header:
        columns.append(view.delta_header)
    has_methods = any(r.methods for r in view.rows)
    if has_methods:
        columns.append("method")
        if view.localisation_header:
            columns.append(view.localisation_header)
        columns.append("sanity")
        if view.has_trust:
            columns.append("trust")
    out = []
    for row in view.rows:
        own = [row.tier, cell_text(row), _joined(row.auc)]
        if view.delta_header:
            own.append(_joined(row.delta))
        for i, method in enumerate(row.methods or [None]):
            cells = own if i == 0 else [""] * len(own)
            if has_methods and method is not None:
                cells = [*cells, method.method]
                if view.localisation_header:
                    cells.append(_joined(method.localisation))
                cells.append(method.sanity)
                if view.has_trust:
                    cells.append(method.trust)
            elif has_methods:
                cells = [*cells, *([""] * (len(columns) - len(cells)))]
            out.append(cells)
    return pd.DataFrame(out, columns=columns)


def _joined(value: tuple[str, str]) -> str:
    return f"{value[0]} {value[1]}".strip()


def headline_markdown(view: HeadlineView) -> str:
    """The headline table in Markdown (full names; everything escaped) and its notes."""
    lines = [to_markdown(headline_frame(view))]
    lines.extend(f"{markdown_text(note)}\n" for note in view.notes)
    return "\n".join(lines)
