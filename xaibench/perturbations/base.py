"""The perturbation contract.

``apply(images, masks, generator) -> images``: pixels inside ``masks`` are replaced, in
raw-intensity space (before any backbone normalisation), so ``zero`` means the same for every
backbone. Pixels outside the mask are returned unchanged.
"""

from __future__ import annotations

from abc import abstractmethod

import torch

from xaibench.component import Component


class Perturbation(Component):
    """Base class of region perturbations."""

    @abstractmethod
    def apply(
        self, images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """Return perturbed copies of ``images`` ``[B, 1, H, W]`` inside ``masks`` ``[B, H, W]``."""
