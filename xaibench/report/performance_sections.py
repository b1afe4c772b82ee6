"""Report sections on performance and what lies behind the rankings.

ROC curves, the performance-explanation trade-off, the paired comparisons (forest plots),
per-class performance and calibration, and the strata.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from xaibench.report import diagnostic_figures, figures
from xaibench.report.context import (
    _CELL,
    _Context,
    _drop_constant_columns,
    _fold_intervals,
    _missing,
    _sort_cells,
    _with_interval,
)
from xaibench.report.html import (
    Section,
    details,
    figure,
    format_cell,
    grid,
    heading,
    note,
    paragraph,
    table_html,
)


def _roc(ctx: _Context) -> Section:
    preds = ctx.intact_predictions()
    positive = str(ctx.task.get("positive_class"))
    curves = figures.roc_curves(preds, ctx.task.get("class_names") or [], positive)
    if not curves:
        return Section("ROC curves", note("No per-image test predictions (predictions.csv)."))
    body = figure(
        figures.roc_png(curves, positive),
        f"ROC curves, {positive} vs rest",
        f"{positive} vs rest on the intact test images, one panel per backbone; the legend "
        "gives each curve's AUC.",
    )
    return Section("ROC curves", body, "roc")


def _tradeoff(ctx: _Context) -> Section:
    region = ctx.primary_region
    title = "Performance vs explanation"
    if region is None:
        return Section(title, note("The task names no region of interest."), "tradeoff")
    # Chance-normalised IoU where the runs record it (schema 1.5): on the raw IoU of a large
    # region a random map can sit on the Pareto front.
    points = figures.tradeoff_points(ctx.records, region, normalised=True)
    label, what = f"nIoU_{region}", "chance-normalised IoU (0: chance, 1: the mask itself)"
    if not points:
        points = figures.tradeoff_points(ctx.records, region)
        label, what = f"IoU_{region}", "IoU"
    if not points:
        return Section(
            title, note(f"No cell has both an AUC and an IoU_{region} record."), "tradeoff"
        )
    front = set(figures.tradeoff_front(points))
    chance = sum(not p.above_chance for p in points)
    greyed = (
        f" Greyed: {chance} of {len(points)} points whose AUC's 95% CI does not lie above 0.5 "
        "(chance level); they are not on the front."
        if chance
        else ""
    )
    body = [
        paragraph(
            f"Each point is one cell and saliency method: its AUC against the {what} of its "
            f"binarised saliency maps with {region}, both with 95% confidence intervals. Points "
            "on the Pareto front (circled and joined) are not beaten on both axes by any other "
            "point; everything else is worse on one axis without being better on the other. "
            "The front is drawn only over cells whose AUC's 95% CI lies above 0.5: a classifier "
            "at chance is no trade-off, however well its maps localise; the others are shown "
            "in grey." + greyed
        ),
        figure(
            figures.tradeoff_png(points, label),
            f"AUC against {label}",
            f"AUC vs {label}; Pareto front circled (over cells whose AUC CI lies above 0.5)."
            + greyed,
        ),
    ]
    table = pd.DataFrame(
        [
            {
                "cell": p.cell,
                "saliency": p.saliency,
                "AUC": _with_interval(p.auc, p.auc_low, p.auc_high),
                label: _with_interval(p.score, p.score_low, p.score_high),
                "Pareto front": (
                    "yes" if i in front else "" if p.above_chance else "no (AUC CI not above 0.5)"
                ),
            }
            for i, p in enumerate(points)
        ]
    )
    body.append(table_html(table))
    return Section(title, "".join(body), "tradeoff")


def _forest_rows(
    comparisons: pd.DataFrame, table: str, column: str, leader: tuple[Any, ...]
) -> list[diagnostic_figures.ForestRow]:
    """Each cell's paired difference from ``leader`` on one column, as leader minus cell."""
    part = comparisons[(comparisons["table"] == table) & (comparisons["column"] == column)]
    rows: list[diagnostic_figures.ForestRow] = []
    for rec in part.to_dict(orient="records"):
        a = tuple(rec[f"{k}_a"] for k in _CELL)
        b = tuple(rec[f"{k}_b"] for k in _CELL)
        if a == leader:
            other, sign = b, 1.0
        elif b == leader:
            other, sign = a, -1.0
        else:
            continue
        low, high = _as_float(rec.get("low")), _as_float(rec.get("high"))
        if sign < 0:
            low, high = -high, -low
        rows.append(
            diagnostic_figures.ForestRow(
                label=figures.cell_label(*other),
                difference=sign * _as_float(rec.get("difference")),
                low=low,
                high=high,
                p_holm=_as_float(rec.get("p_holm")),
            )
        )
    return rows


