"""Evidence agreement: do a saliency method's maps show the regions the model needs?

Two kinds of evidence say which anatomy a model uses. Perturbation says what it *needs*: the
specific Δ of a region (``details.specific``: AUC lost when the region is perturbed, minus the
loss of area-matched control regions elsewhere). Saliency maps say what they *show*: the
normalised localisation score of the region (``details.normalised``: 0 at chance, 1 at the
metric's best). Per cell and saliency method this module ranks the regions both ways and records

* ``kendall_tau``: Kendall's tau-b between the two orders (``scipy.stats.kendalltau``; tau-b
  handles ties), with its two-sided ``kendall_p``; undefined (null) with fewer than
  :data:`MIN_REGIONS_FOR_TAU` regions, where tau can only be -1, 0 or 1 and says no more than
  whether the top regions match, or when either side is constant;
* ``top_needed``, ``top_shown`` and ``top_match``: the region with the largest specific Δ, the
  one with the largest normalised localisation, and whether they are the same (two or more
  regions);
* ``flagged`` with its ``flags`` (sentences): the maps point at a region (its normalised score
  is the largest and shown above chance) that the model is not shown to need (its specific Δ
  is not shown above 0); or the model needs a region (specific Δ shown above 0) where the maps
  show nothing above chance.

"Needed" and "above chance" are read from the records' own 95% intervals (``specific_ci``,
``normalised_ci``: the interval lies above 0) and, where recorded, their one-sided p-values
(``specific_p``, ``p_chance``) Holm-adjusted over the whole table (below ``alpha``), one family
per question as in the leaderboard: a region with too few images to tell is neither, and many
cells x methods x regions do not raise flags by chance alone. The perturbation is the
headline one of the records (lowest off-target cost, :mod:`xaibench.headline`), the localisation
metric the headline one (relevance mass first). A pure function of records: ``results.json``
stores its rows under ``evidence`` (one run), and leaderboard and report recompute it over the
runs they merge. Records without specific Δ or normalised scores (older schemas) give no rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from scipy.stats import kendalltau

from xaibench.headline import (
    has_normalised,
    has_specific,
    headline_localisation_metric,
    headline_perturbation,
)
from xaibench.stats.comparisons import holm

#: Fewest regions for which Kendall's tau is recorded.
MIN_REGIONS_FOR_TAU = 3

_CELL = ("backbone", "strategy", "seed")


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _number_or_none(value: Any) -> float | None:
    return float(value) if _finite(value) else None


def _interval(value: Any) -> tuple[float, float] | None:
    if isinstance(value, list | tuple) and len(value) == 2 and all(_finite(v) for v in value):
        return float(value[0]), float(value[1])
    return None


def _shown_positive(
    ci: tuple[float, float] | None, p_holm: float | None, alpha: float
) -> bool | None:
    """Whether a score is shown to exceed 0, or None when neither interval nor p is known.

    Shown: its interval lies above 0 and, where a p-value was recorded, its Holm-adjusted
    p-value is below ``alpha``.
    """
    if ci is None and p_holm is None:
        return None
    return (ci is None or ci[0] > 0) and (p_holm is None or p_holm < alpha)


def _fmt(value: float | None, ci: tuple[float, float] | None) -> str:
    if value is None:
        return "undefined"
    text = f"{value:.3f}"
    return f"{text} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else text


def _order(regions: Sequence[dict[str, Any]], key: str) -> list[str]:
    """Region names by ``key``, largest first; ties keep the records' order."""
    valued = [r for r in regions if r[key] is not None]
    return [r["region"] for r in sorted(valued, key=lambda r: -r[key])]


