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

from xaibench.metrics import faithfulness
from xaibench.metrics.map_scores import pixel_auc, pointing_game, relevance_mass, relevance_rank

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


# --- Deletion AUC against Quantus' PixelFlipping --------------------------------------------
#
# What quantus.PixelFlipping (0.6.0) computes, read from its source:
# * order: ``np.argsort(-a)`` over the flattened map, most relevant first, with NumPy's default
#   (unstable) sort, so the maps here are tie-free and the order is unambiguous; ``abs`` and
#   ``normalise`` are turned off (``abs`` would change the order);
# * step k (k = 1 .. n, n = H*W / features_in_step) sets the next ``features_in_step`` pixels
#   to the baseline, cumulatively; ``"black"`` is the *image's minimum* (``arr.min()`` per
#   image), not 0, so it is our ``"zero"`` canvas only for images whose minimum is 0;
# * the curve is the softmax probability of ``y`` after each step (``softmax=True``, the
#   default of ``__call__``, appends a softmax to the model): n points, the last one the fully
#   removed image, and *no* point for the intact image;
# * ``return_auc_per_sample=True`` integrates that curve with ``np.trapz(dx=1)``: over the step
#   index, not normalised, and without the segment from the intact image to step 1.

FLIP_SIDE = 8  # 1x8x8 inputs: 64 pixels, every features_in_step that Quantus allows divides it


@pytest.fixture(scope="module")
def flip_model() -> torch.nn.Module:
    """A tiny fixed conv net with 3 logits; eval mode, which Quantus' wrapper requires."""
    with torch.random.fork_rng():  # a fixed seed without touching the global generator
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Flatten(),
            torch.nn.Linear(4 * FLIP_SIDE * FLIP_SIDE, 3),
        )
    with torch.no_grad():
        model[-1].weight.mul_(8.0)  # larger logits: the curves move, the comparison bites
    return model.eval()


