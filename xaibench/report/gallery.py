"""Saliency galleries: test images with their maps, so a person can look before trusting IoU.

Per cell and saliency method up to three PNGs: the ``best`` and ``worst`` images by the gallery
score (IoU with the primary region by default) and a seeded ``random`` draw — the extremes show
what the score rewards and punishes, the random draw what is typical. Each column is one test
image: the radiograph on top, and below it the min-max normalised map in red over the image,
with the outline of the primary region (bone) in cyan. Small images are enlarged (nearest
neighbour) to at least 160 px a tile. Written with Pillow (no plotting library needed).

:class:`GalleryPicker` chooses the images while maps stream past batch by batch, keeping only
``3 k`` maps in memory however many images are explained.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
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


#: A label used as it is in a file name: ASCII letters, digits, ``.`` and ``-``, single
#: underscores between them, starting with a letter or digit (so never ``__``, never ``___``).
_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]*(?:_[A-Za-z0-9.-]+)*")

#: Longest file name made from labels as they are; longer ones are shortened and hashed.
_MAX_PLAIN = 200


def gallery_filename(backbone: str, strategy: str, seed: int, method: str) -> str:
    """A file name safe on every platform for one cell and method, distinct for distinct ones.

    Plain labels (:data:`_PLAIN`; ``method`` is ``<saliency>__<kind>``, each plain) make
    ``<backbone>__<strategy>__seed<seed>__<method>.png``, which reads back unambiguously since
    no plain label holds ``__``. Any other label (``res/a``, ``a__b``, non-ASCII, very long) is
    sanitised and followed by ``___`` and a hash of the exact labels: a plain name never holds
    ``___``, so no label can reproduce another's hashed name, and ``res/a`` and ``res_a`` get
    different files.
    """
    pieces = [backbone, strategy, *method.split("__")]
    raw = f"{backbone}__{strategy}__seed{seed}__{method}"
    if all(_PLAIN.fullmatch(p) for p in pieces) and len(raw) <= _MAX_PLAIN:
        return f"{raw}.png"
    exact = json.dumps([backbone, strategy, seed, method], ensure_ascii=False)
    digest = hashlib.sha256(exact.encode("utf-8")).hexdigest()[:16]
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", raw)[:150].lstrip("._-")
    return f"{readable}___{digest}.png"


def write_gallery(
    path: Path, images: np.ndarray, maps: np.ndarray, masks: np.ndarray | None
) -> None:
    """Render and save one gallery PNG at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    render_gallery(images, maps, masks).save(path)


#: The gallery kinds, in the order reports show them.
GALLERY_KINDS = ("best", "worst", "random")


@dataclass
class GalleryPicker:
    """Choose the best, worst and random ``k`` of ``n`` explained images while maps stream by.

    Best and worst are by a per-image score (higher is better); images whose score is NaN are
    never extremes, and ties go to the earlier image so that the choice is deterministic. The
    random draw is fixed at construction from ``seed``.

    Args:
        k: Images per gallery.
        n: Images that will be offered (in order, through :meth:`add`).
        seed: Seed of the random draw.
    """

    k: int
    n: int
    seed: int
    _random: set[int] = field(init=False)
    _kept: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(init=False)
    _random_maps: dict[int, np.ndarray] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        size = min(self.k, self.n)
        self._random = {int(i) for i in rng.choice(self.n, size=size, replace=False)}
        self._kept = {}

    def add(self, start: int, maps: np.ndarray, scores: np.ndarray | None) -> None:
        """Offer the maps of images ``start .. start + len(maps) - 1`` with their scores."""
        index = np.arange(start, start + len(maps))
        for i, m in zip(index, maps, strict=True):
            if int(i) in self._random:
                self._random_maps[int(i)] = np.array(m, copy=True)
        if scores is None or self.k == 0:
            return
        scores = np.asarray(scores, dtype=np.float64)
        finite = ~np.isnan(scores)
        for kind, sign in (("best", -1.0), ("worst", 1.0)):
            old = self._kept.get(kind)
            cand_s, cand_i, cand_m = scores[finite], index[finite], maps[finite]
            if old is not None:
                cand_s = np.concatenate([old[0], cand_s])
                cand_i = np.concatenate([old[1], cand_i])
                cand_m = np.concatenate([old[2], cand_m])
            order = np.lexsort((cand_i, sign * cand_s))[: self.k]
            self._kept[kind] = (cand_s[order], cand_i[order], np.array(cand_m[order], copy=True))

    def picks(self) -> dict[str, tuple[list[int], list[float | None], np.ndarray]]:
        """Per kind: image indices, their scores (None for random without a score), maps."""
        out: dict[str, tuple[list[int], list[float | None], np.ndarray]] = {}
        for kind in ("best", "worst"):
            if kind in self._kept and len(self._kept[kind][1]):
                s, i, m = self._kept[kind]
                out[kind] = ([int(v) for v in i], [float(v) for v in s], m)
        if self._random_maps:
            chosen = sorted(self._random_maps)
            out["random"] = (
                chosen,
                [None] * len(chosen),
                np.stack([self._random_maps[i] for i in chosen]),
            )
        return out
