"""Seed aggregates: one row per backbone x strategy over its seeds, below the per-seed rows.

Where a table holds a backbone x strategy at two or more seeds, :func:`with_seed_aggregates`
appends one **aggregate row** for it: ``seed`` empty, the marker column :data:`AGGREGATE_COLUMN`
``True`` (``False`` on every per-seed row; the column exists only in tables with aggregates,
so a single-seed run's files are unchanged). Aggregate rows follow the per-seed rows, best
first by the table's ranking column, and take no rank, tier or ``p vs leader`` (the paired tests
compare single models).

Each value is the mean over the seeds of the per-seed values (missing when a seed's is). Its
interval is the two-level bootstrap of :mod:`xaibench.stats.seed_bootstrap` (seeds and, paired
across seeds, test images), computed from the per-image files where they hold what it needs:

* performance: AUC (the positive-vs-rest ranking score of ``predictions.csv``) and the rates
  (accuracy, sensitivity, specificity, PPV, NPV: ``called_positive``), class-stratified;
* explainability: every Δ and specific Δ column of the task's primary region (Δ as the run
  records it: intact AUC minus the perturbed AUC floored at 0.5; specific Δ minus the mean Δ of
  the region's control draws), class-stratified; every chance-normalised column
  (``explanations.csv`` ``value`` and ``chance``: ``(mean value - mean chance) / (best - mean
  chance)``), over the explained images.

Other columns get the mean without an interval (macro AUC, the other regions' Δ, raw scores,
off-target costs); ``p chance`` and ``beats chance`` stay empty (no test over seeds). A badge
column shows the seeds' badge where they agree, else :data:`VARIES`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from xaibench.headline import has_normalised, has_specific
from xaibench.leaderboard.columns import (
    _PERFORMANCE_LABELS,
    AGGREGATE_COLUMN,
    BEATS_CHANCE_SUFFIX,
    CELL_COLUMNS,
    P_CHANCE_SUFFIX,
    P_COLUMN,
    _column,
    _metric_columns,
    ranking_column,
)
from xaibench.leaderboard.per_image import RANKING_COLUMN, _PerImage
from xaibench.stats.seed_bootstrap import (
    auc_on_draws,
    draw_two_level,
    percentile_interval,
    seed_mean_replicates,
)

#: A badge column's value on an aggregate row whose seeds disagree.
VARIES = "varies"
#: The AUC a perturbed AUC is floored at in Δ (as the run records Δ).
_CHANCE_AUC = 0.5

Cell = tuple[Any, ...]
Intervals = dict[str, tuple[float, float]]


def seed_groups(frame: pd.DataFrame) -> dict[tuple[Any, Any], list[Cell]]:
    """Per backbone x strategy with at least two seeds: its cells, in seed order."""
    if frame.empty or "seed" not in frame:
        return {}
    groups: dict[tuple[Any, Any], list[Cell]] = {}
    for key in frame[CELL_COLUMNS].itertuples(index=False):
        cell = (key[0], key[1], int(key[2]))
        groups.setdefault((cell[0], cell[1]), []).append(cell)
    return {k: sorted(v, key=lambda c: c[2]) for k, v in groups.items() if len(v) >= 2}


def with_seed_aggregates(
    frame: pd.DataFrame,
    table: str,
    records: Sequence[dict[str, Any]],
    data: _PerImage,
    *,
    primary: str | None,
    level: float,
    resamples: int,
    seed: int,
) -> pd.DataFrame:
    """``frame`` with an aggregate row per backbone x strategy of several seeds (module doc).

    Args:
        frame: A ranked, tiered leaderboard table (one row per cell).
        table: ``"performance"`` or ``"explainability"``.
        records: The runs' records (which columns are specific Δ or normalised, their ``best``).
        data: The runs' per-image predictions and scores.
        primary: The task's primary region (its Δ columns get intervals).
        level: Confidence level of the intervals.
        resamples: Bootstrap replicates.
        seed: Seed of the bootstrap generator.

    Returns:
        ``frame`` unchanged without such groups; else a copy with :data:`AGGREGATE_COLUMN`
        after ``seed`` and the aggregate rows appended.
    """
    groups = seed_groups(frame)
    if not groups:
        return frame
    rows = []
    for (backbone, strategy), cells in groups.items():
        if table == "performance":
            intervals = _performance_intervals(cells, data, level, resamples, seed)
        else:
            intervals = _explanation_intervals(
                cells, records, data, primary, level, resamples, seed
            )
        rows.append(_aggregate_row(frame, backbone, strategy, cells, intervals))
    aggregates = pd.DataFrame(rows, columns=frame.columns)
    column = ranking_column(frame)
    if column is not None:
        aggregates = aggregates.sort_values(
            column, ascending=False, na_position="last", kind="stable"
        )
    out = frame.copy()
    out.insert(out.columns.get_loc("seed") + 1, AGGREGATE_COLUMN, False)
    aggregates.insert(out.columns.get_loc(AGGREGATE_COLUMN), AGGREGATE_COLUMN, True)
    for col in ("rank", "tier", "seed"):  # integers with empty cells on the aggregate rows
        if col in out:
            out[col] = out[col].astype("Int64")
    for col in out.columns:  # each column keeps its dtype (concat warns on all-NA columns)
        if aggregates[col].isna().all() and out[col].dtype != object:
            aggregates[col] = aggregates[col].astype(out[col].dtype)
    joined = pd.concat([out, aggregates], ignore_index=True)
    joined[AGGREGATE_COLUMN] = joined[AGGREGATE_COLUMN].astype(bool)
    return joined


def _aggregate_row(
    frame: pd.DataFrame, backbone: Any, strategy: Any, cells: list[Cell], intervals: Intervals
) -> dict[str, Any]:
    wanted = set(cells)
    keys = frame[CELL_COLUMNS].itertuples(index=False)
    mask = [(k[0], k[1], int(k[2])) in wanted for k in keys]
    part = frame[mask]
    values = _metric_columns(frame)
    row: dict[str, Any] = {"backbone": backbone, "strategy": strategy, "seed": pd.NA}
    for col in frame.columns:
        if col in row or col in ("rank", "tier", P_COLUMN):
            continue
        name = str(col)
        if col in values:
            numbers = pd.to_numeric(part[col], errors="coerce").to_numpy(dtype=float)
            row[col] = float(numbers.mean()) if np.isfinite(numbers).all() else np.nan
        elif name.endswith((" low", " high")) and name.rsplit(" ", 1)[0] in values:
            base, bound = name.rsplit(" ", 1)
            shown = row.get(base)
            interval = intervals.get(base)
            ok = interval is not None and shown is not None and np.isfinite(shown)
            row[col] = interval[0 if bound == "low" else 1] if ok and interval else np.nan
        elif name.endswith(P_CHANCE_SUFFIX):
            row[col] = np.nan
        elif name.endswith(BEATS_CHANCE_SUFFIX):
            row[col] = None
        else:  # weights and badges: the seeds' value where they agree
            distinct = list(dict.fromkeys(str(v) for v in part[col].tolist()))
            row[col] = part[col].iloc[0] if len(distinct) == 1 else VARIES
    return row


def _common_ids(parts: Sequence[pd.DataFrame | pd.Series | None]) -> list[Any] | None:
    if any(p is None for p in parts):
        return None
    shared = set.intersection(*(set(p.index) for p in parts if p is not None))
    return sorted(shared) if shared else None


def _labels(frames: Sequence[pd.DataFrame], positive: int) -> np.ndarray | None:
    """The images' positive-class labels, or None where the seeds disagree or a class is empty."""
    labels = [f["label"].to_numpy() == positive for f in frames]
    y = labels[0]
    if any(not np.array_equal(y, other) for other in labels[1:]) or y.all() or not y.any():
        return None
    return y


