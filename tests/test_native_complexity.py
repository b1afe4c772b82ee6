"""Native complexity metrics: known answers, Quantus 0.6.0 agreement, floors, the phantom.

Quantus is called here as an independent reference, never copied. Its complexity metrics
take the absolute value and divide by the maximum before scoring (its defaults, kept), but its
default division is by the maximum of the whole batch; ours is per map, so Quantus is called
with ``normalise_func_kwargs={"normalise_axes": [1, 2, 3]}`` (per-map maxima). No draws are
involved: these metrics are deterministic functions of the maps.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import quantus
import torch

from xaibench.data.phantom import PhantomDataset
from xaibench.errors import XaibenchError
from xaibench.metrics.complexity import (
    Complexity,
    EffectiveComplexity,
    Sparseness,
    effective_complexity,
    entropy_complexity,
    gini_sparseness,
)

KERNELS = {
    "sparseness": (gini_sparseness, quantus.Sparseness),
    "complexity": (entropy_complexity, quantus.Complexity),
    # Quantus' default threshold (ours defaults to 0.01, see EffectiveComplexity).
    "effective_complexity": (
        lambda m: effective_complexity(m, eps=1e-5),
        quantus.EffectiveComplexity,
    ),
}


def _quantus(metric_cls: type, maps: np.ndarray) -> np.ndarray:
    metric = metric_cls(disable_warnings=True, normalise_func_kwargs={"normalise_axes": [1, 2, 3]})
    a = maps[:, None].astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = metric(
            model=None,
            x_batch=np.zeros_like(a),
            y_batch=np.zeros(len(a), dtype=np.int64),
            a_batch=a,
        )
    return np.asarray(scores, dtype=np.float64)


def _signed_maps(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Signed maps with exact zeros, a sparse map and a near-constant one, 12 x 10."""
    gen = torch.Generator().manual_seed(0)
    maps = torch.randn(6, 12, 10, generator=gen, dtype=dtype)
    maps[1, :6] = 0.0
    maps[2] = 0.0
    maps[2, 3, 4], maps[2, 7, 1] = 2.0, -0.5
    maps[3] = 1.0 + 1e-3 * maps[3]
    maps[4] = maps[4] ** 5  # heavy tails: many values near 0 after dividing by the maximum
    return maps


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(KERNELS))
def test_equals_quantus(name, dtype):
    kernel, metric_cls = KERNELS[name]
    maps = _signed_maps(dtype)
    ours = kernel(maps).numpy()
    np.testing.assert_allclose(ours, _quantus(metric_cls, maps.numpy()), rtol=0, atol=1e-6)


def test_known_answers_by_hand():
    one_hot = torch.zeros(1, 4, 5)
    one_hot[0, 2, 3] = -3.0
    flat = torch.full((1, 4, 5), 0.7)
    n = 20
    # Gini of one non-zero among n: (n - 1) / n, shrunk by the offset: numerator (n - 1) * 1
    # over n * (1 + n * 1e-7) after dividing by the maximum.
    expected = (n - 1) / (n * (1 + n * 1e-7))
    assert gini_sparseness(one_hot).item() == pytest.approx(expected, abs=1e-12)
    assert gini_sparseness(flat).item() == 0.0
    assert entropy_complexity(one_hot).item() == 0.0
    assert entropy_complexity(flat).item() == pytest.approx(math.log(n), abs=1e-12)
    assert effective_complexity(one_hot, eps=1e-5).item() == 1
    assert effective_complexity(flat).item() == n
    assert effective_complexity(torch.tensor([[[1.0, 0.009, 0.011, -0.5]]])).item() == 3
    two_level = torch.tensor([[[1.0, 1e-6, 2e-5, -1e-4]]])
    assert effective_complexity(two_level, eps=1e-5).item() == 3


def test_map_without_attribution_is_undefined_not_zero():
    zero = torch.zeros(2, 3, 3)
    assert torch.isnan(gini_sparseness(zero)).all()
    assert torch.isnan(entropy_complexity(zero)).all()
    assert (effective_complexity(zero) == 0).all()


@pytest.mark.parametrize("name", list(KERNELS))
def test_non_finite_maps_are_refused_naming_the_map(name):
    maps = torch.rand(3, 4, 4)
    maps[1, 0, 0] = float("nan")
    maps[2, 1, 1] = float("-inf")
    with pytest.raises(XaibenchError, match=r"2 map\(s\) at batch index \[1, 2\]"):
        KERNELS[name][0](maps)


def test_floors_of_uniform_noise_match_the_documented_values():
    gen = torch.Generator().manual_seed(0)
    maps = torch.zeros(4, 64, 64)
    n = 64 * 64
    sparse, entropy, effective = Sparseness(), Complexity(), EffectiveComplexity()
    assert sparse.floor(maps, gen).mean().item() == pytest.approx(1 / 3, abs=0.01)
    expected = math.log(n / 2) + 0.5
    assert entropy.floor(maps, gen).mean().item() == pytest.approx(expected, abs=0.01)
    # Binomial(n, 0.99) counts: mean 0.99 n, sd about 6.4; the mean of 4 maps within 5 sd.
    assert effective.floor(maps, gen).mean().item() == pytest.approx(0.99 * n, abs=16)


def test_map_of_the_planted_region_is_simpler_than_the_floor():
    """A map equal to the phantom's spine (plus faint noise) against the noise floor."""
    data = PhantomDataset(n_images=6, image_size=32, seed=3)
    _, labels = data.generate(range(6))
    spine = torch.from_numpy(np.stack([data.masks_of(label)["spine"] for label in labels]))
    assert spine.flatten(1).any(1).all()
    gen = torch.Generator().manual_seed(1)
    maps = spine.float() + 1e-7 * torch.rand(spine.shape, generator=gen)
    for metric in (Sparseness(), Complexity(), EffectiveComplexity()):
        values = metric.per_sample(maps).numpy()
        floor = metric.floor(maps, gen).numpy()
        better = values > floor if metric.higher_is_better else values < floor
        assert better.all(), type(metric).__name__
        result = metric.aggregate(values, floor)
        assert result.details["random_floor"] == pytest.approx(floor.mean())
    counts = EffectiveComplexity().per_sample(maps).numpy()
    np.testing.assert_array_equal(counts, spine.flatten(1).sum(1).numpy())


def test_registered_opt_in_with_directions(components):
    for name, cls, better in (
        ("sparseness", Sparseness, True),
        ("complexity", Complexity, False),
        ("effective_complexity", EffectiveComplexity, False),
    ):
        metric = components.metrics.create(name, {})
        assert isinstance(metric, cls)
        assert metric.higher_is_better is better
        assert metric.needs == "map"
