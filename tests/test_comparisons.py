"""Known answers of the paired comparisons in xaibench.stats.comparisons.

References are computed independently of the implementation: DeLong's structural components
and their covariance by plain loops from the definitions, statsmodels' exact McNemar test,
Wilson intervals and Holm adjustment, a published Newcombe interval, scipy's bootstrap, sklearn's
AUC and a loop-per-replicate bootstrap drawing the same random indices.
"""

import json
import math
import time

import numpy as np
import pytest
from scipy.special import ndtri
from scipy.stats import bootstrap, norm
from sklearn.metrics import roc_auc_score
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from xaibench.errors import XaibenchError
from xaibench.metrics.functional import delta_auc
from xaibench.stats.bootstrap_comparisons import (
    delta_auc_replicates,
    paired_bootstrap_delta_auc,
    paired_bootstrap_mean,
    paired_delta_from_replicates,
)
from xaibench.stats.comparisons import (
    PairedComparison,
    delong_comparison,
    holm,
    mcnemar_comparison,
)
from xaibench.stats.intervals import delong_paired_test

Z95 = float(ndtri(0.975))


def _psi(x: float, y: float) -> float:
    return 1.0 if x > y else 0.5 if x == y else 0.0


def _placements(y_true, scores):
    """DeLong's V10 (one per positive) and V01 (one per negative), by their definitions."""
    pos = [s for s, y in zip(scores, y_true, strict=True) if y == 1]
    neg = [s for s, y in zip(scores, y_true, strict=True) if y == 0]
    v10 = [sum(_psi(x, y) for y in neg) / len(neg) for x in pos]
    v01 = [sum(_psi(x, y) for x in pos) / len(pos) for y in neg]
    return v10, v01


def _covariance(u, v):
    """Sample covariance (denominator k - 1) by a plain loop."""
    mean_u, mean_v = sum(u) / len(u), sum(v) / len(v)
    return sum((a - mean_u) * (b - mean_v) for a, b in zip(u, v, strict=True)) / (len(u) - 1)


def _delong_difference_variance(y_true, scores_a, scores_b):
    """var(AUC_a - AUC_b) = S_aa + S_bb - 2 S_ab, S = S10/m + S01/n (DeLong et al. 1988)."""
    a10, a01 = _placements(y_true, scores_a)
    b10, b01 = _placements(y_true, scores_b)
    m, n = len(a10), len(a01)

    def s(u10, u01, v10, v01):
        return _covariance(u10, v10) / m + _covariance(u01, v01) / n

    return s(a10, a01, a10, a01) + s(b10, b01, b10, b01) - 2 * s(a10, a01, b10, b01)


def _paired_sample(rng, n_pos, n_neg, shift_a, shift_b, rho=0.5, decimals=None):
    y = np.r_[np.ones(n_pos, dtype=int), np.zeros(n_neg, dtype=int)]
    noise_a = rng.normal(size=y.size)
    noise_b = rho * noise_a + math.sqrt(1 - rho**2) * rng.normal(size=y.size)
    a, b = noise_a + shift_a * y, noise_b + shift_b * y
    if decimals is not None:
        a, b = np.round(a, decimals), np.round(b, decimals)  # forces ties
    order = rng.permutation(y.size)
    return y[order], a[order], b[order]


def _pairs_from_table(both, only_a, only_b, neither):
    """Per-case correctness of cells a and b reproducing a paired 2x2 table."""
    counts = [both, only_a, only_b, neither]
    return np.repeat([1, 1, 0, 0], counts), np.repeat([1, 0, 1, 0], counts)


# ---------------------------------------------------------------------- PairedComparison


def test_to_dict_is_plain_strict_json():
    result = PairedComparison(
        test="delong",
        difference=np.float64(0.25),
        ci=(np.float64(0.1), np.float64(0.4)),
        p_value=np.float64(0.01),
        n=np.int64(12),
        details={"z": math.inf, "b": np.int64(3), "aucs": np.array([0.5, 0.75])},
    )
    payload = result.to_dict()
    assert payload == {
        "test": "delong",
        "difference": 0.25,
        "ci": [0.1, 0.4],
        "p_value": 0.01,
        "n": 12,
        "details": {"z": None, "b": 3, "aucs": [0.5, 0.75]},
    }
    assert type(payload["difference"]) is float
    assert type(payload["n"]) is int
    assert type(payload["details"]["b"]) is int
    assert json.loads(json.dumps(payload, allow_nan=False)) == payload
    assert PairedComparison("x", 0.0, None, 1.0, 2).to_dict()["ci"] is None


