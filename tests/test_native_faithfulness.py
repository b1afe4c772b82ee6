"""Native faithfulness correlation, monotonicity correlation, IROF and selectivity.

Agreement with Quantus 0.6.0 (an independent reference, called, never copied) on a small
seeded CNN, with Quantus' ``softmax=True`` so that its model output is the probability our
``score`` gives. Randomness: ours draws from a seeded torch generator; Quantus draws from
numpy's global RNG. To give both the same draws, the test draws them with our method
(``draw_subsets`` / ``draw_fills``), scores them with ours (``score_subsets`` /
``score_fills``), and replaces, for the duration of Quantus' call only, the two numpy
functions Quantus draws with — ``np.random.choice`` (faithfulness correlation's subsets, one
call per image and run) and ``np.random.uniform`` (every baseline fill, one call of ``B``
values per perturbation) — by functions that return the same draws in the order Quantus asks
for them. IROF and selectivity draw nothing for the map's order (only our floor is random).
IROF is compared one image per Quantus batch (Quantus fills with the whole batch's mean; see
the module docstring). Maps have distinct values, so no ordering depends on how ties break.

The planted-answer tests use the phantom: a "model" whose score is the mean intensity of the
planted region (the spine), and a map equal to that region beats the floor.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import pytest
import quantus
import torch

from xaibench.data.phantom import PhantomDataset
from xaibench.errors import XaibenchError
from xaibench.metrics.faithfulness_scores import (
    IROF,
    FaithfulnessCorrelation,
    MonotonicityCorrelation,
    Selectivity,
    pearson_rows,
    spearman_rows,
)

SIDE = 20
TARGET = 1


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(4),
        torch.nn.Flatten(),
        torch.nn.Linear(64, 3),
    )
    return model.eval()


MODEL = _model()


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """One intra-op thread: hundreds of tiny forward passes, 10x faster on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@torch.no_grad()
def score(x: torch.Tensor) -> torch.Tensor:
    """The explained class's probability, computed as Quantus' wrapper does (float32)."""
    return torch.softmax(MODEL(x.float()), dim=-1)[:, TARGET].double()


def _data(batch: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(batch, 1, SIDE, SIDE, generator=gen)
    maps = torch.randn(batch, SIDE, SIDE, generator=gen, dtype=torch.float64).float()
    return images, maps


def _quantus(metric, images, maps, **kwargs) -> np.ndarray:
    batch = len(images)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = metric(
            model=MODEL,
            x_batch=images.numpy(),
            y_batch=np.full(batch, TARGET),
            a_batch=maps[:, None].numpy(),
            softmax=True,
            device="cpu",
            **kwargs,
        )
    return np.asarray(scores, dtype=np.float64)


def _replay(draws: Iterator[np.ndarray]):
    def fake(*args, **kwargs):
        return next(draws)

    return fake


def test_faithfulness_correlation_equals_quantus(monkeypatch):
    images, maps = _data()
    metric = FaithfulnessCorrelation(nr_runs=12, subset_size=30)
    subsets = metric.draw_subsets(len(images), SIDE * SIDE, torch.Generator().manual_seed(2))
    ours = metric.score_subsets(score, images, maps.double().flatten(1), subsets).numpy()
    reference = quantus.FaithfulnessCorrelation(
        nr_runs=12, subset_size=30, return_aggregate=False, disable_warnings=True
    )
    monkeypatch.setattr(np.random, "choice", _replay(s.numpy() for run in subsets for s in run))
    np.testing.assert_allclose(ours, _quantus(reference, images, maps), rtol=0, atol=1e-6)
    assert np.isfinite(ours).all()


def test_monotonicity_correlation_equals_quantus(monkeypatch):
    images, maps = _data()
    metric = MonotonicityCorrelation(features_in_step=40, nr_samples=4)
    fills = metric.draw_fills(len(images), SIDE * SIDE, torch.Generator().manual_seed(3))
    ours = metric.score_fills(score, images, maps.double().flatten(1).abs(), fills).numpy()
    reference = quantus.MonotonicityCorrelation(
        features_in_step=40, nr_samples=4, disable_warnings=True
    )
    draws = (f.double().numpy() for group in fills for f in group)
    monkeypatch.setattr(np.random, "uniform", _replay(draws))
    np.testing.assert_allclose(ours, _quantus(reference, images, maps), rtol=0, atol=1e-6)
    assert np.isfinite(ours).all()


def test_irof_equals_quantus_image_by_image(monkeypatch):
    # Quantus 0.6.0's IROF calls np.trapz, which NumPy 2 removed; give it the new name.
    monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)
    images, maps = _data(2)
    ours, floor = IROF().per_sample(score, images, maps, torch.Generator().manual_seed(0))
    reference = quantus.IROF(return_aggregate=False, disable_warnings=True)
    theirs = _quantus(reference, images, maps, batch_size=1)
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=0, atol=1e-5)
    assert floor.shape == ours.shape
    assert torch.isfinite(floor).all()


