"""Analyses across cells: explanation drift and perturbation rank agreement.

Does adaptation change the explanations, and does the Δ ranking depend on the perturbation?
Both are questions the study's design raises but a per-cell table cannot answer:

* **explanation drift** — for one backbone, seed and saliency method, the per-image Spearman
  correlation between the maps of two strategies on the same test images (the linear probe's
  maps are the frozen pretrained backbone's), averaged, with a percentile bootstrap CI over
  images. Low values mean adaptation moved where the model looks.
* **perturbation rank agreement** — for every Δ_region, Kendall's tau-b between the cell rankings
  under each pair of perturbations (``zero``, ``mean``, ``blur``, ``inpaint``, ...). A leaderboard
  ranked by Δ under one baseline should say when another baseline reorders it.
* **performance vs explanation** — for every explanation score, Spearman's rho between the
  cells' AUC and that score, with a bootstrap CI over cells: the study's finding that higher
  performance did not mean better explainability, as a number with its uncertainty.

Pure functions of cell outputs and records: no model code runs here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
import torch
from scipy.stats import kendalltau

from xaibench.sanity import spearman_per_image


@dataclass(frozen=True)
class CellMaps:
    """Down-sampled saliency maps of one cell and method, for cross-cell comparisons.

    Attributes:
        sample_ids: Test images the maps explain, in order.
        maps: ``[n, g, g]`` maps (area-averaged to a ``g`` x ``g`` grid).
    """

    sample_ids: tuple[str, ...]
    maps: np.ndarray


def bootstrap_mean_ci(
    values: np.ndarray, *, resamples: int, seed: int, level: float = 0.95
) -> tuple[float | None, float | None]:
    """Percentile bootstrap CI of the mean of ``values`` (NaN dropped), seeded."""
    values = values[~np.isnan(values)]
    if values.size < 2 or resamples < 1:
        return None, None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.size, size=(resamples, values.size))
    means = values[idx].mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def explanation_drift(
    maps: Mapping[tuple[str, str, int], Mapping[str, CellMaps]],
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Per-image map similarity between every pair of strategies of one backbone.

    Args:
        maps: ``(backbone, strategy, seed) -> saliency method -> CellMaps``.
        resamples: Bootstrap resamples for the CI.
        seed: Bootstrap seed.

    Returns:
        One row per (backbone, seed, saliency, strategy pair) with the mean Spearman
        similarity, its CI and the number of images.
    """
    groups: dict[tuple[str, int, str], dict[str, CellMaps]] = defaultdict(dict)
    for (backbone, strategy, cell_seed), by_method in maps.items():
        for method, cell_maps in by_method.items():
            groups[(backbone, cell_seed, method)][strategy] = cell_maps
    rows = []
    for (backbone, cell_seed, method), by_strategy in sorted(groups.items()):
        for a, b in combinations(sorted(by_strategy), 2):
            ma, mb = by_strategy[a], by_strategy[b]
            common = [s for s in ma.sample_ids if s in set(mb.sample_ids)]
            ia = [ma.sample_ids.index(s) for s in common]
            ib = [mb.sample_ids.index(s) for s in common]
            rho = spearman_per_image(
                torch.from_numpy(ma.maps[ia].astype(np.float64)),
                torch.from_numpy(mb.maps[ib].astype(np.float64)),
            )
            defined = rho[~np.isnan(rho)]
            low, high = bootstrap_mean_ci(rho, resamples=resamples, seed=seed)
            rows.append(
                {
                    "backbone": backbone,
                    "seed": cell_seed,
                    "saliency": method,
                    "strategy_a": a,
                    "strategy_b": b,
                    "spearman": float(defined.mean()) if defined.size else None,
                    "ci_low": low,
                    "ci_high": high,
                    "n": int(defined.size),
                }
            )
    return rows


