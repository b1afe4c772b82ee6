"""The names the ``quantus:`` bridge registers (static: listing imports nothing heavy).

Every metric class Quantus 0.6 exports is either in :data:`NAMES` (with the xaibench kind that
runs it) or in :data:`LEFT_OUT` with the reason; a test checks both against the installed
Quantus, so an upgrade that adds or removes a metric fails loudly.
"""

from __future__ import annotations

from xaibench.bridges.extras import BridgedName

_REGION = "xaibench.bridges.quantus"
_MAP = "xaibench.bridges.quantus"
_EXPLAINER = "xaibench.bridges.quantus_explainer"


def _name(name: str, module: str, summary: str) -> BridgedName:
    return BridgedName(name, f"{module}:Quantus{name}", f"Quantus {name}: {summary}")


NAMES: tuple[BridgedName, ...] = (
    # localisation -> SaliencyRegionMetric (maps and a region mask)
    _name("PointingGame", _REGION, "is the map's peak inside the region (localisation)"),
    _name("AttributionLocalisation", _REGION, "share of |attribution| inside (localisation)"),
    _name("RelevanceMassAccuracy", _REGION, "share of attribution mass inside (localisation)"),
    _name("RelevanceRankAccuracy", _REGION, "share of the |R| top pixels inside (localisation)"),
    _name("TopKIntersection", _REGION, "share of the k top pixels inside (localisation)"),
    _name("AUC", _REGION, "pixel ROC AUC of the map against the region (localisation)"),
    # complexity -> MapMetric (the maps alone)
    _name("Sparseness", _MAP, "Gini index of the map (complexity, map metric)"),
    _name("Complexity", _MAP, "entropy of the normalised map (complexity, map metric)"),
    _name("EffectiveComplexity", _MAP, "pixels above eps (complexity, map metric)"),
    # faithfulness -> ExplainerMetric
    _name("FaithfulnessCorrelation", _EXPLAINER, "attribution vs output drop correlation"),
    _name("FaithfulnessEstimate", _EXPLAINER, "attribution vs output drop per feature"),
    _name("MonotonicityCorrelation", _EXPLAINER, "rank correlation of attribution and effect"),
    _name("Monotonicity", _EXPLAINER, "output rises as features are added back"),
    _name("PixelFlipping", _EXPLAINER, "output curve as top pixels are removed (its area)"),
    _name("RegionPerturbation", _EXPLAINER, "output curve as top patches are removed (area)"),
    _name("Selectivity", _EXPLAINER, "output curve as top patches are removed (its area)"),
    _name("IROF", _EXPLAINER, "area over the curve of superpixels removed"),
    _name("ROAD", _EXPLAINER, "class kept after noisy linear imputation (mean over %)"),
    _name("Infidelity", _EXPLAINER, "error of attribution . perturbation vs output change"),
    _name("Sufficiency", _EXPLAINER, "images with similar explanations share the class"),
    # robustness -> ExplainerMetric (explains perturbed images)
    _name("LocalLipschitzEstimate", _EXPLAINER, "worst explanation change per input change"),
    _name("MaxSensitivity", _EXPLAINER, "largest explanation change under input noise"),
    _name("AvgSensitivity", _EXPLAINER, "mean explanation change under input noise"),
    _name("Continuity", _EXPLAINER, "explanation change along an input shift"),
    _name("Consistency", _EXPLAINER, "same discretised explanation, same class"),
    _name("RelativeInputStability", _EXPLAINER, "explanation vs input change ratio"),
    _name("RelativeOutputStability", _EXPLAINER, "explanation vs output change ratio"),
    _name("RelativeRepresentationStability", _EXPLAINER, "explanation vs representation"),
    # randomisation -> ExplainerMetric (explains a randomised model or another class)
    _name("MPRT", _EXPLAINER, "similarity to explanations of a randomised model"),
    _name("SmoothMPRT", _EXPLAINER, "MPRT with noise-averaged explanations"),
    _name("EfficientMPRT", _EXPLAINER, "complexity rise under full randomisation"),
    _name("RandomLogit", _EXPLAINER, "similarity to the explanation of a random other class"),
    # axiomatic -> ExplainerMetric
    _name("Completeness", _EXPLAINER, "attributions sum to the output difference"),
    _name("NonSensitivity", _EXPLAINER, "features without effect get no attribution"),
)

#: Quantus metric classes not bridged, and why (also in docs/bridges/quantus.md).
LEFT_OUT: dict[str, str] = {
    "Focus": "needs mosaics of images from several classes, which a cell does not have",
    "SensitivityN": (
        "its score is a correlation across the images of a batch for each subset size, "
        "not a value per image"
    ),
    "InputInvariance": (
        "shifts the input by a constant (-1 by default) outside the raw intensity range the "
        "backbones accept, and compensates in a first layer that takes the raw input"
    ),
    "BatchSufficiency": "the batched implementation of Sufficiency (same name and score)",
    "ModelParameterRandomisation": "the deprecated name of MPRT",
}
