"""Our localisation kernels against Quantus 0.6.0, used as an independent reference.

Quantus is only called here (and in the benchmark), never copied. Its metrics preprocess the
attributions unless told otherwise: ``normalise=True`` divides each map by its maximum and
``abs`` takes absolute values. Our kernels do neither (each definition says which part of the
attribution it uses), so every Quantus metric below is built with ``normalise=False,
abs=False``, and where our definition uses only the positive part (relevance mass) that
transform is applied explicitly to Quantus' input. Quantus takes numpy arrays shaped
(B, 1, H, W) and, for these metrics, no model (``model=None``); ``x_batch`` only supplies the
shape.

Where the definitions deliberately differ, the agreement is tested on the cases where both are
defined and the difference itself is pinned down (see docs/explainability.md, "Region
metrics"):

* pointing game: Quantus scores a hit if *any* tied maximum is inside (our ``ties="any"``; our
  default ``"fraction"`` agrees whenever the maximum is unique), and returns 1 (True) for an
  empty region, where we return NaN;
* relevance mass: Quantus sums signed attribution, we sum the positive part;
* relevance rank: with a tie at the cut, Quantus' value depends on ``np.argsort``'s order of
  equal values, ours is the expectation over tie orders; they agree on tie-free maps.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pytest
import quantus  # a dependency, pinned to 0.6.0 by the test extra
import torch

from xaibench.metrics.functional import pixel_auc, pointing_game, relevance_mass, relevance_rank

H, W = 12, 10


def _quantus(metric_cls: type, maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Scores from a Quantus localisation metric, with its preprocessing turned off."""
    metric = metric_cls(abs=False, normalise=False, disable_warnings=True)
    batch = maps.shape[0]
    with warnings.catch_warnings():
        # Quantus' own warnings (empty masks) and those of the libraries it calls
        # (0 / 0 in NumPy, single-class ROC curves in scikit-learn): expected here.
        warnings.simplefilter("ignore")
        scores = metric(
            model=None,
            x_batch=np.zeros((batch, 1, H, W)),
            y_batch=np.zeros(batch, dtype=np.int64),
            a_batch=maps[:, None].astype(np.float64),
            s_batch=masks[:, None].astype(np.float64),
        )
    return np.asarray(scores, dtype=np.float64)


def _ours(kernel: Callable[..., torch.Tensor], maps: np.ndarray, masks: np.ndarray, **kw):
    return kernel(torch.from_numpy(maps), torch.from_numpy(masks), **kw).numpy()


def _masks(rng: np.random.Generator, batch: int) -> np.ndarray:
    """Random regions of varied size, plus one full region (index 1)."""
    share = rng.uniform(0.05, 0.9, size=(batch, 1, 1))
    masks = rng.random((batch, H, W)) < share
    masks[:, 0, 0] = True  # never empty here; empty regions are tested separately
    masks[1] = True
    return masks


def _tie_free(rng: np.random.Generator, batch: int) -> np.ndarray:
    return rng.normal(size=(batch, H, W))


def _with_ties(rng: np.random.Generator, batch: int) -> np.ndarray:
    """Few distinct values (ties everywhere), a few all-zero and constant maps, and a signed
    map whose maximum is a plateau."""
    maps = np.round(rng.normal(size=(batch, H, W)), 0)
    maps[2] = 0.0
    maps[3] = 0.7
    maps[4] = -np.abs(maps[4])
    return maps


@pytest.fixture(scope="module")
def rng() -> np.random.Generator:
    return np.random.default_rng(2024)


def _assert_equal(ours: np.ndarray, reference: np.ndarray) -> None:
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("kind", ["tie_free", "with_ties"])
def test_pointing_game_any_matches_quantus(rng, kind: str) -> None:
    maps = _tie_free(rng, 48) if kind == "tie_free" else _with_ties(rng, 48)
    masks = _masks(rng, 48)
    reference = _quantus(quantus.PointingGame, maps, masks)
    _assert_equal(_ours(pointing_game, maps, masks, ties="any"), reference)
    # Our default, "fraction", is the same wherever the maximum is unique.
    flat = maps.reshape(48, -1)
    unique_max = (flat == flat.max(axis=1, keepdims=True)).sum(axis=1) == 1
    assert unique_max.sum() >= 10
    fraction = _ours(pointing_game, maps, masks)
    _assert_equal(fraction[unique_max], reference[unique_max])