def _as_float(value: Any) -> float:
    return float("nan") if _missing(value) else float(value)


def _comparisons(ctx: _Context) -> Section:
    title = "Paired comparisons"
    comparisons = ctx.boards.comparisons
    if comparisons.empty:
        return Section(
            title,
            note("No paired comparisons (they need per-image predictions of at least two cells)."),
            "comparisons",
        )
    alpha = float(ctx.boards.meta.get("alpha", 0.05))
    body = [
        paragraph(
            "Each row is the leader's value minus another cell's on the same test images, with "
            "its confidence interval and Holm-adjusted p-value (DeLong for AUC, McNemar for the "
            "rates, a paired image bootstrap for Δ and explanation scores). Rows in red differ "
            f"from the leader at alpha = {alpha}; an interval that crosses zero means the data "
            "cannot tell the two apart."
        )
    ]
    for name, board in (
        ("performance", ctx.boards.performance),
        ("explainability", ctx.boards.explainability),
    ):
        if board.empty:
            continue
        leader = tuple(board.iloc[0][k] for k in _CELL)
        ranking = (ctx.boards.meta.get("ranking") or {}).get(name)
        columns = list(
            dict.fromkeys(comparisons.loc[comparisons["table"] == name, "column"].astype(str))
        )
        if ranking in columns:
            columns.remove(ranking)
            columns.insert(0, ranking)
        plots = []
        for column in columns:
            rows = _forest_rows(comparisons, name, column, leader)
            if not rows:
                continue
            plots.append(
                figure(
                    diagnostic_figures.forest_png(
                        rows, f"{column}: leader {figures.cell_label(*leader)}", alpha
                    ),
                    f"Forest plot of {column} differences from the leader",
                    f"{column}: leader minus each cell, with its interval and Holm-adjusted p.",
                )
            )
        if not plots:
            continue
        body.append(heading(3, f"{name.capitalize()} (leader: {figures.cell_label(*leader)})"))
        body.append(plots[0])
        if len(plots) > 1:
            body.append(
                details(
                    f"{len(plots) - 1} more column(s) against the same leader", "".join(plots[1:])
                )
            )
    return Section(title, "".join(body), "comparisons")


def _per_class(ctx: _Context) -> Section:
    title = "Per-class performance and calibration"
    body: list[str] = []
    per_class = ctx.analysis("per_class")
    if not per_class.empty:
        frame = _sort_cells(per_class)
        frame = _drop_constant_columns(frame)
        # counts behind the rates and the test-set size repeat what the intervals already say
        frame = frame.drop(
            columns=[c for c in ("tp", "fn", "tn", "fp", "index", "n", "n_negative") if c in frame]
        )
        body.append(heading(3, "Per class (one vs rest)"))
        body.append(
            paragraph(
                "One-vs-rest AUC per class (DeLong interval) and sensitivity and specificity of "
                "the argmax decision (Wilson intervals over each rate's own denominator)."
            )
        )
        body.append(table_html(_fold_intervals(frame)))
    confusion = ctx.analysis("confusion")
    if not confusion.empty and {"true", "predicted", "count"} <= set(confusion.columns):
        body.append(heading(3, "Confusion matrices (argmax decision)"))
        order = [str(c) for c in ctx.task.get("class_names") or []]
        matrices = []
        for key, group in confusion.groupby(_CELL, sort=True):
            matrix = group.pivot_table(
                index="true", columns="predicted", values="count", aggfunc="sum", fill_value=0
            )
            rows = [c for c in order if c in matrix.index] or list(matrix.index)
            cols = [c for c in order if c in matrix.columns] or list(matrix.columns)
            matrix = matrix.reindex(index=rows, columns=cols, fill_value=0)
            matrix.index.name = "true \\ predicted"
            matrices.append(
                table_html(matrix, caption=figures.cell_label(*key), index=True, cell_class=None)
            )
        body.append(grid(matrices, wide=True))
    calibration = ctx.analysis("calibration")
    curves = _reliability_rows(ctx.analysis("reliability"), calibration)
    if not curves.empty or "ece" in calibration:
        body.append(heading(3, "Calibration"))
    if not curves.empty:
        body.append(
            paragraph(
                "Reliability diagrams: in each bin of stated confidence, how often the outcome "
                "occurred. A well calibrated model lies on the diagonal; ECE is the bin-weighted "
                "gap between the two."
            )
        )
        body.append(
            figure(
                diagnostic_figures.reliability_png(curves),
                "Reliability diagrams",
                "Observed frequency against mean confidence per bin; a marker's area shows the "
                "bin's share of the test images (empty bins left out).",
            )
        )
    if "ece" in calibration:
        keys = [c for c in [*_CELL, "kind"] if c in calibration]
        # one row per cell and kind; curve rows (older layout) repeat the ECE per bin
        columns = (
            ["ece"] if "bin_low" in calibration else [c for c in ("ece", "n") if c in calibration]
        )
        ece = calibration.groupby(keys, sort=True)[columns].first().reset_index()
        body.append(
            table_html(ece.rename(columns={"ece": "ECE"}), caption="Expected calibration error")
        )
    if not body:
        body.append(note("These results have no per-class, confusion or calibration tables."))
    return Section(title, "".join(body), "per-class")


