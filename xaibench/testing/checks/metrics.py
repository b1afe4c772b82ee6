"""Metric checks: declarations, output shapes, and the declared direction on known-answer cases.

Leaderboards rank by ``higher_is_better``; a metric that declares the wrong direction silently
reverses a ranking, so each metric type gets a case whose better side is known:

* :class:`~xaibench.metrics.base.PerformanceMetric` — perfect predictions against inverted ones
  (every sample's true class gets probability 0);
* :class:`~xaibench.metrics.base.SaliencyRegionMetric` — a map equal to the region (plus a
  little noise to break ties) against a map equal to its complement;
* :class:`~xaibench.metrics.base.PerturbationMetric` — perturbed predictions at chance against
  perturbed predictions equal to the intact ones. The better side is the one where perturbing
  the region *destroyed* the predictions: perturbation metrics measure how much the model
  relies on the region, and in this benchmark the region is where the signal should live
  (Δ_region, ``delta_region``: higher means the model's skill depends on the region, and
  higher is better);
* :class:`~xaibench.metrics.base.FaithfulnessMetric` — a synthetic model whose score reads only
  a fine pattern inside a known square, explained by a map ranking the square first against
  one ranking it last: removing what a faithful map ranks first must change the output most.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from xaibench.metrics.base import (
    FaithfulnessMetric,
    Metric,
    MetricValue,
    PerformanceMetric,
    PerturbationMetric,
    Predictions,
    SaliencyRegionMetric,
)
from xaibench.testing.checks._support import IMAGE_SIZE, random_images
from xaibench.testing.core import Subject

#: What each metric type must declare: ``(needs, category)``, as the base classes set them and
#: the runner dispatches on them.
DECLARATIONS: dict[type[Metric], tuple[str, str]] = {
    PerformanceMetric: ("predictions", "performance"),
    SaliencyRegionMetric: ("saliency", "explanation"),
    PerturbationMetric: ("perturbation", "explanation"),
    FaithfulnessMetric: ("model", "explanation"),
}

#: The osteoporosis task's layout: three classes, the last one scored one-vs-rest.
NUM_CLASSES = 3
POSITIVE = 2
LABELS = np.array([0, 1, 2] * 4)


def _metric(subject: Subject) -> Metric:
    metric: Metric = subject.create()
    return metric


def _metric_type(subject: Subject, metric: Metric) -> type[Metric]:
    types = [t for t in DECLARATIONS if isinstance(metric, t)]
    if len(types) != 1:
        names = ", ".join(t.__name__ for t in DECLARATIONS)
        subject.fail(
            f"derives from {len(types)} of the metric types ({names}); the runner feeds a "
            "metric by its type, so it must derive from exactly one"
        )
    return types[0]


def _predictions(probs: np.ndarray) -> Predictions:
    return Predictions(labels=LABELS.copy(), probs=probs, positive_class=POSITIVE, threshold=0.5)


def perfect_predictions() -> Predictions:
    """Every sample's true class with probability 1."""
    return _predictions(np.eye(NUM_CLASSES)[LABELS])


def inverted_predictions() -> Predictions:
    """Every sample's true class with probability 0, the others sharing the rest."""
    probs = (1.0 - np.eye(NUM_CLASSES)[LABELS]) / (NUM_CLASSES - 1)
    return _predictions(probs)


def chance_predictions() -> Predictions:
    """The same probability for every class and sample: no information."""
    return _predictions(np.full((len(LABELS), NUM_CLASSES), 1.0 / NUM_CLASSES))


def _region_masks() -> torch.Tensor:
    """Three rectangular regions of different sizes and places."""
    n = IMAGE_SIZE
    masks = torch.zeros(3, n, n, dtype=torch.bool)
    masks[0, 4:14, 6:20] = True
    masks[1, 16:30, 2:12] = True
    masks[2, 8:24, 8:24] = True
    return masks


def _noise(seed: int) -> torch.Tensor:
    n = IMAGE_SIZE
    return torch.rand(3, n, n, generator=torch.Generator().manual_seed(seed))


