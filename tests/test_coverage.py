"""Coverage of the nominal-95% intervals: do they contain the true value 95% of the time?

A known answer pins one formula; coverage checks that the formula is the right one to use.
Each check uses settings where the interval's asymptotics are reasonable and either computes the
coverage exactly (Wilson: a sum over the binomial distribution) or estimates it from enough
simulated data sets, with a fixed seed, that its Monte Carlo error (two standard errors:
about +/-0.5% at 8,000 data sets) sits well inside the accepted band of 93% to 97%.
"""

import math

import numpy as np
import pytest
from scipy.stats import binom, norm

from xaibench.stats.comparisons import delong_comparison, mcnemar_comparison
from xaibench.stats.intervals import delong_auc_ci, wald_ci, wilson_ci

LOW, HIGH = 0.93, 0.97  # accepted band for a nominal 95% interval


def _exact_coverage(interval, p: float, n: int) -> float:
    """P(interval(K, n) contains p) for K ~ Binomial(n, p), summed over every outcome."""
    k = np.arange(n + 1)
    covered = np.array([low <= p <= high for low, high in (interval(int(j), n) for j in k)])
    return float(binom.pmf(k, n, p)[covered].sum())


def _binormal_labels(n_pos: int, n_neg: int) -> np.ndarray:
    return np.r_[np.ones(n_pos, dtype=int), np.zeros(n_neg, dtype=int)]


# ------------------------------------------------------------------------------- Wilson


@pytest.mark.parametrize(("p", "n"), [(0.3, 200), (0.85, 150), (0.5, 60)])
def test_wilson_exact_coverage_is_near_nominal(p, n):
    coverage = _exact_coverage(wilson_ci, p, n)
    assert LOW <= coverage <= HIGH, coverage


def test_wilson_mean_coverage_over_proportions_is_nominal():
    # Averaged over p, the Wilson interval's coverage is very close to nominal (Brown, Cai &
    # DasGupta 2001, figure 5); pointwise it oscillates around it.
    coverages = [_exact_coverage(wilson_ci, p, 100) for p in np.linspace(0.05, 0.95, 91)]
    assert 0.945 <= float(np.mean(coverages)) <= 0.955


def test_coverage_check_catches_an_undercovering_interval():
    # Negative control: the Wald interval at p = 0.1, n = 40 is the classic failure (Brown et
    # al. 2001), so the band above is tight enough to tell a bad interval from a good one.
    assert _exact_coverage(wald_ci, 0.1, 40) < LOW
    assert LOW <= _exact_coverage(wilson_ci, 0.1, 40) <= HIGH


# ------------------------------------------------------------------------------- DeLong


def test_delong_auc_interval_coverage_binormal():
    # Scores N(d, 1) for positives and N(0, 1) for negatives: the true AUC is
    # P(X > Y) = Phi(d / sqrt(2)) = 0.760 for d = 1. 100 positives, 100 negatives.
    rng = np.random.default_rng(20250101)
    d, trials = 1.0, 10_000
    true_auc = float(norm.cdf(d / math.sqrt(2)))
    y = _binormal_labels(100, 100)
    hits = 0
    for _ in range(trials):
        scores = np.r_[rng.normal(d, 1.0, 100), rng.normal(0.0, 1.0, 100)]
        _, low, high = delong_auc_ci(y, scores)
        hits += low <= true_auc <= high
    assert LOW <= hits / trials <= HIGH, hits / trials


def test_delong_difference_interval_coverage_correlated_binormal():
    # Two scorers of the same cases with correlated noise (rho = 0.5); each is binormal with
    # unit variances, so AUC_a - AUC_b = Phi(1 / sqrt 2) - Phi(0.6 / sqrt 2) = 0.0959.
    rng = np.random.default_rng(20250102)
    shift_a, shift_b, rho, trials = 1.0, 0.6, 0.5, 8_000
    true_difference = float(norm.cdf(shift_a / math.sqrt(2)) - norm.cdf(shift_b / math.sqrt(2)))
    y = _binormal_labels(100, 100)
    hits = 0
    for _ in range(trials):
        noise_a = rng.normal(size=y.size)
        noise_b = rho * noise_a + math.sqrt(1 - rho**2) * rng.normal(size=y.size)
        result = delong_comparison(y, noise_a + shift_a * y, noise_b + shift_b * y)
        assert result.ci is not None
        hits += result.ci[0] <= true_difference <= result.ci[1]
    assert LOW <= hits / trials <= HIGH, hits / trials


# ----------------------------------------------------------------------------- Newcombe


def test_newcombe_paired_interval_coverage():
    # 200 cases; P(both right) = 0.70, P(only a) = 0.10, P(only b) = 0.05, P(both wrong)
    # = 0.15: accuracies 0.80 and 0.75, true difference 0.05, positively correlated.
    rng = np.random.default_rng(20250103)
    probabilities, true_difference, trials = [0.70, 0.10, 0.05, 0.15], 0.05, 8_000
    hits = 0
    for _ in range(trials):
        counts = rng.multinomial(200, probabilities)
        correct_a = np.repeat([1, 1, 0, 0], counts)
        correct_b = np.repeat([1, 0, 1, 0], counts)
        result = mcnemar_comparison(correct_a, correct_b)
        assert result.ci is not None
        hits += result.ci[0] <= true_difference <= result.ci[1]
    assert LOW <= hits / trials <= HIGH, hits / trials