def test_paired_comparison_is_frozen():
    result = PairedComparison("x", 0.0, None, 1.0, 2)
    with pytest.raises(AttributeError):
        result.p_value = 0.5  # type: ignore[misc]


# ---------------------------------------------------------------------------------- DeLong


def test_delong_comparison_on_hand_worked_example():
    # Positives of a: 0.9, 0.6, 0.4 and negatives 0.5, 0.4, 0.1:
    #   V10_a = (1, 1, 1/2), V01_a = (2/3, 5/6, 1), AUC_a = 5/6.
    # Positives of b: 0.8, 0.3, 0.7 and negatives 0.2, 0.6, 0.1:
    #   V10_b = (1, 2/3, 1), V01_b = (1, 2/3, 1), AUC_b = 8/9.
    # V10_a - V10_b = (0, 1/3, -1/2), mean -1/18, squared deviations (1 + 49 + 64)/324:
    #   sample variance 57/324, over m = 3: 19/324.
    # V01_a - V01_b = (-1/3, 1/6, 0), mean -1/18, squared deviations (25 + 16 + 1)/324:
    #   sample variance 21/324, over n = 3: 7/324.
    # var(AUC_a - AUC_b) = 26/324 = 13/162; difference 5/6 - 8/9 = -1/18.
    y = [1, 1, 1, 0, 0, 0]
    scores_a = [0.9, 0.6, 0.4, 0.5, 0.4, 0.1]
    scores_b = [0.8, 0.3, 0.7, 0.2, 0.6, 0.1]
    assert _delong_difference_variance(y, scores_a, scores_b) == pytest.approx(13 / 162)

    result = delong_comparison(y, scores_a, scores_b)
    se = math.sqrt(13 / 162)
    assert result.test == "delong"
    assert result.n == 6
    assert result.difference == pytest.approx(-1 / 18, abs=1e-12)
    assert result.details["auc_a"] == pytest.approx(5 / 6, abs=1e-12)
    assert result.details["auc_b"] == pytest.approx(8 / 9, abs=1e-12)
    assert result.details["variance"] == pytest.approx(13 / 162, abs=1e-12)
    assert result.details["z"] == pytest.approx(-1 / 18 / se, abs=1e-12)
    assert result.p_value == pytest.approx(2 * norm.sf(1 / 18 / se), abs=1e-12)
    assert result.ci == pytest.approx((-1 / 18 - Z95 * se, -1 / 18 + Z95 * se), abs=1e-12)
    assert (result.details["n_positive"], result.details["n_negative"]) == (3, 3)


@pytest.mark.parametrize(("seed", "decimals"), [(1, None), (2, 1), (3, 0)])
def test_delong_comparison_variance_matches_placement_loops(seed, decimals):
    y, a, b = _paired_sample(np.random.default_rng(seed), 17, 23, 1.0, 0.4, decimals=decimals)
    variance = _delong_difference_variance(y, a, b)
    difference = roc_auc_score(y, a) - roc_auc_score(y, b)
    result = delong_comparison(y, a, b, level=0.9)
    z90 = float(norm.ppf(0.95))
    assert result.details["variance"] == pytest.approx(variance, abs=1e-12)
    assert result.difference == pytest.approx(difference, abs=1e-12)
    half = z90 * math.sqrt(variance)
    assert result.ci == pytest.approx((difference - half, difference + half), abs=1e-9)


def test_delong_comparison_wraps_delong_paired_test():
    rng = np.random.default_rng(4)
    cases = [_paired_sample(rng, 30, 50, 0.8, 0.5, decimals=1) for _ in range(5)]
    cases.append(([1, 1, 0, 0], [0.9, 0.8, 0.2, 0.1], [0.5] * 4))  # zero variance, d = 0.5
    cases.append(([1, 1, 0, 0], [0.9, 0.8, 0.2, 0.1], [0.9, 0.8, 0.2, 0.1]))  # identical
    for y, a, b in cases:
        difference, z, p = delong_paired_test(y, a, b)
        result = delong_comparison(y, a, b)
        assert (result.difference, result.details["z"], result.p_value) == (difference, z, p)


def test_delong_comparison_interval_excludes_zero_exactly_when_p_is_below_alpha():
    rng = np.random.default_rng(5)
    outcomes = set()
    for _ in range(40):
        y, a, b = _paired_sample(rng, 40, 40, 1.0, 0.5)
        result = delong_comparison(y, a, b)
        excludes_zero = not result.ci[0] <= 0.0 <= result.ci[1]
        assert excludes_zero == (result.p_value < 0.05)
        outcomes.add(excludes_zero)
    assert outcomes == {True, False}  # both situations were exercised


