"""Faithfulness scores of the Quantus family, native and batched.

Each is a :class:`~xaibench.metrics.base.FaithfulnessMetric`: it edits the explained images
where (and in the order) the map says, re-scores them with the runner's ``score`` (the
explained class's probability) and returns, per image, the score and its floor, the same score
for an explanation that carries no information:

* :class:`FaithfulnessCorrelation` (Bhatt et al., 2020) — Pearson correlation, over
  ``nr_runs`` random pixel subsets, between the map's sum over the subset and the drop in
  probability when the subset is set to the image's minimum. Higher is better; floor 0.
* :class:`MonotonicityCorrelation` (Nguyen & Martinez, 2020) — Spearman correlation, over
  groups of ``features_in_step`` pixels taken in increasing ``|a|``, between the group's
  ``|a|`` sum and the mean squared change of the probability (relative to it) when the group
  alone is set to a uniform random value, ``nr_samples`` times. Higher is better; floor 0.
* :class:`IROF` (Rieger & Hansen, 2020) — superpixels (scikit-image SLIC, as Quantus) are
  replaced by the image's mean in decreasing order of their mean attribution; the score is
  the area *over* the curve of the probability relative to the intact image's. Higher is
  better; floor: the same with the superpixels in a random order.
* :class:`Selectivity` (Montavon et al., 2018) — ``patch_size`` square patches set to the
  image's minimum in decreasing order of their attribution sum; the score is the area under
  the probability curve (trapezoids of width 1). Lower is better; floor: a random patch order.

Each equals Quantus 0.6.0's metric of the same name, called with ``softmax=True`` (so that its
model output is the probability ``score`` gives) on the same draws, to 1e-6 wherever both
define a value (``tests/test_native_faithfulness.py``). Deliberate differences:

* Randomness comes from the cell's seeded torch generator (subsets, uniform values, random
  orders), never numpy's global state.
* Ties in an ordering are broken by index (a stable sort), where Quantus' ``np.argsort``
  leaves them to its quicksort; the two agree whenever the values are distinct.
* IROF agrees to about 2e-6, not 1e-6: Quantus divides its float32 probabilities in float32.
* IROF fills a superpixel with the mean of the (already partly filled) image itself, where
  Quantus takes the mean of the whole batch's images, so its score of an image depends on
  which images share its batch; they agree for a batch of one. Quantus also pads the curves of
  a batch to the longest one (images with fewer superpixels); here each curve has its own
  length.
* Correlations of a constant series (e.g. a model whose probability does not move) are NaN
  (undefined), as in Quantus, but without its warnings.

Floors of the two correlations are their exact expectation, 0, not an estimate: for a map
independent of the model, flipping each value ``u -> 1 - u`` of a uniform noise map negates
the Pearson correlation of faithfulness correlation (the subsets and the probability drops do
not depend on the map), and for monotonicity correlation the groups of a noise map are a
uniformly random partition of the pixels whatever their values, so the changes are
exchangeable and independent of the sums (exactly 0 when ``features_in_step`` divides the
number of pixels). This costs no model calls; IROF and selectivity, whose value for a random
order has no closed form, run the random order through the model (twice the calls).

Why native rather than bridged: Quantus scores through its own model wrappers on numpy
copies, one perturbation of one batch at a time; here the perturbed copies of a step go to
the runner's batched ``score`` together, on the run's device.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field

from xaibench.errors import XaibenchError
from xaibench.metrics.base import FaithfulnessMetric, ScoreFn

__all__ = [
    "IROF",
    "FaithfulnessCorrelation",
    "MonotonicityCorrelation",
    "Selectivity",
    "pearson_rows",
    "spearman_rows",
]


def pearson_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each row pair of ``[B, S]`` tensors, float64; NaN if constant."""
    a = a.double() - a.double().mean(dim=1, keepdim=True)
    b = b.double() - b.double().mean(dim=1, keepdim=True)
    norms = a.norm(dim=1) * b.norm(dim=1)
    r = (a * b).sum(dim=1) / torch.where(norms > 0, norms, 1.0)
    return torch.where(norms > 0, r.clamp(-1.0, 1.0), float("nan"))


