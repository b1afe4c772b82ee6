"""Known answers of the stratified tables, on tiny hand-built per-image frames.

Accuracies are counted by hand, AUCs checked against scikit-learn and by pair counting, and
intervals against xaibench.stats.intervals.
"""

import io
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from xaibench.errors import XaibenchError
from xaibench.stats.intervals import bootstrap_mean_ci, delong_auc_ci, wilson_ci
from xaibench.stats.strata import (
    EXPLANATION_KEYS,
    PERFORMANCE_KEYS,
    RARE_LEVEL,
    SMALL_STRATUM_REASON,
    strata_from_table,
)
from xaibench.stats.stratified_tables import stratified_explanations, stratified_performance

CLASSES = ("normal", "osteopenia", "osteoporosis")
POSITIVE = "osteoporosis"
IDS = [f"s{i:02d}" for i in range(12)]
LABELS = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
# Threshold 0.5: called = [F F T F  F F T F  T T F T]; positives are the last four, so
# correct = [T T F T  T T F T  T T F T]: 9 of 12.
PROB_POS = [0.1, 0.2, 0.6, 0.3, 0.2, 0.4, 0.7, 0.1, 0.8, 0.9, 0.3, 0.65]
SITE = pd.Series(["A"] * 6 + ["B"] * 6, index=IDS)


def _cell_rows(seed, prob_pos, perturbation="", region="", flip=False):
    prob_pos = np.asarray(prob_pos)
    rest = (1.0 - prob_pos) / 2.0
    called = prob_pos >= 0.5
    return pd.DataFrame(
        {
            "backbone": "vit",
            "strategy": "lora",
            "seed": seed,
            "split": "test",
            "sample_id": IDS,
            "label": LABELS,
            "perturbation": perturbation,
            "region": region,
            "prob_normal": rest,
            "prob_osteopenia": rest,
            "prob_osteoporosis": prob_pos,
            "called_positive": ~called if flip else called,
        }
    )


@pytest.fixture
def predictions():
    perfect = [0.1] * 8 + [0.9] * 4  # seed 1: every call correct
    return pd.concat(
        [
            _cell_rows(1, perfect),
            _cell_rows(0, PROB_POS),
            # Perturbed rows, all calls flipped: must be ignored.
            _cell_rows(0, PROB_POS, perturbation="mean", region="bone", flip=True),
        ],
        ignore_index=True,
    )


def _find(rows, **where):
    found = [row for row in rows if all(row[k] == v for k, v in where.items())]
    assert len(found) == 1, where
    return found[0]


# ----------------------------------------------------------------------------- performance


def test_stratified_performance_known_answers(predictions):
    rows = stratified_performance(predictions, CLASSES, POSITIVE, {"site": SITE}, min_n=5)
    assert all(tuple(row) == PERFORMANCE_KEYS for row in rows)

    site_a = _find(rows, seed=0, variable="site", level="A")
    assert site_a["n"] == 6
    assert site_a["n_positive"] == 0
    assert site_a["accuracy"] == pytest.approx(5 / 6)
    assert (site_a["accuracy_low"], site_a["accuracy_high"]) == pytest.approx(wilson_ci(5, 6))
    assert site_a["auc"] is None
    assert "no positive image" in site_a["reason"]

    site_b = _find(rows, seed=0, variable="site", level="B")
    y = np.array(LABELS[6:]) == 2
    scores = np.array(PROB_POS[6:])
    assert site_b["n_positive"] == 4
    assert site_b["accuracy"] == pytest.approx(4 / 6)
    assert site_b["auc"] == pytest.approx(6 / 8)  # 6 of the 8 positive-negative pairs
    assert site_b["auc"] == pytest.approx(roc_auc_score(y, scores))
    _, low, high = delong_auc_ci(y, scores)
    assert (site_b["auc_low"], site_b["auc_high"]) == pytest.approx((low, high))
    assert site_b["reason"] is None

    # Four images per true class: fewer than min_n=5, so n only ...
    for name in CLASSES:
        row = _find(rows, seed=0, variable="true_class", level=name)
        assert (row["n"], row["accuracy"], row["reason"]) == (4, None, SMALL_STRATUM_REASON)
    # ... and with min_n=4, accuracy 3 of 4 in each, the AUC undefined by construction.
    rows_4 = stratified_performance(predictions, CLASSES, POSITIVE, None, min_n=4)
    for name in CLASSES:
        row = _find(rows_4, seed=0, variable="true_class", level=name)
        assert row["accuracy"] == pytest.approx(3 / 4)
        assert row["auc"] is None
    assert "no positive image" in _find(rows_4, seed=0, level="normal")["reason"]
    assert "no negative image" in _find(rows_4, seed=0, level=POSITIVE)["reason"]

    correct = _find(rows, seed=0, variable="prediction", level="correct")
    assert correct["n"] == 9
    assert correct["accuracy"] == 1.0
    assert correct["auc"] == pytest.approx(1.0)
    # Three wrong calls: fewer than min_n, so n only.
    wrong = _find(rows, seed=0, variable="prediction", level="wrong")
    assert wrong["n"] == 3
    assert wrong["reason"] == SMALL_STRATUM_REASON
    assert all(wrong[k] is None for k in PERFORMANCE_KEYS[6:-1])

    # The perfect cell has every level too, an empty "wrong" stratum included.
    wrong_1 = _find(rows, seed=1, variable="prediction", level="wrong")
    assert wrong_1["n"] == 0
    assert _find(rows, seed=1, variable="site", level="A")["accuracy"] == 1.0


