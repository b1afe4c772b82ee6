"""What the explainer metrics share: preparing maps, explaining in chunks, uninformative maps.

The robustness, randomisation and axiomatic metrics (:mod:`~xaibench.metrics.robustness`,
:mod:`~xaibench.metrics.randomisation`, :mod:`~xaibench.metrics.axiomatic`) explain again: noisy
copies of the images, a randomised copy of the model, another class. These helpers keep that
batched (many re-explanations per ``method.explain`` call), seeded, and their preprocessing
per image.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


def prepare(maps: torch.Tensor, *, absolute: bool, normalise: bool) -> torch.Tensor:
    """Maps ``[N, H, W]`` as float64 on the CPU, each divided by its max ``|value|``, then ``|.|``.

    Quantus' default preprocessing (``normalise_by_max``, then ``abs``), with one deliberate
    difference: Quantus divides by the maximum over the whole *batch* it was handed, so an
    image's score depends on which images share its batch; here each map is divided by its own
    maximum (identical to Quantus for a batch of one). An all-zero map stays zero.
    """
    out = maps.detach().to("cpu", torch.float64)
    if normalise:
        peak = out.flatten(1).abs().amax(dim=1).view(-1, *([1] * (out.dim() - 1)))
        out = torch.where(peak > 0, out / torch.where(peak > 0, peak, 1.0), out)
    if absolute:
        out = out.abs()
    return out


def permute_pixels(maps: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each map's pixels in a fresh uniformly random order: same values, no spatial information.

    The uninformative explanation of the explainer metrics' floors: it keeps a map's value
    distribution (so its norm, its range and its sum) and destroys where the values are.
    """
    flat = maps.flatten(1)
    keys = torch.rand(flat.shape, generator=generator, dtype=torch.float32)
    order = torch.argsort(keys, dim=1)
    return torch.gather(flat, 1, order.to(flat.device)).view_as(maps)


def explain(method: Any, model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor):
    """``method.explain`` on ``images``, the maps returned on the CPU (float32, detached)."""
    return method.explain(model, images, targets).detach().float().cpu()


def draws_per_call(batch: int, max_images: int) -> int:
    """How many whole draws of a ``batch``-image batch fit in one call of ``max_images`` images."""
    return max(1, max_images // max(1, batch))


@contextmanager
def seeded_global_rng(device: torch.device, seed: int) -> Iterator[None]:
    """Torch's global generators (CPU and ``device``'s) seeded to ``seed``, restored after.

    For code that draws from the global state (``reset_parameters``, a method's own noise):
    the run's global state is what it was before, so adding a metric changes no other number.
    """
    devices: list[int] = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def draw_seed(generator: torch.Generator) -> int:
    """A seed for a global-state fork, drawn from the cell's generator."""
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
