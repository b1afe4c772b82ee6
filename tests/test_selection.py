"""Checkpoint selection: validation-AUC ties broken by validation loss (issue 17 item 7)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

import xaibench.strategies.linear_probe as linear_probe_module
import xaibench.strategies.training as training
from xaibench.data.arrays import SplitArrays
from xaibench.engine.fit_cache import FitCache
from xaibench.strategies.base import FitContext, FitReport, TrainSettings
from xaibench.strategies.linear_probe import LinearProbe
from xaibench.strategies.selection import (
    Selection,
    choose_epoch,
    is_better,
    validation_auc,
    validation_loss,
)

#: A validation AUC that saturates at 1.0 from epoch 1 while the loss keeps falling to epoch 4.
SATURATING = [(0.90, 0.60), (1.0, 0.40), (1.0, 0.25), (1.0, 0.30), (1.0, 0.12), (1.0, 0.20)]


# --- the rule ---------------------------------------------------------------------------------


def test_equal_auc_is_decided_by_the_lower_loss():
    assert choose_epoch(SATURATING, "val_auc") == 4
    # the old rule (strict ">" on the AUC alone) kept the first epoch at 1.0
    old = max(range(len(SATURATING)), key=lambda e: (SATURATING[e][0], -e))
    assert old == 1


def test_rule_by_hand():
    assert is_better((0.9, 9.0), None, "val_auc")  # the first epoch is always a candidate
    assert is_better((0.81, 0.9), (0.80, 0.1), "val_auc")  # a higher AUC wins whatever the loss
    assert not is_better((0.79, 0.0), (0.80, 0.5), "val_auc")
    assert is_better((0.8, 0.4), (0.8, 0.5), "val_auc")  # equal AUC: lower loss wins
    assert not is_better((0.8, 0.5), (0.8, 0.5), "val_auc")  # exact tie: the earlier stays
    assert not is_better((0.8, math.nan), (0.8, 0.5), "val_auc")  # non-finite loss ranks last
    assert is_better((0.8, 0.5), (0.8, math.inf), "val_auc")
    assert not is_better((None, 0.0), (0.5, 9.0), "val_auc")  # an undefined AUC ranks last
    assert is_better((None, 0.1), (None, 0.2), "val_auc")  # both undefined: by loss
    # on loss alone the AUC does not count
    assert is_better((0.1, 0.2), (1.0, 0.3), "val_loss")
    assert not is_better((1.0, 0.3), (0.1, 0.3), "val_loss")


def test_equal_aucs_are_equal_floats():
    """'Tie' is exact equality: AUCs of different scores with the same ranks are the same float."""
    y = np.array([0, 1, 0, 1, 1, 0, 1])
    a = validation_auc(torch.tensor([[0.0, s] for s in [0.1, 0.9, 0.3, 0.4, 0.8, 0.2, 0.7]]),
                       torch.from_numpy(y), 1)  # fmt: skip
    b = validation_auc(torch.tensor([[0.0, s] for s in [1.0, 9.0, 3.0, 4.0, 8.0, 2.0, 7.0]]),
                       torch.from_numpy(y), 1)  # fmt: skip
    assert a == b == roc_auc_score(y, [0.1, 0.9, 0.3, 0.4, 0.8, 0.2, 0.7])


def test_selection_records_the_curve_and_counts_stale_epochs():
    selection = Selection("val_auc")
    kept = [selection.offer(e, auc, loss) for e, (auc, loss) in enumerate(SATURATING)]
    assert kept == [True, True, True, False, True, False]
    assert selection.stale == 1
    assert (selection.best_epoch, selection.best_auc, selection.best_loss) == (4, 1.0, 0.12)
    assert selection.curve == [
        {"epoch": e, "val_auc": auc, "val_loss": loss} for e, (auc, loss) in enumerate(SATURATING)
    ]


# --- the validation scores --------------------------------------------------------------------


def test_validation_loss_is_cross_entropy_without_rounding_to_zero():
    torch.manual_seed(0)
    logits = torch.randn(20, 3) * 3
    labels = torch.arange(20) % 3
    weight = torch.tensor([0.5, 1.0, 2.0])
    for w in (None, weight):
        expected = F.cross_entropy(
            logits.double(), labels, weight=None if w is None else w.double()
        )
        assert validation_loss(logits, labels, w) == pytest.approx(float(expected), rel=1e-12)
    # margins of 40 and 45: -log p_y = log1p(exp(-margin)), which a log-softmax rounds to 0
    confident = torch.tensor([[0.0, 40.0], [45.0, 0.0]], dtype=torch.float64)
    assert float(F.cross_entropy(confident, torch.tensor([1, 0]))) == 0.0
    got = validation_loss(confident, torch.tensor([1, 0]))
    assert got == pytest.approx((math.exp(-40) + math.exp(-45)) / 2, rel=1e-12)


def test_validation_auc_ranks_saturated_margins():
    rng = np.random.default_rng(0)
    y = np.arange(30) % 2
    margins = rng.uniform(20, 40, 30) + 3 * y
    logits = torch.from_numpy(np.stack([np.zeros(30), margins], axis=1)).float()
    assert torch.all(torch.softmax(logits, 1)[:, 1] == 1.0)  # float32 probabilities all tie
    known = roc_auc_score(y, margins.astype(np.float32))
    assert validation_auc(logits, torch.from_numpy(y), 1) == pytest.approx(known, abs=1e-15)
    assert validation_auc(logits, torch.zeros(30, dtype=torch.long), 1) is None  # no positive


# --- the training loops -----------------------------------------------------------------------


class Tiny(torch.nn.Module):
    """A linear classifier on four pixels (what ``train_supervised`` needs: a ``head``)."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(4, 3)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(images.flatten(1))