def test_stratified_performance_order_and_json(predictions):
    rows = stratified_performance(predictions, CLASSES, POSITIVE, {"site": SITE})
    keys = [(r["seed"], r["variable"]) for r in rows]
    assert keys == sorted(keys)
    levels = [r["level"] for r in rows if r["seed"] == 0]
    assert levels == ["correct", "wrong", "A", "B", *CLASSES]
    assert isinstance(rows[0]["seed"], int)
    json.dumps(rows, allow_nan=False)
    # Shuffled input, same output.
    shuffled = predictions.sample(frac=1.0, random_state=0)
    assert stratified_performance(shuffled, CLASSES, POSITIVE, {"site": SITE}) == rows


def test_csv_round_trip_reads_nan_perturbation_as_intact(predictions):
    buffer = io.StringIO()
    predictions.to_csv(buffer, index=False)
    buffer.seek(0)
    read_back = pd.read_csv(buffer)
    assert read_back["perturbation"].isna().any()
    assert stratified_performance(read_back, CLASSES, POSITIVE, {"site": SITE}) == (
        stratified_performance(predictions, CLASSES, POSITIVE, {"site": SITE})
    )


def test_samples_missing_from_a_variable_are_left_out(predictions):
    partial = SITE.copy()
    partial.iloc[0] = np.nan  # s00 has no site
    partial = partial.drop(["s05"])  # s05 is not in the table at all
    rows = stratified_performance(predictions, CLASSES, POSITIVE, {"site": partial}, min_n=1)
    assert _find(rows, seed=0, variable="site", level="A")["n"] == 4
    assert _find(rows, seed=0, variable="site", level="B")["n"] == 6


def test_missing_columns_and_bad_arguments_are_named(predictions):
    with pytest.raises(XaibenchError, match="called_positive"):
        stratified_performance(predictions.drop(columns="called_positive"), CLASSES, POSITIVE, None)
    with pytest.raises(XaibenchError, match="prob_osteoporosis"):
        stratified_performance(predictions.drop(columns="prob_osteoporosis"), CLASSES, POSITIVE, {})
    with pytest.raises(XaibenchError, match="positive_class"):
        stratified_performance(predictions, CLASSES, "fracture", None)
    with pytest.raises(XaibenchError, match="true_class"):
        stratified_performance(predictions, CLASSES, POSITIVE, {"true_class": SITE})
    with pytest.raises(XaibenchError, match="'site' shares no sample_id"):
        stratified_performance(
            predictions, CLASSES, POSITIVE, {"site": SITE.reset_index(drop=True)}
        )
    with pytest.raises(XaibenchError, match="min_n"):
        stratified_performance(predictions, CLASSES, POSITIVE, None, min_n=0)
    with pytest.raises(XaibenchError, match="level"):
        stratified_performance(predictions, CLASSES, POSITIVE, None, level=0.0)
    bad = predictions.copy()
    bad.loc[0, "label"] = 3
    with pytest.raises(XaibenchError, match="'label'"):
        stratified_performance(bad, CLASSES, POSITIVE, None)
    twice = pd.concat([predictions, predictions.iloc[:1]])
    with pytest.raises(XaibenchError, match="sample_id"):
        stratified_performance(twice, CLASSES, POSITIVE, None)


