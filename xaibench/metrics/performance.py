"""Performance metrics: positive-vs-rest AUC, thresholded rates, macro AUC."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from xaibench.metrics.base import MetricValue, PerformanceMetric, Predictions
from xaibench.metrics.functional import binary_auc, confusion_counts, macro_ovr_auc
from xaibench.stats.intervals import bootstrap_auc_ci, delong_auc_ci, wilson_ci


class PositiveAUC(PerformanceMetric):
    """ROC AUC of the positive class against all others (the study's headline number).

    The 95% CI is DeLong's (Sun & Xu's fast algorithm) over the test images by default. With
    ``ci_method: bootstrap`` it is a class-stratified percentile bootstrap instead, free of
    DeLong's normal approximation — worth it when a class has only a few dozen images.
    """

    display_name = "AUC"

    ci_method: Literal["delong", "bootstrap"] = Field(
        "delong", description="Interval of the AUC: DeLong's, or a stratified bootstrap."
    )
    resamples: int = Field(2000, ge=100, description="Bootstrap resamples (ci_method=bootstrap).")
    seed: int = Field(0, ge=0, description="Bootstrap seed (ci_method=bootstrap).")

    def compute(self, predictions: Predictions) -> MetricValue:
        """AUC of the positive-class probability (ranked by :attr:`Predictions.ranking_scores`)."""
        value = binary_auc(predictions.is_positive, predictions.ranking_scores)
        ci = None
        if min(int(predictions.is_positive.sum()), int((~predictions.is_positive).sum())) >= 2:
            if self.ci_method == "bootstrap":
                _, low, high = bootstrap_auc_ci(
                    predictions.is_positive,
                    predictions.ranking_scores,
                    resamples=self.resamples,
                    seed=self.seed,
                )
            else:
                _, low, high = delong_auc_ci(predictions.is_positive, predictions.ranking_scores)
            ci = (low, high)
        details = {"ci_method": self.ci_method}
        return MetricValue(value, len(predictions.labels), details=details, ci=ci)


class _Thresholded(PerformanceMetric):
    """A rate at the operating threshold chosen on the validation split (Youden's J).

    The 95% CI is Wilson's score interval over the rate's own denominator (all images for
    accuracy, positives for sensitivity, negatives for specificity, positive calls for PPV,
    negative calls for NPV).
    """

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
            "ppv": counts.tp + counts.fp,
            "npv": counts.tn + counts.fn,
        }
        n = int(denominators[self.rate])
        successes = {
            "accuracy": counts.tp + counts.tn,
            "sensitivity": counts.tp,
            "specificity": counts.tn,
            "ppv": counts.tp,
            "npv": counts.tn,
        }[self.rate]
        return MetricValue(
            float(getattr(counts, self.rate)),
            n,
            details={"threshold": predictions.threshold, "ci_method": "wilson"},
            ci=wilson_ci(int(successes), n) if n else None,
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


class PPV(_Thresholded):
    """Positive predictive value at the validation-chosen threshold (denominator: positive calls).

    Unlike sensitivity it depends on prevalence: a screening test's PPV on a test set with the
    study's 5% osteoporosis is far below its PPV on a balanced one.
    """

    display_name = "PPV"
    rate = "ppv"


class NPV(_Thresholded):
    """Negative predictive value at the validation-chosen threshold (denominator: negative calls).

    Prevalence-dependent, like :class:`PPV`.
    """

    display_name = "NPV"
    rate = "npv"


class MacroAUC(PerformanceMetric):
    """Unweighted mean of the one-vs-rest AUCs of every class."""

    display_name = "Macro AUC"

    def compute(self, predictions: Predictions) -> MetricValue:
        """Macro one-vs-rest AUC over all classes (each ranked by its log-odds when recorded)."""
        classes = predictions.probs.shape[1]
        scores = np.stack([predictions.class_ranking_scores(k) for k in range(classes)], axis=1)
        return MetricValue(macro_ovr_auc(predictions.labels, scores), len(predictions.labels))
