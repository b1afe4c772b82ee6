"""Gradient-based attributions computed with captum.

captum implements these methods and is tested upstream, so they are not rewritten here; this module
only adapts them to the saliency contract:

* gradients are taken w.r.t. the *raw* image, before the adapter's preprocessing, so maps live on
  the grid of the region masks;
* the methods that add noise (SmoothGrad, GradientSHAP) clip the noisy image to the adapter's raw
  range in the forward pass — the adapter refuses out-of-range input, and a radiograph cannot be
  darker than black — while the gradient passes the clip unchanged (straight-through), so
  saturated pixels keep a gradient;
* every method that expands a batch (integration steps, noise samples) runs at most
  ``internal_batch_size`` rows per forward pass, so memory does not grow with the step or sample
  count;
* randomness comes from the torch global RNG, which the runner seeds per cell.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from xaibench.models.base import Classifier
from xaibench.saliency.base import SaliencyMethod, check_maps

#: Reference images: ``zero`` is a black image; ``mean`` is the mean image of the batch being
#: explained (a stand-in for the data set's mean, so it depends on the batch's composition).
BaselineKind = Literal["zero", "mean"]


def baseline_image(kind: BaselineKind, images: torch.Tensor) -> torch.Tensor:
    """One reference image ``[1, 1, H, W]`` of ``kind`` for ``images`` ``[B, 1, H, W]``."""
    if kind == "zero":
        return torch.zeros_like(images[:1])
    return images.detach().mean(dim=0, keepdim=True)


def clipped_forward(model: Classifier) -> Callable[[torch.Tensor], torch.Tensor]:
    """``model`` applied to its input clipped to the raw range, with a straight-through gradient.

    Used by the noise-adding methods: the forward value sees a valid image, the gradient w.r.t.
    the noisy input is the gradient at the clipped image.
    """
    lo, hi = model.backbone.input_spec.raw_range

    def forward(x: torch.Tensor) -> torch.Tensor:
        return model(x + (x.clamp(lo, hi) - x).detach())

    return forward


def image_chunks(n: int, rows_per_image: int, internal_batch_size: int) -> Iterator[slice]:
    """Slices of ``n`` images such that each chunk has ``rows_per_image`` rows within the budget.

    At least one image per chunk, so a single image with more rows than the budget still runs.
    """
    size = max(1, internal_batch_size // max(1, rows_per_image))
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


@contextmanager
def numpy_rng_from_torch() -> Iterator[None]:
    """Seed NumPy's global RNG from torch's for the duration, then restore NumPy's state.

    captum's GradientShap draws its baselines and interpolation points from NumPy's global RNG;
    seeding it from torch's keeps one seed (the runner's ``torch.manual_seed``) in control, and
    restoring it leaves other NumPy users unaffected.
    """
    seed = int(torch.randint(0, 2**32, (1,)).item())
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _leaf(images: torch.Tensor) -> torch.Tensor:
    """A fresh leaf requiring grad (captum warns otherwise; gradients reach frozen models)."""
    return images.detach().clone().requires_grad_(True)


class VanillaGradient(SaliencyMethod):
    """Absolute gradient of the target logit w.r.t. the raw image (Simonyan et al., 2014).

    Uses :class:`captum.attr.Saliency`; the gradient is taken w.r.t. the *raw* image, before the
    adapter's preprocessing, so the map lives on the same grid as the region masks. Non-negative.
    """

    display_name = "Saliency (vanilla gradient)"
    citation = "Simonyan, Vedaldi, Zisserman, arXiv:1312.6034, 2014"
    method_name = "saliency"

    def explain(
        self, model: Classifier, images: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """``|d logit_target / d image|`` as ``[B, H, W]``."""
        from captum.attr import Saliency

        x = _leaf(images)
        with torch.enable_grad():
            attr = Saliency(model).attribute(x, target=targets, abs=True)
        return check_maps(attr[:, 0], images, self.method_name)


class InputXGradient(SaliencyMethod):
    """Input times gradient (Shrikumar et al., 2016), via :class:`captum.attr.InputXGradient`.

    ``x * d logit_target / d x`` on the raw image: signed (negative where a pixel's intensity
    lowers the target logit) unless ``absolute``. Zero on black pixels whatever the model does,
    which matters for radiographs with black borders. For a linear model it is each pixel's exact
    contribution to the logit.
    """

    display_name = "Input x Gradient"
    citation = "Shrikumar, Greenside, Shcherbina, Kundaje, arXiv:1605.01713, 2016"
    method_name = "input_x_gradient"

    absolute: bool = Field(False, description="Return |attribution| instead of the signed value.")

    def explain(
        self, model: Classifier, images: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """``image * gradient`` as ``[B, H, W]``."""
        from captum.attr import InputXGradient as CaptumInputXGradient

        with torch.enable_grad():
            attr = CaptumInputXGradient(model).attribute(_leaf(images), target=targets)
        maps = attr[:, 0].abs() if self.absolute else attr[:, 0]
        return check_maps(maps, images, self.method_name)


class IntegratedGradients(SaliencyMethod):
    """Integrated gradients (Sundararajan et al., ICML 2017), via captum.

    The gradient averaged along the straight path from a baseline to the image, times the
    difference: signed unless ``absolute``. Attributions sum to ``logit(image) - logit(baseline)``
    (completeness) up to the quadrature error of ``n_steps`` Gauss-Legendre points, exactly for a
    linear model. Costs ``n_steps`` forward and backward passes per image, run at most
    ``internal_batch_size`` rows at a time (captum's internal batching), so memory stays flat as
    ``n_steps`` grows.
    """

    display_name = "Integrated Gradients"
    citation = "Sundararajan, Taly, Yan, Axiomatic Attribution for Deep Networks, ICML 2017"
    method_name = "integrated_gradients"

    n_steps: int = Field(32, ge=1, le=4096, description="Integration steps along the path.")
    baseline: BaselineKind = Field(
        "zero", description="Path start: 'zero' (black) or 'mean' (the batch's mean image)."
    )
    internal_batch_size: int = Field(
        64, ge=1, description="Rows (images x steps) per forward pass; bounds memory."
    )
    absolute: bool = Field(False, description="Return |attribution| instead of the signed value.")

    def explain(
        self, model: Classifier, images: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """Integrated gradients as ``[B, H, W]``."""
        from captum.attr import IntegratedGradients as CaptumIG

        ig = CaptumIG(model)
        base = baseline_image(self.baseline, images)
        parts = []
        # Chunks of at most internal_batch_size images, so captum can run >= 1 step per pass.
        for s in image_chunks(len(images), 1, self.internal_batch_size):
            with torch.enable_grad():
                attr = ig.attribute(
                    _leaf(images[s]),
                    baselines=base.expand_as(images[s]),
                    target=targets[s],
                    n_steps=self.n_steps,
                    internal_batch_size=self.internal_batch_size,
                )
            parts.append(attr.detach())
        maps = torch.cat(parts)[:, 0]
        return check_maps(maps.abs() if self.absolute else maps, images, self.method_name)


class GradientShap(SaliencyMethod):
    """GradientSHAP (Lundberg & Lee, NeurIPS 2017; expected gradients), via captum.

    Averages ``(x + noise - b) * grad(b + t (x + noise - b))`` over ``n_samples`` draws of a
    baseline ``b`` from ``baselines``, a point ``t ~ U(0, 1)`` and Gaussian noise: an estimate of
    SHAP values, signed unless ``absolute``. Its expectation is integrated gradients averaged over
    the baselines; for a linear model and no noise it is exactly ``w * (x - mean baseline)``.

    captum draws ``b`` and ``t`` from NumPy's global RNG; that RNG is seeded from torch's for the
    call and restored afterwards, so the torch seed alone fixes the result.
    """

    display_name = "GradientSHAP"
    citation = (
        "Lundberg & Lee, A Unified Approach to Interpreting Model Predictions, NeurIPS 2017; "
        "Erion et al., expected gradients, Nat. Mach. Intell. 2021"
    )
    method_name = "gradient_shap"

    n_samples: int = Field(16, ge=1, le=4096, description="Random samples per image.")
    stdevs: float = Field(
        0.0, ge=0.0, le=1.0, description="Noise std, as a fraction of the raw range."
    )
    baselines: tuple[BaselineKind, ...] = Field(
        ("zero", "mean"),
        min_length=1,
        description="Baseline distribution ('zero': black; 'mean': the batch's mean image).",
    )
    internal_batch_size: int = Field(
        64, ge=1, description="Rows (images x samples) per forward pass; bounds memory."
    )
    absolute: bool = Field(False, description="Return |attribution| instead of the signed value.")

    def explain(
        self, model: Classifier, images: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """GradientSHAP attributions as ``[B, H, W]``."""
        from captum.attr import GradientShap as CaptumGradientShap

        lo, hi = model.backbone.input_spec.raw_range
        shap = CaptumGradientShap(clipped_forward(model))
        refs = torch.cat([baseline_image(kind, images) for kind in self.baselines])
        # Sample groups small enough for the budget; their size-weighted mean is the same
        # estimator as one call with all samples.
        per_pass = max(1, min(self.n_samples, self.internal_batch_size))
        groups = [per_pass] * (self.n_samples // per_pass)
        if self.n_samples % per_pass:
            groups.append(self.n_samples % per_pass)
        parts = []
        with numpy_rng_from_torch():
            for s in image_chunks(len(images), per_pass, self.internal_batch_size):
                total = torch.zeros_like(images[s])
                for n in groups:
                    with torch.enable_grad():
                        attr = shap.attribute(
                            _leaf(images[s]),
                            baselines=refs,
                            target=targets[s],
                            n_samples=n,
                            stdevs=self.stdevs * (hi - lo),
                        )
                    total += attr.detach() * n
                parts.append(total / self.n_samples)
        maps = torch.cat(parts)[:, 0]
        return check_maps(maps.abs() if self.absolute else maps, images, self.method_name)


class SmoothGrad(SaliencyMethod):
    """SmoothGrad (Smilkov et al., 2017): absolute gradients averaged over noisy copies.

    captum's :class:`~captum.attr.NoiseTunnel` over :class:`~captum.attr.Saliency`: the mean of
    ``|d logit / d (x + noise)|`` over ``n_samples`` Gaussian draws with std ``stdev`` times the raw
    range (the paper found 10-20 % of the range best). Non-negative; with ``stdev`` 0 it equals
    ``saliency``. Costs ``n_samples`` forward and backward passes per image.
    """

    display_name = "SmoothGrad"
    citation = "Smilkov, Thorat, Kim, Viegas, Wattenberg, SmoothGrad, arXiv:1706.03825, 2017"
    method_name = "smoothgrad"

    n_samples: int = Field(25, ge=1, le=4096, description="Noisy copies per image.")
    stdev: float = Field(
        0.15, ge=0.0, le=1.0, description="Noise std as a fraction of the raw intensity range."
    )
    internal_batch_size: int = Field(
        64, ge=1, description="Rows (images x samples) per forward pass; bounds memory."
    )

    def explain(
        self, model: Classifier, images: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """Mean absolute gradient under input noise, ``[B, H, W]``."""
        from captum.attr import NoiseTunnel, Saliency

        lo, hi = model.backbone.input_spec.raw_range
        tunnel = NoiseTunnel(Saliency(clipped_forward(model)))
        parts = []
        for s in image_chunks(len(images), 1, self.internal_batch_size):
            per_pass = max(1, min(self.n_samples, self.internal_batch_size // (s.stop - s.start)))
            with torch.enable_grad():
                attr = tunnel.attribute(
                    _leaf(images[s]),
                    nt_type="smoothgrad",
                    nt_samples=self.n_samples,
                    nt_samples_batch_size=per_pass,
                    stdevs=self.stdev * (hi - lo),
                    target=targets[s],
                    abs=True,
                )
            parts.append(attr.detach())
        return check_maps(torch.cat(parts)[:, 0], images, self.method_name)
