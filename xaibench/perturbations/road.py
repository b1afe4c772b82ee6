"""ROAD's noisy linear imputation: each masked pixel becomes the weighted mean of its neighbours.

Rong et al. (ICML 2022) replace removed pixels so that the filled region carries no trace of its
shape: a fill whose boundary or value betrays which pixels were removed lets a model read the
mask itself ("class information leakage"), which a plain constant fill does.
"""

from __future__ import annotations

import torch
from pydantic import Field

from xaibench.metrics.faithfulness import linear_impute
from xaibench.perturbations.base import Perturbation, cpu_arrays, solve_in_threads


class NoisyLinearImpute(Perturbation):
    """ROAD's noisy linear imputation: neighbours' weighted mean plus a little Gaussian noise.

    Each masked pixel is set to the weighted mean of its 8 neighbours (1/6 direct, 1/12
    diagonal), unmasked neighbours being the image's values, all masked pixels solved at once as
    one sparse linear system (:func:`xaibench.metrics.faithfulness.linear_impute`, shared with
    the ``road`` faithfulness *metric*, which removes pixels by relevance rather than by region).
    Gaussian noise of standard deviation ``noise`` (raw intensity units; ROAD's default 0.01) is
    then added to the filled pixels, drawn from the run's generator (so seeded), and the result
    is clipped to [0, 1]. The fill continues the surrounding intensities smoothly (it reproduces
    linear ramps exactly, away from the image border) and the noise keeps the filled area from
    being perfectly flat, so the region's outline leaks less than with a constant fill. One
    sparse solve per image (a few ms at 128 px), images solved side by side in threads.

    Edge cases: an empty mask leaves the image unchanged; a mask covering the whole image has no
    known pixel to interpolate from and is filled with the image mean (plus noise), as ``inpaint``.
    """

    display_name = "Noisy linear imputation (ROAD)"
    citation = (
        "Rong, Leemann, Borisov, Kasneci & Kasneci, A Consistent and Efficient Evaluation "
        "Strategy for Attribution Methods, ICML 2022, arXiv:2202.00449"
    )

    noise: float = Field(
        0.01, ge=0.0, le=1.0, description="Standard deviation of the noise added to filled pixels."
    )

    def apply(
        self, images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """Impute the masked pixels of each image, add seeded noise, clip to [0, 1]."""
        pixels, holes = cpu_arrays(images, masks)
        filled = pixels.copy()
        jobs = [
            (i, c) for i in range(pixels.shape[0]) if holes[i].any() for c in range(pixels.shape[1])
        ]

        def solve(job: tuple[int, int]) -> None:
            i, c = job
            if holes[i].all():
                filled[i, c] = pixels[i, c].mean()
            else:
                filled[i, c] = linear_impute(pixels[i, c], holes[i])

        solve_in_threads(solve, jobs)
        result = torch.from_numpy(filled).to(dtype=images.dtype)
        if self.noise > 0:
            # Drawn for every pixel of the batch in one call, so results do not depend on threads.
            result = result + self.noise * torch.randn(
                result.shape, generator=generator, dtype=images.dtype
            )
        result = result.clamp(0.0, 1.0).to(images.device)
        return torch.where(masks.unsqueeze(1), result, images)
