"""The strategy contract: prepare a classifier from a backbone, then fit it."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict, Field

from xaibench.component import Component
from xaibench.data.arrays import SplitArrays
from xaibench.models.base import BackboneAdapter, Classifier
from xaibench.progress import Progress


class TrainSettings(BaseModel):
    """Optimisation settings shared by gradient-based strategies.

    The checkpoint kept is the epoch with the lowest validation loss, so a long schedule cannot
    overfit the reported model.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    epochs: int = Field(10, ge=1, description="Passes over the training split.")
    batch_size: int = Field(32, ge=1, description="Training batch size.")
    eval_batch_size: int = Field(64, ge=1, description="Batch size for inference and saliency.")
    lr: float = Field(1e-3, gt=0, description="Peak learning rate (AdamW, cosine decay).")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")


@dataclass(frozen=True)
class FitReport:
    """What training did, for the results file."""

    epochs_run: int
    best_epoch: int
    best_val_loss: float
    trainable_parameters: int
    total_parameters: int


class Strategy(Component):
    """Decides what trains. Subclasses implement :meth:`prepare` and :meth:`fit`."""

    @abstractmethod
    def prepare(self, backbone: BackboneAdapter, num_classes: int) -> Classifier:
        """Wrap ``backbone`` with a head and set ``requires_grad`` on what will train."""

    @abstractmethod
    def fit(
        self,
        model: Classifier,
        train: SplitArrays,
        val: SplitArrays,
        settings: TrainSettings,
        generator: torch.Generator,
        progress: Progress,
    ) -> FitReport:
        """Train ``model`` in place and leave it in eval mode with its best weights."""


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """Return (trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