def test_delong_comparison_zero_variance_gives_zero_width_interval():
    y = [1, 1, 0, 0]
    same = delong_comparison(y, [0.9, 0.8, 0.2, 0.1], [9, 8, 2, 1])
    assert (same.difference, same.ci, same.p_value) == (0.0, (0.0, 0.0), 1.0)
    better = delong_comparison(y, [0.9, 0.8, 0.2, 0.1], [0.5] * 4)
    assert (better.difference, better.ci, better.p_value) == (0.5, (0.5, 0.5), 0.0)
    assert better.details["z"] == math.inf
    assert better.to_dict()["details"]["z"] is None


def test_delong_comparison_interval_is_clipped_to_minus_one_one():
    # Tiny sample, huge variance: the normal interval would spill past [-1, 1].
    result = delong_comparison([1, 1, 0, 0], [0.9, 0.1, 0.8, 0.2], [0.1, 0.9, 0.2, 0.8], 0.999)
    assert -1.0 <= result.ci[0] < result.difference < result.ci[1] <= 1.0


def test_delong_comparison_level_changes_width():
    y, a, b = _paired_sample(np.random.default_rng(6), 50, 50, 1.0, 0.6)
    narrow = delong_comparison(y, a, b, level=0.5).ci
    wide = delong_comparison(y, a, b, level=0.99).ci
    assert wide[0] < narrow[0] < narrow[1] < wide[1]


@pytest.mark.parametrize(
    ("y_true", "scores_a", "scores_b", "message"),
    [
        ([1, 0, 1, 0], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3], "scores_b"),
        ([1, 0, 1, 0], [0.1, 0.2, 0.3], [0.1, 0.2, 0.3, 0.4], "scores_a"),
        ([1, 0, 1], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4], "y_true"),
        ([1, 0, 1, 0], [0.1, np.nan, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4], "scores_a.*NaN"),
        ([1, 0, 1, 0], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, np.inf, 0.4], "scores_b.*infinite"),
        ([1, 0, 2, 0], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4], "y_true.*0/1"),
        ([1, 0, np.nan, 0], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4], "y_true.*NaN"),
        ([1, 0, 0, 0], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4], "y_true.*positive"),
        ([1, 1, 1, 1], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4], "y_true.*negative"),
        ([[1, 0], [1, 0]], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4], "y_true.*1-D"),
        ([1, 0, 1, 0], ["a", "b", "c", "d"], [0.1, 0.2, 0.3, 0.4], "scores_a.*numeric"),
    ],
)
def test_delong_comparison_rejects_bad_input(y_true, scores_a, scores_b, message):
    with pytest.raises(XaibenchError, match=message):
        delong_comparison(y_true, scores_a, scores_b)


# -------------------------------------------------------------------------------- McNemar


@pytest.mark.parametrize(
    "table",
    [
        (59, 6, 16, 80),
        (10, 0, 0, 10),  # no discordant pairs
        (5, 3, 3, 5),  # b = c
        (0, 1, 0, 0),
        (20, 1, 9, 5),
        (100, 40, 23, 37),
        (3, 12, 2, 1),
    ],
)
def test_mcnemar_p_value_matches_statsmodels_exact_test(table):
    both, only_a, only_b, neither = table
    result = mcnemar_comparison(*_pairs_from_table(*table))
    expected = mcnemar([[both, only_a], [only_b, neither]], exact=True).pvalue
    assert result.p_value == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert result.details["b"] == only_a
    assert result.details["c"] == only_b
    n = sum(table)
    assert result.n == n
    assert result.difference == pytest.approx((only_a - only_b) / n, abs=1e-15)
    assert result.details["accuracy_a"] == pytest.approx((both + only_a) / n, abs=1e-15)
    assert result.details["accuracy_b"] == pytest.approx((both + only_b) / n, abs=1e-15)


def test_mcnemar_p_value_matches_statsmodels_on_random_tables():
    rng = np.random.default_rng(7)
    for _ in range(30):
        table = rng.multinomial(int(rng.integers(1, 80)), [0.4, 0.15, 0.1, 0.35])
        result = mcnemar_comparison(*_pairs_from_table(*table))
        expected = mcnemar(table.reshape(2, 2), exact=True).pvalue
        assert result.p_value == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_newcombe_interval_matches_published_example():
    # Complete response before and after consolidation therapy (Cavo et al. 2012), the
    # worked example of Fagerland, Lydersen & Laake, "Statistical Analysis of Contingency
    # Tables" (2017), chapter 8, and their paired-proportions review (Stat Med 2014):
    # Newcombe square-and-add, estimate -0.0621, 95% CI -0.1186 to -0.0046.
    result = mcnemar_comparison(*_pairs_from_table(59, 6, 16, 80))
    assert round(result.difference, 4) == -0.0621
    assert round(result.ci[0], 4) == -0.1186
    assert round(result.ci[1], 4) == -0.0046


