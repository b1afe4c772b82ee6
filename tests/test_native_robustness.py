"""Native robustness metrics against Quantus 0.6.0, and planted answers on the phantom.

Equality with Quantus: both are handed the same model (a tiny random reference classifier), the
same images, maps and method, and the *same noise*. Ours draws its noise from the cell's
generator; the test records each draw by wrapping :func:`xaibench.metrics.robustness.perturb`,
and hands Quantus a ``perturb_func`` (its constructor option) that returns, at its k-th call, the
k-th recorded draw added to the batch and clipped to ``[0, 1]`` as ours is (xaibench's models
refuse images outside their raw range). Quantus perturbs the whole batch once per draw, so its
k-th call is our k-th draw. For the local Lipschitz estimate, whose default normalises the maps,
Quantus is run with ``normalise=False`` on maps the test normalised per image (its own
normalisation divides by the batch's maximum; ours by each map's: the documented difference).
"""

from __future__ import annotations

import warnings
from itertools import count

import numpy as np
import pytest
import quantus
import torch

from xaibench.data.phantom import PhantomDataset
from xaibench.metrics import robustness
from xaibench.metrics.robustness import AvgSensitivity, LocalLipschitz, MaxSensitivity
from xaibench.plugins import collect_components, get_plugin_manager
from xaibench.saliency.base import SaliencyMethod
from xaibench.saliency.controls import CenterMap, RandomMap
from xaibench.saliency.gradient import InputXGradient
from xaibench.testing.checks._support import random_images, reference_model

DRAWS = 3


@pytest.fixture(scope="module")
def models():
    components = collect_components(get_plugin_manager(entry_points=False))
    return {arch: reference_model(components, arch) for arch in ("cnn", "vit")}


def _quantus_explain(method: SaliencyMethod, normalise: bool):
    def explain_func(model, inputs, targets, **_):
        x = torch.as_tensor(inputs, dtype=torch.float32)
        maps = method.explain(model, x, torch.as_tensor(targets)).detach().double().numpy()
        return _per_image_max(maps[:, None]) if normalise else maps[:, None]

    return explain_func


def _per_image_max(a: np.ndarray) -> np.ndarray:
    return a / np.abs(a).reshape(len(a), -1).max(axis=1).reshape(-1, 1, 1, 1)


