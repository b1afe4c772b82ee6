"""Assemble the HTML report of one or more runs: ``xaibench report RUN_DIR``.

The report is the document a reader opens first, so it leads with what was run and what that
can mean (a random-initialisation warning when the weights were random), then both
leaderboards, then the evidence behind them: ROC curves, the performance-explanation trade-off,
paired comparisons, per-class performance and calibration, strata, saliency galleries to look
at, the sanity checks and the cross-cell analyses, and finally the provenance needed to
reproduce it. It is a pure function of the run directories (no model code runs), one HTML file
with every figure embedded, and byte-identical when rebuilt from the same files.

Every part is optional: a run without galleries, calibration tables or strata gets a short note
where they would be. Files that a run *names* but that are broken (a gallery PNG missing or
unreadable) are an error naming the file rather than a page with a broken image.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from xaibench.errors import XaibenchError
from xaibench.leaderboard import (
    EVIDENCE_PREFIX,
    OFF_TARGET_PREFIX,
    P_COLUMN,
    Leaderboards,
    build_leaderboards,
    display_frame,
    sanity_badges,
    table_notes,
)
from xaibench.paths import contained, write_whole
from xaibench.report import figures
from xaibench.report.html import (
    Section,
    callout,
    details,
    escape,
    figure,
    format_cell,
    grid,
    heading,
    key_value_table,
    note,
    page,
    paragraph,
    preformatted,
    table_html,
)
from xaibench.report.reference import evidence_section, reference_section
from xaibench.report.run_files import GALLERY_INDEX, RunFiles, load_run

__all__ = ["REPORT_FILE", "build_report", "render_report", "write_report"]

#: File name used when ``out`` is a directory.
REPORT_FILE = "report.html"

_CELL = ["backbone", "strategy", "seed"]
_GALLERY_ORDER = {"best": 0, "worst": 1, "random": 2, "specific": 3}
_METRIC_NAMES = {"iou_region": "IoU", "pointing_game": "pointing game"}


@dataclass(frozen=True)
class _Context:
    """Everything the section builders read, merged over the runs."""

    runs: Sequence[RunFiles]
    boards: Leaderboards
    base: Path | None

    @property
    def task(self) -> dict[str, Any]:
        return self.runs[0].task

    @property
    def records(self) -> list[dict[str, Any]]:
        return [rec for run in self.runs for rec in run.records]

    @property
    def cells(self) -> list[dict[str, Any]]:
        return [cell for run in self.runs for cell in run.document.get("cells", [])]

    @property
    def primary_region(self) -> str | None:
        regions = self.task.get("regions_of_interest") or []
        return str(regions[0]) if regions else None

    def analysis(self, name: str) -> pd.DataFrame:
        """One cross-cell table, rows of every run concatenated (empty when absent)."""
        rows = [row for run in self.runs for row in (run.analysis.get(name) or [])]
        return pd.DataFrame(rows)

    def intact_predictions(self) -> pd.DataFrame:
        frames = [run.intact_predictions() for run in self.runs]
        frames = [f for f in frames if not f.empty]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def shown_path(self, path: Path) -> str:
        """A run's path as the report shows it: relative to the report, so no home folders."""
        if self.base is None:
            return Path(path).name
        return Path(os.path.relpath(Path(path).resolve(), self.base.resolve())).as_posix()


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _fold_intervals(frame: pd.DataFrame) -> pd.DataFrame:
    """Join interval columns into their value: ``x`` + ``x_low``/``x_high`` -> ``x [lo, hi]``.

    Recognises ``<x>_low``/``<x>_high``, ``<x> low``/``<x> high``, and ``ci_low``/``ci_high``
    or ``low``/``high``, which belong to the column just before the lower bound. Tables from
    different analyses name their bounds differently; readers should see one convention.
    """
    columns = [str(c) for c in frame.columns]
    frame = frame.copy()
    frame.columns = columns
    pairs: list[tuple[str, str, str]] = []
    for col in columns:
        for low, high in ((f"{col}_low", f"{col}_high"), (f"{col} low", f"{col} high")):
            if low in columns and high in columns:
                pairs.append((col, low, high))
    for low, high in (("ci_low", "ci_high"), ("low", "high")):
        if low in columns and high in columns:
            position = columns.index(low)
            if position > 0 and columns[position - 1] not in {p[0] for p in pairs}:
                pairs.append((columns[position - 1], low, high))
    for col, low, high in pairs:
        frame[col] = [
            _with_interval(v, lo, hi)
            for v, lo, hi in zip(frame[col], frame[low], frame[high], strict=True)
        ]
        frame = frame.drop(columns=[low, high])
    return frame


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _with_interval(value: Any, low: Any, high: Any) -> str:
    text = format_cell(value)
    if _missing(value) or _missing(low) or _missing(high):
        return text
    return f"{text} [{float(low):.3f}, {float(high):.3f}]"


