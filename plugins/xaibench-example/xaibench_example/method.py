"""|gradient x input|, written with plain autograd to show a method needs no library."""

from __future__ import annotations

import torch

from xaibench.models.base import Classifier
from xaibench.saliency.base import SaliencyMethod, check_maps


class GradientTimesInput(SaliencyMethod):
    """Absolute value of the input times the gradient of the target logit (Shrikumar et al., 2016).

    On raw radiographs (intensity in [0, 1]) this weights the gradient by how much signal a pixel
    carries, so dark background gets little attribution.
    """

    display_name = "|Gradient x Input| (example)"
    citation = "Shrikumar et al., arXiv:1605.01713, 2016"

    def explain(
        self, model: Classifier, images: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """Return ``|x * d logit_t / dx|`` as ``[B, H, W]``."""
        x = images.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            score = model(x).gather(1, targets.view(-1, 1)).sum()
            (grad,) = torch.autograd.grad(score, x)
        return check_maps((grad * x.detach()).abs()[:, 0], images, "example_method")
