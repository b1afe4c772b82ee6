"""Stratified tables: each cell's performance and explanation scores per stratum, with intervals.

* :func:`stratified_performance`: AUC of the positive class (DeLong interval) and accuracy of
  the positive call (Wilson interval) per stratum.
* :func:`stratified_explanations`: the mean of each explanation score per stratum, with a
  percentile-bootstrap interval.

The stratification variables (the caller's and the built-in ``true_class`` and ``prediction``),
their levels, the validation of the inputs and the decisions behind the tables (intact test
predictions only, small strata withheld, row order, JSON-ready values) are described and
implemented in :mod:`xaibench.stats.strata`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any, SupportsIndex

import numpy as np
import pandas as pd

from xaibench.errors import XaibenchError
from xaibench.stats.classwise import _auc_summary, _check_level, _rate
from xaibench.stats.intervals import bootstrap_mean_ci
from xaibench.stats.strata import (
    _EXPLANATION_COLUMNS,
    _PREDICTION_LEVELS,
    CELL_COLUMNS,
    PERFORMANCE_KEYS,
    SMALL_STRATUM_REASON,
    _check_int,
    _check_strata,
    _intact_predictions,
    _label_indices,
    _positive_index,
    _require_columns,
    _scalar,
    _stratum_masks,
    _user_levels,
)

__all__ = [
    "stratified_explanations",
    "stratified_performance",
]


# --------------------------------------------------------------------------------------------
# Stratified performance
# --------------------------------------------------------------------------------------------


def _cell_values(key: tuple[Hashable, ...]) -> dict[str, Any]:
    return {column: _scalar(value) for column, value in zip(CELL_COLUMNS, key, strict=True)}


def stratified_performance(
    predictions: pd.DataFrame,
    class_names: Sequence[str],
    positive_class: str,
    strata: Mapping[str, pd.Series] | None,
    level: float = 0.95,
    min_n: SupportsIndex = 5,
) -> list[dict[str, Any]]:
    """Per cell and stratum: AUC of the positive class and accuracy of the positive call.

    The AUC ranks the positive-vs-rest log-odds (``log_prob_<class>`` columns; older files:
    ``prob_<positive_class>``) against ``label == positive_class`` with DeLong's
    interval; it is ``None``, with a reason, in strata lacking positives or negatives (within
    ``true_class`` strata always, by construction) and has no bounds with a single case in a
    class. Accuracy is the fraction of images whose ``called_positive`` equals ``label ==
    positive_class`` (so it is 1 in the ``correct`` stratum and 0 in ``wrong``), with a Wilson
    interval.

    Args:
        predictions: The run's predictions table (see the module docstring for the rows used).
        class_names: The task's class names, in label order.
        positive_class: The class the threshold calls.
        strata: The caller's variables, each a Series of levels indexed by sample id (e.g.
            from :func:`strata_from_table`); ``None`` or empty for the built-ins only.
        level: Confidence level of the intervals.
        min_n: The fewest images a stratum must have for its values to be reported.

    Returns:
        One dict per cell, variable and level with the keys of :data:`PERFORMANCE_KEYS`
        (``reason`` is ``None`` when every value is defined), sorted as described in the
        module docstring.

    Raises:
        XaibenchError: A column is missing or invalid, ``positive_class`` is not a class,
            a variable is invalid or shares no sample with the predictions, or ``level`` or
            ``min_n`` is out of range.
    """
    confidence = _check_level(level)
    smallest = _check_int(min_n, "min_n", 1)
    names, _ = _positive_index(class_names, positive_class)
    intact = _intact_predictions(predictions, names, positive_class)
    user = _check_strata(strata)
    user_levels = _user_levels(user, pd.Index(intact["sample_id"].unique()))
    what = f"class {positive_class!r}"

    rows: list[dict[str, Any]] = []
    for key, cell in intact.groupby(list(CELL_COLUMNS), sort=True):
        ids = pd.Index(cell["sample_id"])
        variables = {
            "true_class": (
                pd.Series(np.asarray(names, dtype=object)[cell["label"].to_numpy()]),
                list(names),
            ),
            "prediction": (
                pd.Series(np.where(cell["correct"].to_numpy(), "correct", "wrong")),
                list(_PREDICTION_LEVELS),
            ),
            **{
                name: (series.reindex(ids).reset_index(drop=True), user_levels[name])
                for name, series in user.items()
            },
        }
        scores = cell["score"].to_numpy()
        positives = cell["is_positive"].to_numpy()
        correct = cell["correct"].to_numpy()
        for variable, stratum, mask in _stratum_masks(variables):
            n = int(mask.sum())
            row: dict[str, Any] = {
                **_cell_values(key),
                "variable": variable,
                "level": _scalar(stratum),
                "n": n,
            }
            if n < smallest:
                row.update(dict.fromkeys(PERFORMANCE_KEYS[6:-1]))
                row["reason"] = SMALL_STRATUM_REASON
            else:
                auc = _auc_summary(positives[mask], scores[mask], confidence, what)
                accuracy, low, high = _rate(int(correct[mask].sum()), n, confidence)
                row.update(
                    n_positive=int(positives[mask].sum()),
                    auc=auc["auc"],
                    auc_low=auc["auc_low"],
                    auc_high=auc["auc_high"],
                    accuracy=accuracy,
                    accuracy_low=low,
                    accuracy_high=high,
                    reason=auc["reason"],
                )
            rows.append({name: row[name] for name in PERFORMANCE_KEYS})
    return rows


# --------------------------------------------------------------------------------------------
# Stratified explanation scores
# --------------------------------------------------------------------------------------------


def _clean_explanations(explanations: pd.DataFrame, n_classes: int) -> pd.DataFrame:
    """Validated explanations: ``region`` NaN read as ``""``, ``value`` as float."""
    _require_columns(explanations, _EXPLANATION_COLUMNS, "explanations")
    labels = _label_indices(explanations, n_classes, "explanations")
    try:
        values = pd.to_numeric(explanations["value"]).to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise XaibenchError("explanations column 'value' must be numeric") from error
    if np.isinf(values).any():
        raise XaibenchError("explanations column 'value' contains infinite values")
    frame = explanations[list(_EXPLANATION_COLUMNS)].copy()
    frame["label"] = labels
    frame["value"] = values
    frame["region"] = frame["region"].fillna("").astype(str)
    frame["metric"] = frame["metric"].astype(str)
    frame["saliency"] = frame["saliency"].astype(str)
    return frame.reset_index(drop=True)


def stratified_explanations(
    explanations: pd.DataFrame,
    predictions: pd.DataFrame,
    class_names: Sequence[str],
    positive_class: str,
    strata: Mapping[str, pd.Series] | None,
    resamples: SupportsIndex = 1000,
    level: float = 0.95,
    seed: int = 0,
    min_n: SupportsIndex = 5,
) -> list[dict[str, Any]]:
    """Per cell, explanation score and stratum: the mean score with a bootstrap interval.

    Each (``metric``, ``saliency``, ``region``) of each cell is averaged over the images of
    each stratum, NaN values (a score undefined for an image, e.g. an empty mask) left out of
    both the mean and ``n``. The interval is
    :func:`~xaibench.stats.intervals.bootstrap_mean_ci` with the given ``resamples`` and
    ``seed``, the same seed for every group so that the table is reproducible. The
    ``prediction`` variable comes from the cell's intact test predictions joined on
    ``sample_id``; an image without one is left out of that variable.

    Args:
        explanations: The run's explanations table.
        predictions: The run's predictions table (for the ``prediction`` variable).
        class_names: The task's class names, in label order.
        positive_class: The class the threshold calls.
        strata: The caller's variables, as for :func:`stratified_performance`.
        resamples: Bootstrap resamples per interval.
        level: Confidence level of the intervals.
        seed: Seed of the bootstrap's random generator.
        min_n: The fewest non-NaN values a stratum must have for its mean to be reported.

    Returns:
        One dict per cell, metric, saliency method, region, variable and level with the keys
        of :data:`EXPLANATION_KEYS` (``region`` is ``""`` for faithfulness metrics; ``reason``
        is ``None`` when every value is defined), sorted as described in the module docstring.

    Raises:
        XaibenchError: A column of either table is missing or invalid, ``positive_class`` is
            not a class, a variable is invalid or shares no sample with the predictions, or
            ``resamples``, ``level`` or ``min_n`` is out of range.
    """
    confidence = _check_level(level)
    smallest = _check_int(min_n, "min_n", 1)
    count = _check_int(resamples, "resamples", 1)
    generator_seed = _check_int(seed, "seed", 0)
    names, _ = _positive_index(class_names, positive_class)
    frame = _clean_explanations(explanations, len(names))
    intact = _intact_predictions(predictions, names, positive_class)
    user = _check_strata(strata)
    all_ids = pd.Index(pd.concat([intact["sample_id"], frame["sample_id"]]).unique())
    user_levels = _user_levels(user, all_ids)
    outcome = {
        key: pd.Series(
            np.where(cell["correct"].to_numpy(), "correct", "wrong"),
            index=pd.Index(cell["sample_id"]),
        )
        for key, cell in intact.groupby(list(CELL_COLUMNS), sort=True)
    }
    empty = pd.Series([], dtype=object)

    rows: list[dict[str, Any]] = []
    for key, cell in frame.groupby(list(CELL_COLUMNS), sort=True):
        cell = cell.reset_index(drop=True)
        ids = pd.Index(cell["sample_id"])
        variables = {
            "true_class": (
                pd.Series(np.asarray(names, dtype=object)[cell["label"].to_numpy()]),
                list(names),
            ),
            "prediction": (
                outcome.get(key, empty).reindex(ids).reset_index(drop=True),
                list(_PREDICTION_LEVELS),
            ),
            **{
                name: (series.reindex(ids).reset_index(drop=True), user_levels[name])
                for name, series in user.items()
            },
        }
        masks = list(_stratum_masks(variables))
        for (metric, saliency, region), group in cell.groupby(
            ["metric", "saliency", "region"], sort=True
        ):
            values = np.full(len(cell), np.nan)
            values[group.index.to_numpy()] = group["value"].to_numpy()
            for variable, stratum, mask in masks:
                chosen = values[mask]
                chosen = chosen[~np.isnan(chosen)]
                n = int(chosen.size)
                row: dict[str, Any] = {
                    **_cell_values(key),
                    "metric": metric,
                    "saliency": saliency,
                    "region": region,
                    "variable": variable,
                    "level": _scalar(stratum),
                    "n": n,
                    "mean": None,
                    "low": None,
                    "high": None,
                    "reason": None,
                }
                if n < smallest:
                    row["reason"] = SMALL_STRATUM_REASON
                else:
                    row["mean"] = float(chosen.mean())
                    try:
                        low, high = bootstrap_mean_ci(
                            chosen, resamples=count, level=confidence, seed=generator_seed
                        )
                    except XaibenchError as error:  # one value: no interval
                        row["reason"] = str(error)
                    else:
                        row["low"], row["high"] = float(low), float(high)
                rows.append(row)
    return rows