def _drop_constant_columns(frame: pd.DataFrame, keep: Sequence[str] = ()) -> pd.DataFrame:
    """Leave out bookkeeping columns that say the same thing on every row (e.g. ``reason``)."""
    drop = [
        c
        for c in frame.columns
        if c not in keep and c in ("reason", "index") and frame[c].isna().all()
    ]
    return frame.drop(columns=drop)


def _cell_name(row: Mapping[str, Any]) -> str:
    return figures.cell_label(row["backbone"], row["strategy"], row["seed"])


def _sort_cells(frame: pd.DataFrame, extra: Sequence[str] = ()) -> pd.DataFrame:
    keys = [c for c in [*_CELL, *extra] if c in frame]
    if not keys:
        return frame
    return frame.sort_values(keys, kind="stable", key=lambda s: s.astype(str)).reset_index(
        drop=True
    )


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


def _summary(ctx: _Context) -> Section:
    task = ctx.task
    doc = ctx.runs[0].document
    dataset = doc.get("dataset") or {}
    classes = ", ".join(str(c) for c in task.get("class_names") or [])
    regions = ", ".join(str(r) for r in task.get("regions_of_interest") or []) or "none"
    parts = [
        paragraph(
            f"Task {task.get('name')}: {task.get('positive_class')} vs rest "
            f"(classes: {classes}); regions of interest: {regions}. "
            f"Dataset {dataset.get('name', 'unknown')}"
            + (
                f" (fingerprint {str(dataset['fingerprint'])[:16]})"
                if dataset.get("fingerprint")
                else ""
            )
            + f"; {len(ctx.runs)} run(s), {len(ctx.cells)} cell(s)."
        )
    ]
    random_cells = [c for c in ctx.cells if c.get("random_init")]
    if random_cells:
        parts.append(
            callout(
                "Random initialisation.",
                f"{len(random_cells)} of {len(ctx.cells)} cells ran with randomly initialised "
                "backbone weights. Their numbers show that the pipeline works; they say "
                "nothing about how a pretrained foundation model would do.",
            )
        )
    failed = [c for c in ctx.cells if c.get("status") != "ok"]
    if failed:
        parts.append(
            callout(
                "Failed cells.",
                f"{len(failed)} cell(s) failed and have no numbers: "
                + "; ".join(
                    f"{_cell_name(c)}: {c.get('error') or 'no error recorded'}" for c in failed
                ),
            )
        )
    parts.append(_headline(ctx))
    cells = pd.DataFrame(
        [
            {
                "backbone": c.get("backbone"),
                "strategy": c.get("strategy"),
                "seed": c.get("seed"),
                "status": c.get("status"),
                "weights": "random init" if c.get("random_init") else "pretrained",
                "seconds": c.get("seconds"),
                "epochs run": (c.get("fit") or {}).get("epochs_run"),
                "best epoch": (c.get("fit") or {}).get("best_epoch"),
                "trainable parameters": (c.get("fit") or {}).get("trainable_parameters"),
                "threshold": (c.get("fit") or {}).get("threshold"),
            }
            for c in ctx.cells
        ]
    )
    if not cells.empty:
        parts.append(heading(3, "Cells"))
        parts.append(table_html(_sort_cells(cells), digits=3))
    splits = dataset.get("splits") or {}
    if splits:
        parts.append(heading(3, "Images per split"))
        split_frame = pd.DataFrame([{"split": name, **counts} for name, counts in splits.items()])
        parts.append(table_html(split_frame))
    return Section("Summary", "".join(parts), "summary")


