"""Stratified tables: performance and explanation scores within subgroups of the test set.

A model can score well on average and fail a subgroup (older patients, one scanner, one
class), and an explanation score averaged over all images can hide that maps land on bone for
correct calls and elsewhere for wrong ones. These pure functions take a run's per-image tables
(``predictions.csv`` and ``explanations.csv`` as DataFrames) and report each cell's numbers
per stratum, with intervals:

* :func:`strata_from_table` turns a per-sample attribute table (age, sex, site, ...) into
  stratification variables, banding continuous columns into quartiles.
* :func:`~xaibench.stats.stratified_tables.stratified_performance`: AUC of the positive class
  (DeLong interval) and accuracy of the positive call (Wilson interval) per stratum.
* :func:`~xaibench.stats.stratified_tables.stratified_explanations`: the mean of each explanation
  score per stratum, with a percentile-bootstrap interval.

Besides the caller's variables, two are built in: ``true_class`` (the true class's name) and
``prediction`` (``"correct"`` or ``"wrong"``, where correct means the thresholded positive
call ``called_positive`` equals ``label == positive_class``).

Decisions, and why:

* Only **intact test** predictions are used: rows whose ``perturbation`` is empty (``""``, or
  NaN as read back from a CSV) and, when a ``split`` column is present, whose split is
  ``"test"`` (the threshold was chosen on validation, which must not be scored).
* Strata with fewer than ``min_n`` images are reported with their ``n`` and ``None`` values,
  reason ``"fewer than min_n images"``: a stratum of one or two images would publish
  individual results (and intervals over so few are meaningless). ``n_positive`` is withheld
  too, as it would reveal individual labels.
* A sample missing from a variable (absent from its Series, or NaN there) is left out of that
  variable's strata only.
* Rows are sorted by cell (``backbone``, ``strategy``, ``seed``), then (for explanations)
  ``metric``, ``saliency``, ``region``, then variable name, then level in its natural order
  (class order for ``true_class``; ``correct`` before ``wrong``; category order for banded or
  other categorical variables; sorted values otherwise). Every level of a variable appears in
  every cell, with ``n = 0`` where a cell has none, so tables of different cells line up.
* Values are JSON-ready: Python ``str``, ``int``, ``float`` or ``None`` (never NaN).

Every error the caller can cause (a missing column, an unknown positive class, a reserved or
duplicated name) raises :class:`~xaibench.errors.XaibenchError` naming the column or argument.

This module holds the stratification variables and levels, their validation and the shared
column constants; the two tables are computed in :mod:`xaibench.stats.stratified_tables`.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, SupportsIndex

import numpy as np
import pandas as pd

from xaibench.errors import XaibenchError
from xaibench.prediction_scores import log_prob_matrix, ranking_scores
from xaibench.stats.classwise import _check_class_names

__all__ = [
    "BUILTIN_VARIABLES",
    "CELL_COLUMNS",
    "EXPLANATION_KEYS",
    "PERFORMANCE_KEYS",
    "RARE_LEVEL",
    "SMALL_STRATUM_REASON",
    "strata_from_table",
]
#: The columns that identify a cell of the grid.
CELL_COLUMNS = ("backbone", "strategy", "seed")

#: Variables every stratified table has, whatever the caller passes.
BUILTIN_VARIABLES = ("true_class", "prediction")

#: Keys of each row of :func:`stratified_performance`, in order.
PERFORMANCE_KEYS = (
    *CELL_COLUMNS,
    "variable",
    "level",
    "n",
    "n_positive",
    "auc",
    "auc_low",
    "auc_high",
    "accuracy",
    "accuracy_low",
    "accuracy_high",
    "reason",
)

#: Keys of each row of :func:`stratified_explanations`, in order.
EXPLANATION_KEYS = (
    *CELL_COLUMNS,
    "metric",
    "saliency",
    "region",
    "variable",
    "level",
    "n",
    "mean",
    "low",
    "high",
    "reason",
)

#: The reason given for a stratum too small to report.
SMALL_STRATUM_REASON = "fewer than min_n images"

_PREDICTION_COLUMNS = (*CELL_COLUMNS, "sample_id", "label", "perturbation", "called_positive")
_EXPLANATION_COLUMNS = (
    *CELL_COLUMNS,
    "sample_id",
    "label",
    "metric",
    "saliency",
    "region",
    "value",
)
_PREDICTION_LEVELS = ("correct", "wrong")


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _scalar(value: Any) -> Any:
    """A JSON-ready Python scalar: numpy scalars unwrapped, NaN as ``None``."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _check_int(value: SupportsIndex, name: str, minimum: int) -> int:
    """Validate an integer argument of at least ``minimum``."""
    try:
        number = operator.index(value)
    except TypeError as error:
        raise XaibenchError(f"{name} must be an integer, got {value!r}") from error
    if number < minimum:
        raise XaibenchError(f"{name} must be at least {minimum}, got {number}")
    return number


