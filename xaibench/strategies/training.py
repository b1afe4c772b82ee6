"""The supervised training loop shared by gradient-based strategies.

One loop for ``full``, ``last_block`` and ``lora`` keeps their comparison fair: same optimiser,
schedule, batches, class weighting and checkpoint rule; only the trainable parameters differ.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from xaibench.data.arrays import SplitArrays, read_ahead
from xaibench.device import Runtime
from xaibench.errors import XaibenchError
from xaibench.models.base import Classifier
from xaibench.strategies.base import (
    FitContext,
    FitReport,
    Strategy,
    TrainSettings,
    count_parameters,
)
from xaibench.strategies.selection import Selection, validation_auc, validation_loss


def class_weights(labels: torch.Tensor, num_classes: int, mode: str) -> torch.Tensor | None:
    """Inverse-frequency weights normalised to mean 1 over present classes (``balanced``).

    Raises:
        XaibenchError: A class has no training sample (its weight would be infinite).
    """
    if mode == "none":
        return None
    counts = torch.bincount(labels, minlength=num_classes).double()
    if (counts == 0).any():
        missing = torch.nonzero(counts == 0).flatten().tolist()
        raise XaibenchError(f"class(es) {missing} have no training images; cannot weight them")
    weights = counts.sum() / (num_classes * counts)
    return weights.float()


def freeze_norm_statistics(model: nn.Module) -> None:
    """Put batch-norm layers whose parameters are all frozen in eval mode.

    ``model.train()`` would otherwise keep updating their running statistics, silently changing
    a "frozen" backbone (and breaking the guarantee that only trainable parts change).
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
            p.requires_grad for p in module.parameters(recurse=False)
        ):
            module.eval()


def changing_state(model: nn.Module) -> OrderedDict[str, torch.Tensor]:
    """A copy of the state training can change: every entry but the frozen parameters.

    Nothing updates a parameter that does not require grad, so the best-epoch checkpoint need not
    copy a frozen backbone (for LoRA or last-block tuning that copy would be nearly the whole
    model, held on the device). Buffers are all kept (batch-norm statistics change in training).
    Restore it with ``model.load_state_dict(state, strict=False)``.
    """
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    state = model.state_dict()
    kept = OrderedDict(
        (k, v.detach().clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v))
        for k, v in state.items()
        if k not in frozen
    )
    kept._metadata = getattr(state, "_metadata", None)  # type: ignore[attr-defined]
    return kept


@torch.inference_mode()
def evaluate(
    model: Classifier,
    split: SplitArrays,
    batch_size: int,
    positive_class: int,
    weight: torch.Tensor | None = None,
    runtime: Runtime | None = None,
) -> tuple[float, float | None]:
    """(cross-entropy, positive-vs-rest AUC) on ``split``; the AUC is ``None`` if undefined.

    Both in float64 from the logits, so a confident model's epochs do not tie on rounded
    values (:func:`~xaibench.strategies.selection.validation_loss`,
    :func:`~xaibench.strategies.selection.validation_auc`).
    """
    runtime = runtime or Runtime()
    model.eval()
    forward = runtime.forward(model)
    chunks = []
    slices = [slice(s, s + batch_size) for s in range(0, len(split), batch_size)]
    for images in read_ahead(split.images, slices):
        with runtime.autocast():
            chunks.append(forward(runtime.to(images)).float().cpu())
    logits = torch.cat(chunks)
    loss = validation_loss(logits, split.labels, weight)
    return loss, validation_auc(logits, split.labels, positive_class)


def train_supervised(
    model: Classifier,
    train: SplitArrays,
    val: SplitArrays,
    settings: TrainSettings,
    context: FitContext,
    description: str = "training",
) -> FitReport:
    """Train the parameters of ``model`` that require grad; restore the best validation epoch.

    AdamW, linear warm-up then cosine decay over all optimiser steps, gradient accumulation over
    ``settings.accumulate`` batches, class-weighted cross-entropy, checkpoint selection on
    validation AUC, ties broken by validation loss (or on loss alone), with optional early
    stopping (:mod:`xaibench.strategies.selection`); the report carries every epoch's
    validation scores (``selection_curve``). Batches are shuffled with ``context.generator`` so
    a run is reproducible on CPU.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise XaibenchError(f"{description}: the model has no trainable parameters")
    num_classes = model.head.out_features
    runtime = context.runtime
    weight = class_weights(train.labels, num_classes, settings.class_weighting)
    device_weight = None if weight is None else runtime.to(weight)
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    # A last batch of one image breaks batch norm and adds nothing: it is dropped.
    starts = list(range(0, len(train), settings.batch_size))
    if len(starts) > 1 and len(train) - starts[-1] == 1:
        starts.pop()
    batches_per_epoch = len(starts)
    steps_per_epoch = math.ceil(batches_per_epoch / settings.accumulate)
    total = steps_per_epoch * settings.epochs
    warmup = round(settings.warmup_epochs * steps_per_epoch)

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    forward = runtime.forward(model)
    selection = Selection(settings.select_on)
    best_state = None
    epochs_run = 0
    for epoch in context.progress.track(
        range(settings.epochs), total=settings.epochs, description=description
    ):
        model.train()
        freeze_norm_statistics(model)
        order = torch.randperm(len(train), generator=context.generator)
        optimizer.zero_grad(set_to_none=True)
        batches = [order[start : start + settings.batch_size] for start in starts]
        read = read_ahead(train.images, batches)
        for i, (batch, images) in enumerate(zip(batches, read, strict=True)):
            with runtime.autocast():
                logits = forward(runtime.to(images))
            labels = runtime.to(train.labels[batch])
            loss = F.cross_entropy(logits.float(), labels, weight=device_weight)
            (loss / settings.accumulate).backward()
            if (i + 1) % settings.accumulate == 0 or i + 1 == batches_per_epoch:
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
        epochs_run = epoch + 1
        val_loss, val_auc = evaluate(
            model, val, settings.eval_batch_size, context.positive_class, weight, runtime
        )
        if selection.offer(epoch, val_auc, val_loss):
            best_state = changing_state(model)
        elif settings.patience is not None and selection.stale >= settings.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state, strict=False)  # frozen parameters were not copied
    model.eval()
    trainable, total_params = count_parameters(model)
    return FitReport(
        epochs_run,
        selection.best_epoch,
        selection.best_loss,
        selection.best_auc,
        trainable,
        total_params,
        selection_curve=selection.curve,
    )


class GradientStrategy(Strategy):
    """A strategy trained with :func:`train_supervised`; subclasses only choose what trains.

    Attributes:
        description: Label of the training progress bar.
    """

    description: ClassVar[str] = "training"

    def fit(
        self,
        model: Classifier,
        train: SplitArrays,
        val: SplitArrays,
        settings: TrainSettings,
        context: FitContext,
    ) -> FitReport:
        """Train with the shared loop."""
        return train_supervised(model, train, val, settings, context, self.description)
