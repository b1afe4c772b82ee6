"""Robustness: does the explanation stay put when the image barely changes?

Three scores of how far a method's map moves when the image is perturbed by small noise, each
over ``nr_samples`` seeded draws (lower is better):

* ``max_sensitivity`` — Yeh et al. (NeurIPS 2019): the largest ``||a(x) - a(x')|| / ||a(x)||``
  over the draws, ``x' = x + u`` with ``u`` uniform in ``[-0.2, 0.2]`` per pixel;
* ``avg_sensitivity`` — the same ratio averaged over the draws;
* ``local_lipschitz`` — Alvarez-Melis & Jaakkola (2018): the largest
  ``||a(x) - a(x')|| / ||x - x'||`` over draws ``x' = x + N(0, 0.1²)``, with every map divided
  by its maximum ``|value|`` first.

Norms are Frobenius (Euclidean) over the whole map. Defaults are Quantus 0.6.0's
(``MaxSensitivity``, ``AvgSensitivity``, ``LocalLipschitzEstimate``) and the values equal
Quantus' on the same noise (``tests/test_native_robustness.py``), with one deliberate difference:
Quantus' ``normalise`` divides by the maximum over the whole batch it is given, these divide each
map by its own (:func:`~xaibench.metrics.reexplain.prepare`), so a value does not depend on the
other images of its batch.

Written here rather than bridged: Quantus explains one draw of the batch per ``explain`` call
(``nr_samples`` calls per batch); these stack as many draws as ``explain_batch`` allows into one
call, so a fast method on a GPU does the 200 draws in a handful of calls. The noise comes from
the cell's generator (never NumPy's global state), on its own stream, so the values do not
depend on ``explain_batch`` for a deterministic method.

The floor (``details["random_floor"]``) is the same score with every re-explanation replaced by
itself with its pixels randomly permuted (:func:`~xaibench.metrics.reexplain.permute_pixels`),
a fresh permutation per draw: an explainer that returns the same values as the method but at
random places. It keeps each map's norm and value distribution, so the floor is on the same
scale as the value; a method whose value is near it moves as much under the noise as one that
carries no spatial information at all.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from xaibench.errors import XaibenchError
from xaibench.metrics.base import ExplainerMetric
from xaibench.metrics.reexplain import (
    draw_seed,
    draws_per_call,
    explain,
    permute_pixels,
    prepare,
)

#: Added to the Lipschitz denominator, as Quantus' ``lipschitz_constant`` does.
LIPSCHITZ_EPS = 1e-10


def raw_range(model: torch.nn.Module) -> tuple[float, float]:
    """The raw intensity range ``model`` accepts (``(-inf, inf)`` when it declares none)."""
    spec = getattr(getattr(model, "backbone", model), "input_spec", None)
    return getattr(spec, "raw_range", (-math.inf, math.inf))


def perturb(images: torch.Tensor, noise: torch.Tensor, bounds: tuple[float, float]) -> torch.Tensor:
    """``images + noise`` in float64, clipped to ``bounds`` (the model's raw range).

    xaibench's models refuse images outside their raw range (``[0, 1]``), where Quantus' models
    take anything; the clipped image is what is explained, and its distance from the original
    is the Lipschitz denominator.
    """
    return (images.detach().to("cpu", torch.float64) + noise).clamp(*bounds)


def draw_noise(
    shape: torch.Size,
    generator: torch.Generator,
    kind: Literal["uniform", "gaussian"],
    low: float,
    high: float,
) -> torch.Tensor:
    """One draw of per-pixel noise, float64 on the CPU.

    Args:
        shape: The images' shape ``[B, 1, H, W]``.
        generator: The noise stream.
        kind: ``uniform`` in ``[low, high)``, or ``gaussian`` with mean ``low`` and std ``high``.
        low: Lower bound, or the mean.
        high: Upper bound, or the standard deviation.
    """
    if kind == "uniform":
        return low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)
    return low + high * torch.randn(shape, generator=generator, dtype=torch.float64)


class _Robustness(ExplainerMetric):
    """Scores of how far maps move over noisy draws; subclasses set the ratio and reduction."""

    higher_is_better = False

    smoke_options: ClassVar[dict[str, Any]] = {"nr_samples": 2}

    nr_samples: int = Field(200, ge=1, le=100_000, description="Noisy draws per image.")
    explain_batch: int = Field(
        64,
        ge=1,
        le=1_000_000,
        description=(
            "Most noisy images per method.explain call (whole draws of the batch, at least one)."
        ),
    )
    normalise: bool = Field(False, description="Divide each map by its max |value| first.")
    absolute: bool = Field(False, description="Take |map| (after normalising), as Quantus' abs.")
    nan_when_prediction_changes: bool = Field(
        False,
        description=(
            "NaN for an image where any draw changes the model's predicted class "
            "(Quantus' return_nan_when_prediction_changes)."
        ),
    )

    #: ``max`` or ``mean`` over the draws.
    reduction: ClassVar[Literal["max", "mean"]] = "max"

    def _noise(self, shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must define its noise")

    def _ratio(
        self, a: torch.Tensor, moved: torch.Tensor, noise: torch.Tensor, x: torch.Tensor
    ) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} must define its ratio")

    def per_sample(
        self,
        model: torch.nn.Module,
        method: object,
        images: torch.Tensor,
        targets: torch.Tensor,
        maps: torch.Tensor,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The score over ``nr_samples`` noisy draws, and the permuted-re-explanation floor.

        Each draw's noise comes from a stream seeded from ``generator`` (drawn first), and the
        floor's permutations from a second one, so neither depends on ``explain_batch``.
        """
        if images.dim() != 4:
            raise XaibenchError(f"images must be [B, 1, H, W], got {tuple(images.shape)}")
        a = prepare(maps, absolute=self.absolute, normalise=self.normalise)
        b = images.shape[0]
        x = images.detach().to("cpu", torch.float64)
        noise_stream = torch.Generator().manual_seed(draw_seed(generator))
        floor_stream = torch.Generator().manual_seed(draw_seed(generator))
        values = np.full((self.nr_samples, b), np.nan)
        floor = np.full((self.nr_samples, b), np.nan)
        changed = np.zeros((self.nr_samples, b), dtype=bool)
        before = self._predicted(model, images) if self.nan_when_prediction_changes else None
        per_call = draws_per_call(b, self.explain_batch)
        bounds = raw_range(model)
        start = 0
        while start < self.nr_samples:
            k = min(per_call, self.nr_samples - start)
            noises = [self._noise(images.shape, noise_stream) for _ in range(k)]
            noisy = [perturb(images, n, bounds) for n in noises]
            stacked = torch.cat(noisy).to(images.device, images.dtype)
            moved = explain(method, model, stacked, targets.repeat(k))
            moved = prepare(moved, absolute=self.absolute, normalise=self.normalise)
            moved = moved.view(k, *a.shape)
            if before is not None:
                after = self._predicted(model, stacked).reshape(k, b)
                changed[start : start + k] = after != before[None]
            for j in range(k):
                values[start + j] = self._ratio(a, moved[j], noisy[j], x)
                shuffled = permute_pixels(moved[j], floor_stream)
                floor[start + j] = self._ratio(a, shuffled, noisy[j], x)
            start += k
        values[changed] = np.nan
        floor[changed] = np.nan
        return self._reduce(values), self._reduce(floor)

    @torch.no_grad()
    def _predicted(self, model: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
        return model(images).argmax(dim=1).cpu().numpy()

    def _reduce(self, draws: np.ndarray) -> torch.Tensor:
        """Max or mean over the draws, skipping NaN.

        With ``nan_when_prediction_changes`` a changed draw makes the image NaN (as in Quantus).
        """
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN images: NaN is the answer
            if self.reduction == "max":
                out = np.max(draws, 0) if self.nan_when_prediction_changes else np.nanmax(draws, 0)
            else:
                out = (
                    np.mean(draws, 0) if self.nan_when_prediction_changes else np.nanmean(draws, 0)
                )
        return torch.from_numpy(np.asarray(out, dtype=np.float64))


def _norm(t: torch.Tensor) -> np.ndarray:
    return torch.linalg.vector_norm(t.flatten(1), dim=1).numpy()


class _Sensitivity(_Robustness):
    lower_bound: float = Field(
        0.2, gt=0, le=10, description="Uniform noise in [-lower_bound, lower_bound] (raw units)."
    )
    upper_bound: float | None = Field(
        None,
        gt=0,
        le=10,
        description="If set, the noise is uniform in [lower_bound, upper_bound] instead.",
    )

    @model_validator(mode="after")
    def _interval(self) -> _Sensitivity:
        """Refuse an empty noise interval (one line naming the options)."""
        if self.upper_bound is not None and self.upper_bound <= self.lower_bound:
            raise ValueError(
                f"upper_bound ({self.upper_bound}) must be larger than lower_bound "
                f"({self.lower_bound})"
            )
        return self

    def _noise(self, shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
        if self.upper_bound is None:
            return draw_noise(shape, generator, "uniform", -self.lower_bound, self.lower_bound)
        return draw_noise(shape, generator, "uniform", self.lower_bound, self.upper_bound)

    def _ratio(
        self, a: torch.Tensor, moved: torch.Tensor, noisy: torch.Tensor, x: torch.Tensor
    ) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return _norm(a - moved) / _norm(a)


class MaxSensitivity(_Sensitivity):
    """Largest relative change ``||a(x) - a(x')|| / ||a(x)||`` over uniform-noise draws.

    Lower is better. Floor: the same with each re-explanation's pixels permuted (module
    docstring). NaN (or inf) where the map is all zero, as in Quantus.
    """

    display_name = "Max-sensitivity"
    citation = "Yeh et al., On the (in)fidelity and sensitivity of explanations, NeurIPS 2019"
    reduction = "max"


class AvgSensitivity(_Sensitivity):
    """Mean relative change ``||a(x) - a(x')|| / ||a(x)||`` over uniform-noise draws.

    Lower is better. Floor: the same with each re-explanation's pixels permuted.
    """

    display_name = "Avg-sensitivity"
    citation = "Yeh et al., On the (in)fidelity and sensitivity of explanations, NeurIPS 2019"
    reduction = "mean"


class LocalLipschitz(_Robustness):
    """Largest ``||a(x) - a(x')|| / (||x - x'|| + 1e-10)`` over Gaussian-noise draws.

    Maps are divided by their own max ``|value|`` first (``normalise``, Quantus' default; per
    image here, per batch in Quantus). Lower is better. Floor: the same with each
    re-explanation's pixels permuted.
    """

    display_name = "Local Lipschitz estimate"
    citation = "Alvarez-Melis & Jaakkola, On the robustness of interpretability methods, 2018"
    reduction = "max"

    normalise: bool = Field(True, description="Divide each map by its max |value| first.")
    perturb_mean: float = Field(0.0, ge=-10, le=10, description="Mean of the Gaussian noise.")
    perturb_std: float = Field(0.1, gt=0, le=10, description="Std of the Gaussian noise.")

    def _noise(self, shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
        return draw_noise(shape, generator, "gaussian", self.perturb_mean, self.perturb_std)

    def _ratio(
        self, a: torch.Tensor, moved: torch.Tensor, noisy: torch.Tensor, x: torch.Tensor
    ) -> np.ndarray:
        return _norm(a - moved) / (_norm(x - noisy) + LIPSCHITZ_EPS)
