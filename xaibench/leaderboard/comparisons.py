"""Paired comparisons between cells, Holm-adjusted per column, and the tiers they give.

DeLong for AUC, exact McNemar for the rates, a paired image bootstrap for Δ and per-image
explanation scores (:mod:`xaibench.stats.comparisons`); :func:`_tiers` groups the cells that
are not significantly different from the best remaining one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from xaibench.errors import XaibenchError
from xaibench.headline import has_normalised, has_specific
from xaibench.leaderboard.columns import (
    CELL_COLUMNS,
    P_COLUMN,
    _column,
    _metric_columns,
    ranking_column,
)
from xaibench.leaderboard.per_image import ABOVE_CHANCE_TEST, RAW_SCORE_TEST, _PerImage
from xaibench.stats.bootstrap_comparisons import paired_bootstrap_mean
from xaibench.stats.comparisons import (
    PairedComparison,
    delong_comparison,
    holm,
    mcnemar_comparison,
)


def _cell_key(row: Any) -> tuple[Any, ...]:
    return (row["backbone"], row["strategy"], int(row["seed"]))


def _specs(records: Sequence[dict[str, Any]], category: str) -> dict[str, dict[str, Any]]:
    """Column label -> the record fields that say where its per-image data lives."""
    out: dict[str, dict[str, Any]] = {}
    for rec in records:
        if rec["category"] == category:
            out.setdefault(_column(rec), rec)
    return out


def _comparison(
    data: _PerImage,
    spec: dict[str, Any],
    a: tuple[Any, ...],
    b: tuple[Any, ...],
    *,
    level: float,
    resamples: int,
    seed: int,
) -> PairedComparison | None:
    """The paired test of one column between two cells, or None where it has no per-image form."""
    metric = spec["metric"]
    try:
        if spec["category"] == "performance":
            joined = data.intact(a, b)
            if joined is None:
                return None
            y = (joined["label"].to_numpy() == data.positive_index).astype(int)
            if metric == "auc":
                return delong_comparison(
                    y,
                    joined[data.positive].to_numpy(),
                    joined[data.positive + "_b"].to_numpy(),
                    level,
                )
            calls_a = joined["called_positive"].to_numpy().astype(bool)
            calls_b = joined["called_positive_b"].to_numpy().astype(bool)
            keep = {
                "accuracy": np.ones_like(y, dtype=bool),
                "sensitivity": y == 1,
                "specificity": y == 0,
            }.get(metric)  # PPV/NPV condition on each cell's own calls: no paired McNemar
            if keep is None:
                return None
            truth = y[keep] == 1
            return mcnemar_comparison(calls_a[keep] == truth, calls_b[keep] == truth, level)
        if metric == "delta_region" and has_specific(spec):
            return data.specific(a, b, spec["perturbation"], spec["region"], level)
        if metric == "delta_region":
            return data.delta(a, b, spec["perturbation"], spec["region"], level)
        if spec.get("saliency") and metric != "energy_ratio":  # a mean over images
            normalised = has_normalised(spec)
            pairs = data.scores(
                a, b, metric, spec["saliency"], spec.get("region") or "", above_chance=normalised
            )
            if pairs is None:
                return None
            result = paired_bootstrap_mean(
                pairs["a"].to_numpy(float),
                pairs["b"].to_numpy(float),
                resamples=resamples,
                level=level,
                seed=seed,
            )
            if normalised:
                test = ABOVE_CHANCE_TEST if pairs.attrs["above_chance"] else RAW_SCORE_TEST
                result = replace(result, test=test)
            return result
    except XaibenchError:  # e.g. a class missing among the shared images: no test
        return None
    return None


def _compared_columns(frame: pd.DataFrame, table: str, primary: str | None) -> list[str]:
    """Which columns get paired tests.

    Performance: every rate and the AUC (cheap closed-form tests). Explainability: the ranking
    column and, on the primary region, every Δ and per-image score — bootstrap tests cost a few
    milliseconds each, and tests over every region would multiply them for little use.
    """
    cols = _metric_columns(frame)
    if table == "performance":
        return cols
    rank_col = ranking_column(frame)
    chosen = [c for c in cols if primary and c.split(" (")[0].endswith(f"_{primary}")]
    if rank_col is not None and rank_col not in chosen:
        chosen.insert(0, rank_col)
    return chosen


def _pairwise(
    frame: pd.DataFrame,
    table: str,
    specs: dict[str, dict[str, Any]],
    data: _PerImage,
    primary: str | None,
    *,
    level: float,
    resamples: int,
    seed: int,
) -> list[dict[str, Any]]:
    """All pairs of cells for each compared column, Holm-adjusted within the column."""
    cells = [_cell_key(row) for _, row in frame.iterrows()]
    rows: list[dict[str, Any]] = []
    for column in _compared_columns(frame, table, primary):
        spec = specs.get(column)
        if spec is None:
            continue
        block: list[dict[str, Any]] = []
        for i, a in enumerate(cells):
            for b in cells[i + 1 :]:
                result = _comparison(data, spec, a, b, level=level, resamples=resamples, seed=seed)
                if result is None:
                    continue
                block.append(
                    {
                        "table": table,
                        "column": column,
                        **{f"{k}_a": v for k, v in zip(CELL_COLUMNS, a, strict=True)},
                        **{f"{k}_b": v for k, v in zip(CELL_COLUMNS, b, strict=True)},
                        "test": result.test,
                        "difference": result.difference,
                        "low": result.ci[0] if result.ci else None,
                        "high": result.ci[1] if result.ci else None,
                        "p_value": result.p_value,
                        "n": result.n,
                    }
                )
        adjusted = holm([r["p_value"] for r in block]) if block else np.array([])
        for r, p in zip(block, adjusted, strict=True):
            r["p_holm"] = float(p)
        rows.extend(block)
    return rows


def _p_lookup(rows: Sequence[dict[str, Any]], table: str, column: str) -> dict[frozenset, float]:
    out: dict[frozenset, float] = {}
    for r in rows:
        if r["table"] == table and r["column"] == column:
            a = tuple(r[f"{k}_a"] for k in CELL_COLUMNS)
            b = tuple(r[f"{k}_b"] for k in CELL_COLUMNS)
            out[frozenset((a, b))] = r["p_holm"]
    return out


def _tiers(frame: pd.DataFrame, pvalues: dict[frozenset, float], alpha: float) -> pd.DataFrame:
    """Tier = the cells not significantly different from the best remaining cell.

    The frame is sorted best first. The best cell leads tier 1; every cell whose Holm-adjusted
    paired p against it is at least ``alpha`` (or that could not be tested) joins its tier. The
    best cell left leads tier 2, and so on. A cell without a value gets no tier.
    """
    cells = [_cell_key(row) for _, row in frame.iterrows()]
    column = ranking_column(frame)
    valued = [
        c for c, v in zip(cells, frame[column] if column else [], strict=False) if pd.notna(v)
    ]
    tier: dict[tuple[Any, ...], int] = {}
    p_leader: dict[tuple[Any, ...], float | None] = {}
    remaining = list(valued)
    number = 0
    while remaining:
        number += 1
        leader = remaining[0]
        tier[leader] = number
        rest = []
        for cell in remaining[1:]:
            p = pvalues.get(frozenset((leader, cell)))
            if number == 1:
                p_leader[cell] = p
            if p is None or p >= alpha:
                tier[cell] = number
            else:
                rest.append(cell)
        remaining = rest
    frame = frame.copy()
    frame.insert(1, "tier", [tier.get(c) for c in cells])
    position = list(frame.columns).index("weights")
    frame.insert(position, P_COLUMN, [p_leader.get(c) for c in cells])
    frame["tier"] = frame["tier"].astype("Int64")
    frame[P_COLUMN] = frame[P_COLUMN].astype(float)
    return frame


COMPARISON_COLUMNS = [
    "table", "column",
    "backbone_a", "strategy_a", "seed_a", "backbone_b", "strategy_b", "seed_b",
    "test", "difference", "low", "high", "p_value", "p_holm", "n",
]  # fmt: skip
