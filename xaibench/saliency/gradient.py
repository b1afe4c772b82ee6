"""Gradient-based attributions computed with captum."""

from __future__ import annotations

import torch

from xaibench.models.base import Classifier
from xaibench.saliency.base import SaliencyMethod, check_maps


class VanillaGradient(SaliencyMethod):
    """Absolute gradient of the target logit w.r.t. the raw image (Simonyan et al., 2014).

    Uses :class:`captum.attr.Saliency`; the gradient is taken w.r.t. the *raw* image, before the
    adapter's preprocessing, so the map lives on the same grid as the region masks.
    """

    display_name = "Saliency (vanilla gradient)"
    citation = "Simonyan, Vedaldi, Zisserman, arXiv:1312.6034, 2014"

    def explain(
        self, model: Classifier, images: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """``|d logit_target / d image|`` as ``[B, H, W]``."""
        from captum.attr import Saliency

        x = images.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            attr = Saliency(model).attribute(x, target=targets, abs=True)
        return check_maps(attr[:, 0], images, "saliency")
