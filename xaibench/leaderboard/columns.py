"""Leaderboard columns: their labels, prefixes and suffixes, and the column a table ranks by.

A record becomes the column ``<label>_<region> (<method>)`` (:func:`_column`), with its value
and CI as the leaderboard shows them (:func:`_headline_value`: chance-normalised or specific
where schema 1.5 records them). The constants name every kind of column the tables hold.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd

from xaibench.headline import has_normalised, has_specific

CELL_COLUMNS = ["backbone", "strategy", "seed"]
#: Marker column of tables with seed aggregates (``xaibench.leaderboard.seed_rows``): ``True`` on
#: a row aggregated over seeds, ``False`` on a per-seed row; absent from single-seed tables.
AGGREGATE_COLUMN = "aggregate"
#: Holm-adjusted p-value of the paired test against the leader on the ranking column.
P_COLUMN = "p vs leader"
PERFORMANCE_ORDER = ["auc", "accuracy", "sensitivity", "specificity", "ppv", "npv", "macro_auc"]
_PERFORMANCE_LABELS = {
    "auc": "AUC",
    "accuracy": "Accuracy",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "ppv": "PPV",
    "npv": "NPV",
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


#: Prefix of a chance-normalised localisation column (``nIoU_bone (gradcam)``) and of a
#: specific-Δ column (``sΔ_bone (mean)``), schema 1.5 (``docs/leaderboards.md``).
NORMALISED_PREFIX = "n"
SPECIFIC_PREFIX = "s"
#: Suffixes of the columns beside a normalised column: the Holm-adjusted p-value that it beats
#: chance, and the verdict (``True``/``False``; shown as :data:`CHANCE_MARK` when False).
P_CHANCE_SUFFIX = " p chance"
BEATS_CHANCE_SUFFIX = " beats chance"
#: Shown after a normalised value that is not shown to beat chance.
CHANCE_MARK = "†"
#: Per perturbation, the cell's mean absolute control Δ: ``off-target (<perturbation>)``.
OFF_TARGET_PREFIX = "off-target ("
#: Per saliency method, the evidence-agreement verdict: ``evidence (<method>)``.
EVIDENCE_PREFIX = "evidence ("


def _column(record: dict[str, Any]) -> str:
    metric = record["metric"]
    if record["category"] == "performance":
        return _PERFORMANCE_LABELS.get(metric, metric)
    label = _EXPLANATION_LABELS.get(metric, metric)
    if has_specific(record):
        label = SPECIFIC_PREFIX + label
    elif has_normalised(record):
        label = NORMALISED_PREFIX + label
    method = record.get("perturbation") or record.get("saliency")
    name = f"{label}_{record['region']}" if record.get("region") else label
    return f"{name} ({method})" if method else name


def _headline_value(rec: dict[str, Any]) -> tuple[Any, Any, Any]:
    """A record's value and CI as the leaderboard shows them.

    Schema 1.5: a region metric's chance-normalised score with ``normalised_ci``, a Δ record's
    specific Δ with ``specific_ci``; otherwise the raw ``value``, ``ci_low``, ``ci_high``.
    """
    if has_specific(rec):
        key = "specific"
    elif has_normalised(rec):
        key = "normalised"
    else:
        return rec["value"], rec.get("ci_low"), rec.get("ci_high")
    details = rec["details"]
    ci = details.get(f"{key}_ci")
    low, high = (ci[0], ci[1]) if isinstance(ci, list) and len(ci) == 2 else (None, None)
    return details.get(key), low, high


def _metric_columns(frame: pd.DataFrame) -> list[str]:
    """The value columns (not the cell keys, CI bounds, badges or bookkeeping)."""
    skip = {*CELL_COLUMNS, "rank", "tier", "weights", P_COLUMN, AGGREGATE_COLUMN}
    return [
        c
        for c in frame.columns
        if c not in skip
        and not str(c).endswith((" low", " high", P_CHANCE_SUFFIX, BEATS_CHANCE_SUFFIX))
        and not str(c).startswith(("sanity (", "trust (", EVIDENCE_PREFIX))
    ]


def _with_bounds(columns: Iterable[str], frame: pd.DataFrame) -> list[str]:
    out: list[str] = []
    for col in columns:
        out.append(col)
        out.extend(
            c
            for c in (
                f"{col} low",
                f"{col} high",
                f"{col}{P_CHANCE_SUFFIX}",
                f"{col}{BEATS_CHANCE_SUFFIX}",
            )
            if c in frame
        )
    return out


def ranking_column(frame: pd.DataFrame) -> str | None:
    """The column a leaderboard is ranked by.

    AUC; else the first specific-Δ column (the headline perturbation on the primary region,
    see :func:`explainability_table`); else the first raw Δ column (older runs); else the first.
    """
    metric_cols = _metric_columns(frame)
    if "AUC" in metric_cols:
        return "AUC"
    for prefix in (SPECIFIC_PREFIX + "Δ", "Δ"):
        found = next((c for c in metric_cols if c.startswith(prefix)), None)
        if found is not None:
            return found
    return metric_cols[0] if metric_cols else None


def _ranked(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.reset_index(drop=True)
    frame.insert(0, "rank", range(1, len(frame) + 1))
    return frame