def perturbation_rank_agreement(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Kendall's tau-b between cell rankings by Δ_region under each pair of perturbations."""
    values: dict[tuple[str, str], dict[str, dict[tuple[Any, ...], float]]] = defaultdict(
        lambda: defaultdict(dict)
    )
    for rec in records:
        if rec.get("metric") != "delta_region" or rec.get("status") != "ok":
            continue
        cell = (rec["backbone"], rec["strategy"], rec["seed"])
        values[(rec["metric"], rec["region"])][rec["perturbation"]][cell] = rec["value"]
    rows = []
    for (metric, region), by_perturbation in sorted(values.items()):
        for a, b in combinations(sorted(by_perturbation), 2):
            cells = sorted(set(by_perturbation[a]) & set(by_perturbation[b]))
            tau = p_value = None
            if len(cells) >= 3:
                x = [by_perturbation[a][c] for c in cells]
                y = [by_perturbation[b][c] for c in cells]
                result = kendalltau(x, y)
                if np.isfinite(result.statistic):
                    tau, p_value = float(result.statistic), float(result.pvalue)
            rows.append(
                {
                    "metric": metric,
                    "region": region,
                    "perturbation_a": a,
                    "perturbation_b": b,
                    "kendall_tau": tau,
                    "p_value": p_value,
                    "cells": len(cells),
                }
            )
    return rows


def performance_explanation_correlation(
    records: Sequence[Mapping[str, Any]],
    *,
    performance: str = "auc",
    resamples: int = 1000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Spearman's rho between the cells' ``performance`` metric and each explanation score.

    One row per explanation column (metric, perturbation or saliency method, region) with at
    least three cells that have both values; the 95% CI is a percentile bootstrap over cells
    (resamples where either side is constant are dropped). With few cells the interval is wide,
    which is the point: a handful of models cannot show that performance and explainability
    go together or apart.
    """
    perf: dict[tuple[Any, ...], float] = {}
    scores: dict[tuple[Any, ...], dict[tuple[Any, ...], float]] = defaultdict(dict)
    for rec in records:
        if rec.get("status") != "ok" or rec.get("value") is None:
            continue
        cell = (rec["backbone"], rec["strategy"], rec["seed"])
        if rec["metric"] == performance and rec.get("category") == "performance":
            perf[cell] = float(rec["value"])
        elif rec.get("category") == "explanation":
            key = (rec["metric"], rec.get("perturbation"), rec.get("saliency"), rec.get("region"))
            scores[key][cell] = float(rec["value"])
    rng = np.random.default_rng(seed)
    rows = []
    for (metric, perturbation, saliency, region), by_cell in sorted(
        scores.items(), key=lambda item: tuple(str(k) for k in item[0])
    ):
        cells = sorted(set(by_cell) & set(perf))
        if len(cells) < 3:
            continue
        x = np.array([perf[c] for c in cells])
        y = np.array([by_cell[c] for c in cells])
        rho = _spearman(x, y)
        # The resamples drawn one by one (the same stream as ever), their correlations in one
        # batch: a thousand tiny rank correlations per column cost seconds one at a time.
        draws = [rng.integers(0, len(cells), len(cells)) for _ in range(resamples)]
        boot = np.empty(0)
        if draws:
            idx = np.stack(draws)
            every = spearman_per_image(torch.from_numpy(x[idx]), torch.from_numpy(y[idx]))
            boot = every[~np.isnan(every)]  # resamples where either side is constant: dropped
        low = float(np.quantile(boot, 0.025)) if len(boot) >= 10 else None
        high = float(np.quantile(boot, 0.975)) if len(boot) >= 10 else None
        rows.append(
            {
                "performance": performance,
                "metric": metric,
                "perturbation": perturbation,
                "saliency": saliency,
                "region": region,
                "spearman": rho,
                "ci_low": low,
                "ci_high": high,
                "cells": len(cells),
            }
        )
    return rows


def _spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman's rho with average ranks; None when either side is constant."""
    rho = spearman_per_image(torch.from_numpy(x[None]), torch.from_numpy(y[None]))[0]
    return None if np.isnan(rho) else float(rho)
