"""Known answers of per-class metrics: scikit-learn's AUC, recall and confusion matrix, and the
DeLong and Wilson intervals of xaibench.stats.intervals."""

import json
import math

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics import recall_score, roc_auc_score

from xaibench.errors import XaibenchError
from xaibench.stats.classwise import confusion_matrix, macro_auc, one_vs_rest
from xaibench.stats.intervals import delong_auc_ci, wilson_ci

CLASSES = ("normal", "osteopenia", "osteoporosis")


def _sample(n=120, seed=0, k=3):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(0.0, 1.0, (n, k))
    logits[np.arange(n), labels] += 1.0  # informative but imperfect
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return labels, probs


def test_one_vs_rest_matches_sklearn_and_intervals():
    labels, probs = _sample()
    rows = one_vs_rest(labels, probs, CLASSES, level=0.9)
    predicted = probs.argmax(axis=1)
    assert [row["class"] for row in rows] == list(CLASSES)
    for index, row in enumerate(rows):
        positive = labels == index
        assert row["index"] == index
        assert row["reason"] is None
        assert row["auc"] == pytest.approx(roc_auc_score(positive, probs[:, index]), abs=1e-12)
        _, low, high = delong_auc_ci(positive, probs[:, index], level=0.9)
        assert (row["auc_low"], row["auc_high"]) == pytest.approx((low, high))
        called = predicted == index
        assert row["sensitivity"] == pytest.approx(recall_score(positive, called))
        assert row["specificity"] == pytest.approx(recall_score(positive, called, pos_label=0))
        assert row["tp"] + row["fn"] == row["n_positive"] == int(positive.sum())
        assert row["tn"] + row["fp"] == row["n_negative"] == int((~positive).sum())
        assert row["n"] == labels.size
        low, high = wilson_ci(row["tp"], row["tp"] + row["fn"], 0.9)
        assert (row["sensitivity_low"], row["sensitivity_high"]) == pytest.approx((low, high))
        low, high = wilson_ci(row["tn"], row["tn"] + row["fp"], 0.9)
        assert (row["specificity_low"], row["specificity_high"]) == pytest.approx((low, high))
    json.dumps(rows, allow_nan=False)


def test_counts_by_hand():
    probs = np.array(
        [
            [0.8, 0.1, 0.1],  # true 0, predicted 0
            [0.2, 0.5, 0.3],  # true 0, predicted 1
            [0.1, 0.6, 0.3],  # true 1, predicted 1
            [0.1, 0.2, 0.7],  # true 2, predicted 2
            [0.5, 0.2, 0.3],  # true 2, predicted 0
        ]
    )
    labels = [0, 0, 1, 2, 2]
    rows = {row["class"]: row for row in one_vs_rest(labels, probs, CLASSES)}
    counts = {name: tuple(row[k] for k in ("tp", "fn", "tn", "fp")) for name, row in rows.items()}
    assert counts == {
        "normal": (1, 1, 2, 1),
        "osteopenia": (1, 0, 3, 1),
        "osteoporosis": (1, 1, 3, 0),
    }
    assert rows["osteopenia"]["sensitivity"] == 1.0
    assert rows["osteopenia"]["specificity"] == 0.75
    # One osteopenia image: the AUC is defined (1.0: 0.6 beats every other 0.1-0.5) but
    # DeLong's variance needs two per class.
    assert rows["osteopenia"]["auc"] == pytest.approx(1.0)
    assert rows["osteopenia"]["auc_low"] is None
    assert "two images per class" in rows["osteopenia"]["reason"]


def test_missing_class_gets_none_with_reason():
    labels, probs = _sample(n=60, seed=2)
    keep = labels != 1  # no osteopenia in the test set
    labels, probs = labels[keep], probs[keep]
    rows = one_vs_rest(labels, probs, CLASSES)
    absent = rows[1]
    assert absent["auc"] is None
    assert absent["auc_low"] is None
    assert absent["sensitivity"] is None
    assert absent["specificity"] is not None
    assert absent["n_positive"] == 0
    assert "osteopenia" in absent["reason"]
    assert rows[0]["auc"] is not None
    # The macro AUC averages the two defined classes only.
    assert macro_auc(labels, probs, CLASSES) == pytest.approx((rows[0]["auc"] + rows[2]["auc"]) / 2)


def test_class_in_every_image_has_no_auc_or_specificity():
    probs = np.array([[0.6, 0.4], [0.3, 0.7], [0.9, 0.1]])
    rows = one_vs_rest([0, 0, 0], probs, ["a", "b"])
    assert rows[0]["auc"] is None
    assert rows[0]["specificity"] is None
    assert "negative" in rows[0]["reason"]
    assert rows[0]["sensitivity"] == pytest.approx(2 / 3)
    assert macro_auc([0, 0, 0], probs, ["a", "b"]) is None


def test_macro_auc_equals_sklearn_ovr_macro():
    labels, probs = _sample(n=200, seed=5)
    expected = roc_auc_score(labels, probs, multi_class="ovr", average="macro")
    assert macro_auc(labels, probs, CLASSES) == pytest.approx(expected, abs=1e-12)


def test_confusion_matrix_equals_sklearn():
    labels, probs = _sample(n=90, seed=4)
    frame = confusion_matrix(labels, probs, CLASSES)
    expected = sk_confusion_matrix(labels, probs.argmax(axis=1), labels=[0, 1, 2])
    np.testing.assert_array_equal(frame.to_numpy(), expected)
    assert list(frame.index) == list(CLASSES)
    assert list(frame.columns) == list(CLASSES)
    assert (frame.index.name, frame.columns.name) == ("true", "predicted")


@pytest.mark.parametrize(
    ("labels", "probs", "names", "match"),
    [
        ([0, 1], [[0.5, 0.5, 0.0]] * 2, ["a", "b"], "probs"),
        ([0, 1], [[0.5, math.nan], [0.5, 0.5]], ["a", "b"], "probs"),
        ([0, 2], [[0.5, 0.5]] * 2, ["a", "b"], "labels"),
        ([0, 0.5], [[0.5, 0.5]] * 2, ["a", "b"], "labels"),
        ([0], [[0.5, 0.5]] * 2, ["a", "b"], "labels"),
        ([0, 1], [[0.5, 0.5]] * 2, ["a", "a"], "class_names"),
        ([0, 1], [[0.5, 0.5]] * 2, "ab", "class_names"),
    ],
)
def test_invalid_inputs_name_the_argument(labels, probs, names, match):
    for function in (one_vs_rest, macro_auc, confusion_matrix):
        with pytest.raises(XaibenchError, match=match):
            function(labels, probs, names)


def test_level_is_validated():
    with pytest.raises(XaibenchError, match="level"):
        one_vs_rest([0, 1], [[0.6, 0.4], [0.4, 0.6]], ["a", "b"], level=1.5)
