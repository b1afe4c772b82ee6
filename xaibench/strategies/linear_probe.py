"""``linear_probe``: a linear head on frozen backbone features.

Features are extracted once per (backbone, weights, preprocessing, dataset, split) and kept in
the disk cache, so other seeds and heads on the same backbone reuse them. They are standardised
and the head is fitted on them full-batch; the standardisation is then folded into the head, so
the result is an ordinary :class:`~xaibench.models.base.Classifier` that saliency methods can
differentiate end to end.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from xaibench.cache import content_key
from xaibench.data.arrays import SplitArrays, read_ahead
from xaibench.device import Runtime
from xaibench.models.base import BackboneAdapter, Classifier
from xaibench.progress import Progress
from xaibench.strategies.base import (
    FitContext,
    FitReport,
    Strategy,
    TrainSettings,
    count_parameters,
)
from xaibench.strategies.selection import Selection, validation_auc, validation_loss
from xaibench.strategies.training import class_weights


def cached_features(
    backbone: BackboneAdapter, split: SplitArrays, batch_size: int, context: FitContext
) -> torch.Tensor:
    """Features of ``split`` from the cache when present, else extracted and stored."""
    if context.cache is None or context.feature_key is None:
        return extract_features(backbone, split, batch_size, context.progress, context.runtime)
    key = content_key(context.feature_key, split.name, split.sample_ids)
    features = context.cache.get(key)
    if features is None or features.shape[0] != len(split):
        features = extract_features(backbone, split, batch_size, context.progress, context.runtime)
        context.cache.put(key, features)
    return features


@torch.inference_mode()
def extract_features(
    backbone: BackboneAdapter,
    split: SplitArrays,
    batch_size: int,
    progress: Progress,
    runtime: Runtime | None = None,
) -> torch.Tensor:
    """Pooled features ``[N, D]`` (float32, on the CPU) of every image in ``split``."""
    runtime = runtime or Runtime()
    backbone.eval()
    forward = runtime.forward(backbone)
    slices = [slice(s, s + batch_size) for s in range(0, len(split), batch_size)]
    batches = read_ahead(split.images, slices)
    description = f"features ({split.name})"
    chunks = []
    for images in progress.track(batches, total=len(slices), description=description):
        with runtime.autocast():
            chunks.append(forward(runtime.to(images)).float().cpu())
    return torch.cat(chunks)


class LinearProbe(Strategy):
    """Frozen backbone, trained linear head (the cheapest adaptation; the study's baseline).

    The head is fitted full-batch for ``steps`` Adam steps at ``lr``, checked on validation every
    ``eval_every`` steps: these options, not ``train.epochs`` or ``train.lr``, set how it trains.
    From the run's ``train`` settings it reads only ``eval_batch_size`` (feature extraction),
    ``class_weighting`` and ``select_on``.
    """

    display_name = "Linear probe"

    steps: int = Field(300, ge=1, description="Full-batch optimisation steps for the head.")
    lr: float = Field(0.01, gt=0, description="Learning rate of the head (Adam).")
    weight_decay: float = Field(1e-3, ge=0, description="L2 penalty on the head weights.")
    eval_every: int = Field(10, ge=1, description="Steps between validation checks.")

    def prepare(self, backbone: BackboneAdapter, num_classes: int) -> Classifier:
        """Freeze the backbone; only the head trains."""
        model = Classifier(backbone, num_classes)
        model.backbone.requires_grad_(False)
        model.head.requires_grad_(True)
        return model

    def fit(
        self,
        model: Classifier,
        train: SplitArrays,
        val: SplitArrays,
        settings: TrainSettings,
        context: FitContext,
    ) -> FitReport:
        """Fit the head on cached, standardised features; keep the best validation step."""
        x_train = cached_features(model.backbone, train, settings.eval_batch_size, context)
        x_val = cached_features(model.backbone, val, settings.eval_batch_size, context)
        mean = x_train.mean(0)
        std = x_train.std(0).clamp_min(1e-6)
        z_train, z_val = (x_train - mean) / std, (x_val - mean) / std
        num_classes = model.head.out_features
        class_weight = class_weights(train.labels, num_classes, settings.class_weighting)
        head = torch.nn.Linear(z_train.shape[1], num_classes)
        optimizer = torch.optim.Adam(head.parameters(), lr=self.lr)
        selection = Selection(settings.select_on)
        best_state: dict[str, torch.Tensor] | None = None
        for step in range(self.steps):
            loss = F.cross_entropy(head(z_train), train.labels, weight=class_weight)
            loss = loss + self.weight_decay * head.weight.pow(2).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if (step + 1) % self.eval_every == 0 or step + 1 == self.steps:
                with torch.no_grad():
                    logits = head(z_val)
                val_loss = validation_loss(logits, val.labels, class_weight)
                val_auc = validation_auc(logits, val.labels, context.positive_class)
                if selection.offer(step, val_auc, val_loss):
                    best_state = {k: v.clone() for k, v in head.state_dict().items()}
        assert best_state is not None
        weight, bias = best_state["weight"], best_state["bias"]
        with torch.no_grad():  # fold standardisation: W (x - m) / s + b
            model.head.weight.copy_(weight / std)
            model.head.bias.copy_(bias - (weight * (mean / std)).sum(1))
        model.eval()
        trainable, total = count_parameters(model)
        return FitReport(
            self.steps,
            selection.best_epoch,
            selection.best_loss,
            selection.best_auc,
            trainable,
            total,
            selection_curve=selection.curve,
        )