def evidence_agreement(
    records: Iterable[Mapping[str, Any]],
    *,
    perturbation: str | None = None,
    localisation_metric: str | None = None,
    alpha: float = 0.05,
) -> list[dict[str, Any]]:
    """Per cell and saliency method: regions ranked by specific Δ vs by normalised localisation.

    Args:
        records: Results records (one run or several; ``docs/results-schema.md``).
        perturbation: The perturbation whose specific Δ says what the model needs; default the
            records' headline perturbation (:func:`xaibench.headline.headline_perturbation`).
        localisation_metric: The region metric whose normalised score says what the maps show;
            default :func:`xaibench.headline.headline_localisation_metric`.
        alpha: Level of the Holm-adjusted one-sided tests (``specific_p`` over every cell and
            region, ``p_chance`` over every cell, method and region of ``records``) that
            "needed" and "above chance" also require.

    Returns:
        One row per cell x saliency method that has normalised scores of the metric, in record
        order: ``backbone``, ``strategy``, ``seed``, ``saliency``, ``perturbation``,
        ``localisation_metric``, ``regions`` (per region scored both ways: ``region``,
        ``specific``, ``specific_ci``, ``specific_p_holm``, ``needed``, ``normalised``,
        ``normalised_ci``, ``p_chance_holm``, ``above_chance``), ``needed_order`` and
        ``shown_order`` (region names, largest first),
        ``kendall_tau``, ``kendall_p``, ``top_needed``, ``top_shown``, ``top_match``,
        ``flagged``, ``flags`` and ``reason`` (why tau is null, else null). Empty when the
        records have no specific Δ or no normalised scores.
    """
    records = list(records)
    perturbation = perturbation or headline_perturbation(records)
    metric = localisation_metric or headline_localisation_metric(records)
    if perturbation is None or metric is None:
        return []
    needed: dict[tuple[Any, ...], dict[str, Mapping[str, Any]]] = {}
    for rec in records:
        if has_specific(rec) and rec.get("perturbation") == perturbation:
            cell = tuple(rec[c] for c in _CELL)
            needed.setdefault(cell, {}).setdefault(str(rec["region"]), rec)
    shown: dict[tuple[Any, ...], dict[str, Mapping[str, Any]]] = {}
    for rec in records:
        if has_normalised(rec) and rec.get("metric") == metric:
            key = (*(rec[c] for c in _CELL), str(rec["saliency"]))
            shown.setdefault(key, {}).setdefault(str(rec["region"]), rec)
    table = []
    for key, by_region in shown.items():
        cell_needs = needed.get(key[:3], {})
        regions = [
            _region(name, cell_needs[name], by_region[name])
            for name in by_region
            if name in cell_needs
        ]
        table.append((key, regions))
    _decide(table, alpha)
    return [_row(key, perturbation, metric, regions) for key, regions in table]


def _region(name: str, delta: Mapping[str, Any], local: Mapping[str, Any]) -> dict[str, Any]:
    d_details, l_details = delta.get("details") or {}, local.get("details") or {}
    ok_d, ok_l = delta.get("status") == "ok", local.get("status") == "ok"
    specific = d_details.get("specific") if ok_d and _finite(d_details.get("specific")) else None
    normalised = l_details.get("normalised")
    normalised = normalised if ok_l and _finite(normalised) else None
    s_ci = _interval(d_details.get("specific_ci")) if specific is not None else None
    n_ci = _interval(l_details.get("normalised_ci")) if normalised is not None else None
    s_p = _number_or_none(d_details.get("specific_p")) if specific is not None else None
    n_p = _number_or_none(l_details.get("p_chance")) if normalised is not None else None
    return {
        "region": name,
        "specific": None if specific is None else float(specific),
        "specific_ci": list(s_ci) if s_ci else None,
        "specific_p_holm": s_p,
        "needed": None,
        "normalised": None if normalised is None else float(normalised),
        "normalised_ci": list(n_ci) if n_ci else None,
        "p_chance_holm": n_p,
        "above_chance": None,
    }


def _decide(table: list[tuple[tuple[Any, ...], list[dict[str, Any]]]], alpha: float) -> None:
    """Holm-adjust each kind of p-value over the whole table; set ``needed``/``above_chance``.

    One family per question, as in the leaderboard: every (cell, region) specific Δ (shared by
    the cell's saliency methods, so counted once) and every (cell, method, region) normalised
    score. The raw p-values stay in the records.
    """
    needed: dict[tuple[Any, ...], float] = {}
    shown: dict[tuple[Any, ...], float] = {}
    for key, regions in table:
        for r in regions:
            if r["specific_p_holm"] is not None:
                needed[(*key[:3], r["region"])] = r["specific_p_holm"]
            if r["p_chance_holm"] is not None:
                shown[(*key, r["region"])] = r["p_chance_holm"]
    adjusted = {
        name: dict(zip(family, holm(list(family.values())), strict=True)) if family else {}
        for name, family in (("needed", needed), ("shown", shown))
    }
    for key, regions in table:
        for r in regions:
            if r["specific_p_holm"] is not None:
                r["specific_p_holm"] = float(adjusted["needed"][(*key[:3], r["region"])])
            if r["p_chance_holm"] is not None:
                r["p_chance_holm"] = float(adjusted["shown"][(*key, r["region"])])
            r["needed"] = _shown_positive(_interval(r["specific_ci"]), r["specific_p_holm"], alpha)
            r["above_chance"] = _shown_positive(
                _interval(r["normalised_ci"]), r["p_chance_holm"], alpha
            )


