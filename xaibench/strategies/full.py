"""``full``: every parameter of backbone and head trains."""

from __future__ import annotations

from xaibench.data.arrays import SplitArrays
from xaibench.models.base import BackboneAdapter, Classifier
from xaibench.strategies.base import FitContext, FitReport, Strategy, TrainSettings
from xaibench.strategies.training import train_supervised


class FullFineTuning(Strategy):
    """Fine-tune the whole network end to end (the upper bound on adaptation, and the costliest)."""

    display_name = "Full fine-tuning"

    def prepare(self, backbone: BackboneAdapter, num_classes: int) -> Classifier:
        """Make every parameter trainable."""
        model = Classifier(backbone, num_classes)
        model.requires_grad_(True)
        return model

    def fit(
        self,
        model: Classifier,
        train: SplitArrays,
        val: SplitArrays,
        settings: TrainSettings,
        context: FitContext,
    ) -> FitReport:
        """Train with the shared loop."""
        return train_supervised(model, train, val, settings, context, "full fine-tuning")
