"""The performance and explainability tables, one row per cell, and their badges.

The tables are pure functions of results records: the value and CI columns of every metric,
the off-target cost per perturbation, the Holm-adjusted ``beats chance`` verdicts, and the
sanity, trust and evidence badges per saliency method.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from xaibench.evidence import evidence_agreement, evidence_labels
from xaibench.headline import (
    has_normalised,
    headline_perturbation,
    is_delta_with_control,
    off_target_costs,
)
from xaibench.leaderboard.columns import (
    _EXPLANATION_LABELS,
    _PERFORMANCE_LABELS,
    BEATS_CHANCE_SUFFIX,
    CELL_COLUMNS,
    EVIDENCE_PREFIX,
    OFF_TARGET_PREFIX,
    P_CHANCE_SUFFIX,
    PERFORMANCE_ORDER,
    SPECIFIC_PREFIX,
    _column,
    _headline_value,
    _metric_columns,
    _ranked,
    _with_bounds,
    ranking_column,
)
from xaibench.stats.comparisons import holm


def sanity_badges(records: Iterable[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, str]]:
    """Per cell and saliency method: ``pass``, ``fail (model, target)``, ``n/a (...)``.

    A method passes when its maps change, clearly more than between two of its own runs, under
    cascading model randomisation *and* when another class is explained (see
    ``xaibench.sanity``); ``n/a`` when a similarity was undefined (constant maps). Controls
    (``random``, ``edge``, ``center``) are labelled as such, with their outcome in brackets:
    ``control (fail: model, target)``, ``control (n/a: model)``, ``control (pass)``.
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
            if failed:
                verdict, checks_named = "fail", failed
            elif unknown:
                verdict, checks_named = "n/a", unknown
            else:
                verdict, checks_named = "pass", []
            named = ", ".join(checks_named)
            if result.get("control"):
                badge = f"control ({verdict}: {named})" if named else f"control ({verdict})"
            else:
                badge = f"{verdict} ({named})" if named else verdict
            badges.setdefault(key, {})[name] = badge
    return badges


def _table(records: Iterable[dict[str, Any]], category: str) -> pd.DataFrame:
    """One row per cell; per metric column its value and, when recorded, ``low``/``high``."""
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    columns: list[str] = []
    with_ci: set[str] = set()
    with_p: set[str] = set()
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
        ok = rec["status"] == "ok"
        value, low, high = _headline_value(rec)
        row[col] = value if ok else None
        if low is not None or high is not None:
            with_ci.add(col)
        row[f"{col} low"] = low if ok else None
        row[f"{col} high"] = high if ok else None
        if has_normalised(rec):
            p = (rec.get("details") or {}).get("p_chance")
            row[f"{col}{P_CHANCE_SUFFIX}"] = p if ok and row[col] is not None else None
            with_p.add(col)
    ordered: list[str] = []
    for col in columns:
        ordered.append(col)
        if col in with_ci:
            ordered.extend([f"{col} low", f"{col} high"])
        if col in with_p:
            ordered.append(f"{col}{P_CHANCE_SUFFIX}")
    frame = pd.DataFrame(list(rows.values()), columns=[*CELL_COLUMNS, "weights", *ordered])
    for col in ordered:
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float)
    return frame


