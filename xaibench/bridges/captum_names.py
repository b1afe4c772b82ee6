"""The names the ``captum:`` bridge registers (static: listing imports nothing heavy).

Every class of ``captum.attr.__all__`` that attributes an image classifier's output to its input
or to a layer is listed in :data:`NAMES`; every other attribution class is in :data:`EXCLUDED`
with the reason. A test checks that the two together are exactly captum's attribution classes,
so a captum release that adds or removes one fails it.
"""

from __future__ import annotations

from xaibench.bridges.extras import BridgedName

_TARGET = "xaibench.bridges.captum:CaptumMethod"

_SUMMARIES = {
    # primary methods: attributions on the raw image
    "IntegratedGradients": "integrated gradients from a baseline (captum)",
    "Saliency": "gradient of the target logit w.r.t. the image (captum)",
    "DeepLift": "DeepLIFT rescale rule, CNNs (captum)",
    "DeepLiftShap": "DeepLIFT averaged over a baseline distribution, CNNs (captum)",
    "GradientShap": "expected gradients over baselines and noise, seeded (captum)",
    "InputXGradient": "image times gradient (captum)",
    "GuidedBackprop": "guided backpropagation through ReLU modules (captum)",
    "GuidedGradCam": "guided backprop times Grad-CAM, CNNs (captum)",
    "Deconvolution": "deconvolution through ReLU modules (captum)",
    "FeatureAblation": "logit drop when each patch of a grid is ablated (captum)",
    "FeaturePermutation": "logit drop when a patch is permuted across the batch, seeded (captum)",
    "Occlusion": "sliding-window occlusion (captum)",
    "ShapleyValueSampling": "sampled Shapley values of a 4x4 patch grid, seeded (captum)",
    "ShapleyValues": "exact Shapley values of a 2x2 patch grid (captum)",
    "Lime": "LIME on a patch grid, seeded (captum)",
    "KernelShap": "Kernel SHAP on a patch grid, seeded (captum)",
    "LRP": "layer-wise relevance propagation, CNNs with rules (captum)",
    # layer methods: on the adapter's CAM layer, summed over channels, upsampled
    "LayerGradCam": "captum's Grad-CAM on the CAM layer, CNNs (captum)",
    "LayerConductance": "conductance of the CAM layer (captum)",
    "LayerIntegratedGradients": "integrated gradients at the CAM layer (captum)",
    "LayerGradientXActivation": "CAM layer activation times gradient (captum)",
    "LayerDeepLift": "DeepLIFT at the CAM layer, CNNs (captum)",
    "LayerDeepLiftShap": "DeepLIFT SHAP at the CAM layer, CNNs (captum)",
    "LayerGradientShap": "GradientSHAP at the CAM layer, seeded (captum)",
    "LayerActivation": "CAM layer activation, class-independent (captum)",
    "LayerFeatureAblation": "logit drop when each CAM-grid location is ablated (captum)",
    "LayerFeaturePermutation": "CAM-grid locations permuted across the batch, seeded (captum)",
    "LayerLRP": "LRP relevance at the CAM layer, where it has a rule (captum)",
    "InternalInfluence": "gradients integrated at the CAM layer (captum)",
}

#: Attribution classes of ``captum.attr`` that are not bridged, and why.
EXCLUDED: dict[str, str] = {
    "Attribution": "abstract base class",
    "GradientAttribution": "abstract base class",
    "PerturbationAttribution": "abstract base class",
    "LayerAttribution": "abstract base class",
    "NeuronAttribution": "abstract base class; neuron methods explain a unit, not a class",
    "NeuronConductance": "neuron method: explains one unit, not the target class",
    "NeuronFeatureAblation": "neuron method: explains one unit, not the target class",
    "NeuronGradient": "neuron method: explains one unit, not the target class",
    "NeuronIntegratedGradients": "neuron method: explains one unit, not the target class",
    "NeuronDeepLift": "neuron method: explains one unit, not the target class",
    "NeuronDeepLiftShap": "neuron method: explains one unit, not the target class",
    "NeuronGradientShap": "neuron method: explains one unit, not the target class",
    "NeuronDeconvolution": "neuron method: explains one unit, not the target class",
    "NeuronGuidedBackprop": "neuron method: explains one unit, not the target class",
    "NoiseTunnel": "a wrapper of another method: the option noise_tunnel of every captum: name",
    "LimeBase": "needs user functions for the interpretable space; Lime is its image form",
    "DataLoaderAttribution": "attributes a metric over a whole data loader, not per image",
    "LLMAttribution": "language models",
    "LLMGradientAttribution": "language models",
    "RemoteLLMAttribution": "language models",
}

#: The names registered as ``captum:<name>``.
NAMES: tuple[BridgedName, ...] = tuple(
    BridgedName(name, _TARGET, summary) for name, summary in _SUMMARIES.items()
)