def _newcombe_by_hand(both, only_a, only_b, neither, level=0.95):
    """Newcombe (1998) method 10 with the Wilson intervals taken from statsmodels."""
    n = both + only_a + only_b + neither
    p1, p2 = (both + only_a) / n, (both + only_b) / n
    l1, u1 = proportion_confint(both + only_a, n, alpha=1 - level, method="wilson")
    l2, u2 = proportion_confint(both + only_b, n, alpha=1 - level, method="wilson")
    margins = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    a = both * neither - only_a * only_b
    if margins == 0 or 0 <= a <= n / 2:
        phi = 0.0
    elif a > n / 2:
        phi = (a - n / 2) / math.sqrt(margins)
    else:
        phi = a / math.sqrt(margins)
    low = p1 - p2 - math.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    high = p1 - p2 + math.sqrt((p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2)
    return low, high


def test_newcombe_interval_by_explicit_arithmetic():
    # Table (both, only a, only b, neither) = (30, 10, 4, 6), n = 50, 95%.
    # p_a = 40/50 = 0.8, p_b = 34/50 = 0.68, difference 0.12.
    # Wilson, z = 1.959964: 0.8 -> (0.669629, 0.887562); 0.68 -> (0.541897, 0.792418).
    # A = 30*6 - 10*4 = 140 > n/2 = 25, margins 40*10*34*16 = 217600,
    # phi = (140 - 25)/sqrt(217600) = 115/466.476152 = 0.246529.
    # low  = 0.12 - sqrt(0.130371^2 - 2 phi 0.130371*0.112418 + 0.112418^2) = 0.12 - 0.149693
    # high = 0.12 + sqrt(0.138103^2 - 2 phi 0.138103*0.087562 + 0.087562^2) = 0.12 + 0.144143
    result = mcnemar_comparison(*_pairs_from_table(30, 10, 4, 6))
    assert result.difference == pytest.approx(0.12, abs=1e-15)
    wilson_a = proportion_confint(40, 50, alpha=0.05, method="wilson")
    wilson_b = proportion_confint(34, 50, alpha=0.05, method="wilson")
    assert wilson_a == pytest.approx((0.669629, 0.887562), abs=1e-6)
    assert wilson_b == pytest.approx((0.541897, 0.792418), abs=1e-6)
    assert 115 / math.sqrt(217600) == pytest.approx(0.246529, abs=1e-6)
    assert result.ci == pytest.approx((0.12 - 0.149693, 0.12 + 0.144143), abs=2e-6)
    assert result.ci == pytest.approx(_newcombe_by_hand(30, 10, 4, 6), abs=1e-12)


@pytest.mark.parametrize(
    ("table", "level"),
    [
        ((30, 10, 4, 6), 0.9),
        ((10, 2, 3, 1), 0.95),  # A = 4 <= n/2 = 8: phi = 0
        ((2, 10, 8, 1), 0.95),  # A < 0: uncorrected negative phi
        ((0, 5, 7, 0), 0.95),  # A < 0 with two empty cells
        ((12, 0, 0, 0), 0.95),  # an empty margin: phi = 0
        ((0, 0, 9, 3), 0.99),  # a never right: p_a = 0
        ((14, 5, 0, 22), 0.95),  # Altman et al. (2000), Statistics with Confidence, Table 6.2
    ],
)
def test_newcombe_interval_matches_the_formula_in_every_phi_branch(table, level):
    result = mcnemar_comparison(*_pairs_from_table(*table), level=level)
    assert result.ci == pytest.approx(_newcombe_by_hand(*table, level=level), abs=1e-12)
    assert -1.0 <= result.ci[0] <= result.difference <= result.ci[1] <= 1.0


def test_mcnemar_without_discordant_pairs_has_p_one_and_a_real_interval():
    result = mcnemar_comparison(*_pairs_from_table(40, 0, 0, 10))
    assert result.difference == 0.0
    assert result.p_value == 1.0
    assert (result.details["b"], result.details["c"]) == (0, 0)
    low, high = result.ci
    assert low < 0.0 < high  # unlike the Wald interval, not a point
    assert (low, high) == pytest.approx(_newcombe_by_hand(40, 0, 0, 10), abs=1e-12)


def test_mcnemar_accepts_booleans_and_is_antisymmetric():
    a, b = _pairs_from_table(20, 12, 2, 5)
    forward = mcnemar_comparison(a.astype(bool), b.astype(bool))
    backward = mcnemar_comparison(b, a)
    assert forward.difference == pytest.approx(10 / 39)
    assert backward.difference == pytest.approx(-forward.difference)
    assert backward.p_value == pytest.approx(forward.p_value)
    assert backward.ci == pytest.approx((-forward.ci[1], -forward.ci[0]), abs=1e-12)
    assert forward.p_value < 0.05


@pytest.mark.parametrize(
    ("correct_a", "correct_b", "message"),
    [
        ([1, 0, 1], [1, 0], "correct_b"),
        ([1, 0, 2], [1, 0, 1], "correct_a.*0/1"),
        ([1, 0, 1], [1, np.nan, 1], "correct_b.*NaN"),
        ([[1, 0]], [[1, 0]], "correct_a.*1-D"),
        ([], [], "empty"),
        (["yes", "no"], [1, 0], "correct_a"),
    ],
)
def test_mcnemar_rejects_bad_input(correct_a, correct_b, message):
    with pytest.raises(XaibenchError, match=message):
        mcnemar_comparison(correct_a, correct_b)


# ----------------------------------------------------------------------------------- Holm


def test_holm_hand_worked_example():
    # Sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> 0.06
    # (the running maximum keeps the adjusted values in the order of the raw ones).
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02], rtol=0, atol=1e-15)
    assert adjusted.dtype == np.float64