def _headline(ctx: _Context) -> str:
    """The few sentences a reader wants before any table: who leads, and how clearly."""
    lines: list[str] = []
    for name, board in (
        ("performance", ctx.boards.performance),
        ("explainability", ctx.boards.explainability),
    ):
        column = (ctx.boards.meta.get("ranking") or {}).get(name)
        if board.empty or not column or column not in board:
            continue
        top = board.iloc[0]
        if _missing(top[column]):
            continue
        value = _with_interval(top[column], top.get(f"{column} low"), top.get(f"{column} high"))
        tier_one = int((board["tier"] == 1).sum()) if "tier" in board else 1
        lines.append(
            f"{name.capitalize()} leader by {column}: {_cell_name(top)}, {value}; "
            f"{tier_one} of {len(board)} cells share tier 1 (not distinguishable from it by "
            "a Holm-corrected paired test)."
        )
    if not lines:
        return note("No leaderboard values to summarise.")
    return "<ul>" + "".join(f"<li>{escape(line)}</li>" for line in lines) + "</ul>"


def _leaderboard_intro(ctx: _Context, name: str) -> str:
    meta = ctx.boards.meta
    level = round(float(meta.get("level", 0.95)) * 100)
    column = (meta.get("ranking") or {}).get(name) or "its first column"
    return paragraph(
        f"Ranked by {column}; values with {level}% confidence intervals. Cells in one tier are "
        f"not significantly different from the tier's best cell (paired tests on the same test "
        f"images, Holm-adjusted p >= {meta.get('alpha', 0.05)}); '{P_COLUMN}' is the adjusted "
        "p-value of the comparison with the leader."
    )


def _performance(ctx: _Context) -> Section:
    board = ctx.boards.performance
    if board.empty:
        return Section("Performance leaderboard", note("No performance records."), "performance")
    body = _leaderboard_intro(ctx, "performance") + table_html(display_frame(board))
    return Section("Performance leaderboard", body, "performance")


def _explainability(ctx: _Context) -> Section:
    board = ctx.boards.explainability
    if board.empty:
        return Section(
            "Explainability leaderboard", note("No explanation records."), "explainability"
        )
    shown = display_frame(board)
    region = ctx.primary_region
    fixed = ["rank", "tier", *_CELL]
    trailing = [
        c
        for c in shown.columns
        if c.startswith(("sanity (", EVIDENCE_PREFIX)) or c in (P_COLUMN, "weights")
    ]
    metric_cols = [c for c in shown.columns if c not in fixed and c not in trailing]
    # The headline table: Δ and IoU on the primary region (what the study reports; specific Δ,
    # off-target cost and normalised IoU in schema 1.5 runs); every other column (regions,
    # complement test, pointing game, ...) is one click away.
    headline = {f"{label}_{region}" for label in ("Δ", "IoU", "sΔ", "nIoU")}
    focus = [
        c
        for c in metric_cols
        if region and (c.split(" (")[0] in headline or c.startswith(OFF_TARGET_PREFIX))
    ]
    if not focus:
        focus = [c for c in metric_cols if region and c.split(" (")[0].endswith(f"_{region}")]
    body = [_leaderboard_intro(ctx, "explainability")]
    body.append(
        paragraph(
            "Δ: AUC lost when the region is perturbed (how much the model's skill depends on "
            "it); IoU, PG (pointing game), RMA (relevance mass): where the saliency maps point. "
            "Sanity: Adebayo et al.'s randomisation checks per saliency method."
        )
    )
    body.extend(paragraph(line) for line in table_notes(board, ctx.boards.meta))
    if focus and len(focus) < len(metric_cols):
        cols = [c for c in [*fixed, *focus, *trailing] if c in shown]
        body.append(table_html(shown[cols], caption=f"Δ and IoU on {region}"))
        body.append(details(f"All {len(metric_cols)} explanation columns", table_html(shown)))
    else:
        body.append(table_html(shown))
    return Section("Explainability leaderboard", "".join(body), "explainability")