def _require_columns(frame: Any, columns: Sequence[str], name: str) -> None:
    """Raise naming every column of ``columns`` that ``frame`` lacks."""
    if not isinstance(frame, pd.DataFrame):
        raise XaibenchError(f"{name} must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise XaibenchError(
            f"{name} lacks column(s) {', '.join(repr(c) for c in missing)}"
            f" (it has {', '.join(map(str, frame.columns))})"
        )


def _label_indices(frame: pd.DataFrame, n_classes: int, name: str) -> np.ndarray:
    """The ``label`` column as int64 class indices, validated against ``n_classes``."""
    try:
        numeric = pd.to_numeric(frame["label"]).to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise XaibenchError(f"{name} column 'label' must hold integer class indices") from error
    if not np.all(np.isfinite(numeric)) or not np.all(numeric == np.round(numeric)):
        raise XaibenchError(f"{name} column 'label' must hold integer class indices, without NaN")
    if numeric.size and (numeric.min() < 0 or numeric.max() >= n_classes):
        raise XaibenchError(
            f"{name} column 'label' must lie in [0, {n_classes - 1}] (one per class name), got "
            f"values from {int(numeric.min())} to {int(numeric.max())}"
        )
    return numeric.astype(np.int64)


def _as_bool(column: pd.Series, name: str) -> np.ndarray:
    """A boolean column, accepting bool, 0/1 and the strings ``True``/``False`` of a CSV."""
    if column.dtype == bool:
        return column.to_numpy(dtype=bool)
    mapping = {"True": True, "False": False, "true": True, "false": False}
    converted = []
    for value in column.tolist():
        if isinstance(value, str) and value in mapping:
            converted.append(mapping[value])
        elif isinstance(value, bool | int | np.bool_ | np.integer | float) and value in (0, 1):
            converted.append(bool(value))
        else:
            raise XaibenchError(f"{name} must hold True/False, got {value!r}")
    return np.asarray(converted, dtype=bool)


def _positive_index(class_names: Sequence[str], positive_class: str) -> tuple[list[str], int]:
    """Validated class names and the index of the positive class."""
    names = _check_class_names(class_names)
    if positive_class not in names:
        raise XaibenchError(f"positive_class {positive_class!r} is not one of {names}")
    return names, names.index(positive_class)


def _intact_predictions(
    predictions: pd.DataFrame, class_names: Sequence[str], positive_class: str
) -> pd.DataFrame:
    """The intact test predictions, one row per cell and image, with derived columns.

    Returns:
        A frame with the cell columns, ``sample_id``, ``label`` (int), ``score`` (the
        positive-vs-rest log-odds where ``log_prob_<class>`` columns are recorded, else the
        probability of the positive class: :mod:`xaibench.prediction_scores`), ``is_positive``
        and ``correct``.

    Raises:
        XaibenchError: A column is missing or invalid, no intact test row is left, or an image
            appears twice in one cell.
    """
    names, positive = _positive_index(class_names, positive_class)
    score_column = f"prob_{positive_class}"
    _require_columns(predictions, [*_PREDICTION_COLUMNS, score_column], "predictions")
    perturbation = predictions["perturbation"]
    keep = perturbation.isna() | (perturbation.astype(str) == "")
    if "split" in predictions.columns:
        keep &= predictions["split"].astype(str) == "test"
    frame = predictions.loc[keep]
    if frame.empty:
        raise XaibenchError(
            "predictions has no intact test row (column 'perturbation' empty"
            + (", column 'split' == 'test')" if "split" in predictions.columns else ")")
        )
    labels = _label_indices(frame, len(names), "predictions")
    try:
        scores = pd.to_numeric(frame[score_column]).to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise XaibenchError(f"predictions column {score_column!r} must be numeric") from error
    if not np.all(np.isfinite(scores)):
        raise XaibenchError(f"predictions column {score_column!r} contains NaN or infinite values")
    if log_prob_matrix(frame, names) is not None:  # ranks without the probabilities' ties
        scores = ranking_scores(frame, names, positive)
    called = _as_bool(frame["called_positive"], "predictions column 'called_positive'")
    is_positive = labels == positive
    out = pd.DataFrame(
        {
            **{column: frame[column].to_numpy() for column in CELL_COLUMNS},
            "sample_id": frame["sample_id"].to_numpy(),
            "label": labels,
            "score": scores,
            "is_positive": is_positive,
            "correct": called == is_positive,
        }
    )
    duplicated = out.duplicated([*CELL_COLUMNS, "sample_id"])
    if duplicated.any():
        first = out.loc[duplicated].iloc[0]
        raise XaibenchError(
            f"predictions column 'sample_id' repeats {first['sample_id']!r} among the intact "
            f"test rows of cell {tuple(_scalar(first[c]) for c in CELL_COLUMNS)}"
        )
    return out