def _reliability_rows(reliability: pd.DataFrame, calibration: pd.DataFrame) -> pd.DataFrame:
    """Reliability-curve rows with each curve's ECE.

    Curves come from the ``reliability`` table (one row per bin) with the ECE joined from
    ``calibration`` (one row per cell and kind), or from ``calibration`` itself when it holds
    the bins.
    """
    keys = [*_CELL, "kind"]
    if reliability.empty:
        return calibration if "mean_confidence" in calibration else pd.DataFrame()
    if "ece" in reliability or "ece" not in calibration:
        return reliability
    if not set(keys) <= set(calibration.columns) or not set(keys) <= set(reliability.columns):
        return reliability
    ece = calibration[[*keys, "ece"]].drop_duplicates(subset=keys)
    return reliability.merge(ece, on=keys, how="left", validate="many_to_one")


def _bounds(frame: pd.DataFrame, value: str) -> tuple[str, str] | None:
    for low, high in ((f"{value}_low", f"{value}_high"), ("ci_low", "ci_high"), ("low", "high")):
        if low in frame and high in frame:
            return low, high
    return None


def _levels_side_by_side(frame: pd.DataFrame, value: str) -> pd.DataFrame:
    """One row per cell, method and metric; one column per stratum level: ``v [lo, hi], n``.

    Strata are compared across levels, so they belong side by side; a long table would put
    the numbers to compare many rows apart.
    """
    bounds = _bounds(frame, value)
    text = []
    for row in frame.to_dict(orient="records"):
        shown = (
            _with_interval(row[value], row[bounds[0]], row[bounds[1]])
            if bounds
            else format_cell(row[value])
        )
        if "n" in row and not _missing(row["n"]):
            shown += f", n={int(row['n'])}"
        text.append(shown)
    keys = [c for c in (*_CELL, "saliency", "metric") if c in frame]
    levels = list(dict.fromkeys(frame["level"].astype(str)))
    wide = (
        frame.assign(level=frame["level"].astype(str), shown=text)
        .pivot_table(index=keys, columns="level", values="shown", aggfunc="first", sort=True)
        .reindex(columns=levels)
        .reset_index()
    )
    wide.columns.name = None
    return wide


def _strata(ctx: _Context) -> Section:
    title = "Strata"
    body: list[str] = []
    perf = ctx.analysis("strata_performance")
    if not perf.empty:
        body.append(heading(3, "Performance by stratum"))
        groups = perf.groupby("variable", sort=True) if "variable" in perf else [("all", perf)]
        for variable, group in groups:
            group = group.drop(columns=[c for c in ("variable",) if c in group])
            group = _drop_constant_columns(_sort_cells(group, ["level"]))
            body.append(table_html(_fold_intervals(group), caption=f"by {variable}"))
    expl = ctx.analysis("strata_explanations")
    if not expl.empty:
        region = ctx.primary_region
        value = next((c for c in ("mean", "value") if c in expl), None)
        focus = expl
        if region and "region" in expl and (expl["region"] == region).any():
            focus = expl[expl["region"] == region]
        body.append(
            heading(3, "Explanations by stratum" + (f" ({region})" if focus is not expl else ""))
        )
        groups = focus.groupby("variable", sort=True) if "variable" in focus else [("all", focus)]
        for variable, group in groups:
            if value is not None and "level" in group:
                table = _levels_side_by_side(group, value)
            else:
                table = _fold_intervals(_drop_constant_columns(_sort_cells(group)))
            body.append(table_html(table, caption=f"by {variable}"))
        if focus is not expl:
            everything = _drop_constant_columns(_sort_cells(expl, ["variable", "level"]))
            body.append(
                details(
                    f"All {len(expl)} rows (every region)",
                    table_html(_fold_intervals(everything)),
                )
            )
    if not body:
        body.append(note("These results have no stratified tables."))
    else:
        body.insert(
            0,
            paragraph(
                "The same metrics within subgroups of the test images. Small strata give wide "
                "intervals; a difference between strata is only a lead to follow up."
            ),
        )
    return Section(title, "".join(body), "strata")
