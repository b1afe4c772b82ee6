"""``linear_probe``: a linear head on frozen backbone features.

Features are extracted once per split, standardised, and the head is fitted on them full-batch;
the standardisation is then folded into the head, so the result is an ordinary
:class:`~xaibench.models.base.Classifier` that saliency methods can differentiate end to end.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field

from xaibench.data.arrays import SplitArrays
from xaibench.models.base import BackboneAdapter, Classifier
from xaibench.progress import Progress
from xaibench.strategies.base import FitReport, Strategy, TrainSettings, count_parameters


@torch.inference_mode()
def extract_features(
    backbone: BackboneAdapter, split: SplitArrays, batch_size: int, progress: Progress
) -> torch.Tensor:
    """Pooled features ``[N, D]`` of every image in ``split`` (backbone in eval mode)."""
    backbone.eval()
    starts = range(0, len(split), batch_size)
    chunks = [
        backbone(split.images[s : s + batch_size])
        for s in progress.track(starts, total=len(starts), description=f"features ({split.name})")
    ]
    return torch.cat(chunks).float()


class LinearProbe(Strategy):
    """Frozen backbone, trained linear head (the cheapest adaptation; the study's baseline)."""

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
        generator: torch.Generator,
        progress: Progress,
    ) -> FitReport:
        """Fit the head on cached, standardised features; keep the best validation step."""
        x_train = extract_features(model.backbone, train, settings.eval_batch_size, progress)
        x_val = extract_features(model.backbone, val, settings.eval_batch_size, progress)
        mean = x_train.mean(0)
        std = x_train.std(0).clamp_min(1e-6)
        z_train, z_val = (x_train - mean) / std, (x_val - mean) / std
        head = torch.nn.Linear(z_train.shape[1], model.head.out_features)
        optimizer = torch.optim.Adam(head.parameters(), lr=self.lr)
        best: tuple[float, int, dict[str, torch.Tensor] | None] = (math.inf, -1, None)
        for step in range(self.steps):
            loss = F.cross_entropy(head(z_train), train.labels)
            loss = loss + self.weight_decay * head.weight.pow(2).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if (step + 1) % self.eval_every == 0 or step + 1 == self.steps:
                with torch.no_grad():
                    val_loss = float(F.cross_entropy(head(z_val), val.labels))
                if val_loss < best[0]:
                    best = (val_loss, step, {k: v.clone() for k, v in head.state_dict().items()})
        assert best[2] is not None
        weight, bias = best[2]["weight"], best[2]["bias"]
        with torch.no_grad():  # fold standardisation: W (x - m) / s + b
            model.head.weight.copy_(weight / std)
            model.head.bias.copy_(bias - (weight * (mean / std)).sum(1))
        model.eval()
        trainable, total = count_parameters(model)
        return FitReport(self.steps, best[1], best[0], trainable, total)
