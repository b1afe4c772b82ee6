"""Confidence intervals on the records: DeLong for AUC, Wilson over each rate's own
denominator, image-level bootstraps for explanation scores and Δ."""

import numpy as np
import pytest

from xaibench.errors import XaibenchError
from xaibench.metrics.base import Predictions, SaliencyRegionMetric
from xaibench.metrics.explanation import DeltaRegion, delta_bootstrap_ci
from xaibench.metrics.localisation import RelevanceMass
from xaibench.metrics.performance import NPV, PPV, PositiveAUC, Sensitivity, Specificity
from xaibench.stats.intervals import bootstrap_auc_ci, delong_auc_ci, wilson_ci


def predictions(seed: int = 0, n: int = 120) -> Predictions:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3)) + 1.5 * np.eye(3)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return Predictions(labels, probs, positive_class=2, threshold=0.4)


def test_auc_carries_the_delong_interval():
    p = predictions()
    mv = PositiveAUC().compute(p)
    auc, low, high = delong_auc_ci(p.is_positive, p.scores)
    assert mv.value == pytest.approx(auc)
    assert mv.ci == (low, high)
    assert low < mv.value < high


def test_auc_bootstrap_interval_is_an_option():
    p = predictions()
    mv = PositiveAUC(ci_method="bootstrap", resamples=500, seed=3).compute(p)
    expected = bootstrap_auc_ci(p.is_positive, p.scores, resamples=500, seed=3)
    assert mv.value == pytest.approx(expected[0])
    assert mv.ci == expected[1:]
    assert mv.details["ci_method"] == "bootstrap"
    delong = PositiveAUC().compute(p).ci
    assert mv.ci != delong
    assert mv.ci[0] == pytest.approx(delong[0], abs=0.03)  # two estimates of one interval
    assert mv.ci[1] == pytest.approx(delong[1], abs=0.03)


def test_rates_use_wilson_over_their_own_denominator():
    p = predictions()
    called = p.scores >= p.threshold
    tp = int((called & p.is_positive).sum())
    tn = int((~called & ~p.is_positive).sum())
    sens, spec = Sensitivity().compute(p), Specificity().compute(p)
    assert sens.n == int(p.is_positive.sum())  # positives only, not all images
    assert sens.ci == wilson_ci(tp, sens.n)
    assert spec.ci == wilson_ci(tn, int((~p.is_positive).sum()))


def test_predictive_values_use_wilson_over_the_calls():
    p = predictions()
    called = p.scores >= p.threshold
    tp = int((called & p.is_positive).sum())
    tn = int((~called & ~p.is_positive).sum())
    ppv, npv = PPV().compute(p), NPV().compute(p)
    assert ppv.n == int(called.sum())
    assert ppv.value == pytest.approx(tp / called.sum())
    assert ppv.ci == wilson_ci(tp, ppv.n)
    assert npv.n == int((~called).sum())
    assert npv.value == pytest.approx(tn / (~called).sum())
    assert npv.ci == wilson_ci(tn, npv.n)
    nobody = Predictions(p.labels, p.probs, positive_class=2, threshold=2.0)  # no positive call
    with pytest.raises(XaibenchError, match="no sample was called positive"):
        PPV().compute(nobody)


def test_delta_interval_is_paired_and_brackets_the_value():
    intact = predictions(1)
    rng = np.random.default_rng(2)
    noisy = np.clip(intact.probs + rng.normal(0, 0.3, intact.probs.shape), 1e-6, None)
    perturbed = Predictions(
        intact.labels, noisy / noisy.sum(1, keepdims=True), intact.positive_class
    )
    mv = DeltaRegion().compute(intact, perturbed)
    assert mv.ci is not None
    assert mv.ci[0] <= mv.value <= mv.ci[1]
    # unperturbed predictions: every resample's delta is exactly 0 (paired, same images)
    assert delta_bootstrap_ci(intact, intact) == (0.0, 0.0)
    assert delta_bootstrap_ci(intact, perturbed) == delta_bootstrap_ci(intact, perturbed)


def test_explanation_scores_get_a_bootstrap_interval_over_images():
    metric: SaliencyRegionMetric = RelevanceMass()
    values = np.random.default_rng(0).uniform(0, 1, 200)
    values[:5] = np.nan  # undefined images are left out
    mv = metric.aggregate(values)
    assert mv.n == 195
    assert mv.ci is not None
    assert mv.ci[0] < mv.value < mv.ci[1]
    half_width = (mv.ci[1] - mv.ci[0]) / 2
    assert half_width == pytest.approx(1.96 * np.nanstd(values) / np.sqrt(195), rel=0.2)
    assert metric.aggregate(np.array([0.5])).ci is None


def test_delta_interval_equals_the_midrank_auc_of_every_resample():
    # The interval from draw counts must equal the one computed the textbook way: draw the
    # same resamples, rank each with scipy (midranks for ties) and take U from the ranks.
    from scipy.stats import rankdata

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 60)
    labels[:4] = [0, 1, 2, 2]
    probs = rng.dirichlet(np.ones(3), 60)
    probs[::5] = np.round(probs[::5], 1)  # ties across classes
    intact = Predictions(labels, probs, positive_class=2, threshold=0.5)
    shaken = np.roll(probs, 7, axis=0)
    perturbed = Predictions(labels, shaken, positive_class=2, threshold=0.5)
    got = delta_bootstrap_ci(intact, perturbed, resamples=300, seed=5)

    positive = np.flatnonzero(intact.is_positive)
    negative = np.flatnonzero(~intact.is_positive)
    draw = np.random.default_rng(5)
    idx = np.concatenate(
        [
            positive[draw.integers(0, len(positive), (300, len(positive)))],
            negative[draw.integers(0, len(negative), (300, len(negative)))],
        ],
        axis=1,
    )
    n1, n0 = len(positive), len(negative)

    def aucs(scores):
        ranks = rankdata(scores[idx], axis=1)
        return (ranks[:, :n1].sum(axis=1) - n1 * (n1 + 1) / 2) / (n1 * n0)

    deltas = aucs(intact.scores) - np.maximum(aucs(perturbed.scores), 0.5)
    assert got == (float(np.quantile(deltas, 0.025)), float(np.quantile(deltas, 0.975)))
    assert got[0] < got[1]
