"""Leaderboards as a pure function of results records: no model code runs here.

Two tables, one row per cell (backbone x strategy x seed):

* performance — the positive-vs-rest AUC, accuracy, sensitivity, specificity and macro AUC;
* explainability — Delta_region per perturbation and region, IoU_region and the other region and
  faithfulness metrics per saliency method, and each method's sanity-check badge (and its
  known-answer trust badge, when a calibration is given: ``xaibench.trust``).

Rows are ranked by AUC (performance) and by the first Delta column (explainability). Cells with
randomly initialised weights are marked, because their numbers say nothing about a pretrained model.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from xaibench.component import MAX_SEED
from xaibench.errors import XaibenchError
from xaibench.escape import markdown_code, markdown_text, to_csv
from xaibench.evidence import evidence_agreement, evidence_labels
from xaibench.headline import (
    OFF_TARGET_THRESHOLD,
    costly_perturbations,
    has_normalised,
    has_specific,
    headline_localisation_metric,
    headline_perturbation,
    is_delta_with_control,
    off_target_costs,
)
from xaibench.paths import contained, read_json, relative_name, write_whole
from xaibench.prediction_scores import ranking_scores
from xaibench.stats.comparisons import (
    DeltaReplicates,
    PairedComparison,
    delong_comparison,
    delta_auc_replicates,
    holm,
    mcnemar_comparison,
    paired_bootstrap_delta_auc,
    paired_bootstrap_mean,
    paired_delta_from_replicates,
)

if TYPE_CHECKING:
    from xaibench.report.run_files import RunFiles

CELL_COLUMNS = ["backbone", "strategy", "seed"]
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
    skip = {*CELL_COLUMNS, "rank", "tier", "weights", P_COLUMN}
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
    _mark_chance(frame, alpha)
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


def _mark_chance(frame: pd.DataFrame, alpha: float) -> None:
    """Holm-adjust every ``p chance`` in the table together; add each ``beats chance`` column.

    A value beats chance when its adjusted p-value is below ``alpha``; a value without a
    p-value is not shown to beat chance (False); a missing value has no verdict (None).
    """
    columns = [c for c in frame.columns if str(c).endswith(P_CHANCE_SUFFIX)]
    if not columns:
        return
    stacked = frame[columns].to_numpy(dtype=float)
    flat = stacked.ravel()
    adjusted = np.full(flat.shape, np.nan)
    tested = ~np.isnan(flat)
    if tested.any():
        adjusted[tested] = holm(flat[tested])
    adjusted = adjusted.reshape(stacked.shape)
    for j, col in enumerate(columns):
        value_col = col[: -len(P_CHANCE_SUFFIX)]
        frame[col] = adjusted[:, j]
        verdict = [
            None if pd.isna(v) else bool(not np.isnan(p) and p < alpha)
            for v, p in zip(frame[value_col], adjusted[:, j], strict=True)
        ]
        position = list(frame.columns).index(col) + 1
        frame.insert(
            position,
            f"{value_col}{BEATS_CHANCE_SUFFIX}",
            pd.Series(verdict, dtype=object, index=frame.index),
        )


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


@dataclass(frozen=True)
class Leaderboards:
    """Both leaderboards of one or more compatible runs, with the paired comparisons behind them.

    Attributes:
        performance: One row per cell: ``rank``, ``tier``, ``backbone``, ``strategy``, ``seed``,
            then per metric ``<label>``, ``<label> low``, ``<label> high`` (numbers), then
            ``p vs leader`` (Holm-adjusted) and ``weights``.
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
_DEFINITION_KEYS = ("metrics", "perturbations", "ci", "explain_regions", "saliency_target")


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