def _row(
    key: tuple[Any, ...], perturbation: str, metric: str, regions: list[dict[str, Any]]
) -> dict[str, Any]:
    both = [r for r in regions if r["specific"] is not None and r["normalised"] is not None]
    needed_order, shown_order = _order(both, "specific"), _order(both, "normalised")
    tau: float | None = None
    tau_p: float | None = None
    reason: str | None = None
    if len(both) < MIN_REGIONS_FOR_TAU:
        reason = (
            f"{len(both)} region(s) scored both ways; Kendall's tau needs "
            f"{MIN_REGIONS_FOR_TAU} or more"
        )
    else:
        result = kendalltau(
            [r["specific"] for r in both], [r["normalised"] for r in both], variant="b"
        )
        if _finite(result.statistic):
            tau, tau_p = float(result.statistic), float(result.pvalue)
        else:
            reason = "specific Δ or normalised localisation is the same on every region"
    top_needed = needed_order[0] if needed_order else None
    top_shown = shown_order[0] if shown_order else None
    flags = _flags(both, top_shown, perturbation, metric)
    return {
        **dict(zip(("backbone", "strategy", "seed", "saliency"), key, strict=True)),
        "perturbation": perturbation,
        "localisation_metric": metric,
        "regions": regions,
        "needed_order": needed_order,
        "shown_order": shown_order,
        "kendall_tau": tau,
        "kendall_p": tau_p,
        "top_needed": top_needed,
        "top_shown": top_shown,
        "top_match": (top_needed == top_shown) if len(both) >= 2 else None,
        "flagged": bool(flags),
        "flags": flags,
        "reason": reason,
    }


def _flags(
    regions: Sequence[dict[str, Any]], top_shown: str | None, perturbation: str, metric: str
) -> list[str]:
    flags = []
    by_name = {r["region"]: r for r in regions}
    top = by_name.get(top_shown) if top_shown else None
    if top is not None and top["above_chance"] and top["needed"] is False:
        flags.append(
            f"maps point at {top['region']} (normalised {metric} "
            f"{_fmt(top['normalised'], _interval(top['normalised_ci']))}), which the model "
            f"is not shown to need (specific Δ under {perturbation} "
            f"{_fmt(top['specific'], _interval(top['specific_ci']))})"
        )
    for r in regions:
        if r["needed"] and r["above_chance"] is False:
            flags.append(
                f"the model needs {r['region']} (specific Δ under {perturbation} "
                f"{_fmt(r['specific'], _interval(r['specific_ci']))}), where the maps show "
                f"nothing above chance (normalised {metric} "
                f"{_fmt(r['normalised'], _interval(r['normalised_ci']))})"
            )
    return flags


def evidence_label(row: Mapping[str, Any]) -> str:
    """A short cell text: ``flagged``, ``agrees`` or ``differs`` (top regions), with tau."""
    if row.get("flagged"):
        word = "flagged"
    elif row.get("top_match") is None:
        word = "n/a"
    else:
        word = "agrees" if row["top_match"] else "differs"
    tau = row.get("kendall_tau")
    return f"{word} (τ {tau:.2f})" if _finite(tau) else word


def evidence_labels(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[Any, ...], dict[str, str]]:
    """Per cell (backbone, strategy, seed): saliency method -> :func:`evidence_label`."""
    out: dict[tuple[Any, ...], dict[str, str]] = {}
    for row in rows:
        cell = tuple(row[c] for c in _CELL)
        out.setdefault(cell, {})[str(row["saliency"])] = evidence_label(row)
    return out
