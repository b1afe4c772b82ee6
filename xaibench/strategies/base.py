"""The strategy contract: prepare a classifier from a backbone, then fit it."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch

from xaibench.cache import TensorCache
from xaibench.component import Component
from xaibench.data.arrays import SplitArrays
from xaibench.device import Runtime
from xaibench.models.base import BackboneAdapter, Classifier
from xaibench.progress import NullProgress, Progress
from xaibench.strategies.settings import TrainSettings as TrainSettings  # torch-free home


@dataclass(frozen=True)
class FitContext:
    """What a strategy may use besides the data: randomness, progress, the feature cache.

    Attributes:
        generator: The only source of randomness for batch order.
        positive_class: Label index scored one-vs-rest (for AUC-based checkpoint selection).
        progress: Where to show progress.
        cache: Disk cache for frozen features, or ``None`` to disable caching.
        feature_key: Hash of everything frozen features depend on (backbone, weights,
            preprocessing, dataset); split names are appended to it.
        runtime: Device and precision; batches move to the device on use.
    """

    generator: torch.Generator
    positive_class: int
    progress: Progress = field(default_factory=NullProgress)
    cache: TensorCache | None = None
    feature_key: str | None = None
    runtime: Runtime = field(default_factory=Runtime)


@dataclass(frozen=True)
class FitReport:
    """What training did, for the results file.

    Attributes:
        epochs_run: Epochs (linear probe: optimisation steps) run before stopping.
        best_epoch: The kept checkpoint, counted from 0 (linear probe: its step).
        best_val_loss: Validation loss of the kept checkpoint.
        best_val_auc: Validation positive-vs-rest AUC of the kept checkpoint, or None.
        trainable_parameters: Parameters that trained.
        total_parameters: All parameters of the model.
        selection_curve: Every validation check, in order: ``{"epoch", "val_auc",
            "val_loss"}`` (:mod:`xaibench.strategies.selection` states the rule that picked
            ``best_epoch`` from it); empty for a strategy that does not report it.
    """

    epochs_run: int
    best_epoch: int
    best_val_loss: float
    best_val_auc: float | None
    trainable_parameters: int
    total_parameters: int
    selection_curve: list[dict[str, Any]] = field(default_factory=list)


class Strategy(Component):
    """Decides what trains. Subclasses implement :meth:`prepare` and :meth:`fit`."""

    @abstractmethod
    def prepare(self, backbone: BackboneAdapter, num_classes: int) -> Classifier:
        """Wrap ``backbone`` with a head and set ``requires_grad`` on what will train."""
        raise NotImplementedError(f"{type(self).__name__} must implement prepare()")

    @abstractmethod
    def fit(
        self,
        model: Classifier,
        train: SplitArrays,
        val: SplitArrays,
        settings: TrainSettings,
        context: FitContext,
    ) -> FitReport:
        """Train ``model`` in place and leave it in eval mode with its best weights."""
        raise NotImplementedError(f"{type(self).__name__} must implement fit()")


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """Return (trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