def _performance_intervals(
    cells: list[Cell], data: _PerImage, level: float, resamples: int, seed: int
) -> Intervals:
    preds = [data._pred(c, "", "") for c in cells]
    ids = _common_ids(preds)
    if ids is None:
        return {}
    frames = [p.loc[ids] for p in preds if p is not None]
    y = _labels(frames, data.positive_index)
    if y is None:
        return {}
    draws = draw_two_level(len(cells), len(ids), labels=y, resamples=resamples, seed=seed)

    def interval(per_seed: list[np.ndarray]) -> tuple[float, float]:
        return percentile_interval(seed_mean_replicates(np.stack(per_seed), draws.seeds), level)

    out = {"AUC": interval([auc_on_draws(y, f[RANKING_COLUMN], draws.images) for f in frames])}
    called = [f["called_positive"] for f in frames]
    if any(c.isna().any() for c in called):
        return out
    rates: dict[str, list[np.ndarray]] = {}
    yd = y[draws.images]
    for calls in called:
        cd = calls.to_numpy(dtype=bool)[draws.images]
        tp, fn = (yd & cd).sum(axis=1), (yd & ~cd).sum(axis=1)
        tn, fp = (~yd & ~cd).sum(axis=1), (~yd & cd).sum(axis=1)
        for metric, (hit, total) in {
            "accuracy": (tp + tn, tp + tn + fp + fn),
            "sensitivity": (tp, tp + fn),
            "specificity": (tn, tn + fp),
            "ppv": (tp, tp + fp),
            "npv": (tn, tn + fn),
        }.items():
            with np.errstate(divide="ignore", invalid="ignore"):
                rate = np.where(total > 0, hit / np.maximum(total, 1), np.nan)
            rates.setdefault(_PERFORMANCE_LABELS[metric], []).append(rate)
    out.update({label: interval(per_seed) for label, per_seed in rates.items()})
    return out


