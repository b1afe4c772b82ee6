"""Built-in saliency methods."""

from __future__ import annotations

from xaibench.hookspecs import hookimpl
from xaibench.registry import Register


@hookimpl
def register_saliency_methods(register: Register) -> None:
    """Register the gradient, CAM, perturbation and attention methods, and the controls."""
    register(
        "gradcam",
        "xaibench.saliency.gradcam:GradCAM",
        summary="Grad-CAM on the adapter's feature grid (CNN stage or ViT tokens)",
    )
    register(
        "gradcam_pp",
        "xaibench.saliency.gradcam:GradCAMPlusPlus",
        summary="Grad-CAM++: location-weighted positive gradients on the adapter's feature grid",
    )
    register(
        "saliency",
        "xaibench.saliency.gradient:VanillaGradient",
        summary="absolute input gradient (captum Saliency)",
    )
    register(
        "input_x_gradient",
        "xaibench.saliency.gradient:InputXGradient",
        summary="input times gradient, signed (captum InputXGradient)",
    )
    register(
        "integrated_gradients",
        "xaibench.saliency.gradient:IntegratedGradients",
        summary="integrated gradients from a black baseline, signed (captum)",
    )
    register(
        "gradient_shap",
        "xaibench.saliency.gradient:GradientShap",
        summary="GradientSHAP over zero and mean-image baselines, signed (captum)",
    )
    register(
        "smoothgrad",
        "xaibench.saliency.gradient:SmoothGrad",
        summary="absolute gradient averaged over noisy copies (captum NoiseTunnel)",
    )
    register(
        "occlusion",
        "xaibench.saliency.occlusion:Occlusion",
        summary="logit drop under sliding-window occlusion, signed; slow (captum Occlusion)",
    )
    register(
        "attention_rollout",
        "xaibench.saliency.attention:AttentionRollout",
        summary="attention rollout through all layers (ViTs only)",
    )
    register(
        "random",
        "xaibench.saliency.controls:RandomMap",
        summary="control: uniform noise map",
    )
    register(
        "edge",
        "xaibench.saliency.controls:EdgeMap",
        summary="control: Sobel edge magnitude of the image",
    )
    register(
        "center",
        "xaibench.saliency.controls:CenterMap",
        summary="control: centred Gaussian",
    )
    register(
        "chefer_gae",
        "xaibench.saliency.transformer_attribution:CheferRelevance",
        summary="Chefer et al.'s gradient-weighted attention relevance, class-specific (ViTs only)",
    )
    register(
        "cp_lrp",
        "xaibench.saliency.transformer_attribution:ConservativeLRP",
        summary="LRP for transformers by conservative propagation, AH + LN rules (ViTs only)",
    )