@pytest.mark.parametrize("side", [SIDE, 16])  # 20: padded to 24 (2 + 2), 16: no padding
def test_selectivity_equals_quantus(side):
    images, maps = _data()
    images, maps = images[..., :side, :side].contiguous(), maps[:, :side, :side].contiguous()
    ours, _ = Selectivity().per_sample(score, images, maps, torch.Generator().manual_seed(0))
    metric = quantus.Selectivity(disable_warnings=True)
    _quantus(metric, images, maps)
    theirs = [np.trapezoid(np.asarray(curve)) for curve in metric.evaluation_scores]
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=0, atol=1e-6)


def test_correlations_by_hand():
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0]])
    b = torch.tensor([[2.0, 4.0, 6.0, 9.0], [1.0, 2.0, 3.0, 4.0]])
    r = pearson_rows(a, b)
    assert r[0].item() == pytest.approx(np.corrcoef(a[0], b[0])[0, 1])
    assert torch.isnan(r[1])  # constant series: undefined
    assert spearman_rows(a[:1], b[:1]).item() == pytest.approx(1.0)
    tied = spearman_rows(torch.tensor([[1.0, 1.0, 2.0]]), torch.tensor([[1.0, 2.0, 3.0]]))
    assert tied.item() == pytest.approx(np.sqrt(3) / 2)  # scipy's average ranks


def test_bad_options_name_the_option():
    images, maps = _data(1)
    gen = torch.Generator()
    with pytest.raises(XaibenchError, match="subset_size"):
        FaithfulnessCorrelation(subset_size=SIDE * SIDE).per_sample(score, images, maps, gen)
    with pytest.raises(XaibenchError, match="features_in_step"):
        MonotonicityCorrelation(features_in_step=10_000).per_sample(score, images, maps, gen)
    with pytest.raises(XaibenchError, match="do not match"):
        Selectivity().per_sample(score, images, maps[:, :4], gen)


# ---------------------------------------------------------------------------------------------
# The planted answer: a model that reads the phantom's spine
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def phantom() -> tuple[torch.Tensor, torch.Tensor]:
    data = PhantomDataset(n_images=4, image_size=32, seed=3)
    raw, labels = data.generate(range(4))
    images = torch.from_numpy(raw.astype(np.float32) / 65535.0)[:, None]
    spine = torch.from_numpy(np.stack([data.masks_of(label)["spine"] for label in labels]))
    return images, spine


def test_a_map_of_the_region_the_model_reads_beats_the_floor(phantom):
    images, spine = phantom
    region = spine[0].flatten()  # one patient's spine, read in every image
    assert region.any()

    def reads_spine(x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, region].double().mean(dim=1)

    gen = torch.Generator().manual_seed(0)
    maps = spine[:1].float().expand_as(spine) + 1e-3 * torch.rand(spine.shape, generator=gen)
    metrics = [
        FaithfulnessCorrelation(nr_runs=20, subset_size=64),
        MonotonicityCorrelation(nr_samples=2),
        IROF(),
        Selectivity(),
    ]
    for metric in metrics:
        values, floor = metric.per_sample(reads_spine, images, maps, gen)
        better = values > floor if metric.higher_is_better else values < floor
        assert better.all(), (type(metric).__name__, values, floor)


def test_registered_opt_in_with_directions(components):
    for name, cls, better in (
        ("faithfulness_correlation", FaithfulnessCorrelation, True),
        ("monotonicity_correlation", MonotonicityCorrelation, True),
        ("irof", IROF, True),
        ("selectivity", Selectivity, False),
    ):
        metric = components.metrics.create(name, {})
        assert isinstance(metric, cls)
        assert metric.higher_is_better is better
        assert metric.needs == "model"