def test_holm_caps_at_one_and_keeps_nan_out_of_the_count():
    np.testing.assert_array_equal(holm([0.5, 0.6]), [1.0, 1.0])
    # Two defined p-values: m = 2, not 3.
    np.testing.assert_allclose(holm([0.01, np.nan, 0.04]), [0.02, np.nan, 0.04], atol=1e-15)
    assert np.isnan(holm([np.nan, np.nan])).all()
    assert holm([]).shape == (0,)
    np.testing.assert_array_equal(holm([0.2]), [0.2])


def test_holm_matches_statsmodels_on_random_inputs_with_ties():
    # statsmodels' multipletests runs gc.collect() on every call, so the inputs are few.
    rng = np.random.default_rng(20)
    for size in (2, 5, 17, 66):
        p = np.round(rng.uniform(0, 0.45, size) ** 2 * 5, 2).clip(0, 1)  # many ties
        p[rng.integers(0, size)] = 0.0
        expected = multipletests(p, method="holm")[1]
        np.testing.assert_allclose(holm(p), expected, rtol=0, atol=1e-12)
        assert len(np.unique(p)) < size or size == 2


def test_holm_with_nan_matches_statsmodels_on_the_defined_values():
    rng = np.random.default_rng(8)
    p = rng.uniform(0, 0.1, 12)
    p[[2, 7]] = np.nan
    adjusted = holm(p)
    defined = ~np.isnan(p)
    np.testing.assert_allclose(
        adjusted[defined], multipletests(p[defined], method="holm")[1], atol=1e-12
    )
    assert np.isnan(adjusted[~defined]).all()


@pytest.mark.parametrize(
    ("p_values", "message"),
    [([0.1, 1.5], r"\[0, 1\]"), ([-0.1], r"\[0, 1\]"), ([0.1, np.inf], "infinite"),
     ([[0.1, 0.2]], "1-D"), (["a"], "numeric")],
)  # fmt: skip
def test_holm_rejects_bad_input(p_values, message):
    with pytest.raises(XaibenchError, match=f"p_values.*{message}|{message}.*p_values"):
        holm(p_values)


# ----------------------------------------------------------------- paired bootstrap: mean


def test_paired_bootstrap_mean_is_seeded_and_reproducible():
    rng = np.random.default_rng(9)
    a, b = rng.normal(size=60), rng.normal(size=60)
    first = paired_bootstrap_mean(a, b, seed=3)
    assert first == paired_bootstrap_mean(a, b, seed=3)
    second = paired_bootstrap_mean(a, b, seed=4)
    assert second.ci != first.ci
    assert second.difference == first.difference == pytest.approx(a.mean() - b.mean())
    assert first.test == "paired bootstrap"
    assert first.n == 60