# ---------------------------------------------------------------------------- explanations


@pytest.fixture
def explanations():
    iou = np.linspace(0.0, 0.55, 12)
    deletion = np.arange(12, dtype=float)
    deletion[[0, 1]] = np.nan  # e.g. an empty mask
    frames = []
    for metric, saliency, region, values in [
        ("iou", "gradcam", "bone", iou),
        ("deletion", "gradcam", "", deletion),
    ]:
        frames.append(
            pd.DataFrame(
                {
                    "backbone": "vit",
                    "strategy": "lora",
                    "seed": 0,
                    "sample_id": IDS,
                    "label": LABELS,
                    "metric": metric,
                    "saliency": saliency,
                    "region": region,
                    "value": values,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def test_stratified_explanations_known_answers(explanations, predictions):
    rows = stratified_explanations(
        explanations, predictions, CLASSES, POSITIVE, {"site": SITE}, resamples=200, min_n=3
    )
    assert all(tuple(row) == EXPLANATION_KEYS for row in rows)
    deletion = np.arange(12, dtype=float)

    # NaN values leave n: site A of "deletion" holds s02..s05 only.
    row = _find(rows, metric="deletion", variable="site", level="A")
    assert row["region"] == ""
    assert row["n"] == 4
    assert row["mean"] == pytest.approx(deletion[2:6].mean())
    low, high = bootstrap_mean_ci(deletion[2:6], resamples=200, seed=0)
    assert (row["low"], row["high"]) == pytest.approx((low, high))
    assert row["reason"] is None

    # true_class "normal" of "deletion": s00, s01 NaN, so 2 values < min_n=3: suppressed.
    row = _find(rows, metric="deletion", variable="true_class", level="normal")
    assert row["n"] == 2
    assert row["mean"] is None
    assert row["reason"] == SMALL_STRATUM_REASON

    # prediction: wrong calls are s02, s06, s10.
    row = _find(rows, metric="iou", variable="prediction", level="wrong")
    iou = np.linspace(0.0, 0.55, 12)
    assert row["n"] == 3
    assert row["mean"] == pytest.approx(iou[[2, 6, 10]].mean())
    row = _find(rows, metric="iou", variable="prediction", level="correct")
    assert row["n"] == 9

    # Sorted by metric within the cell ("deletion" before "iou"), then variable and level.
    order = [(r["metric"], r["variable"]) for r in rows]
    assert order == sorted(order)
    json.dumps(rows, allow_nan=False)
    # Same seed, same table.
    again = stratified_explanations(
        explanations, predictions, CLASSES, POSITIVE, {"site": SITE}, resamples=200, min_n=3
    )
    assert again == rows


def test_single_value_stratum_has_mean_without_interval(explanations, predictions):
    rows = stratified_explanations(
        explanations, predictions, CLASSES, POSITIVE, None, resamples=50, min_n=1
    )
    row = _find(rows, metric="deletion", variable="prediction", level="wrong")
    # s02 (2.0), s06 (6.0), s10 (10.0) all defined
    assert row["n"] == 3
    one = explanations.copy()
    one.loc[one["sample_id"].isin(["s06", "s10"]), "value"] = np.nan
    rows = stratified_explanations(one, predictions, CLASSES, POSITIVE, None, resamples=50, min_n=1)
    row = _find(rows, metric="deletion", variable="prediction", level="wrong")
    assert row["n"] == 1
    assert row["mean"] == 2.0
    assert row["low"] is None
    assert "2 non-NaN" in row["reason"]


def test_explanations_errors_name_the_column(explanations, predictions):
    with pytest.raises(XaibenchError, match="'value'"):
        stratified_explanations(
            explanations.drop(columns="value"), predictions, CLASSES, POSITIVE, None
        )
    with pytest.raises(XaibenchError, match="resamples"):
        stratified_explanations(explanations, predictions, CLASSES, POSITIVE, None, resamples=0)
    text = explanations.astype({"value": object})
    text.loc[0, "value"] = "high"
    with pytest.raises(XaibenchError, match="'value'"):
        stratified_explanations(text, predictions, CLASSES, POSITIVE, None)


# ------------------------------------------------------------------------- strata_from_table


def test_strata_from_table_bands_and_levels():
    ids = [f"p{i}" for i in range(100)]
    table = pd.DataFrame(
        {
            "sample_id": ids,
            "age": np.arange(1, 101),  # quartiles 1, 25.75, 50.5, 75.25, 100
            "sex": ["F", "M"] * 50,
            "site": np.arange(100) % 3,  # 3 distinct numbers <= max_levels: kept as is
            "scanner": "X",  # one level: dropped
        }
    )
    strata = strata_from_table(table, ["age", "sex", "site", "scanner"])
    assert list(strata) == ["age", "sex", "site"]
    age = strata["age"]
    assert list(age.index[:2]) == ["p0", "p1"]
    expected = ["< 25.75", "[25.75, 50.5)", "[50.5, 75.25)", ">= 75.25"]
    assert list(age.cat.categories) == expected  # open outer bands: no extreme value printed
    assert age.value_counts().reindex(expected).tolist() == [25, 25, 25, 25]
    assert age["p0"] == "< 25.75"
    assert age["p25"] == "[25.75, 50.5)"  # 26 is at or past 25.75
    assert age["p99"] == ">= 75.25"
    assert strata["sex"]["p1"] == "M"
    assert sorted(strata["site"].unique()) == [0, 1, 2]


def test_strata_from_table_index_ids_nan_and_integer_edges():
    table = pd.DataFrame(
        {"age": [40.0, 45, 50, 55, 60, 65, 70, 75, np.nan]}, index=list("abcdefghi")
    )
    strata = strata_from_table(table, ["age"], max_levels=4)
    assert list(strata["age"].cat.categories) == [
        "< 48.75",
        "[48.75, 57.5)",
        "[57.5, 66.25)",
        ">= 66.25",
    ]
    assert pd.isna(strata["age"]["i"])
    assert strata["age"]["a"] == "< 48.75"


def test_rare_values_never_become_a_label():
    ids = [f"p{i}" for i in range(30)]
    table = pd.DataFrame(
        {
            "sample_id": ids,
            "site": ["A"] * 12 + ["B"] * 12 + ["ZZ-ONE-OFF"] * 2 + ["C"] * 4,
            "name": [f"Patient {i}" for i in range(30)],  # one per person: merged away entirely
        }
    )
    strata = strata_from_table(table, ["site", "name"], min_level=5)
    assert set(strata) == {"site"}  # "name" is one merged level: it cannot stratify, dropped
    assert strata["site"].value_counts().to_dict() == {"A": 12, "B": 12, RARE_LEVEL: 6}


def test_strata_from_table_feeds_stratified_performance(predictions):
    table = pd.DataFrame({"sample_id": IDS, "age": np.arange(12) * 10.0})
    strata = strata_from_table(table, ["age"], max_levels=4)
    rows = stratified_performance(predictions, CLASSES, POSITIVE, strata, min_n=1)
    bands = [r["level"] for r in rows if r["seed"] == 0 and r["variable"] == "age"]
    assert bands == list(strata["age"].cat.categories)  # ascending, not alphabetical
    assert sum(r["n"] for r in rows if r["seed"] == 0 and r["variable"] == "age") == 12


def test_strata_from_table_errors_name_the_column():
    table = pd.DataFrame({"sample_id": ["a", "b"], "age": [1.0, 2.0]})
    with pytest.raises(XaibenchError, match="'bmi'"):
        strata_from_table(table, ["age", "bmi"])
    with pytest.raises(XaibenchError, match="sample_id"):
        strata_from_table(pd.DataFrame({"sample_id": ["a", "a"], "age": [1, 2]}), ["age"])
    with pytest.raises(XaibenchError, match="max_levels"):
        strata_from_table(table, ["age"], max_levels=0)
    with pytest.raises(XaibenchError, match="prediction"):
        strata_from_table(table.assign(prediction=1), ["prediction"])
