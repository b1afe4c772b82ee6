"""Figures for the HTML report, drawn with matplotlib's Agg renderer and returned as PNG bytes.

Each ``*_png`` function takes plain data (frames, records or the small dataclasses below) and
returns the bytes of one PNG, so the report can embed it as a ``data:`` URI and tests can open
it. Nothing here touches pyplot's global state: figures are :class:`matplotlib.figure.Figure`
objects rendered by :class:`~matplotlib.backends.backend_agg.FigureCanvasAgg`, inside a style
context that starts from matplotlib's defaults (a user's ``matplotlibrc`` cannot change the
report) and is restored afterwards. Text is never parsed as mathtext, because backbone names
are user input (``$`` or ``_`` must print as themselves).

PNGs are deterministic: the same input gives the same bytes (no ``Software`` or date chunk,
a fixed hash salt, bundled fonts), so a report can be rebuilt and compared byte for byte.

This module holds the shared rendering (style, figure, PNG, colours), :func:`cell_label`, the ROC
curves and the performance/explanation trade-off; the forest plot of paired differences, the
reliability diagram and the sanity-check panel are in
:mod:`xaibench.report.diagnostic_figures`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from xaibench.prediction_scores import ranking_scores

__all__ = [
    "RocCurve",
    "TradeoffPoint",
    "cell_label",
    "pareto_front",
    "roc_curves",
    "roc_png",
    "tradeoff_front",
    "tradeoff_png",
    "tradeoff_points",
]
#: Resolution of every figure (pixels per inch): sharp on screen, small enough to embed.
DPI = 110

_RC: dict[str, Any] = {
    "text.parse_math": False,
    "svg.hashsalt": "xaibench",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
}

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
_LINESTYLES = ("-", "--", "-.", ":")


@contextmanager
def _style() -> Iterator[None]:
    """Matplotlib's defaults plus the report's settings, restored on exit."""
    import matplotlib.style

    with matplotlib.style.context(["default", _RC]):
        yield


def _figure(width: float, height: float) -> Any:
    """A new Agg-backed figure, independent of pyplot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    """The figure as PNG bytes, without the metadata that would make them differ between runs."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _colours(count: int) -> list[Any]:
    """``count`` distinct colours: tab10 up to ten, tab20 beyond (cycled past twenty)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if count <= 10 else "tab20"]
    size = 10 if count <= 10 else 20
    return [cmap(i % size) for i in range(count)]


def _legend_text(text: str) -> str:
    """Legend labels starting with ``_`` are hidden by matplotlib; keep them visible."""
    return f" {text}" if text.startswith("_") else text


def _grid(count: int, columns: int) -> tuple[int, int]:
    cols = max(1, min(columns, count))
    return math.ceil(count / cols), cols


def _message_png(message: str) -> bytes:
    """A small figure holding one line of text, for a plot with nothing to draw."""
    with _style():
        fig = _figure(6, 1.2)
        ax = fig.add_subplot()
        ax.set_axis_off()
        ax.text(0.5, 0.5, message, ha="center", va="center", color="0.4")
        return _png(fig)


def cell_label(backbone: Any, strategy: Any, seed: Any) -> str:
    """How a cell is named in figures and tables: ``backbone / strategy / seed``."""
    return f"{backbone} / {strategy} / seed {seed}"


# --------------------------------------------------------------------------------------------
# ROC curves
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RocCurve:
    """One cell's ROC curve on the intact test images (positive class vs rest).

    Attributes:
        backbone: The cell's backbone (curves are grouped into one panel per backbone).
        label: The cell's label in the legend.
        fpr: False-positive rates, as ``sklearn.metrics.roc_curve`` returns them.
        tpr: True-positive rates.
        auc: The area under this curve (trapezoidal; equals the Mann-Whitney AUC).
    """

    backbone: str
    label: str
    fpr: np.ndarray
    tpr: np.ndarray
    auc: float


def roc_curves(
    predictions: pd.DataFrame, class_names: Sequence[str], positive_class: str
) -> list[RocCurve]:
    """Per-cell ROC curves of the positive class's probability against all other classes.

    Args:
        predictions: Intact test predictions (``backbone``, ``strategy``, ``seed``, ``label``
            and ``prob_<positive_class>``, and ``log_prob_<class>`` where recorded: images are
            then ranked by the positive-vs-rest log-odds), one row per image and cell.
        class_names: The task's classes; ``label`` holds an index into them (or a class name).
        positive_class: The class whose probability ranks the images.

    Returns:
        One curve per cell that has both positive and negative images, in sorted cell order;
        cells with only one kind of image have no ROC curve and are left out.
    """
    from sklearn.metrics import auc as area
    from sklearn.metrics import roc_curve

    column = f"prob_{positive_class}"
    if predictions.empty or column not in predictions:
        return []
    index = list(class_names).index(positive_class)
    curves: list[RocCurve] = []
    for (backbone, strategy, seed), group in predictions.groupby(
        ["backbone", "strategy", "seed"], sort=True
    ):
        labels = group["label"]
        if pd.api.types.is_numeric_dtype(labels):
            truth = labels.to_numpy() == index
        else:
            truth = labels.astype(str).to_numpy() == positive_class
        # log-odds where recorded: saturated probabilities would merge the confident points
        scores = ranking_scores(group, list(class_names), index)
        keep = np.isfinite(scores)
        truth, scores = truth[keep], scores[keep]
        if truth.all() or not truth.any():
            continue
        fpr, tpr, _ = roc_curve(truth, scores)
        curves.append(
            RocCurve(
                backbone=str(backbone),
                label=f"{strategy} / seed {seed}",
                fpr=fpr,
                tpr=tpr,
                auc=float(area(fpr, tpr)),
            )
        )
    return curves


