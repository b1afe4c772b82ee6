"""Saliency galleries: a few test images with their maps, so a person can look before trusting IoU.

One PNG per cell and saliency method. Each column is one test image: the radiograph on top, and
below it the min-max normalised map in red over the image, with the outline of the primary region
(bone) in cyan. Small images are enlarged (nearest neighbour) to at least 160 px a tile. Written
with Pillow (no plotting library needed).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

#: Tiles smaller than this (pixels) are enlarged so the gallery is readable.
MIN_TILE = 160


def _outline(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask)


def render_gallery(images: np.ndarray, maps: np.ndarray, masks: np.ndarray | None) -> Image.Image:
    """Compose the gallery image.

    Args:
        images: ``[K, H, W]`` raw intensities in [0, 1].
        maps: ``[K, H, W]`` saliency maps (any scale).
        masks: ``[K, H, W]`` bool region masks to outline, or ``None``.
    """
    k, h, w = images.shape
    canvas = np.zeros((2 * h, k * w, 3), dtype=np.float32)
    for i in range(k):
        gray = np.repeat(images[i][..., None], 3, axis=2)
        m = maps[i].astype(np.float64)
        span = m.max() - m.min()
        alpha = ((m - m.min()) / span if span > 0 else np.zeros_like(m))[..., None]
        heat = gray * (1 - alpha) + np.array([1.0, 0.1, 0.1]) * alpha
        if masks is not None:
            heat[_outline(masks[i])] = (0.0, 0.9, 0.9)
        canvas[:h, i * w : (i + 1) * w] = gray
        canvas[h:, i * w : (i + 1) * w] = heat
    picture = Image.fromarray((np.clip(canvas, 0, 1) * 255).astype(np.uint8))
    scale = max(1, -(-MIN_TILE // w))
    if scale > 1:
        picture = picture.resize((k * w * scale, 2 * h * scale), Image.Resampling.NEAREST)
    return picture


def gallery_filename(backbone: str, strategy: str, seed: int, method: str) -> str:
    """A file name safe on every platform for one cell and method."""
    raw = f"{backbone}__{strategy}__seed{seed}__{method}.png"
    return re.sub(r"[^A-Za-z0-9._-]", "_", raw)


def write_gallery(
    path: Path, images: np.ndarray, maps: np.ndarray, masks: np.ndarray | None
) -> None:
    """Render and save one gallery PNG at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    render_gallery(images, maps, masks).save(path)
