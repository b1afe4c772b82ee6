"""What one cell produced: :class:`CellResult`, with its :class:`Gallery` pictures.

Kept apart from :mod:`xaibench.engine.runner` so the checkpoint, results and executor modules,
and the stages of a cell, can share the type without importing the runner.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from xaibench.analysis import CellMaps
from xaibench.engine.grid import Cell
from xaibench.metrics.base import Metric


@dataclass
class CellResult:
    """Everything one cell produced."""

    cell: Cell
    status: str = "ok"
    error: str | None = None
    traceback: str | None = None
    random_init: bool | None = None
    weights: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    fit: dict[str, Any] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)
    predictions: list[pd.DataFrame] = field(default_factory=list)
    explanations: list[pd.DataFrame] = field(default_factory=list)
    galleries: list[Gallery] = field(default_factory=list)
    drift_maps: dict[str, CellMaps] = field(default_factory=dict)


@dataclass(frozen=True)
class Gallery:
    """Test images of a cell with one method's maps, for a picture (see ``report.gallery``).

    Attributes:
        saliency: The method.
        kind: ``best``, ``worst`` or ``random`` (by ``score_metric`` on ``region``), or
            ``specific`` (by the drop of the positive-class probability when ``region`` is
            perturbed with ``perturbation``).
        sample_ids: The images' sample ids, in gallery order.
        scores: Their per-image scores (None where there is none).
        score_metric: The metric that ranked them (``probability_drop`` for ``specific``), or
            None when no region metric ran.
        region: The region scored, or None.
        images: ``[K, H, W]`` raw images.
        maps: ``[K, H, W]`` the method's maps.
        masks: ``{region: [K, H, W] bool}`` of every region outlined, the primary first (the
            colour order of ``report.gallery.REGION_COLOURS``), or None.
        score_label: Short name of the score written on each panel (``IoU_bone``).
        classes: The images' true class names.
        called: The class the run calls for each image (at its validation threshold).
        positive_probs: Each image's positive-class probability (None where unknown).
        positive_class: The positive class's name.
        perturbation: For ``specific``: the perturbation whose Δ ranked the images.
    """

    saliency: str
    kind: str
    sample_ids: tuple[str, ...]
    scores: tuple[float | None, ...]
    score_metric: str | None
    region: str | None
    images: np.ndarray
    maps: np.ndarray
    masks: dict[str, np.ndarray] | None
    score_label: str | None = None
    classes: tuple[str, ...] = ()
    called: tuple[str | None, ...] = ()
    positive_probs: tuple[float | None, ...] = ()
    positive_class: str | None = None
    perturbation: str | None = None

    def panel_labels(self) -> list[list[str]] | None:
        """The lines of text above each column, or None when nothing is known per image."""
        if not self.classes:
            return None
        from xaibench.report.gallery import panel_lines

        k = len(self.sample_ids)

        def at(values: tuple[Any, ...], i: int) -> Any:
            return values[i] if i < len(values) else None

        return [
            panel_lines(
                at(self.classes, i), at(self.called, i), self.positive_class,
                at(self.positive_probs, i), self.score_label, at(self.scores, i),
                sample_id=at(self.sample_ids, i),
            )
            for i in range(k)
        ]  # fmt: skip


def make_record(
    base: dict[str, Any],
    name: str,
    metric: Metric,
    *,
    value: float | None,
    n: int | None,
    status: str = "ok",
    reason: str | None = None,
    saliency: str | None = None,
    perturbation: str | None = None,
    region: str | None = None,
    details: dict[str, Any] | None = None,
    ci: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """One results record of a cell (``docs/results-schema.md``).

    An ``ok`` value that is not finite becomes ``skipped`` with the reason.
    """
    finite = value is not None and np.isfinite(value)
    if status == "ok" and not finite:
        status = "skipped"
        if value is not None and np.isinf(value):
            reason = reason or "value infinite (see the metric's definition)"
        else:
            reason = reason or "value undefined (no image had the region)"
    return {
        **base,
        "metric": name,
        "category": metric.category,
        "higher_is_better": metric.higher_is_better,
        "saliency": saliency,
        "perturbation": perturbation,
        "region": region,
        "value": float(value) if finite else None,  # type: ignore[arg-type]
        "ci_low": float(ci[0]) if finite and ci is not None else None,
        "ci_high": float(ci[1]) if finite and ci is not None else None,
        "n": n,
        "status": status,
        "reason": reason,
        "details": details or {},
    }
