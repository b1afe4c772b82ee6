"""The metric contract.

A metric declares its direction and what it consumes, so the runner can feed it and skip
combinations it cannot score with a recorded reason:

* :class:`PerformanceMetric` — test-set :class:`Predictions` (with the operating threshold chosen on
  the validation split);
* :class:`SaliencyRegionMetric` — saliency maps and a region mask, one value per image, averaged
  over the images where the value is defined, and per image the chance level of that value
  (:mod:`xaibench.metrics.chance`);
* :class:`PerturbationMetric` — predictions on intact and on region-perturbed images;
* :class:`FaithfulnessMetric` — saliency maps, the images they explain and the model's score
  for the explained class, to test whether removing what a map ranks first changes the output;
* :class:`MapMetric` — the maps alone (complexity, sparseness): one value per image and map,
  not one per region;
* :class:`ExplainerMetric` — the model, the saliency method and the images, for scores that
  explain again (robustness to input noise, randomisation, another class's logit) or read the
  model's output directly (completeness).

The last three report, per image, the same score for an explanation that carries no
information (``details["random_floor"]``); each class documents what its floor is.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from xaibench.component import Component
from xaibench.metrics.chance import (
    AREA_FRACTION,
    DEFAULT_DRAWS,
    HALF,
    SHIFT_NULL,
    ChanceLevel,
    area_fraction,
    half,
    shift_null,
)
from xaibench.prediction_scores import class_log_odds as class_log_odds  # re-exported


@dataclass(frozen=True)
class Predictions:
    """Class probabilities on one split.

    Attributes:
        labels: ``[N]`` true class indices.
        probs: ``[N, C]`` softmax probabilities.
        positive_class: Index of the class scored one-vs-rest (osteoporosis).
        threshold: Operating threshold on the positive-class probability, chosen on validation;
            a sample is called positive when its probability is ``>= threshold``.
        log_probs: ``[N, C]`` float64 log-softmax of the logits, or None. A confident model's
            probabilities saturate to exactly 1.0 (and tie), while its log-probabilities keep
            the order: rank-based scores (AUC, Δ) use :attr:`ranking_scores`, derived from them.
    """

    labels: np.ndarray
    probs: np.ndarray
    positive_class: int
    threshold: float = 0.5
    log_probs: np.ndarray | None = None

    @property
    def scores(self) -> np.ndarray:
        """Positive-class probability per sample (thresholds and calibration use it)."""
        return self.probs[:, self.positive_class]

    @property
    def ranking_scores(self) -> np.ndarray:
        """Positive-vs-rest scores in the order of the probabilities, without their ties.

        The positive-class log-odds when :attr:`log_probs` is recorded, else :attr:`scores`.
        Every rank-based score (AUC, Δ, their intervals and tests) uses these.
        """
        return self.class_ranking_scores(self.positive_class)

    def class_ranking_scores(self, k: int) -> np.ndarray:
        """Class ``k``-vs-rest scores that keep the order (log-odds when recorded)."""
        if self.log_probs is None:
            return self.probs[:, k]
        return class_log_odds(self.log_probs, k)

    @property
    def is_positive(self) -> np.ndarray:
        """Whether each sample truly belongs to the positive class."""
        return self.labels == self.positive_class


@dataclass(frozen=True)
class MetricValue:
    """An aggregate value with its count, its 95% CI and, where they exist, per-sample values.

    ``ci`` is ``None`` where no interval is computed; how each metric computes it (DeLong,
    Wilson over the metric's own denominator, an image-level bootstrap) is in its docstring and
    in ``docs/explainability.md`` / ``docs/results-schema.md``.
    """

    value: float
    n: int
    per_sample: np.ndarray | None = None
    details: dict[str, Any] = field(default_factory=dict)
    ci: tuple[float, float] | None = None


#: Bootstrap resamples of image-level CIs (seeded: the same values give the same interval).
BOOTSTRAP_RESAMPLES = 1000


def mean_ci(values: np.ndarray) -> tuple[float, float] | None:
    """95% percentile-bootstrap CI of the mean of finite ``values`` (None below 2 values)."""
    from xaibench.stats.intervals import bootstrap_mean_ci

    finite = values[np.isfinite(values)]
    if finite.size < 2 or finite.size != values.size:
        return None
    return bootstrap_mean_ci(finite, resamples=BOOTSTRAP_RESAMPLES, seed=0)


class Metric(Component):
    """Base class of metrics.

    Attributes:
        higher_is_better: Direction, used for ranking.
        category: ``performance`` or ``explanation`` (which leaderboard).
        needs: Which inputs the metric consumes.
    """

    higher_is_better: ClassVar[bool] = True
    category: ClassVar[Literal["performance", "explanation"]] = "performance"
    needs: ClassVar[
        Literal["predictions", "saliency", "perturbation", "model", "map", "explainer"]
    ] = "predictions"


class PerformanceMetric(Metric):
    """A metric of test-set predictions."""

    @abstractmethod
    def compute(self, predictions: Predictions) -> MetricValue:
        """Score ``predictions``.

        Returns:
            A :class:`MetricValue`: ``value`` a finite float, ``n`` the samples scored, ``ci``
            a ``(low, high)`` pair or None. The leaderboard column is the registry name.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement compute()")


class SaliencyRegionMetric(Metric):
    """A per-image score of a saliency map against a region mask, with its chance level.

    Attributes:
        best: The metric's best value, or None. With it the runner reports the chance level of
            every image (:meth:`chance`) and the normalised score ``(value - chance) / (best -
            chance)``; without it (the default, so plugin metrics opt in by declaring it) there
            is no chance level and no normalised score. 1.0 for the built-ins whose scale tops
            out at 1; None for the energy ratio, which is unbounded.
    """

    category = "explanation"
    needs = "saliency"
    best: ClassVar[float | None] = None
    #: Whether per-image values are hits (1 or 0, shares where maxima tie): when every image
    #: missed, or every image hit, the normalised score takes Wilson's interval
    #: (:func:`xaibench.metrics.chance.chance_details`), where a bootstrap collapses to a point.
    hits: ClassVar[bool] = False
    #: The exact chance level under any relocation of the map's pixels, when there is one:
    #: ``"area fraction"`` or ``"0.5"`` (:mod:`xaibench.metrics.chance`); None: the shift null.
    exact_chance: ClassVar[str | None] = None

    @abstractmethod
    def per_sample(self, maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Return ``[B]`` float64 scores for maps ``[B, H, W]`` and masks ``[B, H, W]``.

        ``maps`` are float32 and ``masks`` bool, on the CPU. The result is a 1-D floating
        ``torch.Tensor`` with one value per image (another float dtype is converted to float64).
        NaN marks an image where the score is undefined (e.g. an empty region); it is excluded
        from the aggregate and from ``n``. The leaderboard column is
        ``<name>_<region> (<method>)``, with the prefix ``n`` when :attr:`best` is declared.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement per_sample()")

    def aggregate(self, values: np.ndarray) -> MetricValue:
        """Mean over the images where the score is defined, with a percentile bootstrap CI."""
        defined = values[~np.isnan(values)]
        value = float(defined.mean()) if defined.size else float("nan")
        return MetricValue(value, int(defined.size), values, ci=mean_ci(defined))

    def per_sample_regions(
        self, maps: torch.Tensor, masks: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """:meth:`per_sample` for several regions of the same maps (override to share work)."""
        return {name: self.per_sample(maps, mask) for name, mask in masks.items()}

    def chance(
        self,
        maps: torch.Tensor,
        masks: torch.Tensor,
        generator: torch.Generator,
        draws: int = DEFAULT_DRAWS,
    ) -> ChanceLevel | None:
        """Per-image value of a map carrying no information about the region, or None.

        The default (for a metric that declares :attr:`best`) is the seeded shift null of
        :func:`~xaibench.metrics.chance.shift_null`: the mean of :meth:`per_sample` over
        ``draws`` rigidly moved copies of each map (random toroidal translation and axis flip),
        which keep the map's values and smoothness. A metric whose expectation under any
        relocation of its pixels is known exactly names it in :attr:`exact_chance` (the area
        fraction, or 0.5), or overrides this. None where :attr:`best` is None.

        Args:
            maps: ``[B, H, W]`` maps, as for :meth:`per_sample`.
            masks: ``[B, H, W]`` bool regions.
            generator: Seeded CPU generator for the moves (the runner seeds it from the cell).
            draws: Moves per image.
        """
        if self.best is None:
            return None
        if self.exact_chance == AREA_FRACTION:
            return ChanceLevel(area_fraction(masks), AREA_FRACTION, exact=True)
        if self.exact_chance == HALF:
            return ChanceLevel(half(masks), HALF, exact=True)
        values = shift_null(self.per_sample, maps, masks, generator, draws)
        return ChanceLevel(values, SHIFT_NULL, exact=False)

    def chance_levels(
        self,
        maps: torch.Tensor,
        masks: Mapping[str, torch.Tensor],
        generator: torch.Generator,
        draws: int = DEFAULT_DRAWS,
    ) -> dict[str, ChanceLevel | None]:
        """:meth:`chance` for several regions of the same maps, every region from one state.

        Each region starts from the generator's state on entry (so a region's chance values do
        not depend on which other regions are scored, nor in what order), and the generator
        ends in the state the last region left it in. Override to share work between regions.
        """
        start = generator.get_state()
        out: dict[str, ChanceLevel | None] = {}
        for name, mask in masks.items():
            generator.set_state(start)
            out[name] = self.chance(maps, mask, generator, draws)
        return out


class PerturbationMetric(Metric):
    """A metric comparing predictions before and after a region is perturbed."""

    category = "explanation"
    needs = "perturbation"

    @abstractmethod
    def compute(self, intact: Predictions, perturbed: Predictions) -> MetricValue:
        """Score the change from ``intact`` to ``perturbed``.

        Returns:
            A :class:`MetricValue`, as :meth:`PerformanceMetric.compute`; the leaderboard column
            is ``<name>_<region> (<perturbation>)``.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement compute()")


#: ``score(images [B, 1, H, W]) -> [B]``: the model's probability of the explained class for raw
#: images, without gradients; the runner batches and places the calls.
ScoreFn = Callable[[torch.Tensor], torch.Tensor]


class FaithfulnessMetric(Metric):
    """A per-image score of how the model's output responds to the pixels a map ranks first.

    Unlike region metrics these call the model, so the runner computes them on the explained
    images only, and each reports the same score for a random ranking of the same pixels
    (``details["random_floor"]``): a faithfulness number means little without its floor.
    """

    category = "explanation"
    needs = "model"

    @abstractmethod
    def per_sample(
        self,
        score: ScoreFn,
        images: torch.Tensor,
        maps: torch.Tensor,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores ``[B]`` for ``maps`` and for a random ranking (the floor), float64.

        Args:
            score: The model's probability of the explained class for raw images.
            images: ``[B, 1, H, W]`` raw images the maps explain.
            maps: ``[B, H, W]`` attribution maps (higher = more relevant).
            generator: Seeded generator for the random ranking and any noise.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement per_sample()")

    def aggregate(self, values: np.ndarray, floor: np.ndarray) -> MetricValue:
        """Mean over images, with the random-ranking floor's mean in the details."""
        return _floored_aggregate(values, floor)


def _floored_aggregate(values: np.ndarray, floor: np.ndarray) -> MetricValue:
    """Mean over images where defined, its bootstrap CI, and the floor's mean in the details."""
    defined = ~np.isnan(values)
    value = float(values[defined].mean()) if defined.any() else float("nan")
    floor_defined = floor[~np.isnan(floor)]
    details = {"random_floor": float(floor_defined.mean()) if floor_defined.size else None}
    return MetricValue(value, int(defined.sum()), values, details, ci=mean_ci(values[defined]))


class MapMetric(Metric):
    """A per-image score of the map alone: no region, no model (complexity, sparseness).

    Computed once per method and image (not once per region, as a region metric would be), and
    recorded with ``region`` empty. Its floor is the score of a map of seeded i.i.d. uniform
    noise of the same shape (:meth:`floor`): a sparseness or complexity number says little
    until it is set against a map with no structure.
    """

    category = "explanation"
    needs = "map"

    @abstractmethod
    def per_sample(self, maps: torch.Tensor) -> torch.Tensor:
        """Scores ``[B]`` (float64 tensor) of maps ``[B, H, W]``; NaN where undefined."""
        raise NotImplementedError(f"{type(self).__name__} must implement per_sample()")

    def floor(self, maps: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Scores ``[B]`` of i.i.d. uniform ``[0, 1)`` noise maps shaped like ``maps``.

        Args:
            maps: ``[B, H, W]`` maps (only their shape is used by the default).
            generator: Seeded CPU generator (the runner seeds it from the cell).
        """
        noise = torch.rand(maps.shape, generator=generator, dtype=torch.float32)
        return self.per_sample(noise)

    def aggregate(self, values: np.ndarray, floor: np.ndarray) -> MetricValue:
        """Mean over images, with the floor's mean in ``details["random_floor"]``."""
        return _floored_aggregate(values, floor)


class ExplainerMetric(Metric):
    """A per-image score that needs the model and the saliency method, not only the maps.

    For robustness (explain noisy copies of the image), randomisation (explain a model whose
    weights were randomised, or another class) and axioms that read the model's output
    (completeness). The runner calls it on the explained images, batch by batch, with the
    cell's model in eval mode and the maps it already computed, and gives each metric its own
    generator per saliency method, seeded with the cell's seed. After every call the runner puts
    the model back as it was (eval mode, no gradients, ``requires_grad`` flags, no hooks the
    metric left); a metric that changed the cell's weights in place fails (the weights are
    restored), so copy the model (``copy.deepcopy``) before randomising it.
    """

    category = "explanation"
    needs = "explainer"

    def supports(self, model: torch.nn.Module, method: Any) -> str | None:
        """Why this metric cannot score ``method`` on ``model``, or None (the default: it can).

        The runner asks once per method before any batch and records the metric ``skipped``
        with the reason; raise only for real errors (those fail the metric's record).
        """
        return None

    @abstractmethod
    def per_sample(
        self,
        model: torch.nn.Module,
        method: Any,
        images: torch.Tensor,
        targets: torch.Tensor,
        maps: torch.Tensor,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores ``[B]`` and their floor ``[B]``, both float64 tensors (NaN where undefined).

        Args:
            model: The cell's :class:`~xaibench.models.base.Classifier`, in eval mode, on the
                run's device. Copy it before changing weights.
            method: The :class:`~xaibench.saliency.base.SaliencyMethod` that made ``maps``;
                ``method.explain(model, images, targets)`` explains again.
            images: ``[B, 1, H, W]`` raw images on the run's device.
            targets: ``[B]`` explained class indices on the run's device.
            maps: ``[B, H, W]`` the method's maps of ``images`` (CPU, float32).
            generator: Seeded CPU generator for noise and random draws.

        Returns:
            ``(values, floor)``: the floor is the score of an explanation carrying no
            information (each metric's docstring says which).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement per_sample()")

    def aggregate(self, values: np.ndarray, floor: np.ndarray) -> MetricValue:
        """Mean over images, with the floor's mean in ``details["random_floor"]``."""
        return _floored_aggregate(values, floor)
