"""Performance metrics: positive-vs-rest AUC, thresholded rates, macro AUC."""

from __future__ import annotations

from typing import ClassVar

from xaibench.metrics.base import MetricValue, PerformanceMetric, Predictions
from xaibench.metrics.functional import binary_auc, confusion_counts, macro_ovr_auc


class PositiveAUC(PerformanceMetric):
    """ROC AUC of the positive class against all others (the study's headline number)."""

    display_name = "AUC"

    def compute(self, predictions: Predictions) -> MetricValue:
        """AUC of the positive-class probability."""
        value = binary_auc(predictions.is_positive, predictions.scores)
        return MetricValue(value, len(predictions.labels))


class _Thresholded(PerformanceMetric):
    """A rate at the operating threshold chosen on the validation split (Youden's J)."""

    rate: ClassVar[str] = "accuracy"

    def compute(self, predictions: Predictions) -> MetricValue:
        """The rate and its denominator at ``predictions.threshold``."""
        counts = confusion_counts(
            predictions.is_positive, predictions.scores, predictions.threshold
        )
        denominators = {
            "accuracy": counts.tp + counts.fp + counts.tn + counts.fn,
            "sensitivity": counts.tp + counts.fn,
            "specificity": counts.tn + counts.fp,
        }
        return MetricValue(
            float(getattr(counts, self.rate)),
            int(denominators[self.rate]),
            details={"threshold": predictions.threshold},
        )


class Accuracy(_Thresholded):
    """Share of correct positive-vs-rest calls at the validation-chosen threshold."""

    display_name = "Accuracy"
    rate = "accuracy"


class Sensitivity(_Thresholded):
    """True-positive rate at the validation-chosen threshold (denominator: positives)."""

    display_name = "Sensitivity"
    rate = "sensitivity"


class Specificity(_Thresholded):
    """True-negative rate at the validation-chosen threshold (denominator: negatives)."""

    display_name = "Specificity"
    rate = "specificity"


class MacroAUC(PerformanceMetric):
    """Unweighted mean of the one-vs-rest AUCs of every class."""

    display_name = "Macro AUC"

    def compute(self, predictions: Predictions) -> MetricValue:
        """Macro one-vs-rest AUC over all classes."""
        return MetricValue(
            macro_ovr_auc(predictions.labels, predictions.probs), len(predictions.labels)
        )