def _split(name: str, n: int, seed: int) -> SplitArrays:
    generator = torch.Generator().manual_seed(seed)
    return SplitArrays(
        name=name,
        images=torch.rand(n, 1, 2, 2, generator=generator),
        labels=torch.arange(n) % 3,
        sample_ids=tuple(f"{name}{i}" for i in range(n)),
        regions={},
    )


def _planted_training(monkeypatch, scores, **settings):
    """Train ``Tiny`` with ``evaluate`` returning the planted (auc, loss) of each epoch."""
    snapshots = []

    def planted(model, *args, **kwargs):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        auc, loss = scores[len(snapshots) - 1]
        return loss, auc

    monkeypatch.setattr(training, "evaluate", planted)
    model = Tiny()
    options = {"epochs": len(scores), "batch_size": 4, "lr": 0.05, **settings}
    context = FitContext(generator=torch.Generator().manual_seed(0), positive_class=2)
    report = training.train_supervised(
        model,  # type: ignore[arg-type]
        _split("train", 12, 1),
        _split("val", 6, 2),
        TrainSettings(**options),
        context,
    )
    return model, report, snapshots


def test_training_keeps_the_lowest_loss_epoch_among_saturated_aucs(monkeypatch):
    model, report, snapshots = _planted_training(monkeypatch, SATURATING)
    assert report.best_epoch == 4
    assert (report.best_val_auc, report.best_val_loss) == (1.0, 0.12)
    assert report.epochs_run == len(SATURATING)
    assert report.selection_curve == [
        {"epoch": e, "val_auc": auc, "val_loss": loss} for e, (auc, loss) in enumerate(SATURATING)
    ]
    for key, value in model.state_dict().items():  # the weights of epoch 4 were restored
        assert torch.equal(value, snapshots[4][key]), key
    assert not torch.equal(snapshots[4]["head.weight"], snapshots[5]["head.weight"])


def test_patience_counts_epochs_since_the_kept_checkpoint_changed(monkeypatch):
    # AUC flat at 1.0: falling losses are improvements (patience never runs out) ...
    falling = [(1.0, 1.0 - 0.1 * e) for e in range(6)]
    _, report, _ = _planted_training(monkeypatch, falling, patience=2)
    assert (report.epochs_run, report.best_epoch) == (6, 5)
    # ... rising losses are not: stop two epochs after the first
    rising = [(1.0, 0.1 + 0.1 * e) for e in range(6)]
    _, report, _ = _planted_training(monkeypatch, rising, patience=2)
    assert (report.epochs_run, report.best_epoch) == (3, 0)


def test_linear_probe_breaks_auc_ties_by_loss(monkeypatch):
    """The probe checks validation every ``eval_every`` steps; the same rule picks the step."""
    losses = iter([0.5, 0.3, 0.1, 0.2, 0.4])
    monkeypatch.setattr(linear_probe_module, "validation_auc", lambda *a: 1.0)
    monkeypatch.setattr(linear_probe_module, "validation_loss", lambda *a: next(losses))
    monkeypatch.setattr(
        linear_probe_module, "cached_features", lambda backbone, split, *a: split.images.flatten(1)
    )
    model = Tiny()
    model.backbone = torch.nn.Identity()  # type: ignore[assignment]
    report = LinearProbe(steps=50, eval_every=10).fit(
        model,  # type: ignore[arg-type]
        _split("train", 12, 1),
        _split("val", 6, 2),
        TrainSettings(),
        FitContext(generator=torch.Generator().manual_seed(0), positive_class=2),
    )
    assert report.best_epoch == 29  # the third check, after step 30 (steps counted from 0)
    assert [p["epoch"] for p in report.selection_curve] == [9, 19, 29, 39, 49]
    assert report.best_val_loss == 0.1


def test_fit_cache_round_trips_the_selection_curve(tmp_path):
    from xaibench.cache import prepare_cache_dir

    prepare_cache_dir(tmp_path)
    cache = FitCache(tmp_path)
    curve = [{"epoch": e, "val_auc": a, "val_loss": loss} for e, (a, loss) in enumerate(SATURATING)]
    curve[0]["val_auc"] = None
    report = FitReport(6, 4, 0.12, 1.0, 10, 10, selection_curve=curve)
    model = torch.nn.Linear(2, 2)
    cache.save("k", model, report)
    assert cache.load("k", torch.nn.Linear(2, 2)) == report
