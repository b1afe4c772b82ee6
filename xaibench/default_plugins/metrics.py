"""Built-in metrics."""

from __future__ import annotations

from xaibench.hookspecs import hookimpl
from xaibench.registry import Register

_PERF = "xaibench.metrics.performance"
_EXPL = "xaibench.metrics.explanation"


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
    register("macro_auc", f"{_PERF}:MacroAUC", summary="macro one-vs-rest AUC over all classes")
    register(
        "delta_region",
        f"{_EXPL}:DeltaRegion",
        summary="AUC(intact) - max(AUC(region perturbed), 0.5)",
    )
    register(
        "iou_region", f"{_EXPL}:IoURegion", summary="IoU of the Otsu-binarised map with a region"
    )
