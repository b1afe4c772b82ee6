"""The supervised training loop shared by gradient-based strategies.

One loop for ``full`` (and, later, ``last_block`` and ``lora``) keeps their comparison fair: same
optimiser, schedule, batches and checkpoint rule; only the trainable parameters differ.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

from xaibench.data.arrays import SplitArrays
from xaibench.models.base import Classifier
from xaibench.progress import Progress
from xaibench.strategies.base import FitReport, TrainSettings, count_parameters


@torch.inference_mode()
def evaluate_loss(model: Classifier, split: SplitArrays, batch_size: int) -> float:
    """Mean cross-entropy of ``model`` on ``split`` (model left in eval mode)."""
    model.eval()
    total = 0.0
    for start in range(0, len(split), batch_size):
        images = split.images[start : start + batch_size]
        labels = split.labels[start : start + batch_size]
        total += float(F.cross_entropy(model(images), labels, reduction="sum"))
    return total / len(split)


def train_supervised(
    model: Classifier,
    train: SplitArrays,
    val: SplitArrays,
    settings: TrainSettings,
    generator: torch.Generator,
    progress: Progress,
    description: str = "training",
) -> FitReport:
    """Train the parameters of ``model`` that require grad; keep the best-validation-loss epoch.

    AdamW with a cosine learning-rate decay over all steps. Batches are shuffled with
    ``generator`` so the run is reproducible on CPU.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = math.ceil(len(train) / settings.batch_size)
    total_steps = steps_per_epoch * settings.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
    )
    best_loss, best_epoch, best_state = math.inf, -1, None
    for epoch in progress.track(
        range(settings.epochs), total=settings.epochs, description=description
    ):
        model.train()
        order = torch.randperm(len(train), generator=generator)
        for start in range(0, len(train), settings.batch_size):
            batch = order[start : start + settings.batch_size]
            if len(batch) < 2 and len(train) >= 2:
                continue  # a batch of one breaks batch norm and adds nothing
            loss = F.cross_entropy(model(train.images[batch]), train.labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        val_loss = evaluate_loss(model, val, settings.eval_batch_size)
        if val_loss < best_loss:
            best_loss, best_epoch = val_loss, epoch
            best_state = copy.deepcopy(model.state_dict())
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    trainable, total = count_parameters(model)
    return FitReport(settings.epochs, best_epoch, best_loss, trainable, total)
