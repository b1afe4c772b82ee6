"""Known answers of the confidence intervals and tests in xaibench.stats.intervals.

References are computed independently of the implementation: sklearn's AUC, DeLong's
structural components from their definition (an O(mn) double loop), scipy's Wilson interval
and bootstrap, and the Wald formula by hand.
"""

import math

import numpy as np
import pytest
from scipy.special import ndtri
from scipy.stats import binomtest, bootstrap, norm
from sklearn.metrics import roc_auc_score

from xaibench.errors import XaibenchError
from xaibench.stats import intervals
from xaibench.stats.intervals import (
    bootstrap_auc_ci,
    bootstrap_mean_ci,
    delong_auc_ci,
    delong_paired_test,
    wald_ci,
    wilson_ci,
)

Z95 = float(ndtri(0.975))


def _psi(x: float, y: float) -> float:
    return 1.0 if x > y else 0.5 if x == y else 0.0


def _structural_components(y_true, scores):
    """V10 (one per positive) and V01 (one per negative) from DeLong et al.'s definitions."""
    pos = [s for s, y in zip(scores, y_true, strict=True) if y == 1]
    neg = [s for s, y in zip(scores, y_true, strict=True) if y == 0]
    v10 = np.array([sum(_psi(x, y) for y in neg) / len(neg) for x in pos])
    v01 = np.array([sum(_psi(x, y) for x in pos) / len(pos) for y in neg])
    return v10, v01


def _labelled_sample(rng, n_pos, n_neg, shift, decimals=None):
    scores = np.concatenate([rng.normal(shift, 1.0, n_pos), rng.normal(0.0, 1.0, n_neg)])
    if decimals is not None:
        scores = np.round(scores, decimals)  # forces ties
    y = np.concatenate([np.ones(n_pos, dtype=int), np.zeros(n_neg, dtype=int)])
    order = rng.permutation(y.size)
    return y[order], scores[order]


# ---------------------------------------------------------------------------------- DeLong


@pytest.mark.parametrize("decimals", [None, 1, 0])
def test_delong_auc_equals_sklearn_with_and_without_ties(decimals):
    y, scores = _labelled_sample(np.random.default_rng(1), 37, 53, 0.8, decimals)
    auc, low, high = delong_auc_ci(y, scores)
    assert auc == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    assert low <= auc <= high


def test_delong_variance_on_hand_computed_example():
    # Positives 0.9, 0.6, 0.4; negatives 0.5, 0.4, 0.1 (one tie, at 0.4).
    # psi rows per positive: (1, 1, 1), (1, 1, 1), (0, 1/2, 1)
    # V10 = (1, 1, 1/2), V01 = (2/3, 5/6, 1), AUC = 5/6
    # S10 = var(V10, ddof=1) = 1/12, S01 = 1/36, variance = S10/3 + S01/3 = 1/27.
    y = [1, 0, 1, 0, 1, 0]
    scores = [0.9, 0.5, 0.6, 0.4, 0.4, 0.1]
    v10, v01 = _structural_components(y, scores)
    np.testing.assert_allclose(v10, [1, 1, 0.5])
    np.testing.assert_allclose(v01, [2 / 3, 5 / 6, 1])
    variance = np.var(v10, ddof=1) / 3 + np.var(v01, ddof=1) / 3
    assert variance == pytest.approx(1 / 27)

    auc, low, high = delong_auc_ci(y, scores)  # 95%: the upper bound is clipped at 1
    assert auc == pytest.approx(5 / 6)
    assert low == pytest.approx(5 / 6 - Z95 * math.sqrt(1 / 27), abs=1e-12)
    assert high == 1.0

    z50 = float(norm.ppf(0.75))  # narrow enough not to be clipped
    auc, low, high = delong_auc_ci(y, scores, level=0.5)
    assert low == pytest.approx(5 / 6 - z50 * math.sqrt(1 / 27), abs=1e-12)
    assert high == pytest.approx(5 / 6 + z50 * math.sqrt(1 / 27), abs=1e-12)


def test_delong_variance_matches_definition_on_random_tied_sample():
    y, scores = _labelled_sample(np.random.default_rng(2), 11, 17, 0.5, decimals=1)
    v10, v01 = _structural_components(y, scores)
    se = math.sqrt(np.var(v10, ddof=1) / v10.size + np.var(v01, ddof=1) / v01.size)
    auc, low, high = delong_auc_ci(y, scores, level=0.9)
    z90 = float(norm.ppf(0.95))
    assert auc == pytest.approx(v10.mean(), abs=1e-12)
    assert (low, high) == pytest.approx((auc - z90 * se, auc + z90 * se), abs=1e-12)


