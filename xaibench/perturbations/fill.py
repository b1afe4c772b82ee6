"""Constant-fill perturbations: ``zero`` and ``mean``."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from xaibench.perturbations.base import Perturbation


class ZeroFill(Perturbation):
    """Set the region to 0 (black: no attenuation in a radiograph's display scale)."""

    display_name = "Zero fill"

    def apply(
        self, images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """Zero the masked pixels."""
        return images.masked_fill(masks.unsqueeze(1), 0.0)


class MeanFill(Perturbation):
    """Set the region to the mean intensity of the image.

    By default the mean is taken over the pixels *outside* the region (``over="outside"``): the
    mean over the whole image includes the region itself, so the fill value would still carry a
    scalar summary of what was removed (for osteoporosis, bone density), and a model could read it
    back. ``over="image"`` gives the plain image mean.
    """

    display_name = "Mean fill"

    over: Literal["outside", "image"] = Field(
        "outside", description="Pixels the fill value is averaged over."
    )

    def apply(
        self, images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """Fill the masked pixels of each image with its mean."""
        m = masks.unsqueeze(1)
        if self.over == "image":
            fill = images.mean(dim=(1, 2, 3), keepdim=True)
        else:
            keep = (~m).to(images.dtype)
            count = keep.sum(dim=(1, 2, 3), keepdim=True)
            fill = (images * keep).sum(dim=(1, 2, 3), keepdim=True) / count.clamp_min(1)
            fill = torch.where(count > 0, fill, images.mean(dim=(1, 2, 3), keepdim=True))
        return torch.where(m, fill.expand_as(images), images)
