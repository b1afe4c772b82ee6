"""Built-in metrics."""

from __future__ import annotations

from xaibench.hookspecs import hookimpl
from xaibench.registry import Register

_PERF = "xaibench.metrics.performance"
_EXPL = "xaibench.metrics.explanation"
_FAITH = "xaibench.metrics.faithfulness"
_LOC = "xaibench.metrics.localisation"
_CXL = "xaibench.metrics.chexlocalize"
_ROBUST = "xaibench.metrics.robustness"
_RANDOM = "xaibench.metrics.randomisation"


@hookimpl
def register_metrics(register: Register) -> None:
    """Register the study's performance and explanation metrics."""
    register("auc", f"{_PERF}:PositiveAUC", summary="positive-vs-rest ROC AUC")
    register("accuracy", f"{_PERF}:Accuracy", summary="accuracy at the validation Youden threshold")
    register(
        "sensitivity",
        f"{_PERF}:Sensitivity",
        summary="sensitivity at the validation Youden threshold",
    )
    register(
        "specificity",
        f"{_PERF}:Specificity",
        summary="specificity at the validation Youden threshold",
    )
    register("ppv", f"{_PERF}:PPV", summary="positive predictive value at the Youden threshold")
    register("npv", f"{_PERF}:NPV", summary="negative predictive value at the Youden threshold")
    register("macro_auc", f"{_PERF}:MacroAUC", summary="macro one-vs-rest AUC over all classes")
    register(
        "delta_region",
        f"{_EXPL}:DeltaRegion",
        summary="AUC(intact) - max(AUC(region perturbed), 0.5)",
    )
    register(
        "iou_region",
        f"{_LOC}:IoURegion",
        summary="IoU of the binarised map (otsu, topk or fixed threshold) with a region",
    )
    register(
        "pointing_game",
        f"{_LOC}:PointingGame",
        summary="hit when the map's maximum lies inside the region",
    )
    register(
        "relevance_mass",
        f"{_LOC}:RelevanceMass",
        summary="share of the positive attribution inside the region",
    )
    register(
        "relevance_rank",
        f"{_LOC}:RelevanceRank",
        summary="share of the |region| top-ranked pixels inside the region",
    )
    register(
        "pixel_auc",
        f"{_LOC}:PixelAUC",
        summary="ROC AUC of the map's values for telling region pixels from the rest",
    )
    register(
        "energy_ratio",
        f"{_LOC}:EnergyRatio",
        summary="mean positive attribution per pixel, inside the region over outside",
    )
    register(
        "chexlocalize_miou",
        f"{_CXL}:ChexlocalizeMIoU",
        summary="CheXlocalize's mIoU (Otsu, tuned or fixed cut-off; its image slices, bootstrap)",
    )
    register(
        "chexlocalize_hit_rate",
        f"{_CXL}:ChexlocalizeHitRate",
        summary="CheXlocalize's hit rate: the map's first maximum inside the region",
    )
    register(
        "deletion_auc",
        f"{_FAITH}:DeletionAUC",
        summary="area under the class probability as top-ranked pixels are deleted (lower better)",
    )
    register(
        "insertion_auc",
        f"{_FAITH}:InsertionAUC",
        summary="area under the class probability as top-ranked pixels are revealed",
    )
    register(
        "road",
        f"{_FAITH}:ROAD",
        summary="ROAD: probability after top-ranked pixels are imputed away (lower better)",
    )
    register(
        "max_sensitivity",
        f"{_ROBUST}:MaxSensitivity",
        summary="largest relative map change over uniform-noise draws (lower better; slow)",
    )
    register(
        "avg_sensitivity",
        f"{_ROBUST}:AvgSensitivity",
        summary="mean relative map change over uniform-noise draws (lower better; slow)",
    )
    register(
        "local_lipschitz",
        f"{_ROBUST}:LocalLipschitz",
        summary="largest map change per unit of Gaussian input noise (lower better; slow)",
    )
    register(
        "mprt",
        f"{_RANDOM}:MPRT",
        summary="similarity after each layer is re-initialised, mean over layers (lower better)",
    )
    register(
        "random_logit",
        f"{_RANDOM}:RandomLogit",
        summary="SSIM of the map to the map of a random other class (lower better)",
    )
    register(
        "completeness",
        "xaibench.metrics.axiomatic:Completeness",
        summary="|sum(map) - (logit(x) - logit(baseline))| / |logit change| (lower better)",
    )
    # Issue 22 (native, batched, opt-in): complexity of the map alone (MapMetric)
    cpx = "xaibench.metrics.complexity"
    register("sparseness", f"{cpx}:Sparseness", summary="Gini index of |map| (higher = sparser)")
    register(
        "complexity",
        f"{cpx}:Complexity",
        summary="entropy of |map| / sum |map| (lower = simpler)",
    )
    register(
        "effective_complexity",
        f"{cpx}:EffectiveComplexity",
        summary="pixels with |map| / max |map| above eps (lower = simpler)",
    )
    # ... and faithfulness scores of the Quantus family (FaithfulnessMetric)
    fsc = "xaibench.metrics.faithfulness_scores"
    register(
        "faithfulness_correlation",
        f"{fsc}:FaithfulnessCorrelation",
        summary="correlation of random-subset map sums with the probability drop",
    )
    register(
        "monotonicity_correlation",
        f"{fsc}:MonotonicityCorrelation",
        summary="rank correlation of |map| group sums with the output change they cause",
    )
    register(
        "irof",
        f"{fsc}:IROF",
        summary="area over the relative probability curve as top superpixels are removed",
    )
    register(
        "selectivity",
        f"{fsc}:Selectivity",
        summary="area under the probability curve as top patches are removed (lower better)",
    )