def test_paired_bootstrap_mean_of_identical_cells_is_zero_with_p_one():
    a = np.random.default_rng(10).uniform(size=40)
    result = paired_bootstrap_mean(a, a.copy())
    assert (result.difference, result.ci, result.p_value) == (0.0, (0.0, 0.0), 1.0)


def test_paired_bootstrap_mean_detects_a_clear_shift():
    rng = np.random.default_rng(11)
    b = rng.uniform(size=80)
    a = b + 0.1 + rng.normal(0, 0.05, 80)  # a higher on every image, by about 0.1
    result = paired_bootstrap_mean(a, b, resamples=1000)
    assert result.p_value < 1e-10  # no floor at 2 / (B + 1): z is far out
    assert 0.0 < result.ci[0] < result.difference < result.ci[1]


def test_paired_bootstrap_p_value_is_the_normal_test_with_the_bootstrap_se():
    rng = np.random.default_rng(13)
    b = rng.uniform(size=50)
    a = b + rng.normal(0.03, 0.1, 50)
    result = paired_bootstrap_mean(a, b, resamples=4000, seed=2)
    # the replicates' spread is the standard error of the mean difference, sd / sqrt(n)
    d = a - b
    se = d.std(ddof=1) / np.sqrt(d.size)
    assert result.p_value == pytest.approx(2 * norm.sf(abs(d.mean()) / se), rel=0.25)
    # by hand from the replicates themselves: same seed, same draws
    draws = np.random.default_rng(2).integers(0, 50, size=(4000, 50))
    replicates = d[draws].mean(axis=1)
    expected = 2 * norm.sf(abs(d.mean()) / replicates.std(ddof=1))
    assert result.p_value == pytest.approx(expected, rel=1e-9)
    # two-pair sample with differences (3, -1): mean 1, replicate sd by enumeration sqrt(2)
    two = paired_bootstrap_mean([3.0, 0.0], [0.0, 1.0], resamples=40000, seed=1)
    assert two.ci == (-1.0, 3.0)
    assert two.p_value == pytest.approx(2 * norm.sf(1 / np.sqrt(2)), abs=0.01)


def test_paired_bootstrap_mean_interval_agrees_with_scipy():
    rng = np.random.default_rng(12)
    b = rng.beta(2, 5, 150)
    a = np.clip(b + rng.normal(0.03, 0.1, 150), 0, 1)  # bounded, correlated with b
    ours = paired_bootstrap_mean(a, b, resamples=20000, seed=0)
    theirs = bootstrap(
        (a - b,), np.mean, n_resamples=20000, method="percentile", rng=np.random.default_rng(1)
    ).confidence_interval
    width = theirs.high - theirs.low
    # Different random streams: endpoints agree to Monte Carlo error (~1% of the width here).
    assert ours.ci == pytest.approx((theirs.low, theirs.high), abs=0.03 * width)


def test_paired_bootstrap_mean_drops_incomplete_pairs():
    rng = np.random.default_rng(13)
    a, b = rng.normal(size=30), rng.normal(size=30)
    a_nan, b_nan = a.copy(), b.copy()
    a_nan[[1, 5]] = np.nan
    b_nan[[5, 9, 20]] = np.nan
    keep = np.ones(30, dtype=bool)
    keep[[1, 5, 9, 20]] = False
    with_nan = paired_bootstrap_mean(a_nan, b_nan, seed=2)
    assert with_nan.n == 26
    assert with_nan.details["dropped"] == 4
    assert with_nan.difference == pytest.approx(a[keep].mean() - b[keep].mean(), abs=1e-14)
    assert with_nan.details["mean_a"] == pytest.approx(a[keep].mean(), abs=1e-14)
    # Dropping the pairs first gives the same resampling of the same differences.
    complete = paired_bootstrap_mean(a[keep], b[keep], seed=2)
    assert (with_nan.ci, with_nan.p_value, with_nan.n) == (complete.ci, complete.p_value, 26)
    assert complete.details["dropped"] == 0


@pytest.mark.parametrize(
    ("a", "b", "kwargs", "message"),
    [
        ([1.0, np.nan, 3.0], [np.nan, 2.0, 3.0], {}, "at least 2"),
        ([1.0], [2.0], {}, "at least 2"),
        ([1.0, 2.0, 3.0], [1.0, 2.0], {}, "b has 2 values but a has 3"),
        ([1.0, np.inf], [1.0, 2.0], {}, "a contains infinite"),
        ([[1.0, 2.0]], [[1.0, 2.0]], {}, "a must be 1-D"),
        ([1.0, 2.0], [1.0, 2.0], {"resamples": 0}, "resamples"),
        ([1.0, 2.0], [1.0, 2.0], {"resamples": 2.5}, "resamples"),
        ([1.0, 2.0], [1.0, 2.0], {"level": 1.0}, "level"),
        ([1.0, 2.0], [1.0, 2.0], {"level": float("nan")}, "level"),
    ],
)
def test_paired_bootstrap_mean_rejects_bad_input(a, b, kwargs, message):
    with pytest.raises(XaibenchError, match=message):
        paired_bootstrap_mean(a, b, **kwargs)


