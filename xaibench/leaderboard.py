"""Leaderboards as a pure function of results records: no model code runs here.

Two tables, one row per cell (backbone x strategy x seed):

* performance — the positive-vs-rest AUC, accuracy, sensitivity, specificity and macro AUC;
* explainability — Delta_region per perturbation and IoU_region per saliency method and region.

Rows are ranked by AUC (performance) and by the first Delta column (explainability). Cells with
randomly initialised weights are marked, because their numbers say nothing about a pretrained model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

CELL_COLUMNS = ["backbone", "strategy", "seed"]
PERFORMANCE_ORDER = ["auc", "accuracy", "sensitivity", "specificity", "macro_auc"]
_PERFORMANCE_LABELS = {
    "auc": "AUC",
    "accuracy": "Accuracy",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "macro_auc": "Macro AUC",
}


def _column(record: dict[str, Any]) -> str:
    metric = record["metric"]
    if record["category"] == "performance":
        return _PERFORMANCE_LABELS.get(metric, metric)
    if metric == "delta_region":
        return f"Δ_{record['region']} ({record['perturbation']})"
    if metric == "iou_region":
        return f"IoU_{record['region']} ({record['saliency']})"
    parts = [metric] + [
        str(record[k]) for k in ("region", "perturbation", "saliency") if record.get(k)
    ]
    return " / ".join(parts)


def _table(records: Iterable[dict[str, Any]], category: str) -> pd.DataFrame:
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    columns: list[str] = []
    for rec in records:
        if rec["category"] != category:
            continue
        key = tuple(rec[c] for c in CELL_COLUMNS)
        row = rows.setdefault(
            key,
            {
                **dict(zip(CELL_COLUMNS, key, strict=True)),
                "weights": "random init" if rec.get("random_init") else "pretrained",
            },
        )
        col = _column(rec)
        if col not in columns:
            columns.append(col)
        row[col] = rec["value"] if rec["status"] == "ok" else None
    frame = pd.DataFrame(list(rows.values()), columns=[*CELL_COLUMNS, "weights", *columns])
    return frame


def performance_table(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Performance leaderboard, best AUC first."""
    frame = _table(records, "performance")
    known = [_PERFORMANCE_LABELS[m] for m in PERFORMANCE_ORDER if _PERFORMANCE_LABELS[m] in frame]
    others = [c for c in frame.columns if c not in [*CELL_COLUMNS, "weights", *known]]
    frame = frame[[*CELL_COLUMNS, *known, *others, "weights"]]
    if "AUC" in frame:
        frame = frame.sort_values("AUC", ascending=False, na_position="last", kind="stable")
    return _ranked(frame)


def explainability_table(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Explainability leaderboard, ranked by the first Delta column."""
    frame = _table(records, "explanation")
    metric_cols = [c for c in frame.columns if c not in [*CELL_COLUMNS, "weights"]]
    metric_cols.sort(key=lambda c: (not c.startswith("Δ"), c))
    frame = frame[[*CELL_COLUMNS, *metric_cols, "weights"]]
    sort_by = next(
        (c for c in metric_cols if c.startswith("Δ")), metric_cols[0] if metric_cols else None
    )
    if sort_by is not None:
        frame = frame.sort_values(sort_by, ascending=False, na_position="last", kind="stable")
    return _ranked(frame)


def _ranked(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.reset_index(drop=True)
    frame.insert(0, "rank", range(1, len(frame) + 1))
    return frame


def format_value(value: Any) -> str:
    """Numbers to three decimals, missing values as an en dash."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "–"  # noqa: RUF001 (en dash: a missing value, not a minus)
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (cells escaped for pipes)."""
    header = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in frame.itertuples(index=False):
        cells = [format_value(v).replace("|", "\\|") for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_leaderboards(records: Sequence[dict[str, Any]], out_dir: Path) -> dict[str, pd.DataFrame]:
    """Write both leaderboards as Markdown and CSV into ``out_dir``; return them."""
    tables = {
        "performance": performance_table(records),
        "explainability": explainability_table(records),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        frame.to_csv(out_dir / f"leaderboard_{name}.csv", index=False)
        (out_dir / f"leaderboard_{name}.md").write_text(to_markdown(frame))
    return tables
