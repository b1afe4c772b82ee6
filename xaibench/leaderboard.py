"""Leaderboards as a pure function of results records: no model code runs here.

Two tables, one row per cell (backbone x strategy x seed):

* performance — the positive-vs-rest AUC, accuracy, sensitivity, specificity and macro AUC;
* explainability — Delta_region per perturbation and region, IoU_region and the other region and
  faithfulness metrics per saliency method, and each method's sanity-check badge.

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


#: Short column labels of explanation metrics: ``<label>_<region> (<method>)``.
_EXPLANATION_LABELS = {
    "delta_region": "Δ",
    "iou_region": "IoU",
    "pointing_game": "PG",
    "relevance_mass": "RMA",
    "relevance_rank": "RRA",
    "pixel_auc": "pAUC",
    "energy_ratio": "ER",
    "deletion_auc": "Del",
    "insertion_auc": "Ins",
    "road": "ROAD",
}


def _column(record: dict[str, Any]) -> str:
    metric = record["metric"]
    if record["category"] == "performance":
        return _PERFORMANCE_LABELS.get(metric, metric)
    label = _EXPLANATION_LABELS.get(metric, metric)
    method = record.get("perturbation") or record.get("saliency")
    name = f"{label}_{record['region']}" if record.get("region") else label
    return f"{name} ({method})" if method else name


def sanity_badges(records: Iterable[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, str]]:
    """Per cell and saliency method: ``pass``, ``fail (model, target)``, ``n/a (...)``, ``control``.

    A method passes when its maps change under cascading model randomisation *and* when another
    class is explained (see ``xaibench.sanity``); ``n/a`` when a similarity was undefined
    (constant maps); controls (``random``, ``edge``, ``center``) are labelled as such, whatever
    their similarities.
    """
    checks: dict[tuple[Any, ...], dict[str, dict[str, Any]]] = {}
    for rec in records:
        if rec["category"] != "sanity":
            continue
        key = tuple(rec[c] for c in CELL_COLUMNS)
        method = checks.setdefault(key, {}).setdefault(rec["saliency"], {})
        method["control"] = rec["details"].get("control", False)
        short = "model" if "model" in rec["metric"] else "target"
        method[short] = rec["details"].get("passed") if rec["status"] == "ok" else None
    badges: dict[tuple[Any, ...], dict[str, str]] = {}
    for key, methods in checks.items():
        for name, result in methods.items():
            failed = [c for c in ("model", "target") if result.get(c) is False]
            unknown = [c for c in ("model", "target") if result.get(c) is None]
            if result.get("control"):
                badge = "control"
            elif failed:
                badge = f"fail ({', '.join(failed)})"
            elif unknown:
                badge = f"n/a ({', '.join(unknown)})"
            else:
                badge = "pass"
            badges.setdefault(key, {})[name] = badge
    return badges


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
    """Explainability leaderboard, ranked by the first Δ column (first configured perturbation)."""
    frame = _table(records, "explanation")
    metric_cols = [c for c in frame.columns if c not in [*CELL_COLUMNS, "weights"]]
    # Δ columns first, each group in the configured order (so the first perturbation ranks)
    metric_cols.sort(key=lambda c: (not c.startswith("Δ"), c.startswith("sanity")))
    badges = sanity_badges(records)
    frame = frame[[*CELL_COLUMNS, *metric_cols, "weights"]]
    methods = list(dict.fromkeys(m for cell in badges.values() for m in cell))
    cells = [tuple(row) for row in frame[CELL_COLUMNS].itertuples(index=False)]
    for method in methods:
        frame[f"sanity ({method})"] = [badges.get(cell, {}).get(method, "") for cell in cells]
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