def roc_png(curves: Sequence[RocCurve], positive_class: str = "positive") -> bytes:
    """ROC curves, one panel per backbone so that its strategies can be compared directly."""
    if not curves:
        return _message_png("no ROC curve: no cell has both positive and negative test images")
    backbones = list(dict.fromkeys(c.backbone for c in curves))
    rows, cols = _grid(len(backbones), 3)
    labels = sorted({c.label for c in curves})
    colours = dict(zip(labels, _colours(len(labels)), strict=True))
    with _style():
        fig = _figure(3.6 * cols, 3.4 * rows)
        axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
        for ax, backbone in zip(axes.flat, backbones, strict=False):
            ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls=":", label="chance")
            for curve in (c for c in curves if c.backbone == backbone):
                ax.plot(
                    curve.fpr,
                    curve.tpr,
                    color=colours[curve.label],
                    lw=1.6,
                    drawstyle="steps-post",
                    label=_legend_text(f"{curve.label} (AUC {curve.auc:.3f})"),
                )
            ax.set_title(backbone)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.01)
            ax.set_aspect("equal")
            ax.legend(loc="lower right")
        for ax in axes.flat[len(backbones) :]:
            ax.set_visible(False)
        fig.supxlabel("false-positive rate (1 − specificity)")  # noqa: RUF001 (minus sign)
        fig.supylabel(f"true-positive rate (sensitivity, {positive_class})")
        return _png(fig)


# --------------------------------------------------------------------------------------------
# Performance vs explanation trade-off
# --------------------------------------------------------------------------------------------


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points that no other point dominates, both coordinates to be maximised.

    A point is dominated when another is at least as good on both axes and strictly better on
    one. Equal points do not dominate each other, so all copies of a front point stay on the
    front. Points with a NaN coordinate are never on the front (and dominate nothing).

    Args:
        points: ``(x, y)`` pairs.

    Returns:
        Indices into ``points`` in ascending order of ``x`` (then descending ``y``, then index),
        which is the order in which to connect them into a staircase.
    """
    valid = [
        (i, float(x), float(y))
        for i, (x, y) in enumerate(points)
        if not (math.isnan(float(x)) or math.isnan(float(y)))
    ]
    front = [
        (i, x, y)
        for i, x, y in valid
        if not any((ox >= x and oy >= y) and (ox > x or oy > y) for j, ox, oy in valid if j != i)
    ]
    front.sort(key=lambda p: (p[1], -p[2], p[0]))
    return [i for i, _, _ in front]


@dataclass(frozen=True)
class TradeoffPoint:
    """One cell and saliency method: its AUC and its explanation score, each with a 95% CI.

    Attributes:
        cell: The cell's label (:func:`cell_label`).
        saliency: The saliency method behind the explanation score.
        auc, auc_low, auc_high: The AUC record's value and interval (bounds may be NaN).
        score, score_low, score_high: The explanation record's value and interval.
    """

    cell: str
    saliency: str
    auc: float
    auc_low: float
    auc_high: float
    score: float
    score_low: float
    score_high: float

    @property
    def above_chance(self) -> bool:
        """Whether the AUC's 95% CI lies above 0.5 (False without a lower bound)."""
        return math.isfinite(self.auc_low) and self.auc_low > 0.5


def tradeoff_front(points: Sequence[TradeoffPoint]) -> list[int]:
    """The Pareto front (:func:`pareto_front`) over the points whose AUC beats chance.

    Only points whose AUC's 95% CI lies above 0.5 (:attr:`TradeoffPoint.above_chance`) are
    candidates, and only they can dominate: a chance-level classifier is no trade-off however well
    its maps localise (issue 21 item 6). Indices into ``points``, in staircase order.
    """
    eligible = [i for i, p in enumerate(points) if p.above_chance]
    front = pareto_front([(points[i].auc, points[i].score) for i in eligible])
    return [eligible[j] for j in front]


def _number(value: Any) -> float:
    return float("nan") if value is None else float(value)