@pytest.mark.parametrize(
    ("ours", "theirs", "arch"),
    [
        (MaxSensitivity, quantus.MaxSensitivity, "vit"),
        (AvgSensitivity, quantus.AvgSensitivity, "vit"),
        (LocalLipschitz, quantus.LocalLipschitzEstimate, "vit"),
        (LocalLipschitz, quantus.LocalLipschitzEstimate, "cnn"),
    ],
)
def test_equal_to_quantus_on_the_same_noise(models, monkeypatch, ours, theirs, arch):
    model = models[arch]
    method = InputXGradient()
    images = random_images(2, seed=1)
    targets = torch.tensor([0, 2])
    maps = method.explain(model, images, targets).detach()
    drawn: list[torch.Tensor] = []

    def recording(images, noise, bounds):
        drawn.append(noise.clone())
        return real(images, noise, bounds)

    real = robustness.perturb
    monkeypatch.setattr(robustness, "perturb", recording)
    # 2 draws per explain call, then 1: the batching must not change the values
    metric = ours(nr_samples=DRAWS, explain_batch=4)
    values, floor = metric.per_sample(
        model, method, images, targets, maps, torch.Generator().manual_seed(0)
    )
    assert len(drawn) == DRAWS
    calls = count()

    def replay(arr, indices, **_):
        return np.clip(arr + drawn[next(calls)].reshape(arr.shape).numpy(), 0.0, 1.0)

    normalise = metric.normalise
    reference = theirs(
        nr_samples=DRAWS, perturb_func=replay, normalise=False, disable_warnings=True
    )
    a_batch = maps.double().numpy()[:, None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = reference(
            model=model,
            x_batch=images.numpy(),
            y_batch=targets.numpy(),
            a_batch=_per_image_max(a_batch) if normalise else a_batch,
            explain_func=_quantus_explain(method, normalise),
            device="cpu",
        )
    np.testing.assert_allclose(values.numpy(), np.asarray(expected), rtol=1e-6, atol=1e-9)
    # the floor (permuted re-explanations) moves more than the method does
    assert (floor > values).all()


def test_seeded_and_independent_of_the_explain_batch(models):
    model = models["vit"]
    method = InputXGradient()
    images = random_images(2, seed=2)
    targets = torch.tensor([1, 0])
    maps = method.explain(model, images, targets).detach()
    runs = [
        MaxSensitivity(nr_samples=DRAWS, explain_batch=size).per_sample(
            model, method, images, targets, maps, torch.Generator().manual_seed(5)
        )
        for size in (1, 100)
    ]
    torch.testing.assert_close(runs[0][0], runs[1][0], rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(runs[0][1], runs[1][1])


def test_bad_noise_interval_is_one_line():
    from xaibench.component import build_component
    from xaibench.errors import InvalidOptionsError

    with pytest.raises(
        InvalidOptionsError, match=r"upper_bound .* must be larger than lower_bound"
    ):
        build_component(MaxSensitivity, {"lower_bound": 0.2, "upper_bound": 0.1}, label="metric")


class PlantedRegion(SaliencyMethod):
    """Returns the phantom's bone region for the images it was made for, whatever the noise."""

    region: torch.Tensor

    def explain(self, model, images, targets):
        return self.region.repeat(len(images) // len(self.region), 1, 1).float()


def test_planted_answer_on_the_phantom(models):
    """A map fixed on the planted region does not move (0, below the floor); a noise map moves
    as much as the permuted floor."""
    data = PhantomDataset(n_images=2, image_size=32, seed=3)
    pixels, labels = data.generate(range(2))
    images = torch.from_numpy(pixels.astype(np.float32) / 65535.0)[:, None]
    bone = torch.from_numpy(np.stack([data.masks_of(label)["bone"] for label in labels]))
    model = models["vit"]
    targets = torch.tensor([0, 1])
    planted = PlantedRegion(region=bone)
    for metric in (
        MaxSensitivity(nr_samples=DRAWS),
        AvgSensitivity(nr_samples=DRAWS),
        LocalLipschitz(nr_samples=DRAWS),
    ):
        values, floor = metric.per_sample(
            model, planted, images, targets, planted.region.float(), torch.Generator()
        )
        assert (values == 0).all(), type(metric).__name__
        assert (floor > 0.5).all(), type(metric).__name__
        noise = RandomMap()
        maps = noise.explain(model, images, targets)
        values, floor = metric.per_sample(
            model, noise, images, targets, maps, torch.Generator().manual_seed(1)
        )
        np.testing.assert_allclose(values.numpy(), floor.numpy(), rtol=0.1)


class MeanThreshold(torch.nn.Module):
    """Class 0 when the image's mean intensity is above 0.5, else class 1."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        m = images.mean(dim=(1, 2, 3))
        return torch.stack([m - 0.5, 0.5 - m], dim=1)


def test_nan_when_a_draw_changes_the_prediction():
    """An image far from the decision boundary keeps its class under every draw (value 0 for a
    map that never moves); one on the boundary flips in some of 8 draws (NaN, as Quantus'
    ``return_nan_when_prediction_changes``)."""
    images = torch.stack([torch.full((1, 32, 32), 0.9), torch.full((1, 32, 32), 0.5)])
    targets = torch.tensor([0, 0])
    method = CenterMap()
    maps = method.explain(MeanThreshold(), images, targets)
    metric = MaxSensitivity(nr_samples=8, nan_when_prediction_changes=True)
    values, floor = metric.per_sample(
        MeanThreshold(), method, images, targets, maps, torch.Generator().manual_seed(0)
    )
    assert values[0] == 0
    assert floor[0] > 0.5
    assert torch.isnan(values[1])
    assert torch.isnan(floor[1])
    plain, _ = MaxSensitivity(nr_samples=8).per_sample(
        MeanThreshold(), method, images, targets, maps, torch.Generator().manual_seed(0)
    )
    assert (plain == 0).all()
