"""Axiomatic: do the attributions add up to the change in the model's output?

``completeness`` (Sundararajan, Taly, Yan, ICML 2017): a complete attribution sums to
``f(x) - f(x')``, the explained class's output on the image minus that on a baseline image.
Integrated gradients is complete by construction (up to its Riemann sum's error); gradients,
CAMs and controls are not. The recorded value is the *relative gap*

    |sum(a) - (f(x) - f(x'))| / |f(x) - f(x')|

per image (lower is better, 0 is complete; NaN where the output does not change,
``f(x) == f(x')``).

Output and baseline follow Quantus 0.6.0's ``Completeness``: ``f`` is the logit of the
explained class (Quantus' ``softmax=False`` default; ``output="probability"`` takes the
softmax probability instead), and the baseline is ``"black"``, each image's own minimum
intensity (``"zero"`` is the all-zero image, the black baseline of xaibench's integrated
gradients on raw images in ``[0, 1]``; ``"mean"`` each image's mean).

Deliberate differences from Quantus: Quantus returns ``sum(a) == f(x) - f(x')`` as an exact
floating-point equality, which is False for every real attribution, so it says nothing about
how far from complete a method is; this returns the relative gap. And Quantus normalises the
maps by their maximum first by default, which changes their sum; here ``normalise`` is off by
default (the sum of the raw attribution is what the axiom is about). The terms themselves equal
Quantus' (``tests/test_native_randomisation.py`` compares ``f(x) - f(x')`` through Quantus'
``output_func``).

Floor (``details["random_floor"]``): exactly 1, the gap of an explanation that attributes
nothing (an all-zero map). Completeness only reads the map's sum, so a map with its pixels
permuted (the floor of the other explainer metrics) would score the same as the map itself;
the zero map is the uninformative explanation this score can tell apart.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from xaibench.metrics.base import ExplainerMetric
from xaibench.metrics.reexplain import prepare

Baseline = Literal["black", "zero", "mean"]


def baseline_images(images: torch.Tensor, kind: Baseline) -> torch.Tensor:
    """The baseline ``x'`` per image: its minimum (``black``, Quantus), 0, or its mean."""
    if kind == "zero":
        return torch.zeros_like(images)
    reduce = torch.amin if kind == "black" else torch.mean
    fill = reduce(images, dim=(1, 2, 3), keepdim=True)
    return fill.expand_as(images).clone()


@torch.no_grad()
def completeness_terms(
    model: torch.nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    maps: torch.Tensor,
    *,
    baseline: Baseline = "black",
    output: Literal["logit", "probability"] = "logit",
    normalise: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum of each map, f(x) - f(x'))``, both ``[B]`` float64 on the CPU."""
    rows = torch.arange(len(images), device=images.device)
    outputs = []
    for x in (images, baseline_images(images, baseline)):
        logits = model(x).double()
        if output == "probability":
            logits = torch.softmax(logits, dim=1)
        outputs.append(logits[rows, targets].cpu())
    sums = prepare(maps, absolute=False, normalise=normalise).flatten(1).sum(dim=1)
    return sums, outputs[0] - outputs[1]


class Completeness(ExplainerMetric):
    """Relative completeness gap ``|sum(a) - Δf| / |Δf|`` (lower is better; 0 = complete).

    Floor: 1, the gap of an all-zero map (module docstring). NaN where ``Δf == 0``.
    """

    display_name = "Completeness gap"
    citation = "Sundararajan, Taly, Yan, Axiomatic attribution for deep networks, ICML 2017"
    higher_is_better = False

    baseline: Baseline = Field(
        "black", description="Baseline image: each image's minimum (Quantus), 0, or its mean."
    )
    output: Literal["logit", "probability"] = Field(
        "logit", description="f: the explained class's logit (Quantus' default) or probability."
    )
    normalise: bool = Field(False, description="Divide each map by its max |value| first.")

    def per_sample(
        self,
        model: torch.nn.Module,
        method: object,
        images: torch.Tensor,
        targets: torch.Tensor,
        maps: torch.Tensor,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The relative gap per image, and the zero map's (1 where defined)."""
        sums, delta = completeness_terms(
            model,
            images,
            targets,
            maps,
            baseline=self.baseline,
            output=self.output,
            normalise=self.normalise,
        )
        defined = delta != 0
        scale = torch.where(defined, delta.abs(), 1.0)
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        value = torch.where(defined, (sums - delta).abs() / scale, nan)
        floor = torch.where(defined, torch.ones_like(delta), nan)
        return value, floor
