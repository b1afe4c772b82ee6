"""Additive Gaussian noise inside the region."""

from __future__ import annotations

import torch
from pydantic import Field

from xaibench.perturbations.base import Perturbation


class GaussianNoise(Perturbation):
    """Add zero-mean Gaussian noise of standard deviation ``sigma`` (raw units) inside the region.

    A weak perturbation by design: the noise has mean zero, so the region's mean intensity (for
    osteoporosis, its density) and its coarse structure survive, and a model that averages over
    the region can see through it. It is the control that tells "the model uses the fine texture"
    (noise hurts) from "the model uses the mean" (only ``mean``/``zero`` hurt).

    The result is clipped to [0, 1], since the backbone adapters reject values outside it. Clipping
    makes the noise smaller and biased towards the centre near 0 and 1 (a black background stays
    mostly black); for pixels at least ~3 sigma from both ends it has no visible effect.

    The noise is drawn for every pixel of the batch, inside the region or not, so the value a pixel
    receives depends only on the seed and the batch shape, not on the mask.
    """

    display_name = "Gaussian noise"
    citation = (
        "Fong & Vedaldi, Interpretable Explanations of Black Boxes by Meaningful Perturbation, "
        "ICCV 2017, arXiv:1704.03296"
    )

    sigma: float = Field(
        0.1, gt=0, description="Standard deviation of the noise, in raw intensity units ([0, 1])."
    )

    def apply(
        self, images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """Add clipped noise drawn from ``generator`` to the masked pixels."""
        # Drawn in float32 on the generator's device, then moved: a seed gives the same noise
        # whether the images live on the CPU or a GPU (up to the images' float precision).
        noise = torch.randn(
            images.shape, generator=generator, device=generator.device, dtype=torch.float32
        ).to(device=images.device, dtype=images.dtype)
        noisy = (images + self.sigma * noise).clamp(0.0, 1.0)
        return torch.where(masks.unsqueeze(1), noisy, images)
