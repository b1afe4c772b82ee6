"""Perturbation checks.

The contract (``xaibench.perturbations.base``): ``apply(images [B,1,H,W], masks [B,H,W],
generator)`` returns perturbed copies in raw-intensity space, changing only pixels inside the
mask, with randomness only from ``generator``. The perturbed images go straight into backbone
adapters, which reject raw values outside [0, 1], so the kit also asks that the pixels a
perturbation writes stay finite and in [0, 1] (every built-in clips to it).
"""

from __future__ import annotations

import random

import numpy as np
import torch

from xaibench.perturbations.base import Perturbation
from xaibench.testing.checks._support import IMAGE_SIZE, max_abs_diff, random_images
from xaibench.testing.core import Subject

SEED = 7


def _masks() -> torch.Tensor:
    """Three masks: an inner rectangle, scattered pixels, and a band along the border."""
    n = IMAGE_SIZE
    masks = torch.zeros(3, n, n, dtype=torch.bool)
    masks[0, 8:20, 10:26] = True
    scattered = torch.rand(n, n, generator=torch.Generator().manual_seed(3)) < 0.3
    masks[1] = scattered
    masks[2, : n // 3, :] = True
    return masks


def _apply(
    subject: Subject, perturbation: Perturbation, images: torch.Tensor, masks: torch.Tensor
) -> torch.Tensor:
    out = perturbation.apply(images, masks, torch.Generator().manual_seed(SEED))
    if not isinstance(out, torch.Tensor):
        subject.fail(f"apply() returned {type(out).__name__}, expected a tensor")
    if tuple(out.shape) != tuple(images.shape):
        subject.fail(f"apply() returned shape {tuple(out.shape)} for images {tuple(images.shape)}")
    return out


def _perturbation(subject: Subject) -> Perturbation:
    perturbation: Perturbation = subject.create()
    return perturbation


def output_shape(subject: Subject) -> None:
    """Same shape, dtype and device as the images; the input tensors are not modified."""
    perturbation = _perturbation(subject)
    images, masks = random_images(3, seed=5), _masks()
    images_before, masks_before = images.clone(), masks.clone()
    out = _apply(subject, perturbation, images, masks)
    if out.dtype != images.dtype:
        subject.fail(f"apply() returned {out.dtype} for {images.dtype} images")
    if out.device != images.device:
        subject.fail(f"apply() returned a tensor on {out.device} for images on {images.device}")
    if not torch.equal(images, images_before):
        subject.fail("apply() modified the input images in place; return a perturbed copy")
    if not torch.equal(masks, masks_before):
        subject.fail("apply() modified the masks in place")


def outside_mask_unchanged(subject: Subject) -> None:
    """Every pixel outside the mask is returned bit for bit.

    The runner's complement test relies on it: what is kept must be exactly what was there.
    """
    perturbation = _perturbation(subject)
    images, masks = random_images(3, seed=5), _masks()
    out = _apply(subject, perturbation, images, masks)
    outside = ~masks.unsqueeze(1).expand_as(images)
    changed = int((out[outside] != images[outside]).sum())
    if changed:
        subject.fail(
            f"apply() changed {changed} pixel(s) outside the mask (max |difference| "
            f"{max_abs_diff(out[outside], images[outside]):.3g}); only masked pixels may change"
        )


def inside_mask_range(subject: Subject) -> None:
    """Masked pixels are finite and within [0, 1], the raw range every adapter accepts."""
    perturbation = _perturbation(subject)
    images, masks = random_images(3, seed=5), _masks()
    out = _apply(subject, perturbation, images, masks)
    inside = out[masks.unsqueeze(1).expand_as(images)]
    if not torch.isfinite(inside).all():
        subject.fail(f"apply() wrote {int((~torch.isfinite(inside)).sum())} non-finite pixel(s)")
    low, high = float(inside.min()), float(inside.max())
    if low < 0.0 or high > 1.0:
        subject.fail(
            f"apply() wrote values in [{low:.4g}, {high:.4g}], outside the raw range [0, 1] "
            "that backbone adapters accept; clip the result"
        )


def deterministic(subject: Subject) -> None:
    """Two calls with generators of the same seed give equal output.

    The global generators (Python, NumPy, torch) are seeded differently before each call, so a
    perturbation that draws from them instead of ``generator`` fails.
    """
    perturbation = _perturbation(subject)
    images, masks = random_images(3, seed=5), _masks()
    runs = []
    for global_seed in (1, 2):
        random.seed(global_seed)
        np.random.seed(global_seed)
        torch.manual_seed(global_seed)
        runs.append(_apply(subject, perturbation, images.clone(), masks))
    if not torch.equal(runs[0], runs[1]):
        subject.fail(
            f"two calls with generators seeded {SEED} differ (max |difference| "
            f"{max_abs_diff(runs[0], runs[1]):.3g}); draw randomness only from `generator`"
        )


def empty_mask_noop(subject: Subject) -> None:
    """An all-False mask returns the images unchanged (an image without the region)."""
    perturbation = _perturbation(subject)
    images = random_images(3, seed=5)
    masks = torch.zeros(3, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.bool)
    out = _apply(subject, perturbation, images, masks)
    if not torch.equal(out, images):
        subject.fail(
            f"apply() with an all-False mask changed {int((out != images).sum())} pixel(s)"
        )
