"""Model-calling native metrics against Quantus 0.6.0: its whole call and its per-batch function.

Every metric that calls the model (faithfulness correlation, monotonicity correlation, IROF,
selectivity, max / avg sensitivity, local Lipschitz estimate, MPRT, random logit, completeness)
on the same tiny model (timm's ``test_resnet`` at 64 px, random weights, three classes), the
same 8 random images at 64 x 64, the plain gradient as the method, and matched small options on
both sides (below, ``CASES``). Timed: our ``per_sample`` (best of 3), Quantus'
``evaluate_batch`` given the model wrapper and arrays its call would hand it (best of 3), and
Quantus' whole call (once, first: it also sets the explanation function and options the
per-batch function reads). Quantus' MPRT has no per-batch function (its ``evaluate_batch``
raises; the call loops over layers itself), so only its whole call is timed.

What the ratios include: all of them are dominated by the model's forward and backward passes,
which both sides pay. Ours also computes each metric's floor (permuted maps or re-explanations,
the same kind of passes again), which Quantus does not: the comparison favours Quantus.
Faithfulness scores use the explained class's probability (Quantus' ``softmax=True``).
Randomness is not matched (each side draws its own subsets, fills or noise), so values are not
compared; the equality tests with matched draws are in ``tests/test_native_*.py``.

Asserted: finite values and a loose floor (ours at least 0.2x Quantus' whole call). The ratios
are printed and stored in ``extra_info``. One intra-op thread on both sides (hundreds of tiny
passes; far less noisy on a shared machine).

Run with ``python -m pytest benchmarks/test_model_metrics.py --benchmark-only -s``.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import quantus
import torch
from quantus.functions.perturb_func import batch_gaussian_noise, batch_uniform_noise
from quantus.helpers.utils import get_wrapped_model

from xaibench.metrics.axiomatic import Completeness
from xaibench.metrics.faithfulness_scores import (
    IROF,
    FaithfulnessCorrelation,
    MonotonicityCorrelation,
    Selectivity,
)
from xaibench.metrics.randomisation import MPRT, RandomLogit
from xaibench.metrics.robustness import AvgSensitivity, LocalLipschitz, MaxSensitivity
from xaibench.models.base import Classifier
from xaibench.models.timm_backbone import TimmBackbone
from xaibench.saliency.gradient import VanillaGradient

BATCH, SIDE, CLASSES, TARGET = 8, 64, 3, 1
ROUNDS = 3
CALL_FLOOR = 0.2
DRAWS = 10  # noisy draws, subsets, random fills


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def setup() -> dict[str, Any]:
    torch.manual_seed(0)
    backbone = TimmBackbone(arch="test_resnet", img_size=SIDE, random_init=True).create_adapter()
    model = Classifier(backbone, CLASSES).eval()
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(BATCH, 1, SIDE, SIDE, generator=gen)  # grayscale, repeated by the adapter
    targets = torch.full((BATCH,), TARGET)
    method = VanillaGradient()
    maps = method.explain(model, images, targets).detach()
    return {"model": model, "images": images, "targets": targets, "method": method, "maps": maps}


def _clipped(perturb: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """Quantus' own noise, clipped to [0, 1] as ours is (xaibench's models refuse images
    outside their raw range)."""

    def clipped(arr: np.ndarray, indices: np.ndarray, **kwargs: Any) -> np.ndarray:
        return np.clip(perturb(arr=arr, indices=indices, **kwargs), 0.0, 1.0)

    return clipped


# name: (ours, Quantus' class, its options, faithfulness score (probability) or explainer metric)
CASES: dict[str, tuple[Any, type, dict[str, Any], bool]] = {
    "faithfulness_correlation": (
        FaithfulnessCorrelation(nr_runs=DRAWS, subset_size=64),
        quantus.FaithfulnessCorrelation,
        {"nr_runs": DRAWS, "subset_size": 64, "return_aggregate": False},
        True,
    ),
    "monotonicity_correlation": (
        MonotonicityCorrelation(features_in_step=256, nr_samples=DRAWS),
        quantus.MonotonicityCorrelation,
        {"features_in_step": 256, "nr_samples": DRAWS},
        True,
    ),
    "irof": (IROF(), quantus.IROF, {"return_aggregate": False}, True),  # 100 superpixels
    "selectivity": (Selectivity(patch_size=8), quantus.Selectivity, {"patch_size": 8}, True),
    "max_sensitivity": (
        MaxSensitivity(nr_samples=DRAWS),
        quantus.MaxSensitivity,
        {"nr_samples": DRAWS, "normalise": False, "perturb_func": _clipped(batch_uniform_noise)},
        False,
    ),
    "avg_sensitivity": (
        AvgSensitivity(nr_samples=DRAWS),
        quantus.AvgSensitivity,
        {"nr_samples": DRAWS, "normalise": False, "perturb_func": _clipped(batch_uniform_noise)},
        False,
    ),
    "local_lipschitz": (
        LocalLipschitz(nr_samples=DRAWS, normalise=False),
        quantus.LocalLipschitzEstimate,
        {"nr_samples": DRAWS, "normalise": False, "perturb_func": _clipped(batch_gaussian_noise)},
        False,
    ),
    "mprt": (  # fully randomised model after the cascading resets: one re-explanation
        MPRT(seed=42, layer_order="top_down", skip_layers=True, summary="last"),
        quantus.MPRT,
        {"layer_order": "top_down", "seed": 42, "skip_layers": True},
        False,
    ),
    "random_logit": (
        RandomLogit(normalise=False),
        quantus.RandomLogit,
        {"num_classes": CLASSES, "normalise": False},
        False,
    ),
    "completeness": (Completeness(), quantus.Completeness, {"normalise": False}, False),
}


def _explain_func(method) -> Callable[..., np.ndarray]:
    def explain_func(model, inputs, targets, **_):
        x = torch.as_tensor(inputs, dtype=torch.float32)
        return method.explain(model, x, torch.as_tensor(targets)).detach().double().numpy()[:, None]

    return explain_func


def _quantus(metric_cls: type, options: dict[str, Any], softmax: bool, s: dict[str, Any]):
    """Quantus' whole call (once), then its per-batch function best of ``ROUNDS`` (or None)."""
    metric = metric_cls(disable_warnings=True, **options)
    x_batch = s["images"].numpy()
    y_batch = s["targets"].numpy()
    a_batch = s["maps"].double().numpy()[:, None]
    start = time.perf_counter()
    values = metric(
        model=s["model"],
        x_batch=x_batch,
        y_batch=y_batch,
        a_batch=a_batch.copy(),
        explain_func=_explain_func(s["method"]),
        softmax=softmax,
        device="cpu",
        batch_size=BATCH,
    )
    call_s = time.perf_counter() - start
    if metric_cls is quantus.MPRT:
        return values, call_s, None
    wrapped = get_wrapped_model(s["model"], channel_first=True, softmax=softmax, device="cpu")
    times = []
    for _ in range(ROUNDS):
        kernel_a = a_batch.copy()
        start = time.perf_counter()
        metric.evaluate_batch(model=wrapped, x_batch=x_batch, y_batch=y_batch, a_batch=kernel_a)
        times.append(time.perf_counter() - start)
    return values, call_s, min(times)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.benchmark(group="model_metrics_vs_quantus")
