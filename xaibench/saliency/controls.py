"""Control maps: saliency "methods" that ignore the model.

A saliency method's localisation score means little on its own: a centred blob scores well when
the anatomy sits in the middle of the image, and an edge detector scores well when the region has
sharp borders. These controls give those reference scores in the same table. They are marked
``control = True`` so leaderboards can label them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from xaibench.models.base import Classifier
from xaibench.saliency.base import SaliencyMethod, check_maps


class RandomMap(SaliencyMethod):
    """Uniform noise in [0, 1): the chance level of every localisation metric.

    Drawn on the CPU from the torch global RNG (which the runner seeds per cell) and then moved to
    the images' device, so a seed gives the same maps on every device. Non-negative.
    """

    display_name = "Random (control)"
    citation = "Adebayo et al., Sanity Checks for Saliency Maps, NeurIPS 2018 (random baselines)"
    method_name = "random"
    control = True

    def explain(
        self, model: Classifier, images: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """Uniform noise ``[B, H, W]``."""
        b, h, w = images.shape[0], images.shape[-2], images.shape[-1]
        maps = torch.rand(b, h, w).to(images.device)
        return check_maps(maps, images, self.method_name)


class EdgeMap(SaliencyMethod):
    """Sobel gradient magnitude of the image: where a map that only sees edges would point.

    Computed in torch (batched, on the images' device, no scikit-image round-trip) as the
    separable Sobel filter: a central difference along one axis, smoothed ``[1, 2, 1]`` along the
    other. Borders are replicated, and differences come first, so a constant image gives exactly
    zero (a 3x3 convolution leaves float rounding residue). Non-negative.
    """

    display_name = "Sobel edges (control)"
    citation = "Sobel & Feldman, An Isotropic 3x3 Image Gradient Operator, 1968"
    method_name = "edge"
    control = True

    def explain(
        self, model: Classifier, images: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """Sobel magnitude ``[B, H, W]`` of the (first channel of the) raw images."""
        p = F.pad(images[:, :1].detach().float(), (1, 1, 1, 1), mode="replicate")[:, 0]
        dx = p[:, :, 2:] - p[:, :, :-2]  # [B, H + 2, W]
        dy = p[:, 2:, :] - p[:, :-2, :]  # [B, H, W + 2]
        gx = dx[:, :-2] + 2 * dx[:, 1:-1] + dx[:, 2:]
        gy = dy[:, :, :-2] + 2 * dy[:, :, 1:-1] + dy[:, :, 2:]
        maps = (gx.pow(2) + gy.pow(2)).sqrt()
        return check_maps(maps, images, self.method_name)


class CenterMap(SaliencyMethod):
    """A centred isotropic Gaussian: the centre bias of a method that always looks mid-image.

    ``sigma`` is a fraction of the shorter image side; the peak (1) is at the geometric centre, so
    the map is symmetric under flips. Identical for every image. Non-negative.
    """

    display_name = "Centre Gaussian (control)"
    citation = "Judd, Ehinger, Durand, Torralba, Learning to Predict Where Humans Look, ICCV 2009"
    method_name = "center"
    control = True

    sigma: float = Field(0.25, gt=0, le=10, description="Std as a fraction of the shorter side.")

    def explain(
        self, model: Classifier, images: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """The same Gaussian ``[B, H, W]`` for every image."""
        h, w = images.shape[-2], images.shape[-1]
        s = self.sigma * min(h, w)
        ys = torch.arange(h, dtype=torch.float32, device=images.device) - (h - 1) / 2
        xs = torch.arange(w, dtype=torch.float32, device=images.device) - (w - 1) / 2
        d2 = ys.view(-1, 1).pow(2) + xs.view(1, -1).pow(2)
        gauss = torch.exp(-d2 / (2 * s * s))
        return check_maps(gauss.expand(images.shape[0], h, w), images, self.method_name)
