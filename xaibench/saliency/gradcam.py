"""Grad-CAM and Grad-CAM++ through the backbone adapter's feature grid.

Written here rather than taken from captum: captum's ``LayerGradCam`` averages gradients over the
layer output's trailing dimensions, which is right for CNN maps ``[B, C, h, w]`` but wrong for ViT
tokens ``[B, N, C]``, and it has no hook for the token-to-grid reshape; captum has no Grad-CAM++
at all. The adapter's ``activation_to_grid`` supplies that reshape, so the same code serves both
architectures, and both methods share one capture of the CAM layer's activation and gradient.
"""

from __future__ import annotations

from abc import abstractmethod

import torch
import torch.nn.functional as F
from pydantic import Field

from xaibench.models.base import Classifier
from xaibench.saliency.base import SaliencyMethod, check_maps


def activation_and_gradient(
    model: Classifier, images: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The CAM layer's activation and the target logits' gradient w.r.t. it, as grids.

    The hook is removed in ``finally``, so a model that raises mid-forward is left without it.

    Args:
        model: Classifier taking raw images.
        images: ``[B, 1, H, W]`` raw images.
        targets: ``[B]`` class indices; the gradient is of ``sum_b logit[b, targets[b]]``, which
            gives each image the gradient of its own target logit (images do not interact in eval
            mode).

    Returns:
        ``(activation, gradient)``, both detached ``[B, C, h, w]``.
    """
    layer = model.backbone.cam_layer()
    captured: list[torch.Tensor] = []

    def keep(_module: torch.nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
        if not output.requires_grad:
            # Nothing trainable upstream (a frozen backbone): the graph starts here, so the
            # layers below the CAM layer run without recording one (a copy, not a leaf, so
            # that an in-place operation downstream stays legal).
            output = output.detach().requires_grad_(True).clone()
        captured.append(output)
        return output

    handle = layer.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            # A plain copy: an inference-mode batch could not be saved for a backward pass.
            logits = model(images.detach().clone())
            score = logits.gather(1, targets.view(-1, 1)).sum()
            activation = captured[-1]
            (grad,) = torch.autograd.grad(score, activation)
    finally:
        handle.remove()
    return (
        model.backbone.activation_to_grid(activation.detach()),
        model.backbone.activation_to_grid(grad),
    )


class CAMMethod(SaliencyMethod):
    """A class activation map: a ReLU'd, weighted sum of the CAM layer's channels.

    Subclasses only choose the channel weights from the activation and gradient grids; capture,
    the ReLU and the bilinear upsampling to the image grid are shared. Maps are non-negative.
    """

    @abstractmethod
    def channel_weights(self, activation: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """Per-channel weights ``[B, C, 1, 1]`` from activation and gradient ``[B, C, h, w]``."""

    def explain(
        self, model: Classifier, images: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """Non-negative class activation maps ``[B, H, W]`` for ``targets``."""
        activation, grad = activation_and_gradient(model, images, targets)
        weights = self.channel_weights(activation, grad)
        cam = F.relu((weights * activation).sum(dim=1, keepdim=True))
        cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return check_maps(cam[:, 0], images, self.method_name)


class GradCAM(CAMMethod):
    """Gradient-weighted class activation mapping (Selvaraju et al., ICCV 2017).

    Channel weights are the spatially averaged gradients of the target logit; the map is the ReLU
    of the weighted sum of channels, bilinearly upsampled to the image grid (non-negative).
    """

    display_name = "Grad-CAM"
    citation = "Selvaraju et al., Grad-CAM, ICCV 2017, doi:10.1109/ICCV.2017.74"
    method_name = "gradcam"

    def channel_weights(self, activation: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """Spatial mean of the gradient per channel."""
        return grad.mean(dim=(2, 3), keepdim=True)


class GradCAMPlusPlus(CAMMethod):
    """Grad-CAM++ (Chattopadhyay et al., WACV 2018).

    Grad-CAM's uniform spatial average lets one large activation region dominate a channel's
    weight; Grad-CAM++ weights each location by ``alpha``, so several instances of a class (or a
    structure spread over several places) all count. With the paper's exponential score
    ``Y = exp(S)``, the higher derivatives reduce to powers of the first (``g = dS/dA``)::

        alpha_kij = g_kij^2 / (2 g_kij^2 + sum_ab A_kab g_kij^3)
        w_k = sum_ij alpha_kij relu(g_kij)

    (the positive factor ``exp(S)`` is dropped: it scales the whole map of one image). Where the
    denominator is zero ``alpha`` is 0 (``epsilon`` 0, the default). ``epsilon > 0`` follows
    pytorch-grad-cam's convention instead: ``alpha = g^2 / (denominator + epsilon)`` where the
    gradient is non-zero, 0 where it is zero; ``epsilon=1e-6`` reproduces its
    ``GradCAMPlusPlus``. On gradients of order 1e-3 and below the denominator is itself below
    1e-6, so the two conventions give visibly different maps (docs/bridges/gradcam.md has the
    numbers). The map is ``relu(sum_k w_k A_k)``, upsampled bilinearly:
    non-negative. For a network that global-average-pools the CAM layer into a linear head the
    gradient is constant over locations and the weights depend on each channel's activation sum.
    """

    display_name = "Grad-CAM++"
    citation = (
        "Chattopadhyay, Sarkar, Howlader, Balasubramanian, Grad-CAM++, WACV 2018, "
        "doi:10.1109/WACV.2018.00097"
    )
    method_name = "gradcam_pp"

    epsilon: float = Field(
        0.0,
        ge=0.0,
        description=(
            "Added to alpha's denominator; 1e-6 reproduces pytorch-grad-cam's GradCAMPlusPlus. "
            "0: alpha is 0 where the denominator is 0."
        ),
    )

    def channel_weights(self, activation: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """Location-weighted sums of the positive gradients, per channel."""
        g2 = grad.pow(2)
        g3 = g2 * grad
        act_sum = activation.sum(dim=(2, 3), keepdim=True)
        denom = 2 * g2 + act_sum * g3
        if self.epsilon > 0:
            alpha = torch.where(grad != 0, g2 / (denom + self.epsilon), 0.0)
        else:
            alpha = torch.where(denom != 0, g2 / torch.where(denom != 0, denom, 1.0), 0.0)
        return (alpha * F.relu(grad)).sum(dim=(2, 3), keepdim=True)
