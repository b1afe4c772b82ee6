"""Strategy checks, on the reference backbones with a dozen random images.

A plugin that also registers tiny backbones gets its strategies checked on those too
(:func:`~xaibench.testing.checks._support.reference_keys`).

The contract (``xaibench.strategies.base``): ``prepare(backbone, num_classes)`` wraps the
backbone in a :class:`~xaibench.models.base.Classifier` and sets ``requires_grad`` on what will
train; ``fit`` trains it in place, deterministically for the cell's seed, and leaves it in eval
mode. The fits here are one epoch of a few images: they check the plumbing, not the learning.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from xaibench.data.arrays import SplitArrays
from xaibench.models.base import Classifier
from xaibench.strategies.base import FitContext, FitReport, Strategy, TrainSettings
from xaibench.testing.checks._support import (
    NUM_CLASSES,
    describe_reference,
    max_abs_diff,
    random_images,
    reference_backbone,
    reference_keys,
    seed_all,
)
from xaibench.testing.core import Subject

SETTINGS = TrainSettings(epochs=1, batch_size=4, eval_batch_size=8, lr=1e-2)
POSITIVE = 2
SEED = 0


def _split(name: str, n: int, seed: int) -> SplitArrays:
    labels = torch.arange(n) % NUM_CLASSES
    return SplitArrays(
        name=name,
        images=random_images(n, seed=seed),
        labels=labels,
        sample_ids=tuple(f"{name}-{i}" for i in range(n)),
        regions={},
    )


def _on(arch: str) -> str:
    return describe_reference(arch).removeprefix("the ")


def _strategy(subject: Subject) -> Strategy:
    strategy: Strategy = subject.create()
    return strategy


def _prepare(subject: Subject, strategy: Strategy, arch: str) -> Classifier:
    seed_all(SEED)
    backbone = reference_backbone(subject.registries(), arch, seed=SEED)
    model = strategy.prepare(backbone, NUM_CLASSES)
    if not isinstance(model, Classifier):
        subject.fail(
            f"prepare() returned {type(model).__name__} on {_on(arch)}, expected a Classifier"
        )
    return model


def _fit(subject: Subject, strategy: Strategy, arch: str) -> tuple[Classifier, FitReport, dict]:
    """Prepare and fit from one seed, as the runner does for a cell; return the frozen state."""
    model = _prepare(subject, strategy, arch)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    context = FitContext(generator=torch.Generator().manual_seed(SEED), positive_class=POSITIVE)
    report = strategy.fit(model, _split("train", 12, 41), _split("val", 6, 42), SETTINGS, context)
    if not isinstance(report, FitReport):
        subject.fail(f"fit() returned {type(report).__name__}, expected a FitReport")
    return model, report, frozen


def _same_report(a: FitReport, b: FitReport) -> bool:
    def same(x: object, y: object) -> bool:
        if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
            return True
        return x == y

    pairs = zip(dataclasses.astuple(a), dataclasses.astuple(b), strict=True)
    return all(same(x, y) for x, y in pairs)


def prepare(subject: Subject) -> None:
    """On a tiny CNN and a tiny ViT, ``prepare`` gives a Classifier with parameters to train."""
    strategy = _strategy(subject)
    for arch in reference_keys(subject):
        model = _prepare(subject, strategy, arch)
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        if not trainable:
            subject.fail(f"prepare() on {_on(arch)} left no parameter with requires_grad=True")
        if model.head.out_features != NUM_CLASSES:
            subject.fail(
                f"prepare() on {_on(arch)} gave a head with {model.head.out_features} outputs "
                f"for {NUM_CLASSES} classes"
            )


def fit_deterministic(subject: Subject) -> None:
    """Preparing and fitting twice from the same seed gives equal weights and equal reports."""
    strategy = _strategy(subject)
    for arch in reference_keys(subject):
        (model_a, report_a, _), (model_b, report_b, _) = (
            _fit(subject, strategy, arch) for _ in range(2)
        )
        state_a, state_b = model_a.state_dict(), model_b.state_dict()
        if state_a.keys() != state_b.keys():
            subject.fail(f"two fits from seed {SEED} on {_on(arch)} give different state_dict keys")
        differ = [k for k in state_a if not torch.equal(state_a[k], state_b[k])]
        if differ:
            worst = max((max_abs_diff(state_a[k], state_b[k]) for k in differ), default=0.0)
            subject.fail(
                f"two fits from seed {SEED} on {_on(arch)} end with different weights in "
                f"{len(differ)} tensor(s), e.g. {', '.join(differ[:3])} (max |difference| "
                f"{worst:.3g}); draw randomness from context.generator or the seeded global RNG"
            )
        if not _same_report(report_a, report_b):
            subject.fail(
                f"two fits from seed {SEED} on {_on(arch)} report {report_a} and {report_b}"
            )


def fit_frozen_unchanged(subject: Subject) -> None:
    """``fit`` changes no parameter ``prepare`` froze, and leaves the model in eval mode.

    ``requires_grad`` is what the results report as trainable parameters; a strategy that
    updates a frozen weight anyway (weight decay on every parameter, say) misreports itself.
    """
    strategy = _strategy(subject)
    for arch in reference_keys(subject):
        model, _, frozen = _fit(subject, strategy, arch)
        params = dict(model.named_parameters())
        moved = [
            n for n, before in frozen.items() if n in params and not torch.equal(before, params[n])
        ]
        if moved:
            subject.fail(
                f"fit() on {_on(arch)} changed {len(moved)} parameter(s) prepare() froze, e.g. "
                f"{', '.join(moved[:3])}"
            )
        training = [n or "<model>" for n, m in model.named_modules() if m.training]
        if training:
            subject.fail(f"fit() on {_on(arch)} left module(s) in training mode: {training[:5]}")
