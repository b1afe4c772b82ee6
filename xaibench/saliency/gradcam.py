"""Grad-CAM through the backbone adapter's feature grid.

Written here rather than taken from captum: captum's ``LayerGradCam`` averages gradients over the
layer output's trailing dimensions, which is right for CNN maps ``[B, C, h, w]`` but wrong for ViT
tokens ``[B, N, C]``, and it has no hook for the token-to-grid reshape. The adapter's
``activation_to_grid`` supplies that reshape, so the same code serves both architectures.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xaibench.models.base import Classifier
from xaibench.saliency.base import SaliencyMethod, check_maps


class GradCAM(SaliencyMethod):
    """Gradient-weighted class activation mapping (Selvaraju et al., ICCV 2017).

    Channel weights are the spatially averaged gradients of the target logit; the map is the ReLU
    of the weighted sum of channels, bilinearly upsampled to the image grid.
    """

    display_name = "Grad-CAM"
    citation = "Selvaraju et al., Grad-CAM, ICCV 2017, doi:10.1109/ICCV.2017.74"

    def explain(
        self, model: Classifier, images: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """Grad-CAM maps ``[B, H, W]`` for ``targets``."""
        layer = model.backbone.cam_layer()
        captured: list[torch.Tensor] = []

        def keep(_module: torch.nn.Module, _inputs: object, output: torch.Tensor) -> None:
            captured.append(output)

        handle = layer.register_forward_hook(keep)
        try:
            with torch.enable_grad():
                x = images.detach().clone().requires_grad_(True)  # gradients reach frozen layers
                logits = model(x)
                score = logits.gather(1, targets.view(-1, 1)).sum()
                activation = captured[-1]
                (grad,) = torch.autograd.grad(score, activation)
        finally:
            handle.remove()
        act_grid = model.backbone.activation_to_grid(activation.detach())
        grad_grid = model.backbone.activation_to_grid(grad)
        weights = grad_grid.mean(dim=(2, 3), keepdim=True)
        cam = F.relu((weights * act_grid).sum(dim=1, keepdim=True))
        cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return check_maps(cam[:, 0], images, "gradcam")
