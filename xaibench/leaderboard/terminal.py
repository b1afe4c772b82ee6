"""Leaderboards in the terminal: the headline view that fits 100 columns, or the full tables.

``xaibench run`` and ``xaibench leaderboard`` print :func:`print_leaderboards`. By default the
headline view (:mod:`xaibench.leaderboard.headline_view`) is laid out to fit the console's width
(100 columns when the output is not a terminal and ``COLUMNS`` is unset), trying in turn until
it fits: full names on one line; the cell over two lines (backbone, then the strategy);
backbone, strategy and method names abbreviated (:func:`short_names`, listed under the table);
each CI on a second line; shorter abbreviations. ``ci_lines`` puts the CIs on second lines from
the start. ``wide`` prints both full tables (every column of the Markdown files) at their
natural width: nothing is cut, lines are as long as the table (``| less -S``).
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from xaibench.leaderboard.build import Leaderboards
from xaibench.leaderboard.display import display_frame
from xaibench.leaderboard.files import table_notes
from xaibench.leaderboard.headline_view import (
    RANDOM_MARK,
    TIMES,
    CellRow,
    HeadlineView,
    MethodRow,
    headline_view,
    seed_text,
)

#: Width the headline view is laid out for when the output is not a terminal.
DEFAULT_WIDTH = 100
#: Marks where an abbreviated name was cut (never an ellipsis: that means "truncated by rich").
_CUT = "~"


def short_names(names: Iterable[str], limit: int) -> dict[str, str]:
    """Each name at most ``limit`` characters, all still distinct; names that fit are kept.

    When a name is too long, the words (split at ``.``, ``_`` and ``-``) that every name shares
    are dropped from all of them (``openclip_tiny.random``, ``dinov2_tiny.random`` ->
    ``openclip``, ``dinov2``); a name still too long is cut and ends in ``~``, with a number
    when two cuts would collide.
    """
    unique = list(dict.fromkeys(names))
    if all(len(n) <= limit for n in unique):
        return {n: n for n in unique}
    words = {n: [w for w in re.split(r"[._-]", n) if w] for n in unique}
    common = set.intersection(*(set(w) for w in words.values())) if len(unique) > 1 else set()
    out: dict[str, str] = {}
    for name in unique:
        kept = [w for w in words[name] if w not in common] or words[name]
        short = "_".join(kept) if common else name
        out[name] = short
    if len(set(out.values())) < len(unique):  # dropping words merged two names: keep them
        out = {n: n for n in unique}
    taken: set[str] = {s for s in out.values() if len(s) <= limit}
    for name in unique:
        short = out[name]
        if len(short) <= limit:
            continue
        candidate = short[: limit - 1] + _CUT
        number = 0
        while candidate in taken:
            number += 1
            candidate = short[: max(limit - 1 - len(str(number)), 1)] + _CUT + str(number)
        taken.add(candidate)
        out[name] = candidate
    return out


@dataclass(frozen=True)
class _Layout:
    two_line_cell: bool
    ci_lines: bool
    limit: int | None  # abbreviate names to this many characters (None: full names)


_LAYOUTS = (
    _Layout(False, False, None),
    _Layout(True, False, None),
    _Layout(True, False, 16),
    _Layout(True, True, 16),
    _Layout(True, True, 10),
)


def headline_table(
    view: HeadlineView, width: int, *, ci_lines: bool = False
) -> tuple[Table, list[str]]:
    """The headline view as a rich table that fits ``width`` if any layout does, and its legend.

    The legend lists the abbreviated names (empty when none was abbreviated).
    """
    layouts = [replace(layout, ci_lines=True) for layout in _LAYOUTS] if ci_lines else _LAYOUTS
    for layout in dict.fromkeys(layouts):
        table, legend = _build(view, layout)
        if natural_width(table) <= width:
            return table, legend
    return table, legend  # the narrowest layout: rich shrinks what still does not fit


def natural_width(table: Table) -> int:
    """The width ``table`` takes when nothing limits it (no column shrunk, nothing cut)."""
    console = Console(width=100_000, file=io.StringIO())
    return Measurement.get(console, console.options, table).maximum


def _build(view: HeadlineView, layout: _Layout) -> tuple[Table, list[str]]:
    ci_lines = layout.ci_lines
    renames: dict[str, dict[str, str]] = {"backbone": {}, "strategy": {}, "method": {}}
    if layout.limit is not None:
        renames["backbone"] = short_names((r.backbone for r in view.rows), layout.limit)
        renames["strategy"] = short_names((r.strategy for r in view.rows), max(layout.limit, 12))
        renames["method"] = short_names(
            (m.method for r in view.rows for m in r.methods), max(layout.limit - 2, 8)
        )
    table = Table(
        box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0), highlight=False
    )
    table.add_column("tier", justify="right", no_wrap=True)
    table.add_column("cell", no_wrap=True)
    table.add_column("AUC", justify="right", no_wrap=True)
    if view.delta_header:
        table.add_column(view.delta_header.replace(" (", "\n("), justify="right", no_wrap=True)
    has_methods = any(r.methods for r in view.rows)
    if has_methods:
        table.add_column("method", no_wrap=True)
        if view.localisation_header:
            table.add_column(view.localisation_header, justify="right", no_wrap=True)
        table.add_column("sanity", no_wrap=True)
        if view.has_trust:
            table.add_column("trust", no_wrap=True)
    for row in view.rows:
        lines = _cell_lines(row, renames, layout.two_line_cell)
        methods: list[MethodRow | None] = [*row.methods] or [None]
        # the cell's second line goes on the second method row when there is one (no extra
        # height), else into the first row's cell
        spread = len(lines) > 1 and len(methods) > 1
        own = [row.tier, lines[0] if spread else "\n".join(lines), _shown(row.auc, ci_lines)]
        if view.delta_header:
            own.append(_shown(row.delta, ci_lines))
        for i, method in enumerate(methods):
            cells = own if i == 0 else [""] * len(own)
            if i == 1 and spread:
                cells[1] = lines[1]
            if has_methods:
                if method is None:
                    cells = [*cells, *([""] * (len(table.columns) - len(cells)))]
                else:
                    cells = [*cells, renames["method"].get(method.method, method.method)]
                    if view.localisation_header:
                        cells.append(_shown(method.localisation, ci_lines))
                    cells.append(method.sanity)
                    if view.has_trust:
                        cells.append(method.trust)
            table.add_row(*(Text(c) for c in cells), end_section=i == len(methods) - 1)
    return table, _legend(renames)


def _cell_lines(row: CellRow, renames: dict[str, dict[str, str]], two_lines: bool) -> list[str]:
    backbone = renames["backbone"].get(row.backbone, row.backbone)
    strategy = renames["strategy"].get(row.strategy, row.strategy)
    seed = seed_text(row)
    mark = RANDOM_MARK if row.random_init else ""
    if not two_lines:
        return [f"{backbone}{TIMES}{strategy}{seed}{mark}"]
    return [f"{backbone}{mark}", f"{TIMES.lstrip()}{strategy}{seed}"]


def _shown(value: tuple[str, str], ci_lines: bool) -> str:
    text, half = value
    if not half:
        return text
    return f"{text}\n{half}" if ci_lines else f"{text} {half}"


def _legend(renames: dict[str, dict[str, str]]) -> list[str]:
    lines = []
    for what, names in (
        ("Backbones", renames["backbone"]),
        ("Strategies", renames["strategy"]),
        ("Methods", renames["method"]),
    ):
        changed = [f"{short} = {full}" for full, short in names.items() if short != full]
        if changed:
            lines.append(f"{what}: " + "; ".join(changed) + ".")
    return lines


def print_leaderboards(
    lb: Leaderboards,
    *,
    wide: bool = False,
    ci_lines: bool = False,
    console: Console | None = None,
) -> None:
    """Print the headline view (default) or, with ``wide``, both full tables.

    ``console``: where to print (tests pass a recording console); by default standard output,
    laid out for the terminal's width, or :data:`DEFAULT_WIDTH` (``COLUMNS`` when set) when the
    output is not a terminal.
    """
    if console is None:
        console = Console(highlight=False)
        if not console.is_terminal:
            columns = os.environ.get("COLUMNS", "")
            console = Console(
                width=int(columns) if columns.isdigit() else DEFAULT_WIDTH, highlight=False
            )
    if wide:
        _print_full(lb, console)
        return
    view = headline_view(lb)
    positive = (lb.meta.get("task") or {}).get("positive_class")
    table, legend = headline_table(view, console.width, ci_lines=ci_lines)
    title = f"Leaderboard ({positive} vs rest, test split)" if positive else "Leaderboard"
    console.print(Text(title, style="bold"))
    console.print(table)
    for line in [*legend, *view.notes]:
        console.print(Text(line), highlight=False)
    console.print(
        Text("Every column: --wide, or the leaderboard_*.md / .csv files."), highlight=False
    )


def _print_full(lb: Leaderboards, console: Console) -> None:
    """Both full tables, every column, at their natural width (nothing cut)."""
    positive = (lb.meta.get("task") or {}).get("positive_class")
    titles = {
        "performance": f"Performance leaderboard ({positive} vs rest, test split)",
        "explainability": "Explainability leaderboard",
    }
    for name in ("performance", "explainability"):
        board = getattr(lb, name)
        frame = display_frame(board)
        table = Table(title=titles[name], title_justify="left", highlight=False)
        for col in frame.columns:
            fixed = col in ("backbone", "strategy", "weights")
            table.add_column(
                str(col).replace(" (", "\n("),
                justify="left" if fixed else "right",
                no_wrap=True,
            )
        for row in frame.itertuples(index=False):
            table.add_row(*(Text(str(v)) for v in row))
        natural = natural_width(table)
        width = console.width
        console.width = max(width, natural)  # print() cannot render wider than the console
        try:
            console.print(table)
        finally:
            console.width = width
        for line in table_notes(board, lb.meta):
            console.print(Text(line), highlight=False)