def tradeoff_points(
    records: Iterable[Mapping[str, Any]],
    region: str,
    metric: str = "iou_region",
    performance: str = "auc",
    *,
    normalised: bool = False,
) -> list[TradeoffPoint]:
    """Pair each cell's performance record with its explanation records on one region.

    Args:
        records: Results records (any number of runs).
        region: The region of the explanation score (the task's first region of interest).
        metric: The explanation metric (one point per saliency method).
        performance: The performance metric.
        normalised: Use the chance-normalised score (``details.normalised`` and
            ``normalised_ci``, results schema 1.5) instead of the raw value; records without
            one are left out.

    Returns:
        One point per cell and saliency method where both records are ``ok``, sorted by cell
        and method.
    """
    perf: dict[tuple[Any, ...], Mapping[str, Any]] = {}
    expl: list[Mapping[str, Any]] = []
    for rec in records:
        if rec.get("status") != "ok" or rec.get("value") is None:
            continue
        if rec.get("metric") == performance and rec.get("category") == "performance":
            perf[(rec["backbone"], rec["strategy"], rec["seed"])] = rec
        elif rec.get("metric") == metric and rec.get("region") == region and rec.get("saliency"):
            expl.append(rec)
    points = []
    for rec in expl:
        key = (rec["backbone"], rec["strategy"], rec["seed"])
        if key not in perf:
            continue
        p = perf[key]
        score: Mapping[str, Any] = rec
        if normalised:
            details = rec.get("details") or {}
            value = details.get("normalised")
            ci = details.get("normalised_ci") or [None, None]
            if not isinstance(value, int | float) or not math.isfinite(value) or len(ci) != 2:
                continue
            score = {"value": value, "ci_low": ci[0], "ci_high": ci[1]}
        points.append(
            TradeoffPoint(
                cell=cell_label(*key),
                saliency=str(rec["saliency"]),
                auc=float(p["value"]),
                auc_low=_number(p.get("ci_low")),
                auc_high=_number(p.get("ci_high")),
                score=float(score["value"]),
                score_low=_number(score.get("ci_low")),
                score_high=_number(score.get("ci_high")),
            )
        )
    points.sort(key=lambda t: (t.cell, t.saliency))
    return points


#: Colour of the points whose AUC does not beat chance (off the Pareto front).
_GREY = "0.72"


def _error(value: float, low: float, high: float) -> tuple[float, float]:
    """Error-bar half-lengths below and above; zero where the bound is missing."""
    below = value - low if math.isfinite(low) else 0.0
    above = high - value if math.isfinite(high) else 0.0
    return max(below, 0.0), max(above, 0.0)


def tradeoff_png(
    points: Sequence[TradeoffPoint], score_label: str = "IoU", auc_label: str = "AUC"
) -> bytes:
    """Scatter of AUC (x) against an explanation score (y) with 95% CIs and the Pareto front.

    Colour names the cell, marker shape the saliency method. Points on the Pareto front (no
    other point has both a higher AUC and a higher score) are circled and joined: those are
    the only choices that are not beaten on both counts. The front is drawn over the points whose
    AUC's 95% CI lies above 0.5 only (:func:`tradeoff_front`); the others are drawn in grey.
    """
    if not points:
        return _message_png("no cell has both an AUC and an explanation score")
    cells = list(dict.fromkeys(p.cell for p in points))
    methods = list(dict.fromkeys(p.saliency for p in points))
    colours = dict(zip(cells, _colours(len(cells)), strict=True))
    markers = {m: _MARKERS[i % len(_MARKERS)] for i, m in enumerate(methods)}
    front = tradeoff_front(points)
    with _style():
        fig = _figure(9.5, 5.6)
        ax = fig.add_subplot()
        for p in points:
            colour = colours[p.cell] if p.above_chance else _GREY
            ax.errorbar(
                p.auc,
                p.score,
                xerr=np.array([_error(p.auc, p.auc_low, p.auc_high)]).T,
                yerr=np.array([_error(p.score, p.score_low, p.score_high)]).T,
                fmt=markers[p.saliency],
                color=colour,
                ecolor=colour,
                elinewidth=0.8,
                alpha=0.9 if p.above_chance else 0.5,
                ms=6,
            )
        if front:
            xs = [points[i].auc for i in front]
            ys = [points[i].score for i in front]
            ax.plot(xs, ys, color="black", lw=1.2, ls="--", zorder=3)
            ax.scatter(xs, ys, s=170, facecolors="none", edgecolors="black", lw=1.4, zorder=4)
        from matplotlib.lines import Line2D

        cell_handles = [
            Line2D([], [], color=colours[c], marker="o", ls="", label=_legend_text(c))
            for c in cells
        ]
        method_handles = [
            Line2D([], [], color="0.3", marker=markers[m], ls="", label=_legend_text(m))
            for m in methods
        ]
        front_handle = Line2D(
            [], [], color="black", ls="--", marker="o", mfc="none", ms=11, label="Pareto front"
        )
        extra = []
        if not all(p.above_chance for p in points):
            extra.append(
                Line2D([], [], color=_GREY, marker="o", ls="", label="AUC CI not above 0.5")
            )
        fig.legend(handles=cell_handles, title="cell", loc="outside right upper")
        fig.legend(
            handles=[*method_handles, front_handle, *extra],
            title="saliency method",
            loc="outside right lower",
        )
        ax.set_xlabel(f"{auc_label} (95% CI)")
        ax.set_ylabel(f"{score_label} (95% CI)")
        return _png(fig)