def _explanation_intervals(
    cells: list[Cell],
    records: Sequence[dict[str, Any]],
    data: _PerImage,
    primary: str | None,
    level: float,
    resamples: int,
    seed: int,
) -> Intervals:
    """Intervals of the primary region's Δ columns and of every normalised column."""
    first = cells[0]
    out: Intervals = {}
    for rec in records:
        cell = (rec["backbone"], rec["strategy"], rec["seed"])
        if rec["category"] != "explanation" or cell != first or rec["status"] != "ok":
            continue
        column = _column(rec)
        if column in out:
            continue
        result: tuple[float, float] | None = None
        if rec["metric"] == "delta_region" and primary and rec.get("region") == primary:
            result = _delta_interval(
                cells, data, rec["perturbation"], rec["region"], has_specific(rec),
                level, resamples, seed,
            )  # fmt: skip
        elif has_normalised(rec) and (rec.get("details") or {}).get("best") is not None:
            key = (rec["metric"], rec["saliency"], rec["region"])
            best = float(rec["details"]["best"])
            result = _normalised_interval(cells, data, key, best, level, resamples, seed)
        if result is not None:
            out[column] = result
    return out


def _delta_interval(
    cells: list[Cell],
    data: _PerImage,
    perturbation: str,
    region: str,
    specific: bool,
    level: float,
    resamples: int,
    seed: int,
) -> tuple[float, float] | None:
    """Δ (or specific Δ) of the region, averaged over seeds, on the images every part shares."""
    names = [region]
    if specific:
        names += data._controls(cells[0], perturbation, region)
        if len(names) == 1:
            return None
    parts: list[pd.DataFrame | None] = []
    for cell in cells:
        parts.append(data._pred(cell, "", ""))
        parts.extend(data._pred(cell, perturbation, name) for name in names)
    ids = _common_ids(parts)
    if ids is None:
        return None
    intact = [data._pred(c, "", "").loc[ids] for c in cells]  # type: ignore[union-attr]
    y = _labels(intact, data.positive_index)
    if y is None:
        return None
    draws = draw_two_level(len(cells), len(ids), labels=y, resamples=resamples, seed=seed)
    per_seed = []
    for cell, frame in zip(cells, intact, strict=True):
        auc_intact = auc_on_draws(y, frame[RANKING_COLUMN], draws.images)
        deltas = []
        for name in names:
            perturbed = data._pred(cell, perturbation, name)
            if perturbed is None:
                return None
            auc = auc_on_draws(y, perturbed.loc[ids, RANKING_COLUMN], draws.images)
            deltas.append(auc_intact - np.maximum(auc, _CHANCE_AUC))
        value = deltas[0] - np.mean(deltas[1:], axis=0) if specific else deltas[0]
        per_seed.append(value)
    return percentile_interval(seed_mean_replicates(np.stack(per_seed), draws.seeds), level)


def _normalised_interval(
    cells: list[Cell],
    data: _PerImage,
    key: tuple[str, str, str],
    best: float,
    level: float,
    resamples: int,
    seed: int,
) -> tuple[float, float] | None:
    """The normalised score averaged over seeds, on the images every seed explained."""
    values = [data._expl.get((c, *key)) for c in cells]
    chances = [data._chance.get((c, *key)) for c in cells]
    ids = _common_ids([*values, *chances])
    if ids is None:
        return None
    value = np.stack([v.loc[ids].to_numpy(dtype=float) for v in values if v is not None])
    chance = np.stack([c.loc[ids].to_numpy(dtype=float) for c in chances if c is not None])
    ok = np.isfinite(value) & np.isfinite(chance)
    draws = draw_two_level(len(cells), len(ids), resamples=resamples, seed=seed)
    per_seed = []
    for s in range(len(cells)):
        kept = ok[s][draws.images]
        count = kept.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            v = np.where(kept, value[s][draws.images], 0.0).sum(axis=1) / count
            c = np.where(kept, chance[s][draws.images], 0.0).sum(axis=1) / count
            span = best - c
            per_seed.append(np.where((count > 0) & (span > 0), (v - c) / span, np.nan))
    return percentile_interval(seed_mean_replicates(np.stack(per_seed), draws.seeds), level)
