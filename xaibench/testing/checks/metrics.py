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
  one ranking it last: removing what a faithful map ranks first must change the output most;
* :class:`~xaibench.metrics.base.MapMetric` — a map concentrated on a small square against its
  own floor, a map of i.i.d. uniform noise: every map-only score the benchmark knows (sparseness,
  complexity, entropy) calls structure better than noise;
* :class:`~xaibench.metrics.base.ExplainerMetric` — no case has a better side for every such
  score (robustness, randomisation, completeness read different things), so ``direction`` skips
  with the reason; ``output`` still runs it on a reference CNN with the plain gradient, checks
  ``[B]`` float64 values and floor, equal results for the same generator seed, and that the
  cell's model is left as it was (:class:`~xaibench.explain_scoring.ModelGuard`).

Map and explainer metrics must return float64 tensors: their values go into records and
per-image tables as they are.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from xaibench.metrics.base import (
    ExplainerMetric,
    FaithfulnessMetric,
    MapMetric,
    Metric,
    MetricValue,
    PerformanceMetric,
    PerturbationMetric,
    Predictions,
    SaliencyRegionMetric,
)
from xaibench.testing.checks._support import IMAGE_SIZE, random_images, reference_model
from xaibench.testing.core import Subject

#: What each metric type must declare: ``(needs, category)``, as the base classes set them and
#: the runner dispatches on them.
DECLARATIONS: dict[type[Metric], tuple[str, str]] = {
    PerformanceMetric: ("predictions", "performance"),
    SaliencyRegionMetric: ("saliency", "explanation"),
    PerturbationMetric: ("perturbation", "explanation"),
    FaithfulnessMetric: ("model", "explanation"),
    MapMetric: ("map", "explanation"),
    ExplainerMetric: ("explainer", "explanation"),
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


def _float64(subject: Subject, values: object, n: int, what: str) -> torch.Tensor:
    tensor = _per_sample(subject, values, n, what)
    if tensor.dtype != torch.float64:
        subject.fail(f"{what} returned {tensor.dtype}, expected torch.float64")
    return tensor


def concentrated_maps() -> torch.Tensor:
    """Three maps holding their mass in a small square each (plus a little noise)."""
    maps = 0.01 * _noise(4)
    maps[0, 4:10, 6:12] += 1.0
    maps[1, 20:26, 2:8] += 1.0
    maps[2, 12:18, 12:18] += 1.0
    return maps


def _map_scores(subject: Subject, metric: MapMetric, maps: torch.Tensor) -> MetricValue:
    """Values and floor of ``maps`` (float64 ``[B]``, finite, the floor seeded), aggregated."""
    values = _float64(subject, metric.per_sample(maps), len(maps), "per_sample()")
    floors = [
        _float64(
            subject,
            metric.floor(maps, torch.Generator().manual_seed(0)),
            len(maps),
            "floor()",
        )
        for _ in range(2)
    ]
    if not torch.equal(floors[0], floors[1]):
        subject.fail("floor() differs between two generators of the same seed")
    if not (torch.isfinite(values).all() and torch.isfinite(floors[0]).all()):
        subject.fail(f"per_sample() gave {values}, floor() {floors[0]} on ordinary maps")
    return _value(subject, metric.aggregate(values.numpy(), floors[0].numpy()), "aggregate()")


def _explainer_scores(subject: Subject, metric: ExplainerMetric) -> MetricValue:
    """The metric on a reference CNN and the plain gradient: shapes, seed, model left alone."""
    from xaibench.errors import XaibenchError
    from xaibench.explain_scoring import ModelGuard

    registries = subject.registries()
    model = reference_model(registries, "cnn")
    method = registries.saliency.create("saliency")
    reason = metric.supports(model, method)
    if reason is not None:
        subject.skip(f"does not support the plain gradient on a reference CNN: {reason}")
    images = random_images(3, seed=5)
    targets = torch.tensor([0, 1, 2])
    maps = method.explain(model, images, targets).detach()
    guard = ModelGuard(model)
    runs = []
    for _ in range(2):
        try:
            out = guard.check(
                lambda: metric.per_sample(
                    model, method, images, targets, maps, torch.Generator().manual_seed(0)
                )
            )
        except XaibenchError as exc:
            subject.fail(f"per_sample() {exc}")
        if not (isinstance(out, tuple) and len(out) == 2):
            subject.fail(f"per_sample() returned {type(out).__name__}, expected (values, floor)")
        runs.append(
            (
                _float64(subject, out[0], 3, "per_sample() values"),
                _float64(subject, out[1], 3, "per_sample() floor"),
            )
        )
    (values, floor), (again, floor_again) = runs
    same = torch.equal(values.nan_to_num(-1.0), again.nan_to_num(-1.0)) and torch.equal(
        floor.nan_to_num(-1.0), floor_again.nan_to_num(-1.0)
    )
    if not same:
        subject.fail("per_sample() differs between two generators of the same seed")
    if torch.isnan(values).all() or torch.isnan(floor).all():
        subject.fail(f"per_sample() gave no defined value: values {values}, floor {floor}")
    return _value(subject, metric.aggregate(values.numpy(), floor.numpy()), "aggregate()")


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
    elif isinstance(metric, MapMetric):
        _map_scores(subject, metric, _noise(5))
    elif isinstance(metric, ExplainerMetric):
        _explainer_scores(subject, metric)
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
    elif isinstance(metric, MapMetric):
        maps = concentrated_maps()
        what = "maps concentrated on a small square", "their floor, i.i.d. uniform noise maps"
        scored = _map_scores(subject, metric, maps)
        good, bad = scored.value, scored.details["random_floor"]
    elif isinstance(metric, ExplainerMetric):
        subject.skip(
            "an explainer metric has no case whose better side holds for every such score "
            "(robustness, randomisation, completeness); its output check still runs"
        )
    else:  # pragma: no cover - _metric_type has failed already
        subject.fail(f"unknown metric type {kind.__name__}")
    higher = type(metric).higher_is_better
    if not _better(higher, good, bad):
        direction_word = "higher" if higher else "lower"
        subject.fail(
            f"declares higher_is_better={higher}, but {what[0]} scored {good:.4g} and "
            f"{what[1]} scored {bad:.4g}; the first should score {direction_word}"
        )
