"""Leaderboard values as people read them: numbers, p-values, CIs and Markdown tables."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from xaibench.escape import markdown_text
from xaibench.leaderboard.columns import (
    AGGREGATE_COLUMN,
    BEATS_CHANCE_SUFFIX,
    CHANCE_MARK,
    P_CHANCE_SUFFIX,
    P_COLUMN,
)


def format_value(value: Any) -> str:
    """Numbers to three decimals, missing values as an en dash."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "–"  # noqa: RUF001 (en dash: a missing value, not a minus)
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def format_p(value: Any) -> str:
    """A p-value for people: three decimals, ``<0.001`` below that, an en dash when undefined."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "–"  # noqa: RUF001
    return "<0.001" if float(value) < 0.001 else f"{float(value):.3f}"


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table; headers and cells escaped (:func:`markdown_text`).

    Labels, component names and run names may come from someone else's configuration: no cell
    can add HTML or links, or break the table.
    """
    header = [markdown_text(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in frame.itertuples(index=False):
        cells = [markdown_text(format_value(v)) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def display_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Strings for people: each ``<col>`` with its ``<col> low``/``high`` as ``v [lo, hi]``.

    A table with seed aggregates shows an aggregate row's seed as ``all (n=3)`` (in place of
    the marker column).
    """
    out: dict[str, list[str]] = {}
    for col in frame.columns:
        name = str(col)
        if name.endswith((" low", " high")) and name.rsplit(" ", 1)[0] in frame:
            continue
        if any(
            name.endswith(end) and name[: -len(end)] in frame
            for end in (P_CHANCE_SUFFIX, BEATS_CHANCE_SUFFIX)
        ):
            continue
        values = frame[col].tolist()
        if name == P_COLUMN:
            out[name] = [format_p(v) for v in values]
        elif f"{name} low" in frame and f"{name} high" in frame:
            out[name] = [
                _with_ci(v, lo, hi)
                for v, lo, hi in zip(
                    values, frame[f"{name} low"], frame[f"{name} high"], strict=True
                )
            ]
        else:
            out[name] = [_plain(v) for v in values]
        verdicts = f"{name}{BEATS_CHANCE_SUFFIX}"
        if verdicts in frame:
            out[name] = [
                f"{text} {CHANCE_MARK}" if beats is False else text
                for text, beats in zip(out[name], frame[verdicts], strict=True)
            ]
    if AGGREGATE_COLUMN in out and "seed" in out:
        out["seed"] = _seed_texts(frame)
        del out[AGGREGATE_COLUMN]
    return pd.DataFrame(out, columns=list(out))


def _seed_texts(frame: pd.DataFrame) -> list[str]:
    """Each row's seed; ``all (n=3)`` on a row aggregated over three seeds."""
    marked = frame[AGGREGATE_COLUMN].astype(bool)
    counts = frame[~marked].groupby(["backbone", "strategy"]).size().to_dict()
    return [
        f"all (n={counts.get((b, s), 0)})" if agg else _plain(seed)
        for b, s, seed, agg in zip(
            frame["backbone"], frame["strategy"], frame["seed"], marked, strict=True
        )
    ]


def _plain(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value)):
        return "–"  # noqa: RUF001
    if isinstance(value, float | np.floating):
        return f"{float(value):.3f}"
    return str(value)


def _with_ci(value: Any, low: Any, high: Any) -> str:
    text = _plain(value)
    if text == "–" or pd.isna(low) or pd.isna(high):  # noqa: RUF001
        return text
    return f"{text} [{float(low):.3f}, {float(high):.3f}]"