#: The faithfulness case: a fixed square and a +-1 checkerboard the synthetic model reads in it.
_SQUARE = (slice(8, 24), slice(8, 24))


def _checkerboard() -> torch.Tensor:
    n = IMAGE_SIZE
    ij = torch.arange(n).view(-1, 1) + torch.arange(n).view(1, -1)
    return 1.0 - 2.0 * (ij % 2).double()


def synthetic_score(images: torch.Tensor) -> torch.Tensor:
    """A model that sees only the checkerboard pattern inside the square.

    ``sigmoid(10 * mean((x - 0.5) * pattern))`` over the square: about 0.98 for the intact
    images, 0.5 once the square is filled with any constant, a blur, or noise. It is a pure
    function of each image, so a metric may batch or split its calls as it likes.
    """
    pattern = _checkerboard()[_SQUARE]
    x = images[:, 0][(slice(None), *_SQUARE)].double()
    return torch.sigmoid(10.0 * ((x - 0.5) * pattern).mean(dim=(1, 2)))


def faithfulness_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images carrying the pattern in the square, a faithful map and an anti-faithful map."""
    images = random_images(3, seed=21).double()
    images[(slice(None), 0, *_SQUARE)] = 0.5 + 0.4 * _checkerboard()[_SQUARE]
    square = torch.zeros(3, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.bool)
    square[(slice(None), *_SQUARE)] = True
    jitter = 0.01 * _noise(22)
    return images.float(), square.float() + jitter, (~square).float() + jitter


def _value(subject: Subject, value: object, what: str) -> MetricValue:
    if not isinstance(value, MetricValue):
        subject.fail(f"{what} returned {type(value).__name__}, expected a MetricValue")
    if not isinstance(value.value, (int, float)) or not math.isfinite(value.value):
        subject.fail(f"{what} returned value {value.value!r}, expected a finite number")
    if value.n < 1:
        subject.fail(f"{what} returned n={value.n}, expected the count of samples scored")
    if value.ci is not None and not all(math.isfinite(float(c)) for c in value.ci):
        subject.fail(f"{what} returned a non-finite interval {value.ci}")
    return value


def _per_sample(subject: Subject, values: object, n: int, what: str) -> torch.Tensor:
    if not isinstance(values, torch.Tensor):
        subject.fail(f"{what} returned {type(values).__name__}, expected a tensor")
    if tuple(values.shape) != (n,):
        subject.fail(f"{what} returned shape {tuple(values.shape)}, expected ({n},): one per image")
    if not values.is_floating_point():
        subject.fail(f"{what} returned {values.dtype}, expected floating point (NaN = undefined)")
    return values


def declarations(subject: Subject) -> None:
    """Exactly one metric type; ``needs`` and ``category`` as that type declares them.

    The runner chooses what to compute and which leaderboard a metric lands on from these
    class variables, so a region metric declaring ``needs = "predictions"`` would be fed the
    wrong inputs.
    """
    metric = _metric(subject)
    kind = _metric_type(subject, metric)
    needs, category = DECLARATIONS[kind]
    cls = type(metric)
    if not isinstance(cls.higher_is_better, bool):
        subject.fail(f"higher_is_better must be a bool, got {cls.higher_is_better!r}")
    if cls.needs != needs:
        subject.fail(f"is a {kind.__name__} but declares needs={cls.needs!r}, expected {needs!r}")
    if cls.category != category:
        subject.fail(
            f"is a {kind.__name__} but declares category={cls.category!r}, expected {category!r}"
        )


def output(subject: Subject) -> None:
    """Finite values of the documented shapes on an ordinary, non-degenerate case."""
    metric = _metric(subject)
    kind = _metric_type(subject, metric)
    if isinstance(metric, PerformanceMetric):
        rng = np.random.default_rng(0)
        probs = rng.dirichlet(np.ones(NUM_CLASSES), size=len(LABELS))
        _value(subject, metric.compute(_predictions(probs)), "compute() on random predictions")
    elif isinstance(metric, SaliencyRegionMetric):
        values = metric.per_sample(_noise(1), _region_masks())
        values = _per_sample(subject, values, 3, "per_sample() on random maps")
        if not torch.isfinite(values).all():
            subject.fail(f"per_sample() on random maps and non-empty regions gave {values}")
        _value(subject, metric.aggregate(values.double().numpy()), "aggregate()")
    elif isinstance(metric, PerturbationMetric):
        rng = np.random.default_rng(0)
        intact = _predictions(rng.dirichlet(np.ones(NUM_CLASSES), size=len(LABELS)))
        perturbed = _predictions(rng.dirichlet(np.ones(NUM_CLASSES), size=len(LABELS)))
        _value(subject, metric.compute(intact, perturbed), "compute() on random predictions")
    elif isinstance(metric, FaithfulnessMetric):
        images, _, _ = faithfulness_case()
        values, floor = metric.per_sample(
            synthetic_score, images, _noise(2), torch.Generator().manual_seed(0)
        )
        values = _per_sample(subject, values, 3, "per_sample() scores")
        floor = _per_sample(subject, floor, 3, "per_sample() random floor")
        if not (torch.isfinite(values).all() and torch.isfinite(floor).all()):
            subject.fail(f"per_sample() on random maps gave scores {values}, floor {floor}")
        _value(
            subject,
            metric.aggregate(values.double().numpy(), floor.double().numpy()),
            "aggregate()",
        )
    else:  # pragma: no cover - _metric_type has failed already
        subject.fail(f"unknown metric type {kind.__name__}")


def _better(higher_is_better: bool, good: float, bad: float) -> bool:
    return good > bad if higher_is_better else good < bad


def direction(subject: Subject) -> None:
    """A case whose better side is known scores better in the declared direction.

    See the module docstring for each type's case. The comparison is strict: a metric that
    cannot tell the two sides apart fails too, with both values in the message.
    """
    metric = _metric(subject)
    kind = _metric_type(subject, metric)
    what: tuple[str, str]
    if isinstance(metric, PerformanceMetric):
        what = "perfect predictions", "inverted predictions (true class at probability 0)"
        good = metric.compute(perfect_predictions()).value
        bad = metric.compute(inverted_predictions()).value
    elif isinstance(metric, SaliencyRegionMetric):
        masks = _region_masks()
        jitter = 0.01 * _noise(3)
        what = "a map equal to the region", "a map equal to the region's complement"
        good = metric.aggregate(metric.per_sample(masks.float() + jitter, masks).numpy()).value
        bad = metric.aggregate(metric.per_sample((~masks).float() + jitter, masks).numpy()).value
    elif isinstance(metric, PerturbationMetric):
        what = (
            "a perturbation that destroys the predictions (chance afterwards)",
            "one that leaves them unchanged",
        )
        intact = perfect_predictions()
        good = metric.compute(intact, chance_predictions()).value
        bad = metric.compute(intact, intact).value
    elif isinstance(metric, FaithfulnessMetric):
        images, faithful, unfaithful = faithfulness_case()
        what = (
            "a map ranking first the pixels the model reads",
            "a map ranking them last",
        )
        scores = []
        for maps in (faithful, unfaithful):
            values, floor = metric.per_sample(
                synthetic_score, images, maps, torch.Generator().manual_seed(0)
            )
            scores.append(metric.aggregate(values.double().numpy(), floor.double().numpy()).value)
        good, bad = scores
    else:  # pragma: no cover - _metric_type has failed already
        subject.fail(f"unknown metric type {kind.__name__}")
    higher = type(metric).higher_is_better
    if not _better(higher, good, bad):
        direction_word = "higher" if higher else "lower"
        subject.fail(
            f"declares higher_is_better={higher}, but {what[0]} scored {good:.4g} and "
            f"{what[1]} scored {bad:.4g}; the first should score {direction_word}"
        )
