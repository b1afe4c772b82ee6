"""What a cell's galleries show besides the maps: outlines, per-image labels, the specific region.

The explanation stage runs after the cell's predictions and perturbations, so a gallery can say,
per image, its true class, the class the run calls and the positive-class probability (from the
intact predictions), and a fourth gallery can rank images by what perturbation shows the model
needs: the region with the largest specific Δ (:func:`~xaibench.report.gallery.specific_region`),
when it is not the primary region, ranked per image by the **drop in the positive-class
probability** when that region is perturbed (intact minus perturbed, from the perturbed
predictions; higher first).

That ranking comes from the perturbation, not from the map: the gallery shows the images where
the model most needs the region, so a reader can see whether the map points there. Ranking by
the map's relevance mass on the region would pick images where the map already agrees, which is
what the gallery is meant to test. Probabilities, not log-odds: the drop is bounded, and an
image whose probability stays saturated at 1 under the perturbation is, honestly, not moved by
it (ties go to the earlier image).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from xaibench.report.gallery import SpecificRegion, specific_region

#: ``Gallery.score_metric`` of the ``specific`` gallery.
PROBABILITY_DROP = "probability_drop"


@dataclass(frozen=True)
class GalleryEvidence:
    """Per test image (all of the split, in its order) what the gallery panels are labelled with.

    Attributes:
        outlines: Regions outlined in every gallery, the primary first (colour order).
        classes: True class names.
        called: The class the run calls at its validation threshold (None where unknown).
        p_positive: ``[N]`` positive-class probabilities (NaN where unknown).
        positive_class: The positive class's name.
        specific: The region a ``specific`` gallery ranks by, or None (no such gallery).
        drops: ``[N]`` drop of the positive-class probability when ``specific.region`` is
            perturbed with ``specific.perturbation``; None without ``specific``.
    """

    outlines: tuple[str, ...]
    classes: tuple[str, ...]
    called: tuple[str | None, ...]
    p_positive: np.ndarray
    positive_class: str
    specific: SpecificRegion | None = None
    drops: np.ndarray | None = None


def _frame(
    predictions: Sequence[pd.DataFrame], sample_ids: Sequence[str], perturbation: str, region: str
) -> pd.DataFrame | None:
    """The test rows of one prediction table (``""``, ``""``: intact), in ``sample_ids`` order."""
    for frame in predictions:
        if not len(frame) or "perturbation" not in frame or "region" not in frame:
            continue
        rows = frame[
            (frame["perturbation"] == perturbation)
            & (frame["region"] == region)
            & (frame.get("split", pd.Series("test", index=frame.index)) == "test")
        ]
        if not len(rows):
            continue
        rows = rows.drop_duplicates("sample_id").set_index("sample_id")
        if not set(sample_ids) <= set(rows.index):
            return None
        return rows.loc[list(sample_ids)]
    return None


def collect_evidence(
    *,
    records: Sequence[dict[str, Any]],
    predictions: Sequence[pd.DataFrame],
    sample_ids: Sequence[str],
    labels: np.ndarray,
    class_names: Sequence[str],
    positive_index: int,
    outlines: Sequence[str],
    primary: str | None,
    perturbations: Sequence[str],
) -> GalleryEvidence:
    """The labels and the specific region of one cell's galleries, from its records and tables.

    Args:
        records: The cell's records so far (the Δ records with their controls among them).
        predictions: The cell's prediction tables (intact and perturbed, ``predictions.csv``).
        sample_ids: The test images, in split order.
        labels: Their true class indices.
        class_names: The task's classes.
        positive_index: The positive class.
        outlines: The regions to outline, primary first.
        primary: The task's primary region (no ``specific`` gallery for it).
        perturbations: The run's perturbations, in configured order (ties of off-target cost).
    """
    positive = class_names[positive_index]
    negative = class_names[1 - positive_index] if len(class_names) == 2 else f"not {positive}"
    column = f"prob_{positive}"
    n = len(sample_ids)
    intact = _frame(predictions, sample_ids, "", "")
    p_positive = np.full(n, np.nan)
    called: tuple[str | None, ...] = (None,) * n
    if intact is not None and column in intact:
        p_positive = intact[column].to_numpy(dtype=np.float64)
        if "called_positive" in intact:
            called = tuple(
                positive if bool(c) else negative for c in intact["called_positive"].to_numpy()
            )
    classes = tuple(class_names[int(i)] for i in np.asarray(labels))
    chosen = specific_region(records, primary, perturbations)
    drops = None
    if chosen is not None:
        perturbed = _frame(predictions, sample_ids, chosen.perturbation, chosen.region)
        if perturbed is None or column not in perturbed or intact is None:
            chosen = None
        else:
            drops = p_positive - perturbed[column].to_numpy(dtype=np.float64)
    return GalleryEvidence(tuple(outlines), classes, called, p_positive, positive, chosen, drops)