def test_model_metric_vs_quantus(benchmark, setup, capsys, monkeypatch, name: str) -> None:
    # Quantus 0.6.0 calls np.trapz, which NumPy 2 removed; give it the new name.
    monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)
    ours, metric_cls, options, faithfulness = CASES[name]
    s = setup
    model = s["model"]

    @torch.no_grad()
    def score(x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(model(x.float()), dim=-1)[:, TARGET].double()

    def run() -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(0)
        if faithfulness:
            return ours.per_sample(score, s["images"], s["maps"], gen)
        return ours.per_sample(model, s["method"], s["images"], s["targets"], s["maps"], gen)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, call_s, kernel_s = _quantus(metric_cls, options, faithfulness, s)
        values, _ = benchmark.pedantic(run, rounds=ROUNDS, iterations=1)
    assert values.shape == (BATCH,)
    assert torch.isfinite(values).any()
    best = benchmark.stats.stats.min
    vs_call = call_s / best
    vs_kernel = None if kernel_s is None else kernel_s / best
    benchmark.extra_info.update(
        quantus_call_s=round(call_s, 3),
        quantus_kernel_s=None if kernel_s is None else round(kernel_s, 4),
        speedup_vs_quantus_call=round(vs_call, 2),
        speedup_vs_quantus_kernel=None if vs_kernel is None else round(vs_kernel, 2),
    )
    kernel = "n/a" if kernel_s is None else f"{kernel_s * 1e3:.0f} ms ({vs_kernel:.2f}x)"
    with capsys.disabled():
        print(
            f"\n{name}: xaibench {best * 1e3:.0f} ms; Quantus per-batch {kernel}, whole call "
            f"{call_s * 1e3:.0f} ms ({vs_call:.2f}x); {BATCH} images {SIDE}x{SIDE}, test_resnet"
        )
    assert vs_call >= CALL_FLOOR
