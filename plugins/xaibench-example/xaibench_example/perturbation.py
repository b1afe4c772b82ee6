"""Median fill: a perturbation written in a dozen lines, to show the contract."""

from __future__ import annotations

import torch

from xaibench.perturbations.base import Perturbation


class MedianFill(Perturbation):
    """Set the region to the median intensity of the pixels *outside* it.

    The median of the rest of the image keeps the fill inside the image's own intensity range
    and, unlike a mean over the whole image, carries no summary of what was removed (for
    osteoporosis, how dense the bone was). An image whose mask covers every pixel is filled
    with its own median, since nothing lies outside.
    """

    display_name = "Median fill (example)"

    def apply(
        self, images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """Fill the masked pixels of each image ``[B, 1, H, W]`` with its outside median."""
        out = images.clone()
        for b in range(images.shape[0]):
            inside = masks[b]
            if not inside.any():
                continue  # nothing to perturb: the image comes back unchanged
            outside = images[b, 0][~inside]
            pool = outside if outside.numel() else images[b, 0].flatten()
            out[b, 0][inside] = pool.median()
        return out
