"""Known answers of reliability curves and the expected calibration error.

References: a 6-sample example worked by hand, ``sklearn.calibration.calibration_curve`` on the
bins where its edge convention agrees with ours, and simulated perfectly calibrated data.
"""

import json
import math

import numpy as np
import pytest
from sklearn.calibration import calibration_curve

from xaibench.errors import XaibenchError
from xaibench.stats.calibration import (
    CURVE_COLUMNS,
    expected_calibration_error,
    positive_class_calibration,
    reliability_curve,
    top_label_calibration,
)

# Five bins of width 0.2: [0, .2) [.2, .4) [.4, .6) [.6, .8) [.8, 1].
HAND_CONFIDENCE = [0.1, 0.15, 0.45, 0.55, 0.9, 0.95]
HAND_OUTCOME = [0, 0, 1, 0, 1, 1]


def test_hand_computed_curve_and_ece():
    curve = reliability_curve(HAND_CONFIDENCE, HAND_OUTCOME, n_bins=5)
    assert list(curve.columns) == list(CURVE_COLUMNS)
    assert curve["bin_low"].tolist() == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    assert curve["bin_high"].tolist() == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert curve["n"].tolist() == [2, 0, 2, 0, 2]
    filled = curve[curve["n"] > 0]
    assert filled["mean_confidence"].tolist() == pytest.approx([0.125, 0.5, 0.925])
    assert filled["observed"].tolist() == pytest.approx([0.0, 0.5, 1.0])
    # Empty bins are kept, with NaN means, so every curve has n_bins rows.
    assert curve.loc[curve["n"] == 0, ["mean_confidence", "observed"]].isna().all().all()
    # ECE = 2/6 * 0.125 + 2/6 * 0 + 2/6 * 0.075
    expected = (2 * 0.125 + 2 * 0.0 + 2 * 0.075) / 6
    assert expected_calibration_error(HAND_CONFIDENCE, HAND_OUTCOME, n_bins=5) == pytest.approx(
        expected, abs=1e-12
    )


@pytest.mark.parametrize("n_bins", [1, 5, 10, 15])
def test_curve_matches_sklearn_on_non_empty_bins(n_bins):
    rng = np.random.default_rng(3)
    confidence = rng.beta(2.0, 3.0, 500)  # continuous: no value lies on a bin edge
    outcome = rng.random(500) < confidence**1.3
    curve = reliability_curve(confidence, outcome, n_bins=n_bins)
    prob_true, prob_pred = calibration_curve(outcome, confidence, n_bins=n_bins)
    filled = curve[curve["n"] > 0]
    np.testing.assert_allclose(filled["observed"], prob_true, atol=1e-12)
    np.testing.assert_allclose(filled["mean_confidence"], prob_pred, atol=1e-12)
    assert int(curve["n"].sum()) == 500


def test_bin_edges_are_left_closed_and_last_bin_closed():
    edges = reliability_curve([0.5], [1], n_bins=5)["bin_low"].to_numpy()
    confidence = np.append(edges, 1.0)  # 0, .2, .4, .6, .8 and 1
    curve = reliability_curve(confidence, np.ones(confidence.size), n_bins=5)
    # Each edge falls in the bin that starts there; 1.0 in the last bin.
    assert curve["n"].tolist() == [1, 1, 1, 1, 2]
    # scikit-learn's bins are right-closed: an interior edge belongs to the bin below it.
    _, sk_pred = calibration_curve(np.ones(3), [0.2, 0.2, 0.1], n_bins=5)
    assert sk_pred.tolist() == pytest.approx([(0.2 + 0.2 + 0.1) / 3])


def test_perfectly_calibrated_data_has_small_ece_and_miscalibrated_large():
    rng = np.random.default_rng(7)
    confidence = rng.random(20_000)
    calibrated = rng.random(20_000) < confidence
    assert expected_calibration_error(confidence, calibrated) < 0.02
    # Outcome probability c**2: the expected gap is the mean of c - c**2 = 1/6.
    overconfident = rng.random(20_000) < confidence**2
    assert expected_calibration_error(confidence, overconfident) == pytest.approx(1 / 6, abs=0.02)


def test_top_label_and_positive_class_wrappers():
    probs = np.array(
        [
            [0.7, 0.2, 0.1],  # predicts 0, true 0: correct at 0.7
            [0.1, 0.3, 0.6],  # predicts 2, true 1: wrong at 0.6
            [0.2, 0.1, 0.7],  # predicts 2, true 2: correct at 0.7
            [0.05, 0.9, 0.05],  # predicts 1, true 1: correct at 0.9
        ]
    )
    labels = np.array([0, 1, 2, 1])
    top = top_label_calibration(probs, labels, n_bins=10)
    assert top.kind == "top_label"
    assert top.n_bins == 10
    expected_top = expected_calibration_error([0.7, 0.6, 0.7, 0.9], [1, 0, 1, 1], n_bins=10)
    assert top.ece == pytest.approx(expected_top)
    assert len(top.curve) == 10

    positive = positive_class_calibration(probs, labels, positive_index=2, n_bins=4)
    assert positive.kind == "positive_class"
    expected_positive = expected_calibration_error([0.1, 0.6, 0.7, 0.05], [0, 0, 1, 0], n_bins=4)
    assert positive.ece == pytest.approx(expected_positive)
    # to_dict is JSON-ready: empty bins give None, not NaN.
    payload = positive.to_dict()
    json.dumps(payload, allow_nan=False)
    assert payload["curve"][0]["n"] == 2
    assert [row["observed"] is None for row in payload["curve"]] == [False, True, False, True]


def test_result_is_frozen():
    result = top_label_calibration([[0.6, 0.4]], [0])
    with pytest.raises(AttributeError):
        result.ece = 0.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("confidence", "outcome", "n_bins", "names"),
    [
        ([0.1, math.nan], [0, 1], 10, "confidence"),
        ([0.1, 1.2], [0, 1], 10, "confidence"),
        ([-0.1, 0.5], [0, 1], 10, "confidence"),
        ([], [], 10, "confidence"),
        ([0.1, 0.5], [0, 2], 10, "outcome"),
        ([0.1, 0.5], [0, 1, 1], 10, "outcome"),
        ([0.1, 0.5], [0, math.nan], 10, "outcome"),
        ([0.1, 0.5], [0, 1], 0, "n_bins"),
        ([0.1, 0.5], [0, 1], 2.5, "n_bins"),
    ],
)
def test_invalid_inputs_name_the_argument(confidence, outcome, n_bins, names):
    with pytest.raises(XaibenchError, match=names):
        reliability_curve(confidence, outcome, n_bins=n_bins)


@pytest.mark.parametrize(
    ("probs", "labels", "match"),
    [
        ([[0.5, math.nan]], [0], "probs"),
        ([[0.5, 1.5]], [0], "probs"),
        ([0.5, 0.5], [0], "probs"),
        ([[0.5, 0.5]], [2], "labels"),
        ([[0.5, 0.5]], [0.5], "labels"),
        ([[0.5, 0.5]], [0, 1], "labels"),
    ],
)
def test_wrappers_validate(probs, labels, match):
    with pytest.raises(XaibenchError, match=match):
        top_label_calibration(probs, labels)
    with pytest.raises(XaibenchError, match=match):
        positive_class_calibration(probs, labels, 0)


def test_positive_index_is_validated():
    with pytest.raises(XaibenchError, match="positive_index"):
        positive_class_calibration([[0.5, 0.5]], [0], 2)
    with pytest.raises(XaibenchError, match="positive_index"):
        positive_class_calibration([[0.5, 0.5]], [0], "1")
