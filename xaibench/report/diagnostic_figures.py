"""Diagnostic figures for the HTML report: paired differences, calibration and sanity checks.

:func:`forest_png` draws each cell's paired difference from the leader (:class:`ForestRow`) with
its interval and Holm-adjusted p-value, :func:`reliability_png` the reliability diagrams of the
predicted probabilities, and :func:`sanity_png` the sanity checks of the saliency methods. They
share the rendering of :mod:`xaibench.report.figures` (matplotlib's Agg renderer, a fixed style,
deterministic PNG bytes), described there.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from xaibench.report.figures import (
    _colours,
    _error,
    _figure,
    _grid,
    _legend_text,
    _message_png,
    _number,
    _png,
    _style,
    cell_label,
)

__all__ = [
    "ForestRow",
    "forest_png",
    "reliability_png",
    "sanity_png",
]


# --------------------------------------------------------------------------------------------
# Forest plot of paired differences
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ForestRow:
    """One paired comparison: the leader minus a cell, with its CI and Holm-adjusted p-value.

    Attributes:
        label: The compared cell.
        difference: The paired difference (leader minus cell).
        low, high: Its 95% confidence interval (NaN when there is none).
        p_holm: The Holm-adjusted p-value (NaN when there is none).
    """

    label: str
    difference: float
    low: float
    high: float
    p_holm: float


def forest_png(rows: Sequence[ForestRow], title: str, alpha: float = 0.05) -> bytes:
    """A forest plot: one paired difference per row with its CI, a zero line and Holm's p.

    Rows whose adjusted p-value is below ``alpha`` are drawn in a strong colour; the others in
    grey, so that "not distinguishable from the leader" reads at a glance.
    """
    if not rows:
        return _message_png(f"{title}: no paired comparison")
    with _style():
        height = 1.1 + 0.32 * len(rows)
        fig = _figure(8.5, height)
        ax = fig.add_subplot()
        ys = np.arange(len(rows))[::-1]
        for y, row in zip(ys, rows, strict=True):
            significant = math.isfinite(row.p_holm) and row.p_holm < alpha
            colour = "#a4262c" if significant else "0.35"
            ax.errorbar(
                row.difference,
                y,
                xerr=np.array([_error(row.difference, row.low, row.high)]).T,
                fmt="s",
                color=colour,
                ms=5,
                capsize=3,
                elinewidth=1.2,
            )
            p_text = "p(Holm) n/a" if not math.isfinite(row.p_holm) else f"p(Holm) {row.p_holm:.3g}"
            ax.annotate(
                p_text,
                xy=(1.01, y),
                xycoords=("axes fraction", "data"),
                va="center",
                fontsize=8,
                color=colour,
            )
        ax.axvline(0.0, color="black", lw=0.9)
        ax.set_yticks(ys, [_legend_text(r.label) for r in rows])
        ax.set_ylim(-0.7, len(rows) - 0.3)
        ax.grid(axis="y", visible=False)
        ax.set_xlabel("difference, leader − cell (95% CI)")  # noqa: RUF001 (minus sign)
        ax.set_title(title, loc="left")
        return _png(fig)


# --------------------------------------------------------------------------------------------
# Reliability diagram
# --------------------------------------------------------------------------------------------


def reliability_png(rows: pd.DataFrame) -> bytes:
    """Reliability diagrams: observed frequency against mean confidence per bin, per cell.

    Args:
        rows: Calibration rows with ``backbone``, ``strategy``, ``seed``, ``kind``, ``ece``
            and the curve columns ``bin_low``, ``bin_high``, ``n``, ``mean_confidence``,
            ``observed`` (one row per bin). One panel per ``kind``; empty bins are skipped, and
            each bin's marker area shows how many images it holds (``n``).
    """
    needed = {"backbone", "strategy", "seed", "mean_confidence", "observed"}
    if rows.empty or not needed <= set(rows.columns):
        return _message_png("no reliability curve")
    frame = rows.copy()
    if "kind" not in frame:
        frame["kind"] = "calibration"
    kinds = list(dict.fromkeys(frame["kind"].astype(str)))
    cells = sorted(
        {(str(b), str(s), str(d)) for b, s, d in frame[["backbone", "strategy", "seed"]].values}
    )
    colours = dict(zip(cells, _colours(len(cells)), strict=True))
    rows_n, cols = _grid(len(kinds), 2)
    with _style():
        fig = _figure(4.6 * cols, 4.4 * rows_n)
        axes = fig.subplots(rows_n, cols, squeeze=False)
        for ax, kind in zip(axes.flat, kinds, strict=False):
            ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls=":", label="perfect calibration")
            part = frame[frame["kind"].astype(str) == kind]
            for cell in cells:
                curve = part[
                    (part["backbone"].astype(str) == cell[0])
                    & (part["strategy"].astype(str) == cell[1])
                    & (part["seed"].astype(str) == cell[2])
                ]
                curve = curve.dropna(subset=["mean_confidence", "observed"])
                if "n" in curve:
                    curve = curve[curve["n"].fillna(0) > 0]
                if curve.empty:
                    continue
                curve = curve.sort_values("mean_confidence")
                total = float(curve["n"].sum()) if "n" in curve else 0.0
                ece = curve["ece"].iloc[0] if "ece" in curve else float("nan")
                ece_text = f" (ECE {float(ece):.3f})" if pd.notna(ece) else ""
                ax.plot(
                    curve["mean_confidence"],
                    curve["observed"],
                    marker="o",
                    ms=3,
                    lw=1.2,
                    color=colours[cell],
                    label=_legend_text(cell_label(*cell) + ece_text),
                )
                if "n" in curve and total > 0:
                    # marker area grows with the bin's share of images: a bin of one image
                    # that lands at 0 or 1 should not look as weighty as a full one
                    share = curve["n"].to_numpy(dtype=float) / total
                    ax.scatter(
                        curve["mean_confidence"],
                        curve["observed"],
                        s=8 + 400 * share,
                        color=colours[cell],
                        alpha=0.35,
                        linewidths=0,
                    )
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_aspect("equal")
            ax.set_title(kind.replace("_", " "))
            ax.set_xlabel("mean confidence in bin")
            ax.set_ylabel("observed frequency")
            ax.legend(loc="upper left", fontsize=7)
        for ax in axes.flat[len(kinds) :]:
            ax.set_visible(False)
        return _png(fig)


# --------------------------------------------------------------------------------------------
# Sanity checks
# --------------------------------------------------------------------------------------------


def _pass_line(model: Mapping[str, Any] | None, threshold: float) -> float | None:
    """The similarity a model-randomisation record must stay below, when its maps vary.

    ``threshold - (1 - run_to_run)``; None for deterministic maps (the threshold itself) and for
    records without ``run_to_run`` (older runs).
    """
    details = (model or {}).get("details")
    run_to_run = details.get("run_to_run") if isinstance(details, Mapping) else None
    if not isinstance(run_to_run, (int, float)) or not run_to_run < 1.0:
        return None  # None, NaN, 1 or not a number
    value = float(run_to_run)
    return threshold - (1.0 - value)


def sanity_png(records: Iterable[Mapping[str, Any]]) -> bytes:
    """Sanity-check panel, one per saliency method.

    With ``details.cascade`` in the model-randomisation records: each cell's Spearman
    similarity after every cascading randomisation step (head first, then the layers from the
    top), its target-randomisation similarity as a cross at the right, and the pass threshold.
    Without cascades: horizontal bars of each cell's mean similarities under both checks. A
    method passes a check when the similarity falls below ``threshold - (1 - run_to_run)``: the
    threshold for deterministic maps, a dotted line per cell for maps that vary run to run.
    """
    sanity = [r for r in records if r.get("category") == "sanity" and r.get("saliency")]
    if not sanity:
        return _message_png("no sanity-check records")
    methods = list(dict.fromkeys(str(r["saliency"]) for r in sanity))
    cells = sorted({(r["backbone"], r["strategy"], r["seed"]) for r in sanity}, key=str)
    colours = dict(zip(cells, _colours(len(cells)), strict=True))
    thresholds = [
        r["details"]["threshold"]
        for r in sanity
        if isinstance(r.get("details"), Mapping) and r["details"].get("threshold") is not None
    ]
    threshold = float(thresholds[0]) if thresholds else 0.5
    cascades = any(
        isinstance(r.get("details"), Mapping) and r["details"].get("cascade")
        for r in sanity
        if "model" in str(r.get("metric"))
    )

    def find(method: str, cell: tuple[Any, ...], check: str) -> Mapping[str, Any] | None:
        for r in sanity:
            if (
                str(r["saliency"]) == method
                and (r["backbone"], r["strategy"], r["seed"]) == cell
                and check in str(r["metric"])
            ):
                return r
        return None

    rows_n, cols = _grid(len(methods), 2)
    with _style():
        if cascades:
            fig = _figure(5.2 * cols, 3.8 * rows_n + 0.8)
        else:
            fig = _figure(5.2 * cols, (1.2 + 0.35 * len(cells)) * rows_n + 0.8)
        axes = fig.subplots(rows_n, cols, squeeze=False)
        steps = 1
        stochastic = False
        for ax, method in zip(axes.flat, methods, strict=False):
            if cascades:
                for cell in cells:
                    model = find(method, cell, "model")
                    target = find(method, cell, "target")
                    cascade = (model or {}).get("details", {}).get("cascade") or []
                    ys = [_number(step.get("spearman")) for step in cascade]
                    steps = max(steps, len(ys))
                    colour = colours[cell]
                    if ys:
                        ax.plot(range(1, len(ys) + 1), ys, marker="o", ms=3.5, color=colour)
                    if target is not None and target.get("value") is not None:
                        ax.plot([0], [float(target["value"])], marker="x", ms=7, color=colour)
                    line = _pass_line(model, threshold)
                    if line is not None:
                        stochastic = True
                        ax.axhline(line, color=colour, lw=1, ls=":")
                ax.axhline(threshold, color="#a4262c", lw=1, ls="--")
                ax.set_ylim(-1.05, 1.05)
                ax.set_ylabel("Spearman similarity to trained maps")
            else:
                y = np.arange(len(cells))[::-1]
                model_vals = [_number((find(method, c, "model") or {}).get("value")) for c in cells]
                target_vals = [
                    _number((find(method, c, "target") or {}).get("value")) for c in cells
                ]
                ax.barh(y + 0.18, model_vals, height=0.34, color="#1f5fa8", label="model")
                ax.barh(y - 0.18, target_vals, height=0.34, color="#e08a00", label="target")
                ax.axvline(threshold, color="#a4262c", lw=1, ls="--", label="threshold")
                ax.set_yticks(y, [_legend_text(cell_label(*c)) for c in cells])
                ax.set_xlim(-1.05, 1.05)
                ax.set_xlabel("mean Spearman similarity")
            ax.set_title(method)
        if cascades:
            for ax in axes.flat[: len(methods)]:
                ax.set_xlim(-0.5, steps + 0.5)
                ax.set_xticks(range(steps + 1), ["target", *[str(i) for i in range(1, steps + 1)]])
                ax.set_xlabel("check: target, or model randomisation step (1 = head)")
            from matplotlib.lines import Line2D

            handles = [
                Line2D([], [], color=colours[c], marker="o", label=_legend_text(cell_label(*c)))
                for c in cells
            ]
            handles.append(Line2D([], [], color="#a4262c", ls="--", label="pass threshold"))
            if stochastic:
                handles.append(
                    Line2D([], [], color="#555555", ls=":", label="pass line, run to run < 1")
                )
            fig.legend(handles=handles, loc="outside lower center", ncols=min(3, len(handles)))
        else:
            fig.legend(
                *axes.flat[0].get_legend_handles_labels(), loc="outside lower center", ncols=3
            )
        for ax in axes.flat[len(methods) :]:
            ax.set_visible(False)
        return _png(fig)
