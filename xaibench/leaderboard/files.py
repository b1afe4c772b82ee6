"""Leaderboard files: Markdown, CSV, JSON and HTML, written and checked byte for byte.

Every file in :data:`LEADERBOARD_FILES` is rebuilt byte-identically from the results files, so
:func:`check_leaderboard_files` can tell a committed leaderboard that no longer matches them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xaibench.escape import markdown_code, markdown_text, to_csv
from xaibench.leaderboard.build import Leaderboards
from xaibench.leaderboard.columns import (
    BEATS_CHANCE_SUFFIX,
    CHANCE_MARK,
    NORMALISED_PREFIX,
    SPECIFIC_PREFIX,
)
from xaibench.leaderboard.display import display_frame, to_markdown
from xaibench.leaderboard.headline_view import headline_markdown, headline_view
from xaibench.paths import contained, write_whole

#: Files a leaderboard directory holds, all rebuilt byte-identically from the results files.
LEADERBOARD_FILES = (
    "leaderboard_performance.md",
    "leaderboard_performance.csv",
    "leaderboard_explainability.md",
    "leaderboard_explainability.csv",
    "comparisons.csv",
    "leaderboard.json",
    "leaderboard.html",
)

#: Decimals kept in CSV and JSON: far below any CI width, and stable across BLAS builds.
_DECIMALS = 6


def _rounded(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for col in frame.columns:
        if pd.api.types.is_float_dtype(frame[col]):
            frame[col] = frame[col].round(_DECIMALS)
    return frame


def _json_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    for record in _rounded(frame).to_dict(orient="records"):
        rows.append({str(k): _json_value(v) for k, v in record.items()})
    return rows


def _json_value(value: Any) -> Any:
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float | np.floating):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _markdown(board: pd.DataFrame, title: str, lb: Leaderboards) -> str:
    """The headline view first (both files), then the full table in a collapsible section."""
    ranking = lb.meta["ranking"]
    lines = [
        f"# {title}",
        "",
        f"Task {markdown_code(lb.meta['task']['name'])}. Headline: one row per cell and saliency "
        "method; the full table follows in a collapsible section.",
        "",
        headline_markdown(headline_view(lb)),
        "<details>",
        f"<summary>Full {title[0].lower()}{title[1:]}: every column</summary>",
        "",
        f"Ranked by {_ranking_text(title, ranking)}. "
        f"Values with {int(lb.meta['level'] * 100)}% CIs. Tier: cells whose paired difference "
        "from the tier's best is not significant "
        f"(Holm-adjusted p >= {lb.meta['alpha']}) share it.",
        "",
        to_markdown(display_frame(board)),
        *(f"{markdown_text(line)}\n" for line in table_notes(board, lb.meta)),
        "</details>",
        "",
        _sources_markdown(lb),
    ]
    return "\n".join(lines)


def table_notes(board: pd.DataFrame, meta: dict[str, Any]) -> list[str]:
    """Sentences under a table that has schema 1.5 columns (chance marks, off-target costs)."""
    notes = []
    if any(str(c).endswith(BEATS_CHANCE_SUFFIX) for c in board.columns):
        notes.append(
            f"A leading {NORMALISED_PREFIX} (nIoU, nRMA, ...): chance-normalised score, "
            "(value - chance) / (best - chance); 0 is what a map without information about the "
            "region gets, 1 the metric's best. "
            f"{CHANCE_MARK}: not shown to beat chance (one-sided paired test, Holm-adjusted "
            f"over every normalised value of the table, p >= {meta.get('alpha')})."
        )
    headline = meta.get("headline") or {}
    costs = headline.get("off_target_cost") or {}
    if costs:
        listed = ", ".join(f"{name} {cost:.3f}" for name, cost in costs.items())
        costly = headline.get("costly") or []
        notes.append(
            f"{SPECIFIC_PREFIX}Δ: specific Δ, the AUC lost when the region is perturbed minus "
            "the loss when area-matched control regions elsewhere are. Off-target cost (mean "
            f"absolute control Δ) per perturbation: {listed}; headline perturbation "
            f"{headline.get('perturbation')} (the lowest)."
            + (
                f" Above {headline.get('off_target_threshold')}, their specific Δ is the "
                f"difference of two large losses: {', '.join(costly)}."
                if costly
                else ""
            )
        )
    return notes


def _ranking_text(title: str, ranking: dict[str, str | None]) -> str:
    column = ranking["performance" if title.startswith("Performance") else "explainability"]
    return markdown_code(column) if column else "no column"


def _sources_markdown(lb: Leaderboards, base: Path | None = None) -> str:
    lines = ["Built from:", ""]
    for src in lb.meta["sources"]:
        commit = f", commit {src['git_commit'][:12]}" if src.get("git_commit") else ""
        lines.append(
            f"- {markdown_code(src['path'])}: xaibench "
            f"{markdown_text(src.get('xaibench_version'))}{markdown_text(commit)}, "
            f"results sha256 {markdown_text(src['results_sha256'][:16])}"
        )
    return "\n".join(lines) + "\n"


def render_files(lb: Leaderboards, out_dir: Path) -> dict[str, bytes]:
    """The bytes of every file in :data:`LEADERBOARD_FILES`, with source paths relative to it."""
    out_dir = Path(out_dir)
    relative = [
        {
            **src,
            "path": Path(
                os.path.relpath(Path(src["path"]).resolve(), out_dir.resolve())
            ).as_posix(),
        }
        for src in lb.meta["sources"]
    ]
    lb = Leaderboards(
        lb.performance, lb.explainability, lb.comparisons, {**lb.meta, "sources": relative}
    )
    files: dict[str, bytes] = {}
    for name, title in (
        ("performance", "Performance leaderboard"),
        ("explainability", "Explainability leaderboard"),
    ):
        board = getattr(lb, name)
        files[f"leaderboard_{name}.md"] = _markdown(board, title, lb).encode()
        files[f"leaderboard_{name}.csv"] = to_csv(_rounded(board)).encode()
    files["comparisons.csv"] = to_csv(_rounded(lb.comparisons)).encode()
    document = {
        "format": LEADERBOARD_FORMAT,
        **lb.meta,
        "performance": _json_rows(lb.performance),
        "explainability": _json_rows(lb.explainability),
        "comparisons": _json_rows(lb.comparisons),
    }
    files["leaderboard.json"] = (
        json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    ).encode()
    files["leaderboard.html"] = _html(lb).encode()
    return files


#: Version of ``leaderboard.json``'s layout.
LEADERBOARD_FORMAT = "xaibench-leaderboard/1"


def _html(lb: Leaderboards) -> str:
    from xaibench.report.html import Section, page, paragraph, table_html

    sections = [
        Section(
            "Performance leaderboard",
            table_html(display_frame(lb.performance)),
        ),
        Section(
            "Explainability leaderboard",
            table_html(display_frame(lb.explainability))
            + "".join(paragraph(line) for line in table_notes(lb.explainability, lb.meta)),
        ),
    ]
    return page(f"xaibench leaderboards: {lb.meta['task']['name']}", sections)


def write_leaderboard_files(lb: Leaderboards, out_dir: Path) -> list[Path]:
    """Write every leaderboard file into ``out_dir`` (atomically, one file at a time).

    Raises:
        XaibenchError: A file cannot be written (the message names it; no temporary file is
            left behind).
    """
    out_dir = Path(out_dir)
    written = []
    for name, content in render_files(lb, out_dir).items():
        target = out_dir / name
        write_whole(target, content)
        written.append(target)
    return written


def check_leaderboard_files(lb: Leaderboards, out_dir: Path) -> list[str]:
    """Names of the files in ``out_dir`` that differ from a rebuild (missing ones included).

    Raises:
        XaibenchError: A file in ``out_dir`` leads outside it (a symlink).
    """
    stale = []
    for name, content in render_files(lb, out_dir).items():
        path = contained(out_dir, name, source=out_dir, what="leaderboard file")
        if not path.is_file() or path.read_bytes() != content:
            stale.append(name)
    return stale
