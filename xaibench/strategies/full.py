"""``full``: every parameter of backbone and head trains."""

from __future__ import annotations

from xaibench.models.base import BackboneAdapter, Classifier
from xaibench.strategies.training import GradientStrategy


class FullFineTuning(GradientStrategy):
    """Fine-tune the whole network end to end (the upper bound on adaptation, and the costliest)."""

    display_name = "Full fine-tuning"
    description = "full fine-tuning"

    def prepare(self, backbone: BackboneAdapter, num_classes: int) -> Classifier:
        """Make every parameter trainable."""
        model = Classifier(backbone, num_classes)
        model.requires_grad_(True)
        return model