def test_delong_ci_roughly_matches_stratified_bootstrap():
    y, scores = _labelled_sample(np.random.default_rng(3), 150, 250, 1.0)
    auc_d, low_d, high_d = delong_auc_ci(y, scores)
    auc_b, low_b, high_b = bootstrap_auc_ci(y, scores, resamples=2000, seed=4)
    assert auc_d == auc_b
    assert low_b == pytest.approx(low_d, abs=0.02)
    assert high_b == pytest.approx(high_d, abs=0.02)


def test_perfect_separation_gives_zero_width_interval_at_one():
    assert delong_auc_ci([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == (1.0, 1.0, 1.0)


@pytest.mark.parametrize(
    ("y_true", "scores", "message"),
    [
        ([1, 1, 1], [0.1, 0.2, 0.3], "each class"),
        ([0, 0, 0], [0.1, 0.2, 0.3], "each class"),
        ([1, 0, 0, 0], [0.9, 0.2, 0.3, 0.1], "each class"),  # one positive: no variance
        ([1, 0, 1, 0], [0.1, float("nan"), 0.3, 0.4], "NaN"),
        ([1, 0, 1, 0], [0.1, 0.2, 0.3], "shape"),
        ([1, 0, 2, 0], [0.1, 0.2, 0.3, 0.4], "binary"),
        ([1, 0, float("nan"), 0], [0.1, 0.2, 0.3, 0.4], "binary"),
        ([[1, 0], [1, 0]], [[0.1, 0.2], [0.3, 0.4]], "1-D"),
    ],
)
def test_delong_rejects_bad_input(y_true, scores, message):
    with pytest.raises(XaibenchError, match=message):
        delong_auc_ci(y_true, scores)


@pytest.mark.parametrize("level", [0.0, 1.0, 1.5, -0.1, float("nan"), "high"])
def test_bad_level_is_rejected(level):
    y, scores = [0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9]
    for call in (
        lambda: delong_auc_ci(y, scores, level=level),
        lambda: bootstrap_auc_ci(y, scores, level=level),
        lambda: wilson_ci(1, 2, level=level),
        lambda: wald_ci(1, 2, level=level),
        lambda: bootstrap_mean_ci([1.0, 2.0], level=level),
    ):
        with pytest.raises(XaibenchError, match="level"):
            call()


# ------------------------------------------------------------------------- paired DeLong


def test_paired_test_identical_scores_give_no_difference():
    y, scores = _labelled_sample(np.random.default_rng(5), 40, 60, 0.7)
    assert delong_paired_test(y, scores, scores) == (0.0, 0.0, 1.0)
    # An order-preserving map leaves every structural component, hence the AUC, unchanged.
    assert delong_paired_test(y, scores, np.exp(scores)) == (0.0, 0.0, 1.0)


def test_paired_test_matches_delong_covariance_by_definition():
    rng = np.random.default_rng(6)
    y, scores_a = _labelled_sample(rng, 13, 19, 0.9, decimals=1)
    scores_b = np.round(scores_a + rng.normal(0.0, 1.0, y.size), 1)
    va10, va01 = _structural_components(y, scores_a)
    vb10, vb01 = _structural_components(y, scores_b)
    s10 = np.cov(np.vstack([va10, vb10]))  # DeLong's S10 and S01 matrices, ddof = 1
    s01 = np.cov(np.vstack([va01, vb01]))
    s = s10 / va10.size + s01 / va01.size
    difference = va10.mean() - vb10.mean()
    z = difference / math.sqrt(s[0, 0] + s[1, 1] - 2 * s[0, 1])
    result = delong_paired_test(y, scores_a, scores_b)
    assert result == pytest.approx((difference, z, 2 * norm.sf(abs(z))), abs=1e-10)
    # Swapping the scorers flips the sign and keeps the p-value.
    swapped = delong_paired_test(y, scores_b, scores_a)
    assert swapped == pytest.approx((-result[0], -result[1], result[2]), abs=1e-12)


def test_paired_test_detects_a_clearly_better_scorer():
    rng = np.random.default_rng(7)
    y = np.repeat([1, 0], 150)
    signal = y * 1.5
    good = signal + rng.normal(0.0, 1.0, y.size)
    poor = 0.2 * signal + rng.normal(0.0, 1.0, y.size)
    difference, z, p = delong_paired_test(y, good, poor)
    assert difference == pytest.approx(roc_auc_score(y, good) - roc_auc_score(y, poor))
    assert difference > 0.2
    assert z > 3
    assert p < 1e-3


def test_paired_test_zero_variance_with_a_difference_is_infinitely_significant():
    # Scorer b ties everything (every component 1/2), scorer a separates perfectly (all 1):
    # the components differ by a constant, so the estimated variance is zero.
    y = [1, 1, 0, 0]
    assert delong_paired_test(y, [0.9, 0.8, 0.2, 0.1], [0.5] * 4) == (0.5, math.inf, 0.0)
    assert delong_paired_test(y, [0.5] * 4, [0.9, 0.8, 0.2, 0.1]) == (-0.5, -math.inf, 0.0)


def test_paired_test_rejects_mismatched_scores():
    with pytest.raises(XaibenchError, match="scores #2"):
        delong_paired_test([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3])


# ----------------------------------------------------------------------------- proportions


@pytest.mark.parametrize("level", [0.8, 0.9, 0.95, 0.99])
@pytest.mark.parametrize(
    ("k", "n"),
    [(0, 1), (1, 1), (0, 10), (1, 10), (5, 10), (10, 10), (3, 7), (17, 250), (999, 1000)],
)
def test_wilson_matches_scipy(k, n, level):
    expected = binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    low, high = wilson_ci(k, n, level)
    assert low == pytest.approx(expected.low, abs=1e-12)
    assert high == pytest.approx(expected.high, abs=1e-12)


def test_wilson_known_answers_by_formula():
    z2 = Z95**2
    # k = 0: (0, z^2 / (n + z^2)); k = n: its mirror image.
    assert wilson_ci(0, 10) == (0.0, pytest.approx(z2 / (10 + z2), abs=1e-14))
    assert wilson_ci(10, 10) == (pytest.approx(10 / (10 + z2), abs=1e-14), 1.0)
    # k = n/2 is symmetric about 1/2 with half-width z sqrt(n/4 + z^2/4) / (n + z^2).
    half = Z95 * math.sqrt(10 * 0.25 + z2 / 4) / (10 + z2)
    low, high = wilson_ci(5, 10)
    assert (low, high) == pytest.approx((0.5 - half, 0.5 + half), abs=1e-14)
    assert (low, high) == pytest.approx((0.2365930905, 0.7634069095), abs=1e-9)


def test_wald_by_hand():
    half = Z95 * math.sqrt(0.5 * 0.5 / 10)
    assert wald_ci(5, 10) == pytest.approx((0.5 - half, 0.5 + half), abs=1e-14)
    assert wald_ci(5, 10) == pytest.approx((0.190102, 0.809898), abs=1e-6)
    assert wald_ci(0, 10) == (0.0, 0.0)  # the degenerate interval published tables show
    assert wald_ci(10, 10) == (1.0, 1.0)
    low, high = wald_ci(1, 10)  # 0.1 - 1.96 * 0.0949 < 0: clipped
    assert low == 0.0
    assert high == pytest.approx(0.1 + Z95 * math.sqrt(0.1 * 0.9 / 10), abs=1e-14)


@pytest.mark.parametrize("function", [wilson_ci, wald_ci])
@pytest.mark.parametrize(("k", "n"), [(0, 0), (3, 2), (-1, 5), (1.5, 3), (1, 4.0)])
def test_bad_counts_are_rejected(function, k, n):
    with pytest.raises(XaibenchError):
        function(k, n)


def test_numpy_integer_counts_are_accepted():
    assert wilson_ci(np.int64(5), np.int32(10)) == wilson_ci(5, 10)


# ------------------------------------------------------------------------------- bootstrap


def test_bootstrap_mean_is_seeded_and_reproducible():
    values = np.random.default_rng(8).normal(size=50)
    assert bootstrap_mean_ci(values, seed=3) == bootstrap_mean_ci(values, seed=3)
    assert bootstrap_mean_ci(values, seed=3) != bootstrap_mean_ci(values, seed=4)


def test_bootstrap_mean_drops_nan():
    values = np.random.default_rng(9).normal(size=30)
    with_nan = np.insert(values, [0, 10, 30], np.nan)
    assert bootstrap_mean_ci(with_nan, seed=1) == bootstrap_mean_ci(values, seed=1)


def test_bootstrap_mean_agrees_with_scipy_percentile_bootstrap():
    values = np.random.default_rng(10).normal(size=200)
    ours = bootstrap_mean_ci(values, resamples=20000, seed=0)
    theirs = bootstrap(
        (values,), np.mean, n_resamples=20000, method="percentile", random_state=1
    ).confidence_interval
    # Different random streams: endpoints agree to Monte Carlo error (~0.002 here).
    assert ours == pytest.approx((theirs.low, theirs.high), abs=0.01)
    low, high = ours
    assert low < values.mean() < high


def test_bootstrap_mean_coverage_is_near_nominal():
    rng = np.random.default_rng(11)
    hits = 0
    trials = 200
    for seed in range(trials):
        sample = rng.exponential(size=60)  # skewed, true mean 1
        low, high = bootstrap_mean_ci(sample, resamples=500, seed=seed)
        hits += low <= 1.0 <= high
    assert 0.88 <= hits / trials <= 0.99


def test_bootstrap_mean_wider_level_gives_wider_interval():
    values = np.random.default_rng(12).normal(size=40)
    low90, high90 = bootstrap_mean_ci(values, level=0.9)
    low99, high99 = bootstrap_mean_ci(values, level=0.99)
    assert low99 < low90 < high90 < high99


@pytest.mark.parametrize("values", [[], [1.0], [1.0, np.nan, np.nan], [1.0, np.inf, 2.0]])
def test_bootstrap_mean_rejects_too_few_or_infinite_values(values):
    with pytest.raises(XaibenchError):
        bootstrap_mean_ci(values)


@pytest.mark.parametrize("resamples", [0, -5, 2.5])
def test_bootstrap_rejects_bad_resamples(resamples):
    with pytest.raises(XaibenchError, match="resamples"):
        bootstrap_mean_ci([1.0, 2.0, 3.0], resamples=resamples)
    with pytest.raises(XaibenchError, match="resamples"):
        bootstrap_auc_ci([0, 1], [0.1, 0.2], resamples=resamples)


def test_bootstrap_auc_is_seeded_and_matches_sklearn():
    y, scores = _labelled_sample(np.random.default_rng(13), 30, 45, 0.6, decimals=1)
    result = bootstrap_auc_ci(y, scores, seed=2)
    assert result == bootstrap_auc_ci(y, scores, seed=2)
    assert result != bootstrap_auc_ci(y, scores, seed=3)
    auc, low, high = result
    assert auc == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    assert low <= auc <= high


def test_bootstrap_auc_is_stratified():
    # With two positives among 200 cases, an unstratified bootstrap draws no positive in
    # ~2% of replicates; stratified, every replicate has both classes and the AUC of the
    # perfectly separating score is 1 in each of them.
    y = np.r_[np.ones(2, dtype=int), np.zeros(198, dtype=int)]
    scores = np.r_[[5.0, 6.0], np.linspace(0.0, 1.0, 198)]
    assert bootstrap_auc_ci(y, scores, resamples=500) == (1.0, 1.0, 1.0)
    auc, low, high = bootstrap_auc_ci([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], resamples=300)
    assert auc == 0.75
    assert 0.0 <= low <= high <= 1.0


def test_large_bootstraps_are_split_into_blocks_of_bounded_size():
    sizes = intervals._block_sizes(2000, 3000)
    assert sum(sizes) == 2000
    assert len(sizes) > 1
    assert max(sizes) * 3000 <= intervals._BLOCK_ELEMENTS
    values = np.random.default_rng(14).normal(size=3000)  # crosses block boundaries
    low, high = bootstrap_mean_ci(values, seed=5)
    se = values.std(ddof=1) / math.sqrt(values.size)
    assert low == pytest.approx(values.mean() - Z95 * se, abs=0.005)
    assert high == pytest.approx(values.mean() + Z95 * se, abs=0.005)


def test_bootstrap_auc_rejects_an_empty_class():
    with pytest.raises(XaibenchError, match="each class"):
        bootstrap_auc_ci([1, 1, 1], [0.1, 0.2, 0.3])
