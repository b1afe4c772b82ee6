"""``last_block``: only the final transformer block, the final norm and the head train."""

from __future__ import annotations

from xaibench.errors import XaibenchError
from xaibench.models.base import BackboneAdapter, Classifier
from xaibench.strategies.training import GradientStrategy


class LastBlock(GradientStrategy):
    """Fine-tune the last block (the study's "last-block fine-tuning"); CNNs: the last stage.

    Which modules that is, is the backbone adapter's decision (``last_block_modules``), so the
    strategy means the same thing for every family. Batch-norm statistics of frozen layers stay
    fixed during training.
    """

    display_name = "Last-block fine-tuning"
    description = "last-block tuning"

    def prepare(self, backbone: BackboneAdapter, num_classes: int) -> Classifier:
        """Freeze everything but the adapter's last-block modules and the head."""
        model = Classifier(backbone, num_classes)
        model.requires_grad_(False)
        modules = backbone.last_block_modules()
        if not modules:
            raise XaibenchError(f"{type(backbone).__name__} names no last-block modules")
        for module in modules:
            module.requires_grad_(True)
        model.head.requires_grad_(True)
        return model
