"""Native randomisation (MPRT, random logit) and completeness against Quantus 0.6.0, and planted
answers on the phantom.

Equality with Quantus, same model, images, maps and method:

* MPRT: Quantus re-initialises each layer with ``reset_parameters`` after seeding torch's global
  generator to ``seed + 1``; ours does the same under a forked global state, so with the same
  ``seed`` (42, Quantus' default) the randomised weights, hence the re-explanations, are the
  same, and the per-layer Spearman similarities are compared layer by layer (Quantus' result
  dict, minus its ``"original"`` entry).
* random logit: Quantus seeds NumPy's global generator with its ``seed`` and draws the other
  class from it; the test computes the classes Quantus draws and hands them to ours by replacing
  :func:`xaibench.metrics.randomisation.other_classes`. Quantus normalises by the batch's
  maximum, ours per map, so Quantus gets per-image normalised maps and ``normalise=False``.
* completeness: Quantus returns an exact equality (always False here); its ``output_func``
  option receives ``f(x) - f(x')``, which the test captures and compares with ours.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import quantus
import torch
from torch import nn

from xaibench.data.phantom import PhantomDataset
from xaibench.metrics import randomisation
from xaibench.metrics.axiomatic import Completeness, completeness_terms
from xaibench.metrics.randomisation import MPRT, RandomLogit, mprt_curve
from xaibench.models.base import BackboneAdapter, Classifier, InputSpec
from xaibench.plugins import collect_components, get_plugin_manager
from xaibench.saliency.controls import EdgeMap
from xaibench.saliency.gradient import IntegratedGradients, VanillaGradient
from xaibench.testing.checks._support import random_images, reference_model


@pytest.fixture(scope="module")
def models():
    components = collect_components(get_plugin_manager(entry_points=False))
    return {arch: reference_model(components, arch) for arch in ("cnn", "vit")}


def _explain_func(method, normalise: bool = False):
    def explain_func(model, inputs, targets, **_):
        x = torch.as_tensor(inputs, dtype=torch.float32)
        maps = method.explain(model, x, torch.as_tensor(targets)).detach().double().numpy()
        return _per_image_max(maps[:, None]) if normalise else maps[:, None]

    return explain_func


def _per_image_max(a: np.ndarray) -> np.ndarray:
    return a / np.abs(a).reshape(len(a), -1).max(axis=1).reshape(-1, 1, 1, 1)


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class SmallAdapter(BackboneAdapter):
    """Convolution, batch norm, pooling: three randomisable layers with the head (cheap)."""

    def __init__(self) -> None:
        spec = InputSpec(size=16, mean=(0.5,), std=(0.25,), channels=1)
        super().__init__(spec, 4, "cnn", random_init=True)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.norm(self.conv(x))).mean(dim=(2, 3))

    def cam_layer(self) -> nn.Module:
        return self.conv

    def activation_to_grid(self, activation: torch.Tensor) -> torch.Tensor:
        return activation

    def last_block_modules(self) -> list[nn.Module]:
        return [self.norm]

    def lora_target_modules(self) -> list[str]:
        return []


def small_model() -> Classifier:
    torch.manual_seed(0)
    model = Classifier(SmallAdapter(), 3).eval()
    with torch.no_grad():  # statistics a fresh reset_parameters would change
        model.backbone.norm.running_mean.fill_(0.3)
        model.backbone.norm.weight.fill_(2.0)
    return model


@pytest.mark.parametrize(
    ("arch", "order", "skip"),
    [("small", "top_down", False), ("small", "independent", False), ("vit", "top_down", True)],
)
def test_mprt_equal_to_quantus_layer_by_layer(models, arch, order, skip):
    """Layer by layer on a three-layer CNN, both orders; on the tiny ViT the fully randomised
    model after its 39 cascading resets (``skip_layers``: one explanation instead of 39, for
    the test's time budget; the resets, their order and seeds are the same as layer by layer)."""
    model = models[arch] if arch in models else small_model()
    method = VanillaGradient()
    images = random_images(2, seed=3)
    targets = torch.tensor([0, 2])
    maps = method.explain(model, images, targets).detach()
    before = _weights(model)
    state = torch.random.get_rng_state()
    metric = MPRT(seed=42, layer_order=order, skip_layers=skip, summary="last" if skip else "mean")
    names, values, floor = mprt_curve(
        metric, model, method, images, targets, maps, torch.Generator().manual_seed(0)
    )
    # the cell's model and the global random state are untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(state, torch.random.get_rng_state())
    reference = quantus.MPRT(layer_order=order, seed=42, skip_layers=skip, disable_warnings=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = reference(
            model=model,
            x_batch=images.numpy(),
            y_batch=targets.numpy(),
            a_batch=maps.double().numpy()[:, None],
            explain_func=_explain_func(method),
            device="cpu",
        )
    layers = [k for k in expected if k != "original"]
    assert layers == names
    np.testing.assert_allclose(values, np.array([expected[k] for k in layers]), atol=1e-6)
    assert np.abs(floor).mean() < 0.2  # permuted re-explanations: about 0
    # the recorded summary is the mean over layers (or the last)
    summary, _ = metric.per_sample(
        model, method, images, targets, maps, torch.Generator().manual_seed(0)
    )
    expected_summary = values[-1] if skip else values.mean(axis=0)
    np.testing.assert_allclose(summary.numpy(), expected_summary, atol=1e-12)


def test_random_logit_equal_to_quantus(models, monkeypatch):
    model = models["cnn"]
    method = VanillaGradient()
    images = random_images(3, seed=4)
    targets = torch.tensor([0, 1, 2])
    maps = method.explain(model, images, targets).detach()
    # the classes Quantus draws: NumPy seeded to 42, an index among the other classes
    np.random.seed(42)
    index = np.random.randint(0, 2, 3)
    pairs = zip(targets.tolist(), index, strict=True)
    others = torch.tensor([[c for c in range(3) if c != t][i] for t, i in pairs])
    monkeypatch.setattr(randomisation, "other_classes", lambda *_: others)
    values, floor = RandomLogit().per_sample(
        model, method, images, targets, maps, torch.Generator().manual_seed(0)
    )
    reference = quantus.RandomLogit(num_classes=3, normalise=False, disable_warnings=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = reference(
            model=model,
            x_batch=images.numpy(),
            y_batch=targets.numpy(),
            a_batch=_per_image_max(maps.double().numpy()[:, None]),
            explain_func=_explain_func(method, normalise=True),
            device="cpu",
        )
    np.testing.assert_allclose(values.numpy(), np.asarray(expected), atol=1e-6)
    assert (np.abs(floor.numpy()) < np.abs(values.numpy())).all()


def test_completeness_terms_equal_quantus(models):
    model = models["vit"]
    method = IntegratedGradients(n_steps=8)
    images = random_images(2, seed=5)
    targets = torch.tensor([1, 2])
    maps = method.explain(model, images, targets).detach()
    sums, delta = completeness_terms(model, images, targets, maps)  # black, logit (Quantus')
    seen: list[np.ndarray] = []

    def capture(d):
        seen.append(np.asarray(d))
        return d

    reference = quantus.Completeness(normalise=False, output_func=capture, disable_warnings=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference(
            model=model,
            x_batch=images.numpy(),
            y_batch=targets.numpy(),
            a_batch=maps.numpy()[:, None],
            device="cpu",
        )
    np.testing.assert_allclose(delta.numpy(), seen[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sums.numpy(), maps.double().flatten(1).sum(1).numpy())


def _phantom(n: int = 2):
    data = PhantomDataset(n_images=n, image_size=32, seed=3)
    pixels, _ = data.generate(range(n))
    return torch.from_numpy(pixels.astype(np.float32) / 65535.0)[:, None]


def test_planted_answers_on_the_phantom(models):
    """An edge map ignores the model and the class: similarity 1 at every layer and to the
    other class's map (the worst value). Gradient maps change with the weights and the class
    (well below 1). Integrated gradients from the zero image nearly completes (small gap); the
    plain gradient does not; the all-zero map's floor is 1."""
    model = models["vit"]
    images = _phantom()
    targets = torch.tensor([0, 1])
    edge, gradient = EdgeMap(), VanillaGradient()
    metric = MPRT(layer_order="top_down", summary="last", skip_layers=True)
    for method, expect_same in ((edge, True), (gradient, False)):
        maps = method.explain(model, images, targets).detach()
        value, floor = metric.per_sample(
            model, method, images, targets, maps, torch.Generator().manual_seed(0)
        )
        logit, logit_floor = RandomLogit().per_sample(
            model, method, images, targets, maps, torch.Generator().manual_seed(0)
        )
        if expect_same:
            np.testing.assert_allclose(value.numpy(), 1.0)
            np.testing.assert_allclose(logit.numpy(), 1.0)
        else:
            assert (value < 0.9).all()
            assert (logit < 0.99).all()
        assert (floor.abs() < 0.2).all()
        assert (logit_floor < logit).all()
    ig = IntegratedGradients(n_steps=32)
    complete = Completeness(baseline="zero")
    ig_gap, ig_floor = complete.per_sample(
        model, ig, images, targets, ig.explain(model, images, targets), torch.Generator()
    )
    grad_maps = gradient.explain(model, images, targets)
    grad_gap, _ = complete.per_sample(
        model, gradient, images, targets, grad_maps, torch.Generator()
    )
    np.testing.assert_allclose(ig_floor.numpy(), 1.0)
    assert (ig_gap < 0.1).all()
    assert (grad_gap > ig_gap).all()
