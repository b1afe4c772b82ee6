"""Building the leaderboards of one or more runs: compatibility, tables, tiers, sources.

:class:`Leaderboards` holds both tables with the paired comparisons behind them;
:func:`build_leaderboards` makes it from results files alone, after
:func:`check_compatible` refused runs whose numbers cannot share a table.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from xaibench.errors import XaibenchError
from xaibench.headline import (
    OFF_TARGET_THRESHOLD,
    costly_perturbations,
    headline_localisation_metric,
    headline_perturbation,
    off_target_costs,
)
from xaibench.leaderboard.columns import ranking_column
from xaibench.leaderboard.comparisons import (
    COMPARISON_COLUMNS,
    _p_lookup,
    _pairwise,
    _specs,
    _tiers,
)
from xaibench.leaderboard.per_image import _PerImage
from xaibench.leaderboard.seed_rows import with_seed_aggregates
from xaibench.leaderboard.tables import explainability_table, performance_table

if TYPE_CHECKING:
    from xaibench.report.run_files import RunFiles


@dataclass(frozen=True)
class Leaderboards:
    """Both leaderboards of one or more compatible runs, with the paired comparisons behind them.

    Attributes:
        performance: One row per cell: ``rank``, ``tier``, ``backbone``, ``strategy``, ``seed``,
            then per metric ``<label>``, ``<label> low``, ``<label> high`` (numbers), then
            ``p vs leader`` (Holm-adjusted) and ``weights``. With several seeds, an
            ``aggregate`` column after ``seed`` and a row per backbone x strategy over its
            seeds after the per-seed rows (:mod:`xaibench.leaderboard.seed_rows`).
        explainability: The same for explanation columns, plus ``sanity (<method>)`` badges
            and, when known-answer badges are given, ``trust (<method>)``.
        comparisons: Long table of paired tests: ``table``, ``column``, ``backbone_a``,
            ``strategy_a``, ``seed_a``, ``backbone_b``, ``strategy_b``, ``seed_b``, ``test``,
            ``difference``, ``low``, ``high``, ``p_value``, ``p_holm``, ``n``.
        meta: Task, sources, versions, ranking columns, alpha.
    """

    performance: pd.DataFrame
    explainability: pd.DataFrame
    comparisons: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)


#: Everything that must agree before runs share a table: the same question, scored the same way
#: on the same test images. Config keys are compared as resolved.
#: Config settings that define what the explanation columns mean (``controls`` and ``chance``:
#: the reference points of the specific Δ and the normalised scores, issue 17).
_DEFINITION_KEYS = (
    "metrics",
    "perturbations",
    "ci",
    "explain_regions",
    "saliency_target",
    "controls",
    "chance",
)


def _definition(run: RunFiles) -> dict[str, Any]:
    doc = run.document
    config = doc.get("config", {})
    dataset = doc.get("dataset", {})
    return {
        "task": doc["task"].get("name"),
        "class_names": doc["task"].get("class_names"),
        "positive_class": doc["task"].get("positive_class"),
        **{f"config.{k}": config.get(k) for k in _DEFINITION_KEYS},
        "dataset fingerprint": dataset.get("fingerprint"),
        "test split": (dataset.get("splits") or {}).get("test"),
    }


def check_compatible(runs: Sequence[RunFiles]) -> None:
    """Refuse to put runs with different tasks, metric definitions or test sets in one table.

    Raises:
        XaibenchError: No runs; two runs differ in a definition key (the message names the key
            and both runs); or the same cell appears in two runs.
    """
    if not runs:
        raise XaibenchError("no run directories given")
    first = _definition(runs[0])
    for run in runs[1:]:
        other = _definition(run)
        for key, value in first.items():
            if other[key] != value:
                raise XaibenchError(
                    f"runs {str(runs[0].path)!r} and {str(run.path)!r} differ in {key} "
                    f"({_short(value)} vs {_short(other[key])}); their numbers are not "
                    "comparable and are never mixed in one leaderboard"
                )
    seen: dict[tuple[Any, ...], Path] = {}
    for run in runs:
        for cell in run.document.get("cells", []):
            cell_key = (cell["backbone"], cell["strategy"], cell["seed"])
            if cell_key in seen:
                raise XaibenchError(
                    f"cell {'/'.join(map(str, cell_key))} is in both {str(seen[cell_key])!r} "
                    f"and {str(run.path)!r}; give each cell once"
                )
            seen[cell_key] = run.path


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def build_leaderboards(
    runs: Sequence[RunFiles],
    *,
    alpha: float = 0.05,
    level: float = 0.95,
    resamples: int = 1000,
    seed: int = 0,
    trust: Sequence[dict[str, Any]] | None = None,
) -> Leaderboards:
    """Build both leaderboards from results files; no model code runs.

    ``trust``: known-answer badges per cell and saliency method (``xaibench.trust.trust_rows``);
    by default the ``trust`` lists the runs' ``results.json`` hold (``run --calibration``).

    Each table is ranked by its ranking column (AUC; the first Δ column) and split into tiers by
    paired tests on the same test images: DeLong for AUC, exact McNemar for the rates, a paired
    image bootstrap for Δ and per-image explanation scores, each Holm-corrected over all pairs
    of cells in its column. Bootstrap tests are seeded, so a rebuild is byte-identical.
    A backbone x strategy at several seeds also gets an aggregate row in each table: the mean
    over seeds with a two-level (seed x image) bootstrap interval
    (:func:`~xaibench.leaderboard.seed_rows.with_seed_aggregates`).

    Raises:
        XaibenchError: The runs are not comparable (see :func:`check_compatible`).
    """
    check_compatible(runs)
    records = [rec for run in runs for rec in run.records]
    if trust is None:
        trust = [row for run in runs for row in run.document.get("trust", [])]
    data = _PerImage(runs, resamples=resamples, seed=seed)
    primary = (runs[0].task.get("regions_of_interest") or [None])[0]
    tables = {
        "performance": performance_table(records),
        "explainability": explainability_table(records, primary=primary, alpha=alpha, trust=trust),
    }
    comparisons: list[dict[str, Any]] = []
    for name, frame in tables.items():
        rows = _pairwise(
            frame,
            name,
            _specs(records, "performance" if name == "performance" else "explanation"),
            data,
            primary,
            level=level,
            resamples=resamples,
            seed=seed,
        )
        comparisons.extend(rows)
        column = ranking_column(frame)
        tables[name] = _tiers(frame, _p_lookup(rows, name, column or ""), alpha)
    for name, frame in tables.items():
        tables[name] = with_seed_aggregates(
            frame, name, records, data,
            primary=primary, level=level, resamples=resamples, seed=seed,
        )  # fmt: skip
    compare = pd.DataFrame(comparisons, columns=COMPARISON_COLUMNS)
    meta = {
        "task": runs[0].task,
        "alpha": alpha,
        "level": level,
        "resamples": resamples,
        "seed": seed,
        "ranking": {name: ranking_column(frame) for name, frame in tables.items()},
        "headline": headline_meta(records),
        "sources": [_source(run) for run in runs],
    }
    return Leaderboards(tables["performance"], tables["explainability"], compare, meta)


def headline_meta(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What the explainability table leads with (``leaderboard.json`` ``headline``).

    ``perturbation``: the headline perturbation (lowest mean absolute off-target cost), or
    null in runs without control regions; ``off_target_cost``: per perturbation, the mean
    absolute control Δ over the table; ``off_target_threshold`` and ``costly``: the
    perturbations above it; ``localisation_metric``: the metric of the evidence check.
    """
    costs = off_target_costs(records)
    return {
        "perturbation": headline_perturbation(records),
        "off_target_cost": costs,
        "off_target_threshold": OFF_TARGET_THRESHOLD,
        "costly": costly_perturbations(costs),
        "localisation_metric": headline_localisation_metric(records),
    }


def _source(run: RunFiles) -> dict[str, Any]:
    doc = run.document
    env = doc.get("environment") or {}
    digest = hashlib.sha256((run.path / "results.json").read_bytes()).hexdigest()
    return {
        "path": str(run.path),
        "results_sha256": digest,
        "xaibench_version": env.get("xaibench_version"),
        "git_commit": env.get("git_commit"),
        "config_hash": doc.get("config_hash"),
        "created": doc.get("created"),
        "seeds": env.get("seeds"),
    }
