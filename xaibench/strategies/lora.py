"""``lora``: low-rank adapters (peft) on the backbone, plus the head.

peft's ``inject_adapter_in_model`` wraps the target layers in place, so the adapter keeps its
forward signature and every saliency method works unchanged. Targets default to the adapter's
``lora_target_modules`` (attention projections for ViTs), which each family guarantees are
layers actually called in the forward pass.
"""

from __future__ import annotations

from pydantic import Field

from xaibench.errors import XaibenchError
from xaibench.models.base import BackboneAdapter, Classifier
from xaibench.strategies.training import GradientStrategy


class LoRA(GradientStrategy):
    """Low-rank adaptation (Hu et al., ICLR 2022); the study used rank 8."""

    display_name = "LoRA"
    description = "LoRA"
    citation = "Hu et al., LoRA: Low-Rank Adaptation of Large Language Models, ICLR 2022"

    rank: int = Field(8, ge=1, description="Rank r of the update B A.")
    alpha: int = Field(16, gt=0, description="Scale: the update is (alpha / r) B A.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA input.")
    targets: list[str] | None = Field(
        None,
        description="Module names (relative to the backbone adapter) to adapt; default: the "
        "adapter's lora_target_modules().",
    )

    def prepare(self, backbone: BackboneAdapter, num_classes: int) -> Classifier:
        """Inject LoRA layers; only they and the head train."""
        from peft import LoraConfig, inject_adapter_in_model

        targets = self.targets or backbone.lora_target_modules()
        if not targets:
            raise XaibenchError(f"{type(backbone).__name__} names no LoRA target modules")
        names = {name for name, _ in backbone.named_modules()}
        unknown = [t for t in targets if t not in names]
        if unknown:
            raise XaibenchError(
                f"LoRA targets not found in {type(backbone).__name__}: {', '.join(unknown[:5])}"
            )
        backbone.requires_grad_(False)
        config = LoraConfig(
            r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=targets
        )
        inject_adapter_in_model(config, backbone)
        for name, param in backbone.named_parameters():
            param.requires_grad = "lora_" in name
        model = Classifier(backbone, num_classes)
        model.head.requires_grad_(True)
        return model