# ------------------------------------------------------------ paired bootstrap: Δ AUC


def _delta_sample(rng, n_pos=120, n_neg=180, loss_a=0.8, loss_b=0.1):
    """Cells whose perturbed scores lose ``loss`` of their class separation."""
    y = np.r_[np.ones(n_pos, dtype=int), np.zeros(n_neg, dtype=int)]
    intact_a = y * 1.2 + rng.normal(size=y.size)
    intact_b = y * 1.2 + rng.normal(size=y.size)
    perturbed_a = intact_a - loss_a * 1.2 * y + rng.normal(0, 0.3, y.size)
    perturbed_b = intact_b - loss_b * 1.2 * y + rng.normal(0, 0.3, y.size)
    return y, intact_a, perturbed_a, intact_b, perturbed_b


def test_delta_auc_difference_equals_sklearn_by_hand():
    rng = np.random.default_rng(14)
    y, ia, pa, ib, pb = _delta_sample(rng, 60, 90, loss_a=1.3, loss_b=0.2)
    pa = np.round(pa, 1)  # ties
    auc = {
        name: roc_auc_score(y, s) for name, s in [("ia", ia), ("pa", pa), ("ib", ib), ("pb", pb)]
    }
    assert auc["pa"] < 0.5  # a is driven below chance: the floor matters
    plain = (auc["ia"] - auc["pa"]) - (auc["ib"] - auc["pb"])
    floored = delta_auc(auc["ia"], auc["pa"]) - delta_auc(auc["ib"], auc["pb"])
    assert floored == pytest.approx((auc["ia"] - 0.5) - (auc["ib"] - auc["pb"]))

    result = paired_bootstrap_delta_auc(y, ia, pa, ib, pb, resamples=200)
    assert result.difference == pytest.approx(floored, abs=1e-12)
    assert result.details["delta_a"] == pytest.approx(delta_auc(auc["ia"], auc["pa"]), abs=1e-12)
    assert result.details["auc_perturbed_a"] == pytest.approx(auc["pa"], abs=1e-12)
    assert result.n == 150
    assert (result.details["n_positive"], result.details["n_negative"]) == (60, 90)
    unfloored = paired_bootstrap_delta_auc(y, ia, pa, ib, pb, resamples=200, chance_floor=False)
    assert unfloored.difference == pytest.approx(plain, abs=1e-12)


@pytest.mark.parametrize("chance_floor", [True, False])
def test_delta_auc_replicates_match_a_loop_over_the_same_draws(chance_floor):
    # The vectorised ranks must give, replicate by replicate, what sklearn gives on the images
    # drawn: reproduce the draws (positives then negatives, one block) and loop.
    rng = np.random.default_rng(15)
    y, ia, pa, ib, pb = _delta_sample(rng, 25, 35, loss_a=1.2)
    pa, pb = np.round(pa, 1), np.round(pb, 1)
    resamples, seed = 150, 7
    draws = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    pos_idx = pos[draws.integers(0, pos.size, size=(resamples, pos.size))]
    neg_idx = neg[draws.integers(0, neg.size, size=(resamples, neg.size))]
    floor = 0.5 if chance_floor else -np.inf
    replicates = []
    for row in range(resamples):
        idx = np.r_[pos_idx[row], neg_idx[row]]

        def auc(scores, idx=idx):
            return roc_auc_score(y[idx], scores[idx])

        replicates.append((auc(ia) - max(auc(pa), floor)) - (auc(ib) - max(auc(pb), floor)))
    replicates = np.array(replicates)
    result = paired_bootstrap_delta_auc(
        y, ia, pa, ib, pb, resamples=resamples, seed=seed, chance_floor=chance_floor
    )
    assert result.ci == pytest.approx(tuple(np.quantile(replicates, [0.025, 0.975])), abs=1e-12)
    difference = result.difference
    assert result.p_value == pytest.approx(
        min(1.0, 2 * norm.sf(abs(difference) / replicates.std(ddof=1))), rel=1e-9
    )