def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 1..S of each row, ties sharing the mean of their ranks (as ``rankdata``)."""
    from scipy.stats import rankdata

    return torch.from_numpy(rankdata(x.double().cpu().numpy(), axis=1))


def spearman_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman correlation (Pearson of average ranks) per row pair; NaN if constant."""
    return pearson_rows(_average_ranks(a), _average_ranks(b))


#: Perturbed images gathered into one call of ``score`` (which batches them for the model):
#: one call per perturbation of a small batch would pay the per-call cost hundreds of times.
STACK_IMAGES = 256


def _score_stacked(score: ScoreFn, perturbed: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """``score`` of each tensor of ``perturbed``, in calls of about :data:`STACK_IMAGES` images.

    Returns one float64 CPU tensor per input tensor, in order. The inputs are made lazily, so
    at most about :data:`STACK_IMAGES` perturbed images exist at a time.
    """
    outputs: list[torch.Tensor] = []
    pending: list[torch.Tensor] = []

    def flush() -> None:
        sizes = [len(x) for x in pending]
        out = score(torch.cat(pending)).double().cpu()
        outputs.extend(out.split(sizes))
        pending.clear()

    for x in perturbed:
        pending.append(x)
        if sum(len(p) for p in pending) >= STACK_IMAGES:
            flush()
    if pending:
        flush()
    return outputs


def _flat_maps(maps: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Maps as float64 ``[B, H*W]`` on CPU, checked against the images' shape."""
    if maps.ndim != 3 or images.ndim != 4 or images.shape[1] != 1:
        raise XaibenchError(
            f"faithfulness scores need maps [B, H, W] and images [B, 1, H, W]; got maps "
            f"{tuple(maps.shape)} and images {tuple(images.shape)}"
        )
    if maps.shape != images.shape[:1] + images.shape[2:]:
        raise XaibenchError(
            f"maps {tuple(maps.shape)} do not match images {tuple(images.shape)}; resize the "
            "maps to the image size first"
        )
    flat = maps.detach().cpu().double().flatten(1)
    if not torch.isfinite(flat).all():
        raise XaibenchError("saliency map is not finite (NaN or inf); cannot score it")
    return flat


class FaithfulnessCorrelation(FaithfulnessMetric):
    """Pearson correlation of subset attribution sums with the probability drop (Bhatt et al.).

    Each of ``nr_runs`` rounds draws, per image, ``subset_size`` distinct pixels uniformly
    (from the cell's generator), sets them to the image's minimum (Quantus' ``"black"``
    baseline) and records the drop ``p(x) - p(x')`` and the map's sum over those pixels (signed
    attribution, as Quantus' default ``abs=False``). Higher is better; floor 0 (see the
    module). Quantus' defaults (100 runs of 224 pixels).
    """

    smoke_options: ClassVar[dict[str, Any]] = {"nr_runs": 5, "subset_size": 32}

    display_name = "Faithfulness correlation"
    citation = (
        "Bhatt, Weller & Moura, Evaluating and aggregating feature-based model explanations, "
        "IJCAI 2020"
    )
    higher_is_better: ClassVar[bool] = True

    nr_runs: int = Field(100, ge=2, le=10_000, description="Random subsets per image.")
    subset_size: int = Field(224, ge=1, description="Pixels per subset (fewer than the image has).")

    def draw_subsets(self, batch: int, pixels: int, generator: torch.Generator) -> torch.Tensor:
        """``[nr_runs, B, subset_size]`` pixel indices, distinct within each subset."""
        if self.subset_size >= pixels:
            raise XaibenchError(
                f"subset_size must be smaller than the number of pixels ({pixels}); "
                f"got {self.subset_size}"
            )
        # One run's keys at a time: all runs at once would be nr_runs x B x H W floats.
        return torch.stack(
            [
                torch.rand(batch, pixels, generator=generator).topk(self.subset_size).indices
                for _ in range(self.nr_runs)
            ]
        )

    def per_sample(
        self,
        score: ScoreFn,
        images: torch.Tensor,
        maps: torch.Tensor,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Correlation per image and its floor (zeros)."""
        flat = _flat_maps(maps, images)
        batch, pixels = flat.shape
        subsets = self.draw_subsets(batch, pixels, generator)
        return self.score_subsets(score, images, flat, subsets), torch.zeros(batch).double()

    def score_subsets(
        self, score: ScoreFn, images: torch.Tensor, flat: torch.Tensor, subsets: torch.Tensor
    ) -> torch.Tensor:
        """The correlation for given subsets ``[runs, B, k]`` (the tests feed Quantus these)."""
        batch = images.shape[0]
        x = images.flatten(1)
        low = x.min(dim=1, keepdim=True).values
        intact = score(images).double().cpu()
        rows = torch.arange(batch, device=x.device)[:, None]

        def perturbed() -> Iterator[torch.Tensor]:
            for subset in subsets:
                copy = x.clone()
                copy[rows, subset.to(x.device)] = low.expand(-1, subset.shape[1])
                yield copy.view_as(images)

        drops = [intact - out for out in _score_stacked(score, perturbed())]
        sums = [flat.gather(1, subset).sum(dim=1) for subset in subsets]
        return pearson_rows(torch.stack(sums, dim=1), torch.stack(drops, dim=1))


class MonotonicityCorrelation(FaithfulnessMetric):
    """Spearman correlation of group ``|a|`` sums with the relative output change (Nguyen).

    Pixels are taken in increasing ``|a|`` (stable order) in groups of ``features_in_step``;
    each group alone is set to a uniform ``[0, 1)`` value (one per image and sample, Quantus'
    ``"uniform"`` baseline), ``nr_samples`` times, and its variance is the mean of
    ``(p(x') - p(x))^2 / p(x)^2`` (``1 / p(x)^2`` replaced by 1 where ``p(x) < eps``). Higher
    is better; floor 0 (see the module).

    Defaults deviate from Quantus' (one pixel per group, 100 samples: ``H W x 100`` model
    calls, 5 million per batch at 224 px): ``features_in_step=None`` makes 32 groups of
    ``ceil(H W / 32)`` pixels and ``nr_samples`` is 10. Set both to reproduce Quantus.
    """

    smoke_options: ClassVar[dict[str, Any]] = {"nr_samples": 1, "features_in_step": 256}

    display_name = "Monotonicity correlation"
    citation = (
        "Nguyen & Martinez, On quantitative aspects of model interpretability, "
        "arXiv:2007.07584, 2020"
    )
    higher_is_better: ClassVar[bool] = True

    features_in_step: int | None = Field(
        None, ge=1, description="Pixels per group; None: a 32nd of the image (rounded up)."
    )
    nr_samples: int = Field(10, ge=1, le=10_000, description="Random fills per group.")
    eps: float = Field(1e-5, ge=0, description="Below this probability, no 1 / p^2 scaling.")

    def step(self, pixels: int) -> int:
        """Pixels per group for an image of ``pixels`` pixels."""
        return self.features_in_step or math.ceil(pixels / 32)

    def draw_fills(self, batch: int, pixels: int, generator: torch.Generator) -> torch.Tensor:
        """``[groups, nr_samples, B]`` uniform fill values."""
        groups = math.ceil(pixels / self.step(pixels))
        return torch.rand(groups, self.nr_samples, batch, generator=generator)

    def per_sample(
        self,
        score: ScoreFn,
        images: torch.Tensor,
        maps: torch.Tensor,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Correlation per image and its floor (zeros)."""
        flat = _flat_maps(maps, images).abs()
        batch, pixels = flat.shape
        if self.step(pixels) > pixels:
            raise XaibenchError(
                f"features_in_step must be at most the number of pixels ({pixels}); "
                f"got {self.features_in_step}"
            )
        fills = self.draw_fills(batch, pixels, generator)
        return self.score_fills(score, images, flat, fills), torch.zeros(batch).double()

    def score_fills(
        self, score: ScoreFn, images: torch.Tensor, flat: torch.Tensor, fills: torch.Tensor
    ) -> torch.Tensor:
        """The correlation for given fill values ``[groups, samples, B]``."""
        batch, pixels = flat.shape
        step = self.step(pixels)
        order = torch.argsort(flat, dim=1, stable=True)
        intact = score(images).double().cpu()
        scale = torch.where(intact.abs() >= self.eps, 1.0 / intact.abs(), 1.0) ** 2
        x = images.flatten(1)
        samples = fills.shape[1]
        repeated = x.repeat(samples, 1)  # sample-major: row s * B + b
        rows = torch.arange(samples * batch, device=x.device)[:, None]
        groups = [order[:, g * step : (g + 1) * step] for g in range(len(fills))]

        def perturbed() -> Iterator[torch.Tensor]:
            for group, fill in zip(groups, fills, strict=True):
                copy = repeated.clone()
                columns = group.to(x.device).repeat(samples, 1)
                values = fill.reshape(-1, 1).to(x.dtype).to(x.device)
                copy[rows, columns] = values.expand(-1, columns.shape[1])
                yield copy.view(samples * batch, *images.shape[1:])

        variances = [
            ((out.view(samples, batch) - intact) ** 2).mean(dim=0) * scale
            for out in _score_stacked(score, perturbed())
        ]
        sums = [flat.gather(1, group).sum(dim=1) for group in groups]
        return spearman_rows(torch.stack(sums, dim=1), torch.stack(variances, dim=1))


def _removal_curve(
    score: ScoreFn,
    images: torch.Tensor,
    regions: list[torch.Tensor],
    fill: str,
) -> list[torch.Tensor]:
    """Probabilities after each cumulative removal, per image (curves of different lengths).

    Args:
        score: The explained class's probability.
        images: ``[B, 1, H, W]``.
        regions: Per image, bool ``[K_i, H*W]``: the pixels removed at each step, in order.
        fill: ``"mean"`` (the current image's mean, IROF) or ``"min"`` (the image's minimum).
    """
    batch = images.shape[0]
    x = images.flatten(1).clone()
    low = x.min(dim=1).values
    steps = max(len(r) for r in regions)
    actives = [[i for i in range(batch) if k < len(regions[i])] for k in range(steps)]

    def perturbed() -> Iterator[torch.Tensor]:
        # Each removal builds on the last; no model output is needed to make the next image.
        for k, active in enumerate(actives):
            for i in active:
                value = x[i].mean() if fill == "mean" else low[i]
                x[i] = torch.where(regions[i][k].to(x.device), value, x[i])
            yield x[active].view(len(active), *images.shape[1:])  # a copy: x[list] gathers

    curves: list[list[torch.Tensor]] = [[] for _ in range(batch)]
    for active, out in zip(actives, _score_stacked(score, perturbed()), strict=True):
        for j, i in enumerate(active):
            curves[i].append(out[j])
    return [torch.stack(c) for c in curves]


class IROF(FaithfulnessMetric):
    """Iterative removal of features: area over the relative probability curve (Rieger).

    Superpixels from scikit-image's SLIC with its defaults (``start_label=0``, as Quantus) on
    each raw image (one model call per superpixel and image, twice with the floor: lower
    ``n_segments`` to bound the cost); in decreasing order of their mean attribution (signed,
    Quantus' default), each is set to the mean of the image as it stands, and the curve is
    ``p(x_k) / p(x)`` after each removal. The score is ``K - trapezoid(curve)`` with unit
    steps (K superpixels), as Quantus computes it. Higher is better; floor: the same for a
    random superpixel order.
    """

    smoke_options: ClassVar[dict[str, Any]] = {"n_segments": 16}

    display_name = "IROF"
    citation = (
        "Rieger & Hansen, IROF: a low resource evaluation metric for explanation methods, "
        "ICLR 2020 workshop, arXiv:2003.08747"
    )
    higher_is_better: ClassVar[bool] = True

    n_segments: int = Field(
        100,
        ge=2,
        le=100_000,
        description="SLIC's approximate number of superpixels (100: its and Quantus' default).",
    )

    def segments(self, images: torch.Tensor) -> list[np.ndarray]:
        """SLIC superpixel labels ``[H, W]`` (0..K-1) per image."""
        from skimage.segmentation import slic

        raw = images.detach().cpu().double().numpy()
        labels = [
            slic(np.moveaxis(img, 0, -1), n_segments=self.n_segments, start_label=0) for img in raw
        ]
        for i, label in enumerate(labels):
            if label.max() < 1:
                raise XaibenchError(f"IROF: image {i} gave a single superpixel; nothing to rank")
        return labels

    def per_sample(
        self,
        score: ScoreFn,
        images: torch.Tensor,
        maps: torch.Tensor,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Area over the curve for the map's superpixel order and a random one."""
        flat = _flat_maps(maps, images)
        labels = [torch.from_numpy(s.reshape(-1)).long() for s in self.segments(images)]
        members = [lab[None, :] == torch.arange(int(lab.max()) + 1)[:, None] for lab in labels]
        ordered, shuffled = [], []
        for i, member in enumerate(members):
            means = (member.double() @ flat[i]) / member.sum(dim=1)
            ordered.append(member[torch.argsort(-means, stable=True)])
            shuffled.append(member[torch.randperm(len(member), generator=generator)])
        intact = score(images).double().cpu()
        values = []
        for regions in (ordered, shuffled):
            curves = _removal_curve(score, images, regions, "mean")
            values.append(
                torch.stack([len(c) - torch.trapezoid(c / intact[i]) for i, c in enumerate(curves)])
            )
        return values[0], values[1]


class Selectivity(FaithfulnessMetric):
    """Area under the probability curve as attribution patches are removed (Montavon et al.).

    The image is split into ``patch_size`` squares (a side that is not a multiple is padded
    evenly on both sides, as Quantus: padded pixels count 0 attribution and are not in the
    image); in decreasing order of their attribution sum (signed) each patch is set to the
    image's minimum, and the score is the trapezoidal area (unit steps) under the probability
    after each removal, as Quantus' ``get_auc_score``. Lower is better; floor: a random patch
    order.
    """

    smoke_options: ClassVar[dict[str, Any]] = {"patch_size": 8}

    display_name = "Selectivity"
    citation = (
        "Montavon, Samek & Mueller, Methods for interpreting and understanding deep neural "
        "networks, Digital Signal Processing 73, 2018"
    )
    higher_is_better: ClassVar[bool] = False

    patch_size: int = Field(8, ge=1, le=1024, description="Side of the square patches.")

    def patches(self, height: int, width: int) -> torch.Tensor:
        """Bool ``[P, H*W]``: the image pixels of each patch of the padded grid, row-major."""
        size = self.patch_size
        pad_h = (-height) % size // 2
        pad_w = (-width) % size // 2
        rows = (torch.arange(height) + pad_h) // size
        cols = (torch.arange(width) + pad_w) // size
        n_rows, n_cols = math.ceil(height / size), math.ceil(width / size)
        cell = (rows[:, None] * n_cols + cols[None, :]).reshape(-1)
        return cell[None, :] == torch.arange(n_rows * n_cols)[:, None]

    def per_sample(
        self,
        score: ScoreFn,
        images: torch.Tensor,
        maps: torch.Tensor,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Area under the curve for the map's patch order and a random one."""
        flat = _flat_maps(maps, images)
        batch = flat.shape[0]
        member = self.patches(images.shape[-2], images.shape[-1])
        sums = flat @ member.double().T  # [B, P]
        order = torch.argsort(-sums, dim=1, stable=True)
        random = torch.stack(
            [torch.randperm(len(member), generator=generator) for _ in range(batch)]
        )
        values = []
        for ranking in (order, random):
            curves = _removal_curve(score, images, [member[r] for r in ranking], "min")
            values.append(torch.stack([torch.trapezoid(c) for c in curves]))
        return values[0], values[1]
