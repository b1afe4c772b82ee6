"""Which checkpoint a strategy keeps: the validation scores of each epoch and the rule.

The rule (``select_on``, :class:`~xaibench.strategies.base.TrainSettings`):

* ``val_auc`` — the highest positive-vs-rest validation AUC wins; among epochs with the **same**
  AUC the lowest validation loss wins; among those the earliest. "Same" is exact equality: an
  AUC is a ratio of counts (concordant pairs, ties counted half, over positives x negatives)
  computed the same way every epoch, so equal AUCs are equal floats. An epoch whose AUC is
  undefined (no positive in the split, non-finite scores) ranks below every defined AUC.
  Before the tie-break (issue 17 item 7) the first epoch to reach the best AUC was kept, so a
  validation AUC saturating at 1.0 kept an early, poorly calibrated epoch.
* ``val_loss`` — the lowest validation loss wins; the earliest among equal losses.

A non-finite loss ranks below every finite one. Both scores are taken from the logits in
float64 so that a confident model's epochs do not tie spuriously: the AUC ranks the
positive-vs-rest log-odds (:func:`~xaibench.prediction_scores.class_log_odds`), which keep their
order where probabilities round to 1.0, and the loss is computed as
``softplus(logsumexp_{j != y} z_j - z_y)`` per image, which is ``-log p_y`` without rounding to
0 once a margin passes ~37 (float64 log-softmax) or ~17 (float32).

Early stopping counts the epochs since the kept checkpoint last changed: an epoch that wins
only on the tie-break is an improvement (it replaces the checkpoint) and resets the count.

The per-epoch scores are recorded as the fit's ``selection_curve`` (``[{"epoch", "val_auc",
"val_loss"}, ...]``, epochs counted from 0 as ``best_epoch`` is).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F

from xaibench.errors import XaibenchError
from xaibench.metrics.functional import binary_auc
from xaibench.prediction_scores import class_log_odds

__all__ = [
    "SelectOn",
    "Selection",
    "choose_epoch",
    "is_better",
    "validation_auc",
    "validation_loss",
]

SelectOn = Literal["val_auc", "val_loss"]


def validation_loss(
    logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None
) -> float:
    """Class-weighted mean cross-entropy in float64 that does not round to 0 when confident.

    Equals ``F.cross_entropy(logits, labels, weight=weight)`` (the weighted mean ``sum w_y l_i /
    sum w_y``), with each ``l_i = -log p_y`` computed as ``softplus(logsumexp_{j != y} z_j -
    z_y)``: a log-softmax would round it to exactly 0 beyond a margin of about 37 in float64.
    """
    z = logits.detach().double().cpu()
    y = labels.cpu().long()
    true = z.gather(1, y[:, None])[:, 0]
    others = z.scatter(1, y[:, None], -math.inf)
    losses = F.softplus(torch.logsumexp(others, dim=1) - true)
    if weight is None:
        return float(losses.mean())
    w = weight.detach().double().cpu()[y]
    return float((w * losses).sum() / w.sum())


def validation_auc(logits: torch.Tensor, labels: torch.Tensor, positive_class: int) -> float | None:
    """Positive-vs-rest AUC of the float64 log-odds; None where undefined."""
    log_probs = torch.log_softmax(logits.detach().double().cpu(), dim=1).numpy()
    scores = class_log_odds(log_probs, positive_class)
    try:
        return binary_auc(labels.cpu().numpy() == positive_class, scores)
    except XaibenchError:  # no positives in the split, or non-finite scores
        return None


def _key(val_auc: float | None, val_loss: float, select_on: SelectOn) -> tuple[float, ...]:
    """Larger is better, compared lexicographically (see the module docstring)."""
    loss = -val_loss if math.isfinite(val_loss) else -math.inf
    if select_on == "val_loss":
        return (loss,)
    auc = val_auc if val_auc is not None and math.isfinite(val_auc) else -math.inf
    return (auc, loss)


def is_better(
    candidate: tuple[float | None, float],
    best: tuple[float | None, float] | None,
    select_on: SelectOn,
) -> bool:
    """Whether ``(val_auc, val_loss)`` of a later epoch replaces the kept ``best``.

    Strictly better only: an exact tie on both keeps the earlier epoch.
    """
    if best is None:
        return True
    return _key(*candidate, select_on) > _key(*best, select_on)


@dataclass
class Selection:
    """Keeps the best epoch by :func:`is_better` and the curve of every epoch offered."""

    select_on: SelectOn
    best_epoch: int = -1
    best_auc: float | None = None
    best_loss: float = math.inf
    curve: list[dict[str, Any]] = field(default_factory=list)
    stale: int = 0

    def offer(self, epoch: int, val_auc: float | None, val_loss: float) -> bool:
        """Record an epoch's scores; True when it becomes the kept checkpoint."""
        self.curve.append({"epoch": epoch, "val_auc": val_auc, "val_loss": val_loss})
        best = None if self.best_epoch < 0 else (self.best_auc, self.best_loss)
        if is_better((val_auc, val_loss), best, self.select_on):
            self.best_epoch, self.best_auc, self.best_loss = epoch, val_auc, val_loss
            self.stale = 0
            return True
        self.stale += 1
        return False


def choose_epoch(scores: list[tuple[float | None, float]], select_on: SelectOn) -> int:
    """The epoch :class:`Selection` keeps from per-epoch ``(val_auc, val_loss)``; -1 if none."""
    selection = Selection(select_on)
    for epoch, (auc, loss) in enumerate(scores):
        selection.offer(epoch, auc, loss)
    return selection.best_epoch