def test_relevance_mass_matches_quantus_on_positive_part(rng) -> None:
    maps = np.concatenate([_tie_free(rng, 32), _with_ties(rng, 32)])
    masks = _masks(rng, 64)
    # We count positive attribution only: give Quantus the positive part explicitly. The
    # all-zero, constant-negative and all-negative maps are 0 / 0 (NaN) in both.
    reference = _quantus(quantus.RelevanceMassAccuracy, np.clip(maps, 0.0, None), masks)
    ours = _ours(relevance_mass, maps, masks)
    _assert_equal(ours, reference)
    assert np.isnan(ours[32 + 2])  # the all-zero map
    # On non-negative maps no transform is needed at all.
    positive = np.abs(maps[:32])
    _assert_equal(
        _ours(relevance_mass, positive, masks[:32]),
        _quantus(quantus.RelevanceMassAccuracy, positive, masks[:32]),
    )


def test_relevance_rank_matches_quantus_without_ties(rng) -> None:
    maps = _tie_free(rng, 64)
    masks = _masks(rng, 64)
    ours = _ours(relevance_rank, maps, masks)
    _assert_equal(ours, _quantus(quantus.RelevanceRankAccuracy, maps, masks))
    assert ours[1] == 1.0  # the full region


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", ["tie_free", "with_ties"])
def test_pixel_auc_matches_quantus(rng, kind: str, dtype: type) -> None:
    # Quantus' AUC integrates scikit-learn's ROC curve, whose trapezoids give tied pairs one
    # half, like our rank statistic: they agree with ties too. float32 maps take our
    # integer-key path; Quantus gets the same values in float64.
    maps = (_tie_free(rng, 48) if kind == "tie_free" else _with_ties(rng, 48)).astype(dtype)
    masks = _masks(rng, 48)
    ours = _ours(pixel_auc, maps, masks)
    _assert_equal(ours, _quantus(quantus.AUC, maps, masks))
    assert np.isnan(ours[1])  # full region: no negatives, undefined in both
    if kind == "with_ties":
        assert ours[2] == 0.5  # all-zero map


def test_empty_regions(rng) -> None:
    maps = _tie_free(rng, 8)
    masks = _masks(rng, 8)
    masks[[0, 5]] = False
    for metric_cls, kernel, inputs in [
        (quantus.RelevanceMassAccuracy, relevance_mass, np.clip(maps, 0.0, None)),
        (quantus.RelevanceRankAccuracy, relevance_rank, maps),
        (quantus.AUC, pixel_auc, maps),
    ]:
        reference = _quantus(metric_cls, inputs, masks)
        ours = _ours(kernel, maps, masks)
        assert np.isnan(reference[[0, 5]]).all(), metric_cls.__name__
        _assert_equal(ours, reference)
    # Deliberate difference: Quantus 0.6.0's PointingGame writes NaN into a bool array, which
    # turns it into True, so an empty region scores a hit. There is nothing to point at, so
    # ours is NaN (excluded from the mean); the other images agree.
    reference = _quantus(quantus.PointingGame, maps, masks)
    ours = _ours(pointing_game, maps, masks, ties="any")
    assert (reference[[0, 5]] == 1.0).all()
    assert np.isnan(ours[[0, 5]]).all()
    keep = np.ones(8, dtype=bool)
    keep[[0, 5]] = False
    _assert_equal(ours[keep], reference[keep])


def test_relevance_rank_ties_differ_from_quantus_only_by_tie_order(rng) -> None:
    # With ties at the cut Quantus' score depends on which tied pixels np.argsort puts first;
    # ours is the expectation over those orders, so it lies between Quantus' extremes: the
    # score when tied region pixels come last and when they come first.
    maps = _with_ties(rng, 32)
    masks = _masks(rng, 32)
    ours = _ours(relevance_rank, maps, masks)
    reference = _quantus(quantus.RelevanceRankAccuracy, maps, masks)
    k = masks.reshape(32, -1).sum(axis=1)
    flat, region = maps.reshape(32, -1), masks.reshape(32, -1)
    for i in range(32):
        cut = np.sort(flat[i])[::-1][k[i] - 1]
        above, tied = flat[i] > cut, flat[i] == cut
        places = k[i] - above.sum()
        inside_tied, outside_tied = (tied & region[i]).sum(), (tied & ~region[i]).sum()
        base = (above & region[i]).sum()
        worst = (base + max(0, places - outside_tied)) / k[i]
        best = (base + min(places, inside_tied)) / k[i]
        assert worst - 1e-12 <= ours[i] <= best + 1e-12
        assert worst - 1e-12 <= reference[i] <= best + 1e-12
        if inside_tied == 0 or outside_tied == 0 or places == tied.sum():
            assert ours[i] == pytest.approx(reference[i], abs=1e-12)  # the order cannot matter
    assert not np.allclose(ours, reference)  # ... but here it does, somewhere