def _reference(ctx: _Context) -> Section:
    return reference_section(ctx.records, ctx.primary_region)


def _evidence(ctx: _Context) -> Section:
    return evidence_section(ctx.records, float(ctx.boards.meta.get("alpha", 0.05)))


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
    front = set(figures.pareto_front([(p.auc, p.score) for p in points]))
    body = [
        paragraph(
            f"Each point is one cell and saliency method: its AUC against the {what} of its "
            f"binarised saliency maps with {region}, both with 95% confidence intervals. Points "
            "on the Pareto front (circled and joined) are not beaten on both axes by any other "
            "point; everything else is worse on one axis without being better on the other."
        ),
        figure(
            figures.tradeoff_png(points, label),
            f"AUC against {label}",
            f"AUC vs {label}; Pareto front circled.",
        ),
    ]
    table = pd.DataFrame(
        [
            {
                "cell": p.cell,
                "saliency": p.saliency,
                "AUC": _with_interval(p.auc, p.auc_low, p.auc_high),
                label: _with_interval(p.score, p.score_low, p.score_high),
                "Pareto front": "yes" if i in front else "",
            }
            for i, p in enumerate(points)
        ]
    )
    body.append(table_html(table))
    return Section(title, "".join(body), "tradeoff")


def _forest_rows(
    comparisons: pd.DataFrame, table: str, column: str, leader: tuple[Any, ...]
) -> list[figures.ForestRow]:
    """Each cell's paired difference from ``leader`` on one column, as leader minus cell."""
    part = comparisons[(comparisons["table"] == table) & (comparisons["column"] == column)]
    rows: list[figures.ForestRow] = []
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
            figures.ForestRow(
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
                    figures.forest_png(
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
                figures.reliability_png(curves),
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


def _read_png(run: RunFiles, entry: Mapping[str, Any]) -> bytes:
    """A gallery PNG's bytes, checked to be inside the run's gallery folder and readable."""
    from PIL import Image, UnidentifiedImageError

    path = contained(
        run.path, entry.get("file"), source=run.path / GALLERY_INDEX, what="gallery entry",
        under="gallery",
    )  # fmt: skip
    if not path.is_file():
        raise XaibenchError(f"{path}: gallery image named in gallery/index.json is missing")
    data = path.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != "PNG":
                raise XaibenchError(f"{path}: gallery image is {image.format}, not PNG")
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise XaibenchError(f"{path}: not a readable PNG ({exc})") from None
    return data


def _gallery_caption(entry: Mapping[str, Any]) -> str:
    kind = str(entry.get("kind", "images"))
    ids = [str(s) for s in entry.get("sample_ids") or []]
    scores = entry.get("scores") or [None] * len(ids)
    metric = entry.get("score_metric")
    region = entry.get("region")
    score_name = (
        f"{_METRIC_NAMES.get(str(metric), metric)}_{region}" if metric and region else metric
    )
    positive = entry.get("positive_class")
    if metric == "probability_drop":
        score_name = f"drop of p({positive or 'positive'})"
    what = {
        "best": f"the {len(ids)} test images with the highest {score_name}",
        "worst": f"the {len(ids)} test images with the lowest {score_name}",
        "random": f"{len(ids)} test images drawn at random (seeded)",
        "specific": (
            f"the {len(ids)} test images whose probability of {positive or 'the positive class'}"
            f" dropped most when {region} was perturbed ({entry.get('perturbation')}): the "
            "region with the largest specific Δ, which is not the primary region"
        ),
    }.get(kind, f"{len(ids)} test images")

    def column(i: int) -> list[Any]:
        return [
            (entry.get(key) or [])[i] if i < len(entry.get(key) or []) else None
            for key in ("classes", "called", "p_positive")
        ]

    padded = list(scores) + [None] * (len(ids) - len(scores))
    shown = []
    for i, (sid, score) in enumerate(zip(ids, padded, strict=False)):
        true, called, p = column(i)
        parts = [f"true {true}"] if true is not None else []
        parts += [f"called {called}"] if called is not None else []
        parts += [f"p({positive}) {format_cell(p)}"] if positive and not _missing(p) else []
        parts += [format_cell(score)] if not _missing(score) else []
        shown.append(f"{sid} ({'; '.join(parts)})" if parts else sid)
    outlines = [
        f"{o.get('region')} ({o.get('colour')})"
        for o in entry.get("outlines") or []
        if isinstance(o, Mapping)
    ]
    legend = f" Outlines: {', '.join(outlines)}." if outlines else ""
    return f"{kind.capitalize()}: {what}. Left to right: {', '.join(shown)}.{legend}"


def _galleries(ctx: _Context) -> Section:
    title = "Saliency galleries"
    entries = [(run, e) for run in ctx.runs for e in run.galleries]
    if not entries:
        return Section(
            title, note("These results have no gallery index (gallery/index.json)."), "galleries"
        )
    region = ctx.primary_region
    body = [
        paragraph(
            "Per cell and saliency method: the test images whose maps scored best and worst, "
            "a random draw for what is typical and, when perturbation shows the model needs "
            "another region more than the primary one (the largest specific Δ), the images "
            "whose prediction that region moves most. Top row: the image; bottom row: the "
            "min-max normalised map in red"
            + (
                f", with the outline of every scored region ({region} in cyan, the others named "
                "in each gallery's legend)."
                if region
                else "."
            )
            + " Above each image: its true class, the class the run calls with the "
            "positive-class probability, and the score that picked it."
            + " Look at these before trusting a localisation score."
        )
    ]

    def order(item: tuple[RunFiles, dict[str, Any]]) -> tuple[Any, ...]:
        e = item[1]
        return (
            str(e.get("backbone")),
            str(e.get("strategy")),
            str(e.get("seed")),
            str(e.get("saliency")),
            _GALLERY_ORDER.get(str(e.get("kind")), 9),
            str(e.get("file")),
        )

    groups: dict[tuple[str, ...], list[str]] = {}
    for run, entry in sorted(entries, key=order):
        cell = (str(entry.get("backbone")), str(entry.get("strategy")), str(entry.get("seed")))
        method = str(entry.get("saliency"))
        png = _read_png(run, entry)
        groups.setdefault((*cell, method), []).append(
            figure(
                png,
                f"{entry.get('kind')} gallery of {method} on {figures.cell_label(*cell)}",
                _gallery_caption(entry),
                css="gallery",
            )
        )
    current_cell: tuple[str, ...] | None = None
    for key, items in groups.items():
        if key[:3] != current_cell:
            body.append(heading(3, figures.cell_label(*key[:3])))
            current_cell = key[:3]
        body.append(heading(4, key[3]))
        body.append(grid(items))
    return Section(title, "".join(body), "galleries")


def _sanity(ctx: _Context) -> Section:
    title = "Sanity checks"
    sanity = [r for r in ctx.records if r.get("category") == "sanity"]
    if not sanity:
        return Section(title, note("No sanity-check records (sanity: {images: 0})."), "sanity")
    body = [
        paragraph(
            "Adebayo et al.'s checks: a saliency method passes when its maps change once the "
            "model's weights are randomised, layer by layer from the head down, and when another "
            "class is explained, clearly more than between two of its own runs on the unchanged "
            "model (Spearman similarity below threshold - (1 - run-to-run similarity); for a "
            "deterministic method, run to run is 1). A method that fails draws much the same "
            "map whatever the model learned; a noise map, which changes anyway, fails too."
        ),
        figure(
            figures.sanity_png(sanity),
            "Sanity-check similarities",
            "Spearman similarity of the maps to the trained model's, per randomisation step "
            "(crosses: target randomisation), with the pass threshold dashed.",
        ),
    ]
    body.append(table_html(_sanity_table(sanity)))
    return Section(title, "".join(body), "sanity")


def _sanity_table(sanity: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Per cell and method: the badge, both similarities, run-to-run and the threshold."""
    badges = sanity_badges(sanity)
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for rec in sanity:
        key = (rec["backbone"], rec["strategy"], rec["seed"], rec["saliency"])
        row = rows.setdefault(
            key,
            {
                **dict(zip([*_CELL, "saliency"], key, strict=True)),
                "badge": badges.get(key[:3], {}).get(key[3], ""),
                "model randomisation": None,
                "target randomisation": None,
                "run to run": None,
                "threshold": None,
            },
        )
        check = "model randomisation" if "model" in str(rec["metric"]) else "target randomisation"
        row[check] = rec.get("value") if rec.get("status") == "ok" else rec.get("reason")
        threshold = (rec.get("details") or {}).get("threshold")
        if threshold is not None:
            row["threshold"] = threshold
        run_to_run = (rec.get("details") or {}).get("run_to_run")
        if run_to_run is not None:
            row["run to run"] = run_to_run
    return _sort_cells(pd.DataFrame(list(rows.values())), ["saliency"])


def _cross_cell(ctx: _Context) -> Section:
    title = "Cross-cell analyses"
    texts: dict[str, tuple[str, str]] = {
        "explanation_drift": (
            "Explanation drift",
            "How far adaptation moved each backbone's maps: mean per-image Spearman "
            "correlation between two strategies' maps on the same test images (bootstrap CI). "
            "Low values: fine-tuning changed where the model looks.",
        ),
        "perturbation_rank_agreement": (
            "Perturbation rank agreement",
            "Kendall's tau between the cell rankings by Δ under two perturbations. A low tau "
            "means the Δ leaderboard's order depends on the perturbation chosen.",
        ),
        "performance_explanation_correlation": (
            "Performance vs explanation correlation",
            "Spearman's rho between the cells' AUC and each explanation score, with a "
            "bootstrap CI over cells; with few cells the interval is wide.",
        ),
    }
    body: list[str] = []
    for name, (label, text) in texts.items():
        frame = ctx.analysis(name)
        if frame.empty:
            continue
        body.append(heading(3, label))
        body.append(paragraph(text))
        body.append(table_html(_fold_intervals(frame)))
    if not body:
        body.append(note("These results have no cross-cell analyses."))
    return Section(title, "".join(body), "analyses")


def _provenance(ctx: _Context) -> Section:
    body: list[str] = []
    meta = ctx.boards.meta
    body.append(
        paragraph(
            f"Leaderboard tests: alpha {meta.get('alpha')}, {meta.get('resamples')} bootstrap "
            f"resamples, seed {meta.get('seed')}. Everything below comes from the results files."
        )
    )
    sources = {str(Path(s["path"]).resolve()): s for s in meta.get("sources") or []}
    for run in ctx.runs:
        doc = run.document
        env = doc.get("environment") or {}
        source = sources.get(str(run.path.resolve()), {})
        body.append(heading(3, f"Run {run.path.resolve().name}"))
        body.append(
            key_value_table(
                [
                    ("location (relative to this report)", ctx.shown_path(run.path)),
                    ("results.json sha256", source.get("results_sha256")),
                    ("schema version", doc.get("schema_version")),
                    ("created", doc.get("created")),
                    ("finished", doc.get("finished")),
                    ("config hash", doc.get("config_hash")),
                    ("xaibench", env.get("xaibench_version")),
                    ("git commit", env.get("git_commit")),
                    ("python", env.get("python")),
                    ("platform", env.get("platform")),
                    ("device", env.get("device")),
                    ("precision", env.get("precision")),
                    ("CPU count", env.get("cpu_count")),
                    ("torch threads", env.get("torch_threads")),
                    ("CUDA available", env.get("cuda_available")),
                    ("deterministic algorithms", env.get("deterministic_algorithms")),
                    ("seeds", yaml.safe_dump(env.get("seeds"), default_flow_style=True).strip()),
                ]
            )
        )
        libraries = env.get("libraries") or {}
        if libraries:
            body.append(heading(4, "Library versions"))
            body.append(key_value_table(sorted(libraries.items())))
        components = doc.get("components") or {}
        rows = [
            {"kind": kind, "name": name, **(info if isinstance(info, Mapping) else {})}
            for kind, named in components.items()
            if isinstance(named, Mapping)
            for name, info in named.items()
        ]
        if rows:
            body.append(heading(4, "Components"))
            body.append(table_html(pd.DataFrame(rows), cell_class=None))
        weights = [
            {
                "backbone": c.get("backbone"),
                "strategy": c.get("strategy"),
                "seed": c.get("seed"),
                "source": (c.get("weights") or {}).get("source"),
                "path": (c.get("weights") or {}).get("path"),
                "sha256": (c.get("weights") or {}).get("sha256"),
                "files": len((c.get("weights") or {}).get("files") or []),
            }
            for c in doc.get("cells", [])
        ]
        if weights:
            body.append(heading(4, "Weights"))
            body.append(table_html(_sort_cells(pd.DataFrame(weights)), cell_class=None))
            files = [
                (c, f)
                for c in doc.get("cells", [])
                for f in (c.get("weights") or {}).get("files") or []
                if isinstance(f, Mapping)
            ]
            if files:
                body.append(
                    details(
                        "Weight files with hashes",
                        table_html(
                            pd.DataFrame(
                                [
                                    {"cell": _cell_name(c), **{str(k): v for k, v in f.items()}}
                                    for c, f in files
                                ]
                            ),
                            cell_class=None,
                        ),
                    )
                )
        config = doc.get("config")
        if config is not None:
            body.append(heading(4, "Configuration"))
            body.append(preformatted(yaml.safe_dump(config, sort_keys=False, allow_unicode=True)))
    return Section("Provenance", "".join(body), "provenance")


_SECTIONS: tuple[Callable[[_Context], Section], ...] = (
    _summary,
    _performance,
    _explainability,
    _reference,
    _evidence,
    _roc,
    _tradeoff,
    _comparisons,
    _per_class,
    _strata,
    _galleries,
    _sanity,
    _cross_cell,
    _provenance,
)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def render_report(
    runs: Sequence[RunFiles],
    *,
    leaderboards: Leaderboards | None = None,
    base: Path | None = None,
) -> str:
    """The report of already loaded runs, as one HTML document.

    Args:
        runs: One or more compatible runs (same task, test set and metric definitions).
        leaderboards: Leaderboards already built from ``runs`` (saves rebuilding the paired
            tests); built with the default settings when ``None``.
        base: Folder the report will live in; run paths are shown relative to it (only the
            folder name when ``None``), so a report does not reveal home directories.

    Raises:
        XaibenchError: The runs are not compatible, or a gallery image is missing or broken.
    """
    if not runs:
        raise XaibenchError("no run directories given")
    boards = leaderboards if leaderboards is not None else build_leaderboards(runs)
    ctx = _Context(runs=runs, boards=boards, base=base)
    sections = [build(ctx) for build in _SECTIONS]
    task = ctx.task
    dataset = (runs[0].document.get("dataset") or {}).get("name", "unknown dataset")
    subtitle = (
        f"{task.get('positive_class')} vs rest on {dataset}; {len(ctx.cells)} cell(s) from "
        f"{len(runs)} run(s); results of {runs[0].document.get('created', 'unknown date')}"
    )
    return page(f"xaibench report: {task.get('name')}", sections, subtitle=subtitle)


def build_report(run_dirs: Sequence[Path], *, base: Path | None = None) -> str:
    """Load run directories and return their report (see :func:`render_report`)."""
    runs = [load_run(Path(d)) for d in run_dirs]
    return render_report(runs, base=base)


def write_report(
    run_dirs: Sequence[Path], out: Path, *, leaderboards: Leaderboards | None = None
) -> Path:
    """Write the HTML report of one or more runs and return its path.

    Args:
        run_dirs: Run directories (or their ``results.json``) to report on together.
        out: The HTML file to write, or an existing directory to write ``report.html`` into.
        leaderboards: Prebuilt leaderboards of these runs (see :func:`render_report`).

    Raises:
        XaibenchError: A run cannot be read, the runs are not compatible, or a gallery image is
            missing or broken. Nothing is written then.
    """
    out = Path(out)
    target = out / REPORT_FILE if out.is_dir() else out
    runs = [load_run(Path(d)) for d in run_dirs]
    text = render_report(runs, leaderboards=leaderboards, base=target.parent)
    write_whole(target, text)  # a failure (a full disk) leaves no temporary file, one line
    return target
