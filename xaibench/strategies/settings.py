"""The training settings of gradient strategies, in a module that does not import torch.

:class:`TrainSettings` is part of the run configuration (:mod:`xaibench.config`), which the CLI
validates before anything heavy is imported; :mod:`xaibench.strategies.base` re-exports it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TrainSettings(BaseModel):
    """Optimisation settings shared by gradient-based strategies (all recorded in the results).

    The checkpoint kept is the epoch with the best validation score (``select_on``; with
    ``val_auc``, epochs of equal AUC are told apart by the lower validation loss), and training
    stops after ``patience`` epochs without a new kept checkpoint, so a long schedule cannot
    overfit the reported model (:mod:`xaibench.strategies.selection`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    epochs: int = Field(10, ge=1, le=100_000, description="Maximum passes over the training split.")
    batch_size: int = Field(32, ge=1, le=65_536, description="Training batch size (per step).")
    accumulate: int = Field(
        1, ge=1, le=65_536, description="Batches per optimiser step (accumulation)."
    )
    eval_batch_size: int = Field(
        64, ge=1, le=65_536, description="Batch size for inference and saliency."
    )
    lr: float = Field(1e-3, gt=0, description="Peak learning rate (AdamW, cosine decay).")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    warmup_epochs: float = Field(0.0, ge=0, description="Linear warm-up, in epochs.")
    class_weighting: Literal["none", "balanced"] = Field(
        "balanced",
        description="Cross-entropy class weights: 'balanced' weighs each class by the inverse of "
        "its training frequency, so a 5% minority class is not ignored.",
    )
    select_on: Literal["val_auc", "val_loss"] = Field(
        "val_auc",
        description="Checkpoint selection: positive-vs-rest validation AUC (ties broken by the "
        "lower validation loss), or loss.",
    )
    patience: int | None = Field(
        None, ge=1, description="Stop after this many epochs without improvement (None: never)."
    )
