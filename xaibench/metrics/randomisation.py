"""Randomisation: does the explanation change when what it should depend on changes?

* ``mprt`` — model parameter randomisation (Adebayo et al., NeurIPS 2018): the layers of a
  *copy* of the model are re-initialised one at a time and the images explained again after
  each; the similarity of each re-explanation to the original map, per layer. Cascading from
  the output (``layer_order="top_down"``, the default, as in Quantus' ``MPRT``), from the input
  (``bottom_up``), or one layer at a time on the intact model (``independent``).
* ``random_logit`` — Sixt et al. (ICML 2020): the similarity between the map for the explained
  class and the map for a uniformly drawn *other* class (SSIM by default, as Quantus').

Lower is better for both: a map that stays the same when the weights or the class change
explains the image, not the model. Values equal Quantus 0.6.0's ``MPRT`` (per layer) and
``RandomLogit`` on the same model, images and classes (``tests/test_native_randomisation.py``).

Layers, as in Quantus: every module with a ``reset_parameters`` method (convolutions, linear
layers, norms), in registration order, re-initialised by its own ``reset_parameters`` with
torch's global generators seeded to ``seed + 1`` for each (Quantus' convention; the global state
is forked and restored, so the run's other draws are unchanged). ``seed`` defaults to one drawn
from the cell's generator; ``seed=42`` reproduces Quantus' default. This differs on purpose from
the sanity check of :mod:`xaibench.sanity` (parameter groups in execution order, re-drawn at the
tensor's scale, judged against run-to-run similarity): that is a pass/fail check on a sample,
this is the literature's score, layer by layer. What they share is reused
(:func:`xaibench.sanity.spearman_per_image`). The model is deep-copied once per call; the
cell's model is never changed.

MPRT gives one similarity per layer; the recorded per-image value is their mean over the
randomised layers (``summary="mean"``, Quantus' ``return_average_correlation``), or the last
(``summary="last"``: the fully randomised model for ``top_down``, Quantus'
``return_last_correlation``). Deliberate difference: Quantus' average also includes the
similarity of the original model's re-explanation (its ``"original"`` entry, 1 for a
deterministic method); this mean is over randomised layers only.

Floors (``details["random_floor"]``): the same similarity with each re-explanation's pixels
randomly permuted (:func:`~xaibench.metrics.reexplain.permute_pixels`), i.e. what an explanation
that changes completely at random scores, about 0. These scores reward change, so the floor is
the best a map can reach *without carrying information*: a method near it is indistinguishable
from noise by this score, and the worst value, 1, is a map that ignores the model (an edge map).
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from xaibench.component import Seed
from xaibench.metrics.base import ExplainerMetric
from xaibench.metrics.reexplain import (
    draw_seed,
    explain,
    permute_pixels,
    prepare,
    seeded_global_rng,
)
from xaibench.sanity import spearman_per_image

Similarity = Literal["spearman", "ssim"]

#: SSIM's window along the flattened map, its constants (scikit-image's defaults, as Quantus).
SSIM_WINDOW = 7
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def ssim_flat(a: torch.Tensor, b: torch.Tensor, window: int = SSIM_WINDOW) -> np.ndarray:
    """SSIM of each pair of maps taken as 1-D signals (row after row), ``[B]`` float64.

    Quantus' ``ssim`` hands the *flattened* maps to scikit-image's ``structural_similarity``
    (uniform window of 7, sample covariance, ``K1 = 0.01``, ``K2 = 0.03``, the data range the
    pair's joint max - min, the mean over positions a full window fits); this computes the same
    in float64. NaN where both maps are one constant (no range).
    """
    x = a.flatten(1).double().cpu()
    y = b.flatten(1).double().cpu()
    both = torch.cat([x, y], dim=1)
    span = both.amax(dim=1) - both.amin(dim=1)
    c1 = ((SSIM_K1 * span) ** 2)[:, None]
    c2 = ((SSIM_K2 * span) ** 2)[:, None]

    def mean(t: torch.Tensor) -> torch.Tensor:  # valid positions only: scikit-image's crop
        return F.avg_pool1d(t[:, None], window, stride=1)[:, 0]

    cov = window / (window - 1)
    ux, uy = mean(x), mean(y)
    vx = cov * (mean(x * x) - ux * ux)
    vy = cov * (mean(y * y) - uy * uy)
    vxy = cov * (mean(x * y) - ux * uy)
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(dim=1).numpy()


def similarity(a: torch.Tensor, b: torch.Tensor, kind: Similarity) -> np.ndarray:
    """Per-image similarity of maps ``a`` and ``b``: Spearman's rho or (flattened) SSIM."""
    if kind == "spearman":
        return spearman_per_image(a, b)
    return ssim_flat(a, b)


def randomisable_layers(model: nn.Module) -> list[str]:
    """Names of ``model``'s modules with ``reset_parameters``, in registration order (Quantus)."""
    return [n for n, m in model.named_modules() if callable(getattr(m, "reset_parameters", None))]


class MPRT(ExplainerMetric):
    """Model parameter randomisation: the map's similarity to re-explanations, layer by layer.

    The layers of a model copy are re-initialised in ``layer_order``; per image, the mean
    similarity over layers (or the last). Lower is better.

    Floor: the same with each re-explanation's pixels permuted (module docstring). The
    per-layer means are not recorded per image; :func:`mprt_curve` returns them.
    """

    display_name = "MPRT"
    citation = "Adebayo et al., Sanity checks for saliency maps, NeurIPS 2018"
    higher_is_better = False

    layer_order: Literal["top_down", "bottom_up", "independent"] = Field(
        "top_down", description="Cascade from the output, from the input, or one layer at a time."
    )
    similarity: Similarity = Field("spearman", description="Map similarity (Quantus: Spearman).")
    smoke_options: ClassVar[dict[str, Any]] = {"skip_layers": True, "summary": "last"}

    summary: Literal["mean", "last"] = Field(
        "mean", description="Per image: mean over randomised layers, or the last layer's value."
    )
    skip_layers: bool = Field(
        False, description="Explain only after the last layer (implies summary='last')."
    )
    seed: Seed | None = Field(
        None, description="reset_parameters seed (Quantus: 42); default drawn from the cell."
    )
    absolute: bool = Field(True, description="Compare |maps| (Quantus' abs, default on).")
    normalise: bool = Field(True, description="Divide each map by its max |value| first.")

    @model_validator(mode="after")
    def _consistent(self) -> MPRT:
        if self.skip_layers and self.summary == "mean":
            raise ValueError("skip_layers=true needs summary='last' (no layers to average)")
        return self

    def per_sample(
        self,
        model: torch.nn.Module,
        method: object,
        images: torch.Tensor,
        targets: torch.Tensor,
        maps: torch.Tensor,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Summary over layers of the similarity to the original maps, and of the floor."""
        _, values, floor = mprt_curve(self, model, method, images, targets, maps, generator)
        if self.summary == "last" or self.skip_layers:
            return torch.from_numpy(values[-1]), torch.from_numpy(floor[-1])
        return torch.from_numpy(_nanmean(values)), torch.from_numpy(_nanmean(floor))


def _nanmean(rows: np.ndarray) -> np.ndarray:
    defined = ~np.isnan(rows)
    count = defined.sum(axis=0)
    total = np.where(defined, rows, 0.0).sum(axis=0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def mprt_curve(
    metric: MPRT,
    model: torch.nn.Module,
    method: object,
    images: torch.Tensor,
    targets: torch.Tensor,
    maps: torch.Tensor,
    generator: torch.Generator,
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per layer, in ``metric.layer_order``: its name, similarities ``[L, B]`` and floor ``[L, B]``.

    The seed (``metric.seed``, or one drawn from ``generator``) is drawn first, then one pixel
    permutation per layer and image for the floor.
    """
    seed = metric.seed if metric.seed is not None else draw_seed(generator)
    a = prepare(maps, absolute=metric.absolute, normalise=metric.normalise)
    clone = copy.deepcopy(model).eval()
    names = randomisable_layers(clone)
    if metric.layer_order == "top_down":
        names = names[::-1]
    intact = (
        {k: v.detach().clone() for k, v in clone.state_dict().items()}
        if metric.layer_order == "independent"
        else None
    )
    device = next((p.device for p in clone.parameters()), torch.device("cpu"))
    values, floor = [], []
    for i, name in enumerate(names):
        if intact is not None:
            clone.load_state_dict(intact)
        with seeded_global_rng(device, seed + 1):
            clone.get_submodule(name).reset_parameters()  # type: ignore[operator]
        if metric.skip_layers and i + 1 < len(names):
            continue
        moved = prepare(
            explain(method, clone, images, targets),
            absolute=metric.absolute,
            normalise=metric.normalise,
        )
        values.append(similarity(a, moved, metric.similarity))
        floor.append(similarity(a, permute_pixels(moved, generator), metric.similarity))
    kept = names[-1:] if metric.skip_layers else names
    if not values:  # a model without randomisable layers: nothing to score
        nan = np.full((1, len(images)), np.nan)
        return kept, nan, nan
    return kept, np.stack(values), np.stack(floor)


def other_classes(
    targets: torch.Tensor, num_classes: int, generator: torch.Generator
) -> torch.Tensor:
    """A uniformly drawn class other than ``targets[i]`` for each image (CPU, int64)."""
    shift = torch.randint(1, num_classes, targets.shape, generator=generator)
    return (targets.cpu() + shift) % num_classes


def num_classes_of(model: torch.nn.Module, images: torch.Tensor) -> int:
    """The model's number of classes: its head's ``out_features``, else one forward pass."""
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear):
        return int(head.out_features)
    with torch.no_grad():
        return int(model(images[:1]).shape[1])


class RandomLogit(ExplainerMetric):
    """Similarity (SSIM) of the map for the explained class to the map for a random other class.

    Lower is better. Floor: the same with the other class's map's pixels permuted. NaN for a
    one-class model (no other class).
    """

    display_name = "Random logit"
    citation = "Sixt, Granz, Landgraf, When explanations lie, ICML 2020"
    higher_is_better = False

    similarity: Similarity = Field("ssim", description="Map similarity (Quantus: SSIM).")
    absolute: bool = Field(False, description="Compare |maps| (Quantus' abs, default off).")
    normalise: bool = Field(True, description="Divide each map by its max |value| first.")

    def per_sample(
        self,
        model: torch.nn.Module,
        method: object,
        images: torch.Tensor,
        targets: torch.Tensor,
        maps: torch.Tensor,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Similarity to the other class's map, and to that map with its pixels permuted."""
        classes = num_classes_of(model, images)
        if classes < 2:
            nan = torch.full((len(images),), float("nan"), dtype=torch.float64)
            return nan, nan.clone()
        other = other_classes(targets, classes, generator).to(targets.device)
        a = prepare(maps, absolute=self.absolute, normalise=self.normalise)
        swapped = prepare(
            explain(method, model, images, other), absolute=self.absolute, normalise=self.normalise
        )
        value = similarity(a, swapped, self.similarity)
        floor = similarity(a, permute_pixels(swapped, generator), self.similarity)
        return torch.from_numpy(value), torch.from_numpy(floor)
