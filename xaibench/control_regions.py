"""Control regions: same area and similar shape as a region, outside it, inside the field of view.

A perturbation that edits many pixels can cost AUC whatever pixels it hits (a constant fill
pushes the image off the training distribution), so a region's raw Δ mixes "the model needs
these pixels" with "the model breaks on any edit this large". Perturbing *control* regions — as
large as the region and shaped like it, but placed elsewhere in the body — measures the second
part alone (the perturbation's off-target cost); the region's Δ minus the controls' Δ is its
*specific* Δ (:func:`xaibench.metrics.explanation.specific_delta`).

One control mask per image, region and draw, built by :func:`control_mask`:

1. **Allowed pixels** are the field of view less the region. The field of view is a
   ``body``/``field`` region when the dataset has one, else the image less its padding
   (:func:`field_of_view`: the uniform background connected to the border, as around the
   phantom's body), else the whole image.
2. **Shifted copy** (keeps the shape exactly): up to :data:`SHIFT_TRIES` random translations
   of the region that keep it on the image; the first whose pixels are at least
   :data:`SHIFT_FIT` allowed is used, and its allowed pixels are the control.
3. **Smooth blobs** when no translation fits (a region spread over much of the body, such as
   all bone): a seeded white-noise field smoothed with a Gaussian whose width is the region's
   own scale, ``2 * area / perimeter`` (the radius of a disc, the half-width of a band), keeping
   its highest allowed pixels. The control has the region's typical thickness, not its layout.
4. **Exact area**: the control is topped up or cut to the region's area by a priority order
   (shifted pixels first, then their neighbourhood, then the smooth field), so both have the same
   number of pixels whenever enough allowed pixels exist. Otherwise all allowed pixels are used
   and the shortfall shows in the area ratio (control area / region area, recorded).

Every mask is a function of (seed, region name, draw, sample id) and the image's own region mask
and field only — never of batch order or of other images — so a perturbed control image is
the same in every cell of a seed and can be cached like the region's own.

Written with NumPy and SciPy (``ndimage``) rather than a library because no library builds
area-matched control masks; each mask costs a Gaussian filter and a partial sort of one image.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from xaibench.data.arrays import LazyRows, Rows
from xaibench.errors import XaibenchError

#: Random translations tried before falling back to smooth blobs.
SHIFT_TRIES = 8
#: A translated region is used when at least this share of its pixels is allowed.
SHIFT_FIT = 0.9
#: Regions named like this (in this order) are the field of view when a dataset has them.
FIELD_REGIONS: tuple[str, ...] = ("body", "field")
#: Padding is the border-connected background within this share of the image's range of the
#: border's median; it counts only when at least half the border is such background.
BACKGROUND_TOLERANCE = 0.01
#: A field of view smaller than this share of the image is ignored (the whole image is used).
MIN_FIELD_SHARE = 0.05
#: Controls reaching less than this mean share of the region's area are not used (recorded).
MIN_AREA_RATIO = 0.5
#: Memoised control masks per (seed, region, draw), packed to bits, are kept up to this size.
MEMO_BYTES = 16 * 1024**2


def check_field_setting(field: str, draws: int, regions: Sequence[str]) -> None:
    """Refuse a ``controls.field`` region the test images lack, before any work.

    Raises:
        XaibenchError: ``field`` is neither ``auto``, ``image`` nor one of ``regions``.
    """
    if draws and field not in ("auto", "image") and field not in regions:
        raise XaibenchError(
            f"controls.field: region {field!r} is not annotated on the test images "
            f"(use auto, image or one of: {', '.join(sorted(regions)) or 'none'})"
        )


def _stable_hash(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def field_of_view(images: np.ndarray) -> np.ndarray:
    """The image less its padding: images ``[B, H, W]`` or ``[B, 1, H, W]`` -> ``[B, H, W]`` bool.

    Padding is the background connected to the image border whose intensity is within
    :data:`BACKGROUND_TOLERANCE` of the image's range of the border's median (the air around the
    phantom's body, the black bands of a padded radiograph). An image whose border is not mostly
    such background, or whose field would be under :data:`MIN_FIELD_SHARE` of it, is all field.
    """
    from scipy import ndimage

    pixels = np.asarray(images, dtype=np.float64)
    if pixels.ndim == 4:
        pixels = pixels[:, 0]
    out = np.ones(pixels.shape, dtype=bool)
    border = np.zeros(pixels.shape[1:], dtype=bool)
    border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
    for i, image in enumerate(pixels):
        edge = image[border]
        background = float(np.median(edge))
        tolerance = BACKGROUND_TOLERANCE * max(float(np.ptp(image)), 1e-12)
        near = np.abs(image - background) <= tolerance
        if near[border].mean() < 0.5:
            continue
        padding = ndimage.binary_propagation(near & border, mask=near)
        field = ~padding
        if field.mean() >= MIN_FIELD_SHARE:
            out[i] = field
    return out


def _scale(region: np.ndarray) -> float:
    """``2 * area / perimeter`` in pixels (a disc's radius, a band's half-width), at least 1."""
    area = int(region.sum())
    inner = region.copy()
    inner[1:, :] &= region[:-1, :]
    inner[:-1, :] &= region[1:, :]
    inner[:, 1:] &= region[:, :-1]
    inner[:, :-1] &= region[:, 1:]
    perimeter = area - int(inner.sum())
    return max(1.0, 2.0 * area / max(perimeter, 1))


def _shifted(region: np.ndarray, dy: int, dx: int) -> np.ndarray:
    h, w = region.shape
    out = np.zeros_like(region)
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = region[
        max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
    ]
    return out


def control_mask(
    region: np.ndarray, field: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, float, bool]:
    """One control mask for one image (see the module docstring for the construction).

    Args:
        region: ``[H, W]`` bool region mask.
        field: ``[H, W]`` bool field of view.
        rng: The generator of this (seed, region, draw, image).

    Returns:
        The ``[H, W]`` bool control mask, its area over the region's (NaN for an empty region)
        and whether it is a shifted copy of the region.
    """
    from scipy import ndimage

    region = np.asarray(region, dtype=bool)
    area = int(region.sum())
    allowed = np.asarray(field, dtype=bool) & ~region
    n_allowed = int(allowed.sum())
    if area == 0:
        return np.zeros_like(region), float("nan"), False
    if n_allowed <= area:
        return allowed, n_allowed / area, False
    scale = _scale(region)
    rows, cols = np.flatnonzero(region.any(1)), np.flatnonzero(region.any(0))
    h, w = region.shape
    shifted: np.ndarray | None = None
    for _ in range(SHIFT_TRIES):
        dy = int(rng.integers(-rows[0], h - rows[-1]))
        dx = int(rng.integers(-cols[0], w - cols[-1]))
        candidate = _shifted(region, dy, dx)
        if (candidate & allowed).sum() >= SHIFT_FIT * area:
            shifted = candidate
            break
    if shifted is not None:  # the copy first, then its neighbourhood, nearest first
        near = ndimage.gaussian_filter(shifted.astype(np.float64), scale, mode="constant")
        priority = 2.0 * shifted + near + 1e-9 * rng.random(region.shape)
    else:  # blobs of the region's own scale
        noise = rng.standard_normal(region.shape)
        priority = ndimage.gaussian_filter(noise, scale, mode="wrap")
    candidates = np.flatnonzero(allowed.ravel())
    top = np.argpartition(-priority.ravel()[candidates], area - 1)[:area]
    mask = np.zeros(region.size, dtype=bool)
    mask[candidates[top]] = True
    return mask.reshape(region.shape), 1.0, shifted is not None


def control_masks(
    regions: np.ndarray,
    fields: np.ndarray,
    sample_ids: Sequence[str],
    *,
    seed: int,
    region: str,
    draw: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Control masks of a batch: :func:`control_mask` per image with its own generator.

    Each image's generator is seeded from ``(seed, region, draw, sample_id)``, so a mask does not
    depend on the batch it is computed in.

    Returns:
        Masks ``[B, H, W]`` bool, area ratios ``[B]`` and whether each is a shifted copy ``[B]``.
    """
    masks = np.zeros(regions.shape, dtype=bool)
    ratios = np.full(len(regions), np.nan)
    shifted = np.zeros(len(regions), dtype=bool)
    for i, sample_id in enumerate(sample_ids):
        rng = np.random.default_rng(
            [int(seed) & 0xFFFFFFFF, _stable_hash(region), int(draw), _stable_hash(sample_id)]
        )
        masks[i], ratios[i], shifted[i] = control_mask(regions[i], fields[i], rng)
    return masks, ratios, shifted


def match_zone(fields: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Per image, the zone the region lies in: the field, or what lies outside it.

    A region mostly outside the field of view (a side marker's box in the air around the body)
    is compared with same-area patches of that outside, not of the body: a patch of body costs a
    model that reads the body something under any fill, which says nothing about the marker's
    box. Images whose region lies mostly inside the field (anatomy) keep the field.
    """
    inside = (regions & fields).reshape(len(fields), -1).sum(1)
    area = regions.reshape(len(regions), -1).sum(1)
    outside = 2 * inside < area
    return np.where(outside[:, None, None], ~fields, fields)


def keep_off(fields: np.ndarray, regions: np.ndarray, avoid: np.ndarray) -> np.ndarray:
    """The fields ``[B, H, W]`` less ``avoid`` (the run's other regions under test).

    A control region should stand for "pixels nobody claims the model needs": when it lands on
    another region under test (a small marker box's control on bone, bone's control on the
    marker) its Δ measures that region, not the perturbation's off-target cost, and the specific
    Δ is biased. So the other tested regions are always left out, even where that leaves less
    room than the region's area: a control a little smaller than the region (the shortfall is
    in ``control_area_ratio``) is a smaller error than one that covers the marker.
    ``regions`` is accepted for symmetry with :func:`match_zone`; the region itself is left out
    by :func:`control_mask`.
    """
    del regions
    return fields & ~avoid


class UnionRows(LazyRows):
    """The pixel-wise union of several ``[N, H, W]`` mask arrays of one grid, per access."""

    def __init__(self, parts: Sequence[Rows]) -> None:
        self._parts = list(parts)
        self._shape = torch.Size(self._parts[0].shape)

    @property
    def shape(self) -> torch.Size:
        """``[N, H, W]``."""
        return self._shape

    @property
    def dtype(self) -> torch.dtype:
        """``torch.bool``."""
        return torch.bool

    def rows(self, index: np.ndarray) -> torch.Tensor:
        """The union of the parts' rows ``index``."""
        key = torch.from_numpy(index)
        out = torch.zeros((len(index), *self._shape[1:]), dtype=torch.bool)
        for part in self._parts:
            out |= part[key].bool()
        return out


def _packed_memo(n: int, size: tuple[int, int]) -> np.ndarray | None:
    """Zeroed room for ``n`` masks of ``size`` packed to bits; None when over :data:`MEMO_BYTES`."""
    row_bytes = (size[0] * size[1] + 7) // 8
    return np.zeros((n, row_bytes), dtype=np.uint8) if n * row_bytes <= MEMO_BYTES else None


class FieldRows(LazyRows):
    """:func:`field_of_view` of a split's images, per access, memoised (packed to bits).

    Shared by the control masks of every region and draw, so each image's field is found once.
    """

    def __init__(self, images: Rows) -> None:
        self._images = images
        n = len(images)
        self._size = (int(images.shape[-2]), int(images.shape[-1]))
        self._done = np.zeros(n, dtype=bool)
        self._packed = _packed_memo(n, self._size)

    @property
    def shape(self) -> torch.Size:
        """``[N, H, W]``."""
        return torch.Size((len(self._images), *self._size))

    @property
    def dtype(self) -> torch.dtype:
        """``torch.bool``."""
        return torch.bool

    def rows(self, index: np.ndarray) -> torch.Tensor:
        """The field-of-view masks of rows ``index``."""
        if self._packed is None:
            return torch.from_numpy(field_of_view(self._images[torch.from_numpy(index)].numpy()))
        todo = np.unique(index[~self._done[index]])
        if todo.size:
            fields = field_of_view(self._images[torch.from_numpy(todo)].numpy())
            self._packed[todo] = np.packbits(fields.reshape(len(todo), -1), axis=1)
            self._done[todo] = True
        pixels = self._size[0] * self._size[1]
        bits = np.unpackbits(self._packed[index], axis=1, count=pixels)
        return torch.from_numpy(bits.astype(bool).reshape(len(index), *self._size))


class ControlRows(LazyRows):
    """Control masks of one split, region, seed and draw, computed per access and memoised.

    Rows are ``[H, W]`` bool masks. :meth:`summary` computes every row (once) and returns the
    mean area ratio and the share of shifted copies.

    Args:
        images: The split's raw images ``[N, 1, H, W]`` (for the field of view).
        masks: The region's masks on the image grid ``[N, H, W]``.
        fields: The field-of-view masks ``[N, H, W]``, or None to find them from the images.
        sample_ids: The split's sample ids.
        seed: The cell's seed.
        region: The region's name.
        draw: The control draw (0, 1, ...).
        avoid: Masks ``[N, H, W]`` of the other regions under test, or None. On an image where
            the field less the region and these still holds the region's area, the control
            keeps off them (:func:`keep_off`).
    """

    def __init__(
        self,
        images: Rows,
        masks: Rows,
        fields: Rows | None,
        sample_ids: Sequence[str],
        *,
        seed: int,
        region: str,
        draw: int,
        avoid: Rows | None = None,
    ) -> None:
        self._images, self._masks, self._fields = images, masks, fields
        self._avoid = avoid
        self._ids = tuple(sample_ids)
        self._seed, self._region, self._draw = seed, region, draw
        n = len(self._ids)
        self._size = (int(masks.shape[-2]), int(masks.shape[-1]))
        self._ratios = np.full(n, np.nan)
        self._shifted = np.zeros(n, dtype=bool)
        self._done = np.zeros(n, dtype=bool)
        self._packed = _packed_memo(n, self._size)

    @property
    def shape(self) -> torch.Size:
        """``[N, H, W]``."""
        return torch.Size((len(self._ids), *self._size))

    @property
    def dtype(self) -> torch.dtype:
        """``torch.bool``."""
        return torch.bool

    def rows(self, index: np.ndarray) -> torch.Tensor:
        """The control masks of rows ``index``."""
        pixels = self._size[0] * self._size[1]
        out = np.zeros((len(index), *self._size), dtype=bool)
        todo = ~self._done[index] if self._packed is not None else np.ones(len(index), bool)
        if self._packed is not None and (~todo).any():
            known = index[~todo]
            bits = np.unpackbits(self._packed[known], axis=1, count=pixels)
            out[~todo] = bits.astype(bool).reshape(len(known), *self._size)
        if todo.any():
            rows = index[todo]
            key = torch.from_numpy(rows)
            regions = self._masks[key].numpy().astype(bool)
            if self._fields is not None:
                fields = self._fields[key].numpy().astype(bool)
            else:
                fields = field_of_view(self._images[key].numpy())
            fields = match_zone(fields, regions)
            if self._avoid is not None:
                fields = keep_off(fields, regions, self._avoid[key].numpy().astype(bool))
            masks, ratios, shifted = control_masks(
                regions,
                fields,
                [self._ids[i] for i in rows],
                seed=self._seed,
                region=self._region,
                draw=self._draw,
            )
            out[todo] = masks
            self._ratios[rows], self._shifted[rows] = ratios, shifted
            self._done[rows] = True
            if self._packed is not None:
                self._packed[rows] = np.packbits(masks.reshape(len(rows), -1), axis=1)
        return torch.from_numpy(out)

    def summary(self, batch_size: int = 64) -> dict[str, Any]:
        """``area_ratio`` (mean over images with a non-empty region) and ``shifted`` share."""
        for start in range(0, len(self._ids), batch_size):
            index = np.arange(start, min(start + batch_size, len(self._ids)))
            if not self._done[index].all():
                self.rows(index[~self._done[index]])
        defined = np.isfinite(self._ratios)
        return {
            "area_ratio": float(self._ratios[defined].mean()) if defined.any() else float("nan"),
            "shifted": float(self._shifted[defined].mean()) if defined.any() else float("nan"),
        }