def _merged(runs: Sequence[RunFiles], attr: str) -> pd.DataFrame:
    frames = [getattr(r, attr) for r in runs if not getattr(r, attr).empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _cell_key(row: Any) -> tuple[Any, ...]:
    return (row["backbone"], row["strategy"], int(row["seed"]))


#: Column of :class:`_PerImage`'s prediction tables holding the scores ranks are taken from.
RANKING_COLUMN = "ranking_score"


class _PerImage:
    """Per-image inputs of the paired tests, indexed once per cell and aligned on sample ids."""

    def __init__(self, runs: Sequence[RunFiles], *, resamples: int, seed: int) -> None:
        task = runs[0].task
        class_names = list(task["class_names"])
        #: The derived column the paired AUC and Δ tests rank by: the positive-vs-rest log-odds
        #: where the files record log-probabilities, else the probability (older files).
        self.positive = RANKING_COLUMN
        self.positive_index = class_names.index(task["positive_class"])
        self.resamples, self.seed = resamples, seed
        preds = _merged(runs, "predictions")
        self._preds: dict[tuple[Any, ...], pd.DataFrame] = {}
        if not preds.empty:
            preds = preds[preds["split"] == "test"]
            keys = [*CELL_COLUMNS, "perturbation", "region"]
            for key, group in preds.groupby(keys, sort=False):
                cell = (key[0], key[1], int(key[2]))
                scores = ranking_scores(group, class_names, self.positive_index)
                group = group.assign(**{RANKING_COLUMN: scores})
                self._preds[(cell, key[3], key[4])] = group.set_index("sample_id").sort_index()
        expl = _merged(runs, "explanations")
        self._expl: dict[tuple[Any, ...], pd.Series] = {}
        self._chance: dict[tuple[Any, ...], pd.Series] = {}
        if not expl.empty:
            keys = [*CELL_COLUMNS, "metric", "saliency", "region"]
            for key, group in expl.groupby(keys, sort=False):
                cell = (key[0], key[1], int(key[2]))
                indexed = group.set_index("sample_id").sort_index()
                self._expl[(cell, *key[3:])] = indexed["value"]
                if "chance" in indexed and indexed["chance"].notna().any():
                    self._chance[(cell, *key[3:])] = indexed["chance"]
        self._replicates: dict[tuple[Any, ...], tuple[tuple[str, ...], DeltaReplicates]] = {}

    def _pred(self, cell: tuple[Any, ...], perturbation: str, region: str) -> pd.DataFrame | None:
        return self._preds.get((cell, perturbation, region))

    def intact(self, a: tuple[Any, ...], b: tuple[Any, ...]) -> pd.DataFrame | None:
        """Labels, positive scores and calls of two cells on their shared test images."""
        pa, pb = self._pred(a, "", ""), self._pred(b, "", "")
        if pa is None or pb is None:
            return None
        b_cols = pb[[self.positive, "called_positive"]].rename(columns=lambda c: f"{c}_b")
        return pa[["label", self.positive, "called_positive"]].join(b_cols, how="inner")

    def _cell_delta(
        self,
        cell: tuple[Any, ...],
        perturbation: str,
        region: str,
        ids: tuple[str, ...] | None = None,
    ) -> tuple[tuple[str, ...], DeltaReplicates] | None:
        """One cell's Δ replicates on its images, or on ``ids`` only (bootstrapped once)."""
        key = (cell, perturbation, region, ids)
        if key not in self._replicates:
            intact, perturbed = self._pred(cell, "", ""), self._pred(cell, perturbation, region)
            if intact is None or perturbed is None:
                return None
            joined = intact[["label", self.positive]].join(
                perturbed[[self.positive]].rename(columns={self.positive: "perturbed"}),
                how="inner",
            )
            if ids is not None:
                joined = joined.loc[list(ids)]
            y = (joined["label"].to_numpy() == self.positive_index).astype(int)
            reps = delta_auc_replicates(
                y,
                joined[self.positive].to_numpy(),
                joined["perturbed"].to_numpy(),
                resamples=self.resamples,
                seed=self.seed,
            )
            self._replicates[key] = (tuple(joined.index), reps)
        return self._replicates[key]

    def _controls(self, cell: tuple[Any, ...], perturbation: str, region: str) -> list[str]:
        """The control regions recorded for a region (``<region>#control<d>``, d = 0, 1, ...)."""
        names: list[str] = []
        while self._pred(cell, perturbation, f"{region}#control{len(names)}") is not None:
            names.append(f"{region}#control{len(names)}")
        return names

    def _cell_specific(
        self,
        cell: tuple[Any, ...],
        perturbation: str,
        region: str,
        ids: tuple[str, ...] | None = None,
    ) -> tuple[tuple[str, ...], DeltaReplicates] | None:
        """One cell's specific-Δ replicates: Δ_region minus the mean Δ of its control draws.

        Every Δ is bootstrapped on the same images in the same order, and the draws depend only
        on the number of images of each class and the seed (:func:`delta_auc_replicates`), so
        replicate ``r`` of the region and of every control resample the same images: their
        difference is the paired, class-stratified bootstrap of specific Δ. None without
        control predictions.
        """
        controls = self._controls(cell, perturbation, region)
        intact = self._pred(cell, "", "")
        if not controls or intact is None:
            return None
        if ids is None:
            shared = set(intact.index)
            for name in [region, *controls]:
                part = self._pred(cell, perturbation, name)
                shared &= set(part.index) if part is not None else set()
            ids = tuple(sorted(shared))
        parts = [self._cell_delta(cell, perturbation, name, ids) for name in [region, *controls]]
        if any(part is None for part in parts):
            return None
        main, *rest = [part[1] for part in parts if part is not None]
        control_delta = float(np.mean([c.delta for c in rest]))
        control_reps = np.mean([c.replicates for c in rest], axis=0)
        return ids, replace(
            main, delta=main.delta - control_delta, replicates=main.replicates - control_reps
        )

    def specific(
        self,
        a: tuple[Any, ...],
        b: tuple[Any, ...],
        perturbation: str,
        region: str,
        level: float,
    ) -> PairedComparison | None:
        """Paired bootstrap of specific Δ_a - specific Δ_b; raw Δ where controls are missing.

        Both cells are bootstrapped on their shared images. Without control predictions
        (``<region>#control<d>`` rows) the raw Δ is compared, and the test says so.
        """
        ra = self._cell_specific(a, perturbation, region)
        rb = self._cell_specific(b, perturbation, region)
        if ra is None or rb is None:
            raw = self.delta(a, b, perturbation, region, level)
            return None if raw is None else replace(raw, test=RAW_DELTA_TEST)
        if ra[0] != rb[0]:
            shared = tuple(sorted(set(ra[0]) & set(rb[0])))
            ra = self._cell_specific(a, perturbation, region, shared)
            rb = self._cell_specific(b, perturbation, region, shared)
            if ra is None or rb is None:
                return None
        result = paired_delta_from_replicates(ra[1], rb[1], level)
        return replace(result, test=SPECIFIC_DELTA_TEST)

    def delta(
        self,
        a: tuple[Any, ...],
        b: tuple[Any, ...],
        perturbation: str,
        region: str,
        level: float,
    ) -> PairedComparison | None:
        """Paired bootstrap of Δ_a - Δ_b (cached per-cell replicates when the images agree)."""
        ra, rb = (
            self._cell_delta(a, perturbation, region),
            self._cell_delta(b, perturbation, region),
        )
        if ra is None or rb is None:
            return None
        if ra[0] == rb[0]:  # the same images in the same order: the draws pair exactly
            return paired_delta_from_replicates(ra[1], rb[1], level)
        parts = [
            self._pred(a, "", ""), self._pred(a, perturbation, region),
            self._pred(b, "", ""), self._pred(b, perturbation, region),
        ]  # fmt: skip
        names = ["intact_a", "perturbed_a", "intact_b", "perturbed_b"]
        joined = parts[0][["label"]]  # type: ignore[index]
        for part, name in zip(parts, names, strict=True):
            joined = joined.join(
                part[[self.positive]].rename(columns={self.positive: name}),  # type: ignore[index]
                how="inner",
            )
        y = (joined["label"].to_numpy() == self.positive_index).astype(int)
        return paired_bootstrap_delta_auc(
            y, *(joined[name].to_numpy() for name in names),
            resamples=self.resamples, level=level, seed=self.seed,
        )  # fmt: skip

    def scores(
        self,
        a: tuple[Any, ...],
        b: tuple[Any, ...],
        metric: str,
        saliency: str,
        region: str,
        *,
        above_chance: bool = False,
    ) -> pd.DataFrame | None:
        """Two cells' per-image scores on their shared images (``a``, ``b``).

        With ``above_chance``, each score minus its image's chance level (explanations.csv
        ``chance``) when both cells recorded it; the frame's ``attrs["above_chance"]`` says
        whether it was subtracted.
        """
        key_a, key_b = (a, metric, saliency, region), (b, metric, saliency, region)
        sa, sb = self._expl.get(key_a), self._expl.get(key_b)
        if sa is None or sb is None:
            return None
        ca, cb = self._chance.get(key_a), self._chance.get(key_b)
        subtract = above_chance and ca is not None and cb is not None
        if subtract:
            sa, sb = sa - ca, sb - cb
        pairs = pd.concat([sa, sb], axis=1, keys=["a", "b"], join="inner")
        pairs.attrs["above_chance"] = subtract
        return pairs


#: ``test`` of comparisons on a normalised column: per-image ``value - chance`` compared
#: (the difference is in the metric's own units, not normalised), or the raw values where a
#: run recorded no per-image chance.
ABOVE_CHANCE_TEST = "paired bootstrap (value - chance)"
RAW_SCORE_TEST = "paired bootstrap (raw value: no per-image chance)"
#: ``test`` of comparisons on a specific-Δ column: with control predictions, or raw Δ without.
SPECIFIC_DELTA_TEST = "paired bootstrap (specific Δ)"
RAW_DELTA_TEST = "paired bootstrap (raw Δ: no control predictions)"


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


COMPARISON_COLUMNS = [
    "table", "column",
    "backbone_a", "strategy_a", "seed_a", "backbone_b", "strategy_b", "seed_b",
    "test", "difference", "low", "high", "p_value", "p_holm", "n",
]  # fmt: skip


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


def display_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Strings for people: each ``<col>`` with its ``<col> low``/``high`` as ``v [lo, hi]``."""
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
    return pd.DataFrame(out, columns=list(out))


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


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------

#: Files a leaderboard directory holds, all rebuilt byte-identically from the results files.
LEADERBOARD_FILES = (
    "leaderboard_performance.md",
    "leaderboard_performance.csv",
    "leaderboard_explainability.md",
    "leaderboard_explainability.csv",
    "comparisons.csv",
    "leaderboard.json",
    "leaderboard.html",
)

#: Decimals kept in CSV and JSON: far below any CI width, and stable across BLAS builds.
_DECIMALS = 6


def _rounded(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for col in frame.columns:
        if pd.api.types.is_float_dtype(frame[col]):
            frame[col] = frame[col].round(_DECIMALS)
    return frame


def _json_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    for record in _rounded(frame).to_dict(orient="records"):
        rows.append({str(k): _json_value(v) for k, v in record.items()})
    return rows


def _json_value(value: Any) -> Any:
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float | np.floating):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _markdown(board: pd.DataFrame, title: str, lb: Leaderboards) -> str:
    ranking = lb.meta["ranking"]
    lines = [
        f"# {title}",
        "",
        f"Task {markdown_code(lb.meta['task']['name'])}; ranked by "
        f"{_ranking_text(title, ranking)}. "
        f"Values with {int(lb.meta['level'] * 100)}% CIs. Tier: cells whose paired difference "
        "from the tier's best is not significant "
        f"(Holm-adjusted p >= {lb.meta['alpha']}) share it.",
        "",
        to_markdown(display_frame(board)),
        *(f"{markdown_text(line)}\n" for line in table_notes(board, lb.meta)),
        _sources_markdown(lb),
    ]
    return "\n".join(lines)


def table_notes(board: pd.DataFrame, meta: dict[str, Any]) -> list[str]:
    """Sentences under a table that has schema 1.5 columns (chance marks, off-target costs)."""
    notes = []
    if any(str(c).endswith(BEATS_CHANCE_SUFFIX) for c in board.columns):
        notes.append(
            f"A leading {NORMALISED_PREFIX} (nIoU, nRMA, ...): chance-normalised score, "
            "(value - chance) / (best - chance); 0 is what a map without information about the "
            "region gets, 1 the metric's best. "
            f"{CHANCE_MARK}: not shown to beat chance (one-sided paired test, Holm-adjusted "
            f"over every normalised value of the table, p >= {meta.get('alpha')})."
        )
    headline = meta.get("headline") or {}
    costs = headline.get("off_target_cost") or {}
    if costs:
        listed = ", ".join(f"{name} {cost:.3f}" for name, cost in costs.items())
        costly = headline.get("costly") or []
        notes.append(
            f"{SPECIFIC_PREFIX}Δ: specific Δ, the AUC lost when the region is perturbed minus "
            "the loss when area-matched control regions elsewhere are. Off-target cost (mean "
            f"absolute control Δ) per perturbation: {listed}; headline perturbation "
            f"{headline.get('perturbation')} (the lowest)."
            + (
                f" Above {headline.get('off_target_threshold')}, their specific Δ is the "
                f"difference of two large losses: {', '.join(costly)}."
                if costly
                else ""
            )
        )
    return notes


def _ranking_text(title: str, ranking: dict[str, str | None]) -> str:
    column = ranking["performance" if title.startswith("Performance") else "explainability"]
    return markdown_code(column) if column else "no column"


def _sources_markdown(lb: Leaderboards, base: Path | None = None) -> str:
    lines = ["Built from:", ""]
    for src in lb.meta["sources"]:
        commit = f", commit {src['git_commit'][:12]}" if src.get("git_commit") else ""
        lines.append(
            f"- {markdown_code(src['path'])}: xaibench "
            f"{markdown_text(src.get('xaibench_version'))}{markdown_text(commit)}, "
            f"results sha256 {markdown_text(src['results_sha256'][:16])}"
        )
    return "\n".join(lines) + "\n"


def render_files(lb: Leaderboards, out_dir: Path) -> dict[str, bytes]:
    """The bytes of every file in :data:`LEADERBOARD_FILES`, with source paths relative to it."""
    out_dir = Path(out_dir)
    relative = [
        {
            **src,
            "path": Path(
                os.path.relpath(Path(src["path"]).resolve(), out_dir.resolve())
            ).as_posix(),
        }
        for src in lb.meta["sources"]
    ]
    lb = Leaderboards(
        lb.performance, lb.explainability, lb.comparisons, {**lb.meta, "sources": relative}
    )
    files: dict[str, bytes] = {}
    for name, title in (
        ("performance", "Performance leaderboard"),
        ("explainability", "Explainability leaderboard"),
    ):
        board = getattr(lb, name)
        files[f"leaderboard_{name}.md"] = _markdown(board, title, lb).encode()
        files[f"leaderboard_{name}.csv"] = to_csv(_rounded(board)).encode()
    files["comparisons.csv"] = to_csv(_rounded(lb.comparisons)).encode()
    document = {
        "format": LEADERBOARD_FORMAT,
        **lb.meta,
        "performance": _json_rows(lb.performance),
        "explainability": _json_rows(lb.explainability),
        "comparisons": _json_rows(lb.comparisons),
    }
    files["leaderboard.json"] = (
        json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    ).encode()
    files["leaderboard.html"] = _html(lb).encode()
    return files


#: Version of ``leaderboard.json``'s layout.
LEADERBOARD_FORMAT = "xaibench-leaderboard/1"


def _html(lb: Leaderboards) -> str:
    from xaibench.report.html import Section, page, paragraph, table_html

    sections = [
        Section(
            "Performance leaderboard",
            table_html(display_frame(lb.performance)),
        ),
        Section(
            "Explainability leaderboard",
            table_html(display_frame(lb.explainability))
            + "".join(paragraph(line) for line in table_notes(lb.explainability, lb.meta)),
        ),
    ]
    return page(f"xaibench leaderboards: {lb.meta['task']['name']}", sections)


def write_leaderboard_files(lb: Leaderboards, out_dir: Path) -> list[Path]:
    """Write every leaderboard file into ``out_dir`` (atomically, one file at a time).

    Raises:
        XaibenchError: A file cannot be written (the message names it; no temporary file is
            left behind).
    """
    out_dir = Path(out_dir)
    written = []
    for name, content in render_files(lb, out_dir).items():
        target = out_dir / name
        write_whole(target, content)
        written.append(target)
    return written


def check_leaderboard_files(lb: Leaderboards, out_dir: Path) -> list[str]:
    """Names of the files in ``out_dir`` that differ from a rebuild (missing ones included).

    Raises:
        XaibenchError: A file in ``out_dir`` leads outside it (a symlink).
    """
    stale = []
    for name, content in render_files(lb, out_dir).items():
        path = contained(out_dir, name, source=out_dir, what="leaderboard file")
        if not path.is_file() or path.read_bytes() != content:
            stale.append(name)
    return stale


def _committed(out_dir: Path) -> tuple[Path, dict[str, Any]]:
    """``leaderboard.json`` of ``out_dir`` and its parsed content (an object)."""
    file = Path(out_dir) / "leaderboard.json"
    if not file.is_file():
        raise XaibenchError(f"{out_dir}: no leaderboard.json; name the run directories to check")
    document = read_json(contained(out_dir, file.name, source=out_dir, what="leaderboard file"))
    if not isinstance(document, dict):
        raise XaibenchError(f"{file}: not a leaderboard file (not a JSON object)")
    return file, document


def sources_of(out_dir: Path) -> list[Path]:
    """The run directories a committed leaderboard was built from (from ``leaderboard.json``).

    ``sources`` name run directories relative to ``out_dir`` (``../runs/a``, or ``.`` for a
    run's own leaderboard), as :func:`write_leaderboard_files` writes them. They may lead out
    of ``out_dir`` (a leaderboard sits beside its runs) and are only read, but each must be a
    relative path to a directory that holds a ``results.json``: an absolute path, or one to
    anything else, is refused.

    Raises:
        XaibenchError: ``leaderboard.json`` is missing or unreadable, or a source is not a
            relative path to a run directory (the message names the file and the source).
    """
    file, document = _committed(out_dir)
    sources = document.get("sources")
    if not isinstance(sources, list) or not all(isinstance(s, dict) for s in sources):
        raise XaibenchError(f"{file}: not a leaderboard file ('sources' is not a list of objects)")
    paths = []
    for i, src in enumerate(sources):
        name = relative_name(src.get("path"), source=file, what=f"source {i}", base=out_dir)
        path = Path(out_dir) / name
        if not (path / "results.json").is_file():
            raise XaibenchError(
                f"{file}: source {i} {name!r} is not a run directory (no results.json there)"
            )
        paths.append(path)
    return paths


#: Settings a committed leaderboard may carry, and what each must be.
#: Most bootstrap resamples a leaderboard may ask for (the analysis setting's bound too).
MAX_RESAMPLES = 100_000

_SETTINGS = {
    "alpha": (lambda v: isinstance(v, float | int) and not isinstance(v, bool) and 0 < v < 1,
              "a number between 0 and 1"),
    "resamples": (lambda v: isinstance(v, int) and not isinstance(v, bool)
                  and 1 <= v <= MAX_RESAMPLES, f"a whole number from 1 to {MAX_RESAMPLES:,}"),
    "seed": (lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_SEED,
             f"a whole number from 0 to {MAX_SEED:,}"),
}  # fmt: skip


def committed_settings(out_dir: Path) -> dict[str, Any]:
    """``alpha``, ``resamples`` and ``seed`` a committed leaderboard was built with (may be {}).

    Raises:
        XaibenchError: ``leaderboard.json`` is unreadable, or a setting is of the wrong type.
    """
    if not (Path(out_dir) / "leaderboard.json").is_file():
        return {}
    file, document = _committed(out_dir)
    for key, (check, expected) in _SETTINGS.items():
        if key in document and not check(document[key]):
            raise XaibenchError(f"{file}: {key!r} must be {expected}, not {document[key]!r:.40}")
    return {k: document[k] for k in _SETTINGS if k in document}
