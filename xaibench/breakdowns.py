"""Per-class, calibration and stratified breakdowns of a run, from its per-image tables.

The leaderboards give one number per cell; a reviewer also asks which class a model misses,
whether its probabilities can be read as risks, and whether a subgroup (one class, the wrong
calls, one site or age band) fares worse. These tables answer that. They are computed once,
when the run ends, because stratifying by metadata needs the dataset's attribute table, which
never leaves the dataset image by image: only the per-stratum aggregates are written
(``results.json`` ``analysis`` and CSV files of the same names; ``docs/statistics.md``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from xaibench.prediction_scores import ranking_matrix
from xaibench.stats.calibration import positive_class_calibration, top_label_calibration
from xaibench.stats.classwise import confusion_matrix, one_vs_rest
from xaibench.stats.stratified_tables import stratified_explanations, stratified_performance

CELL_COLUMNS = ("backbone", "strategy", "seed")

#: Equal-width bins of the reliability curves.
CALIBRATION_BINS = 10

#: The fewest images a stratum needs for its values to be written.
MIN_STRATUM = 5


def _intact_test(predictions: pd.DataFrame) -> pd.DataFrame:
    if predictions.empty:
        return predictions
    perturbation = predictions["perturbation"].fillna("")
    keep = perturbation == ""
    if "split" in predictions:
        keep &= predictions["split"] == "test"
    return predictions[keep]


def _cells(frame: pd.DataFrame) -> list[tuple[tuple[Any, ...], pd.DataFrame]]:
    return [(tuple(key), group) for key, group in frame.groupby(list(CELL_COLUMNS), sort=True)]


def _cell_dict(key: tuple[Any, ...]) -> dict[str, Any]:
    return {"backbone": str(key[0]), "strategy": str(key[1]), "seed": int(key[2])}


def per_class_tables(
    predictions: pd.DataFrame, class_names: Sequence[str], positive_class: str, level: float
) -> dict[str, list[dict[str, Any]]]:
    """``per_class``, ``confusion``, ``calibration`` and ``reliability`` rows for every cell."""
    names = list(class_names)
    prob_cols = [f"prob_{c}" for c in names]
    positive = names.index(positive_class)
    out: dict[str, list[dict[str, Any]]] = {
        "per_class": [],
        "confusion": [],
        "calibration": [],
        "reliability": [],
    }
    for key, group in _cells(_intact_test(predictions)):
        cell = _cell_dict(key)
        labels = group["label"].to_numpy(dtype=np.int64)
        probs = group[prob_cols].to_numpy(dtype=np.float64)
        ranking = ranking_matrix(group, names)  # log-odds where recorded: no saturated ties
        for row in one_vs_rest(labels, probs, names, level, ranking=ranking):
            out["per_class"].append({**cell, **row})
        matrix = confusion_matrix(labels, probs, names)
        for true in matrix.index:
            for predicted in matrix.columns:
                out["confusion"].append(
                    {
                        **cell,
                        "true": str(true),
                        "predicted": str(predicted),
                        "count": int(matrix.loc[true, predicted]),
                    }
                )
        for result in (
            top_label_calibration(probs, labels, CALIBRATION_BINS),
            positive_class_calibration(probs, labels, positive, CALIBRATION_BINS),
        ):
            summary = result.to_dict()
            out["calibration"].append(
                {**cell, "kind": summary["kind"], "ece": summary["ece"], "n": len(labels)}
            )
            for row in summary["curve"]:
                out["reliability"].append({**cell, "kind": summary["kind"], **row})
    return out


def run_breakdowns(
    predictions: pd.DataFrame,
    explanations: pd.DataFrame,
    class_names: Sequence[str],
    positive_class: str,
    strata: Mapping[str, pd.Series],
    *,
    resamples: int,
    seed: int,
    level: float = 0.95,
) -> dict[str, list[dict[str, Any]]]:
    """Every breakdown table of a run (none without predictions).

    Args:
        predictions: The run's ``predictions.csv`` rows (all cells).
        explanations: The run's ``explanations.csv`` rows (may be empty).
        class_names: The task's classes, in label order.
        positive_class: The class the threshold calls.
        strata: Metadata variables (sample id -> level) from the dataset's ``strata_columns``.
        resamples: Bootstrap resamples of the stratified explanation means.
        seed: Seed of those bootstraps.
        level: Confidence level.
    """
    if predictions.empty:
        return {}
    tables = per_class_tables(predictions, class_names, positive_class, level)
    tables["strata_performance"] = stratified_performance(
        predictions, class_names, positive_class, strata, level=level, min_n=MIN_STRATUM
    )
    if not explanations.empty:
        tables["strata_explanations"] = stratified_explanations(
            explanations,
            predictions,
            class_names,
            positive_class,
            strata,
            resamples=max(resamples, 1),
            level=level,
            seed=seed,
            min_n=MIN_STRATUM,
        )
    return tables