def performance_table(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Performance leaderboard, best AUC first: values and CIs (tiers: build_leaderboards)."""
    frame = _table(records, "performance")
    metric_cols = _metric_columns(frame)
    known = [_PERFORMANCE_LABELS[m] for m in PERFORMANCE_ORDER if _PERFORMANCE_LABELS[m] in frame]
    others = [c for c in metric_cols if c not in known]
    frame = frame[[*CELL_COLUMNS, *_with_bounds([*known, *others], frame), "weights"]]
    if "AUC" in frame:
        frame = frame.sort_values("AUC", ascending=False, na_position="last", kind="stable")
    return _ranked(frame)


def trust_badges(trust: Iterable[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, str]]:
    """Per cell and saliency method: its known-answer badge (``xaibench.trust``) as shown.

    ``trusted (RMA, PG)`` names the localisation metrics under which the method found the
    planted region; ``not trusted`` and ``untested`` stand alone.
    """
    badges: dict[tuple[Any, ...], dict[str, str]] = {}
    for row in trust:
        key = tuple(row[c] for c in CELL_COLUMNS)
        badge = str(row["badge"])
        metrics = [m for m, b in (row.get("metrics") or {}).items() if b == "trusted"]
        if badge == "trusted" and metrics:
            badge += f" ({', '.join(_EXPLANATION_LABELS.get(m, m) for m in metrics)})"
        badges.setdefault(key, {})[str(row["saliency"])] = badge
    return badges


def explainability_table(
    records: Sequence[dict[str, Any]],
    *,
    primary: str | None = None,
    alpha: float = 0.05,
    trust: Sequence[dict[str, Any]] = (),
) -> pd.DataFrame:
    """Explainability leaderboard, ranked by the headline Δ column (:func:`ranking_column`).

    Columns: specific Δ (schema 1.5), headline perturbation first and on it the ``primary``
    region first; raw Δ (older runs, complement regions); each perturbation's off-target cost;
    localisation and faithfulness scores (chance-normalised where recorded, each with its
    Holm-adjusted ``p chance`` and ``beats chance`` verdict); sanity and evidence badges; and
    with ``trust`` rows (``results.json``'s ``trust``, or ``--calibration``) a
    ``trust (<method>)`` column per saliency method.
    """
    frame = _table(records, "explanation")
    metric_cols = _order_columns(_metric_columns(frame), records, primary)
    costs = off_target_costs(records)
    cost_cols = []
    if costs:
        position = sum(1 for c in metric_cols if c.startswith(("Δ", SPECIFIC_PREFIX + "Δ")))
        cost_cols = [f"{OFF_TARGET_PREFIX}{name})" for name in costs]
        metric_cols[position:position] = cost_cols
    badges = sanity_badges(records)
    frame = frame.reindex(columns=[*CELL_COLUMNS, *_with_bounds(metric_cols, frame), "weights"])
    frame = frame.copy()
    cells = [tuple(row) for row in frame[CELL_COLUMNS].itertuples(index=False)]
    cell_costs = _cell_costs(records)
    for name, col in zip(costs, cost_cols, strict=True):
        frame[col] = [cell_costs.get((cell, name), float("nan")) for cell in cells]
    frame = _mark_chance(frame, alpha)
    methods = list(dict.fromkeys(m for cell in badges.values() for m in cell))
    for method in methods:
        frame[f"sanity ({method})"] = [badges.get(cell, {}).get(method, "") for cell in cells]
    trusted = trust_badges(trust)
    for method in dict.fromkeys(m for cell in trusted.values() for m in cell):
        frame[f"trust ({method})"] = [trusted.get(c, {}).get(method, "untested") for c in cells]
    evidence = evidence_labels(evidence_agreement(records, alpha=alpha))
    for method in dict.fromkeys(m for cell in evidence.values() for m in cell):
        frame[f"{EVIDENCE_PREFIX}{method})"] = [
            evidence.get(cell, {}).get(method, "") for cell in cells
        ]
    sort_by = ranking_column(frame)
    if sort_by is not None:
        frame = frame.sort_values(sort_by, ascending=False, na_position="last", kind="stable")
    return _ranked(frame)


def _order_columns(
    columns: list[str], records: Sequence[dict[str, Any]], primary: str | None
) -> list[str]:
    """Specific Δ (headline perturbation, primary region first), raw Δ, then the rest.

    Within each group the configured order is kept (the first perturbation ranks in older runs).
    """
    headline = headline_perturbation(records)
    specific = [c for c in columns if c.startswith(SPECIFIC_PREFIX + "Δ")]

    def lead(col: str) -> tuple[bool, bool]:
        name, _, method = col.partition(" (")
        on_headline = method == f"{headline})"
        return (not on_headline, not (on_headline and name.endswith(f"_{primary}")))

    specific.sort(key=lead)
    raw = [c for c in columns if c.startswith("Δ")]
    return [*specific, *raw, *(c for c in columns if c not in specific and c not in raw)]


def _cell_costs(records: Sequence[dict[str, Any]]) -> dict[tuple[Any, ...], float]:
    """Per (cell, perturbation): the cell's mean absolute control Δ over its regions."""
    costs: dict[tuple[Any, ...], list[float]] = {}
    for rec in records:
        if is_delta_with_control(rec):
            cell = tuple(rec[c] for c in CELL_COLUMNS)
            costs.setdefault((cell, rec["perturbation"]), []).append(
                abs(float(rec["details"]["control_delta"]))
            )
    return {key: float(np.mean(values)) for key, values in costs.items()}


def _mark_chance(frame: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Holm-adjust every ``p chance`` in the table together; add each ``beats chance`` column.

    A value beats chance when its adjusted p-value is below ``alpha``; a value without a
    p-value is not shown to beat chance (False); a missing value has no verdict (None). The
    verdict columns are joined in one step (one insert per column fragments a wide frame).
    """
    columns = [c for c in frame.columns if str(c).endswith(P_CHANCE_SUFFIX)]
    if not columns:
        return frame
    stacked = frame[columns].to_numpy(dtype=float)
    flat = stacked.ravel()
    adjusted = np.full(flat.shape, np.nan)
    tested = ~np.isnan(flat)
    if tested.any():
        adjusted[tested] = holm(flat[tested])
    adjusted = adjusted.reshape(stacked.shape)
    verdicts: dict[str, pd.Series] = {}
    order: list[Any] = list(frame.columns)
    for j, col in enumerate(columns):
        value_col = col[: -len(P_CHANCE_SUFFIX)]
        frame[col] = adjusted[:, j]
        verdict = [
            None if pd.isna(v) else bool(not np.isnan(p) and p < alpha)
            for v, p in zip(frame[value_col], adjusted[:, j], strict=True)
        ]
        name = f"{value_col}{BEATS_CHANCE_SUFFIX}"
        verdicts[name] = pd.Series(verdict, dtype=object, index=frame.index)
        order.insert(order.index(col) + 1, name)
    joined = pd.concat([frame, pd.DataFrame(verdicts, index=frame.index)], axis=1)
    return joined[order].copy()  # one block per dtype: later columns do not fragment it
