"""Built-in saliency methods."""

from __future__ import annotations

from xaibench.hookspecs import hookimpl
from xaibench.registry import Register


@hookimpl
def register_saliency_methods(register: Register) -> None:
    """Register ``gradcam`` and ``saliency``."""
    register(
        "gradcam",
        "xaibench.saliency.gradcam:GradCAM",
        summary="Grad-CAM on the adapter's feature grid (CNN stage or ViT tokens)",
    )
    register(
        "saliency",
        "xaibench.saliency.gradient:VanillaGradient",
        summary="absolute input gradient (captum Saliency)",
    )