def test_delta_auc_of_identical_cells_is_zero_with_p_one():
    y, ia, pa, _, _ = _delta_sample(np.random.default_rng(16))
    result = paired_bootstrap_delta_auc(y, ia, pa, ia.copy(), pa.copy())
    assert (result.difference, result.ci, result.p_value) == (0.0, (0.0, 0.0), 1.0)


def test_delta_auc_is_seeded_and_reproducible():
    data = _delta_sample(np.random.default_rng(17), loss_a=0.4, loss_b=0.3)
    first = paired_bootstrap_delta_auc(*data, seed=5)
    assert first == paired_bootstrap_delta_auc(*data, seed=5)
    assert first.ci != paired_bootstrap_delta_auc(*data, seed=6).ci


def test_delta_auc_detects_a_cell_that_loses_more():
    data = _delta_sample(np.random.default_rng(18), loss_a=0.8, loss_b=0.05)
    result = paired_bootstrap_delta_auc(*data)
    assert result.difference > 0.15
    assert result.p_value < 0.01
    assert 0.0 < result.ci[0] < result.difference < result.ci[1]
    reverse = paired_bootstrap_delta_auc(data[0], *data[3:], *data[1:3])
    assert reverse.difference == pytest.approx(-result.difference, abs=1e-12)
    assert reverse.p_value < 0.01


def test_delta_auc_is_fast():
    data = _delta_sample(np.random.default_rng(19))  # 300 images
    paired_bootstrap_delta_auc(*data, resamples=50)  # warm-up (imports, caches)
    start = time.perf_counter()
    paired_bootstrap_delta_auc(*data, resamples=1000)
    assert time.perf_counter() - start < 1.0


def test_delta_auc_bootstrap_is_stratified():
    # Two positives among 100 images: every replicate must keep both classes (a plain
    # bootstrap would draw no positive in ~13% of replicates and fail or give NaN).
    y = np.r_[np.ones(2, dtype=int), np.zeros(98, dtype=int)]
    intact = np.r_[[5.0, 6.0], np.linspace(0, 1, 98)]
    perturbed = np.r_[[0.2, 0.7], np.linspace(0, 1, 98)]
    result = paired_bootstrap_delta_auc(y, intact, perturbed, intact, intact, resamples=500)
    assert np.isfinite(result.ci).all()
    assert result.details["delta_b"] == 0.0
    assert result.details["auc_intact_a"] == 1.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"y_true": [1, 0, 1]}, "y_true"),
        ({"perturbed_a": [0.1, 0.2, 0.3]}, "perturbed_a has 3 values"),
        ({"intact_b": [0.1, np.nan, 0.3, 0.4]}, "intact_b contains NaN"),
        ({"perturbed_b": [0.1, np.inf, 0.3, 0.4]}, "perturbed_b contains infinite"),
        ({"y_true": [1, 0, 3, 0]}, "y_true.*0/1"),
        ({"y_true": [0, 0, 0, 0]}, "y_true.*positive"),
        ({"resamples": 0}, "resamples"),
        ({"level": 0.0}, "level"),
    ],
)
def test_delta_auc_rejects_bad_input(change, message):
    arguments = {
        "y_true": [1, 0, 1, 0],
        "intact_a": [0.9, 0.1, 0.8, 0.2],
        "perturbed_a": [0.5, 0.4, 0.6, 0.5],
        "intact_b": [0.9, 0.1, 0.8, 0.2],
        "perturbed_b": [0.9, 0.1, 0.8, 0.2],
        **change,
    }
    with pytest.raises(XaibenchError, match=message):
        paired_bootstrap_delta_auc(**arguments)


def test_per_cell_replicates_pair_into_the_same_comparison():
    """A leaderboard bootstraps each cell once; pairing the replicates changes nothing."""
    y, ia, pa, ib, pb = _delta_sample(np.random.default_rng(21), loss_a=0.5, loss_b=0.2)
    direct = paired_bootstrap_delta_auc(y, ia, pa, ib, pb, resamples=300, seed=4)
    a = delta_auc_replicates(y, ia, pa, resamples=300, seed=4)
    b = delta_auc_replicates(y, ib, pb, resamples=300, seed=4)
    assert paired_delta_from_replicates(a, b) == direct
    assert a.delta - b.delta == pytest.approx(direct.difference)
    other_seed = delta_auc_replicates(y, ib, pb, resamples=300, seed=5)
    with pytest.raises(XaibenchError, match="cannot be paired"):
        paired_delta_from_replicates(a, other_seed)