def _flip_data(
    rng: np.random.Generator, batch: int, low: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float32 images spanning [low, 1] exactly, tie-free float64 maps, targets of all classes."""
    images = rng.random((batch, 1, FLIP_SIDE, FLIP_SIDE))
    images -= images.min(axis=(1, 2, 3), keepdims=True)
    images /= images.max(axis=(1, 2, 3), keepdims=True)
    images = (low + (1.0 - low) * images).astype(np.float32)
    maps = rng.normal(size=(batch, 1, FLIP_SIDE, FLIP_SIDE))
    for row in maps.reshape(batch, -1):
        assert len(np.unique(row)) == row.size  # no ties: both sorts give the same order
    targets = np.arange(batch) % 3
    return images, maps, targets


def _flip_score(model: torch.nn.Module, targets: np.ndarray) -> faithfulness.ScoreFn:
    """Our score function: softmax probability of each image's target class."""
    index = torch.from_numpy(targets)[:, None]

    @torch.no_grad()
    def score(x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(model(x), dim=1).gather(1, index)[:, 0]

    return score


def _pixel_flipping(model, images, maps, targets, *, auc: bool = False, **kw) -> np.ndarray:
    """Quantus' curves ``[B, n]`` (or per-sample AUCs ``[B]``), its preprocessing turned off."""
    metric = quantus.PixelFlipping(
        abs=False, normalise=False, return_auc_per_sample=auc, disable_warnings=True, **kw
    )
    with warnings.catch_warnings():
        # Quantus warns when a step changes nothing (a pixel already at the baseline), and
        # about its parameterisation: expected here.
        warnings.simplefilter("ignore")
        out = metric(model=model, x_batch=images, y_batch=targets, a_batch=maps, softmax=True)
    return np.asarray(out, dtype=np.float64)


def _our_curve(model, images, maps, targets, canvas: torch.Tensor, steps: int) -> np.ndarray:
    """Our deletion curve ``[B, steps + 1]`` on the same levels, intact image first."""
    fractions = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    x = torch.from_numpy(images)
    return faithfulness.removal_curve(
        _flip_score(model, targets),
        x,
        canvas,
        faithfulness.relevance_rank(torch.from_numpy(maps)),
        fractions,
        insert=False,
    ).numpy()


@pytest.mark.parametrize("features_in_step", [1, 4])
def test_deletion_curve_matches_quantus_pixel_flipping(flip_model, features_in_step: int) -> None:
    # Own seeds (not the shared rng): the margins asserted below hold on this data.
    images, maps, targets = _flip_data(np.random.default_rng(1), 12)
    steps = FLIP_SIDE * FLIP_SIDE // features_in_step
    reference = _pixel_flipping(
        flip_model, images, maps, targets, features_in_step=features_in_step
    )
    # Every image has minimum 0, so Quantus' "black" baseline is our "zero" canvas; level
    # j / steps removes j * features_in_step pixels (exact: steps is a power of 2).
    canvas = faithfulness.make_canvas(torch.from_numpy(images), "zero", 0.05)
    ours = _our_curve(flip_model, images, maps, targets, canvas, steps)
    assert reference.shape == (12, steps)
    assert ours.shape == (12, steps + 1)
    # Quantus has no point for the intact image: its step k is our level k.
    _assert_equal(ours[:, 1:], reference)
    intact = _flip_score(flip_model, targets)(torch.from_numpy(images)).double().numpy()
    _assert_equal(ours[:, 0], intact)
    # Not a vacuous match: the probabilities move along the curve.
    assert (reference.max(axis=1) - reference.min(axis=1)).max() > 0.1


@pytest.mark.parametrize("features_in_step", [1, 4])
def test_deletion_auc_matches_quantus_pixel_flipping_auc(
    flip_model, monkeypatch, features_in_step: int
) -> None:
    # Quantus 0.6.0 integrates with np.trapz, which NumPy 2.4 removed; it was NumPy 2.0's
    # deprecated alias of np.trapezoid (same function), so restore the alias for Quantus.
    monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)
    images, maps, targets = _flip_data(np.random.default_rng(2), 12)
    steps = FLIP_SIDE * FLIP_SIDE // features_in_step
    kw = {"features_in_step": features_in_step}
    reference_auc = _pixel_flipping(flip_model, images, maps, targets, auc=True, **kw)
    reference_curve = _pixel_flipping(flip_model, images, maps, targets, **kw)
    ours, _ = faithfulness.DeletionAUC(steps=steps).per_sample(
        _flip_score(flip_model, targets),
        torch.from_numpy(images),
        torch.from_numpy(maps),
        torch.Generator().manual_seed(0),
    )
    intact = _flip_score(flip_model, targets)(torch.from_numpy(images)).double().numpy()
    # Conversion. Ours integrates the curve p_0 (intact), p_1, ..., p_n over the removed
    # fraction, points 1/n apart: ours = (1/n) * sum_{j<n} (p_j + p_{j+1}) / 2. Quantus
    # integrates p_1, ..., p_n over the step index (dx=1), leaving out the first segment:
    # quantus = sum_{1<=j<n} (p_j + p_{j+1}) / 2. Hence
    #     quantus = n * ours - (p_0 + p_1) / 2,
    # with p_0 the intact image's probability and p_1 Quantus' first curve point.
    converted = steps * ours.numpy() - (intact + reference_curve[:, 0]) / 2
    # Quantus sums its float32 probabilities in float32 (values up to n), and n * ours scales
    # our rounding by n: allow 1e-6 per curve point.
    tolerance = {"rtol": 0, "atol": 1e-6 * steps}
    np.testing.assert_allclose(converted, reference_auc, **tolerance)
    # Quantus' AUC is its own curve through its own rule (trapezoids, dx=1) ...
    np.testing.assert_allclose(np.trapezoid(reference_curve, axis=1), reference_auc, **tolerance)
    # ... and the first segment is not negligible, so the correction term is needed.
    assert np.abs(steps * ours.numpy() - reference_auc).max() > 0.1


def test_pixel_flipping_black_baseline_is_the_image_minimum(flip_model) -> None:
    # On images with a positive minimum Quantus' "black" is not 0 but each image's minimum:
    # it matches our curve with a canvas filled with that minimum, not our "zero" canvas. A
    # literal baseline of 0.0 matches "zero".
    images, maps, targets = _flip_data(np.random.default_rng(3), 12, low=0.3)
    steps = FLIP_SIDE * FLIP_SIDE // 4
    x = torch.from_numpy(images)
    zero = faithfulness.make_canvas(x, "zero", 0.05)
    minimum = x.amin(dim=(1, 2, 3), keepdim=True).expand_as(x).clone()
    assert (minimum > 0.25).all()
    black = _pixel_flipping(flip_model, images, maps, targets, features_in_step=4)
    literal_zero = _pixel_flipping(
        flip_model, images, maps, targets, features_in_step=4, perturb_baseline=0.0
    )
    _assert_equal(_our_curve(flip_model, images, maps, targets, minimum, steps)[:, 1:], black)
    ours_zero = _our_curve(flip_model, images, maps, targets, zero, steps)[:, 1:]
    _assert_equal(ours_zero, literal_zero)
    assert np.abs(ours_zero - black).max() > 1e-3  # the two baselines really differ here