def _check_strata(strata: Mapping[str, pd.Series] | None) -> dict[str, pd.Series]:
    """Validate the caller's stratification variables."""
    if strata is None:
        return {}
    if not isinstance(strata, Mapping):
        raise XaibenchError(
            f"strata must map variable names to pandas Series, got {type(strata).__name__}"
        )
    checked = {}
    for name, series in strata.items():
        if name in BUILTIN_VARIABLES:
            raise XaibenchError(
                f"strata variable {name!r} is reserved for the built-in variable of that name"
            )
        if not isinstance(series, pd.Series):
            raise XaibenchError(
                f"strata variable {name!r} must be a pandas Series indexed by sample_id, got "
                f"{type(series).__name__}"
            )
        if series.index.has_duplicates:
            repeated = series.index[series.index.duplicated()][0]
            raise XaibenchError(f"strata variable {name!r} repeats sample_id {repeated!r}")
        checked[str(name)] = series
    return checked


def _sort_key(value: Any) -> tuple[int, Any]:
    """Sort numbers before strings, each among their own kind."""
    if isinstance(value, bool | int | float | np.number):
        return (0, value)
    return (1, str(value))


def _variable_levels(series: pd.Series, sample_ids: pd.Index) -> list[Any]:
    """The levels of a caller's variable in their natural order (see the module docstring)."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        return list(series.cat.categories)
    observed = series[series.index.isin(sample_ids)].dropna().unique()
    return sorted(observed, key=_sort_key)


def _user_levels(strata: dict[str, pd.Series], sample_ids: pd.Index) -> dict[str, list[Any]]:
    """Levels of every caller variable; raise when a variable shares no sample with the data."""
    levels = {}
    for name, series in strata.items():
        if not series.index.isin(sample_ids).any():
            example = repr(series.index[0]) if len(series) else "none"
            raise XaibenchError(
                f"strata variable {name!r} shares no sample_id with the predictions (e.g. "
                f"{example} vs {sample_ids[0]!r}; check that both use the same id type)"
            )
        levels[name] = _variable_levels(series, sample_ids)
    return levels


def _stratum_masks(
    variables: dict[str, tuple[pd.Series, list[Any]]],
) -> Iterator[tuple[str, Any, np.ndarray]]:
    """``(variable, level, mask)`` in output order, from each variable's assignment and levels.

    Args:
        variables: Per variable, the level of each row (aligned with the rows, NaN where a
            row has none) and the levels to report.
    """
    for name in sorted(variables):
        assigned, levels = variables[name]
        for level in levels:
            yield name, level, (assigned == level).to_numpy(dtype=bool)


# --------------------------------------------------------------------------------------------
# Stratification variables from an attribute table
# --------------------------------------------------------------------------------------------


def _format_edge(value: float, digits: int) -> str:
    """A band edge as a short number (``40`` rather than ``40.0``)."""
    return f"{value:.{digits}g}"


def _quartile_bands(values: pd.Series, column: str) -> pd.Series:
    """Cut a numeric Series into quartile bands labelled ``< q1``, ``[q1, q2)``, ..., ``>= q3``.

    Edges are the 25, 50 and 75th percentiles (``numpy.quantile``, linear interpolation);
    repeated edges of heavily tied data are merged, so fewer than four bands can result. A
    value equal to an edge goes to the band that starts there. The outer bands are open: their
    labels never show the smallest or largest value, which belong to one person (the oldest
    patient's age). Edges print with six significant digits, more if two labels would be equal.
    """
    numeric = values.to_numpy(dtype=np.float64, na_value=np.nan)
    finite = numeric[~np.isnan(numeric)]
    if np.isinf(finite).any():
        raise XaibenchError(f"table column {column!r} contains infinite values")
    quartiles = np.quantile(finite, [0.25, 0.5, 0.75])
    inner = np.unique(quartiles[(quartiles > finite.min()) & (quartiles <= finite.max())])
    for digits in (6, 10, 17):
        text = [_format_edge(edge, digits) for edge in inner]
        if len(set(text)) == len(text):
            break
    labels = [f"< {text[0]}"]
    labels += [f"[{text[i]}, {text[i + 1]})" for i in range(len(inner) - 1)]
    labels.append(f">= {text[-1]}")
    codes = np.full(numeric.shape, -1, dtype=np.int64)
    present = ~np.isnan(numeric)
    codes[present] = np.searchsorted(inner, numeric[present], side="right")
    banded = pd.Categorical.from_codes(codes, categories=labels, ordered=True)
    return pd.Series(banded, index=values.index, name=column).cat.remove_unused_categories()


#: The level that rare values of a categorical variable are merged into.
RARE_LEVEL = "other (rare values)"


def _merge_rare(series: pd.Series, min_level: int) -> pd.Series:
    """Replace values held by fewer than ``min_level`` samples with :data:`RARE_LEVEL`.

    A value that few images share (a name, an accession number, a one-off site) would identify
    those images if it became a stratum's label, even where the stratum's numbers are withheld.
    """
    counts = series.value_counts()
    rare = counts.index[counts < min_level]
    if len(rare) == 0:
        return series
    out = series.astype(object).where(~series.isin(rare), RARE_LEVEL)
    return out.where(series.notna())


def strata_from_table(
    table: pd.DataFrame,
    columns: Sequence[str],
    max_levels: SupportsIndex = 8,
    min_level: SupportsIndex = 5,
) -> dict[str, pd.Series]:
    """Pick stratification variables from a per-sample attribute table.

    Categorical, string and boolean columns are used as they are, and so are numeric columns
    with at most ``max_levels`` distinct values (codes such as 0/1 or a handful of sites).
    Numeric columns with more distinct values (age, BMI, dose) are cut into quartile bands
    labelled ``"< 40"``, ``"[40, 55)"``, ..., ``">= 70"``: quartiles give strata of about equal
    size, so none is too small to report while each still spans a meaningful range, and the
    open outer bands never print an extreme value. In the other columns, values that fewer
    than ``min_level`` samples share are merged into :data:`RARE_LEVEL`, so that no label names
    a handful of images. Columns left with a single level (or none) cannot stratify anything
    and are dropped.

    Args:
        table: One row per sample; sample ids in a ``sample_id`` column, or else the index.
        columns: The columns to use.
        max_levels: The most distinct values a numeric column may have and be kept as is.
        min_level: The fewest samples a value of a categorical column needs to be its own level.

    Returns:
        Per kept column, in the order of ``columns``, a Series of levels indexed by sample id
        (NaN where a sample has no value). Banded columns are ordered categoricals whose
        categories are the bands in ascending order.

    Raises:
        XaibenchError: ``table`` is not a DataFrame, a column is missing or holds infinite
            values, ``columns`` names a reserved variable (``sample_id``, ``true_class``,
            ``prediction``), sample ids repeat, or ``max_levels`` is not a positive integer.
    """
    limit = _check_int(max_levels, "max_levels", 1)
    rare_below = _check_int(min_level, "min_level", 1)
    if isinstance(columns, str):
        raise XaibenchError(
            f"columns must be a sequence of column names, got the string {columns!r}"
        )
    wanted = [str(column) for column in columns]
    reserved = [c for c in wanted if c in ("sample_id", *BUILTIN_VARIABLES)]
    if reserved:
        raise XaibenchError(f"columns may not include reserved name(s) {reserved}")
    _require_columns(table, wanted, "table")
    if "sample_id" in table.columns:
        ids = pd.Index(table["sample_id"], name="sample_id")
    else:
        ids = pd.Index(table.index, name="sample_id")
    if ids.has_duplicates:
        raise XaibenchError(f"table repeats sample_id {ids[ids.duplicated()][0]!r}")

    strata: dict[str, pd.Series] = {}
    for column in wanted:
        series = table[column].copy()  # keeps the dtype (categorical, nullable integer, ...)
        series.index = ids
        distinct = series.dropna().nunique()
        if distinct <= 1:
            continue
        numeric = pd.api.types.is_numeric_dtype(table[column]) and not (
            pd.api.types.is_bool_dtype(table[column])
        )
        if numeric and distinct > limit:
            strata[column] = _quartile_bands(series, column)
            continue
        merged = _merge_rare(series, rare_below)
        if merged.dropna().nunique() > 1:
            strata[column] = merged
    return strata
