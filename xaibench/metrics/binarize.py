"""Saliency maps to regions, and regions against annotated masks.

Saliency maps have arbitrary scale; to compare them with an annotated region they are first
turned into a region of their own:

* :func:`otsu_binarize` follows the CheXlocalize protocol (min-max normalise, 8-bit, Otsu) so
  that numbers are comparable with the published localisation literature;
  :func:`topk_binarize` and :func:`threshold_binarize` are the fixed-size and fixed-level
  alternatives.
* :func:`region_iou` compares such regions with annotated masks, per image.
* :func:`align_mask` brings masks to the maps' size when a caller accepts a resize.

Scores of a map against a mask that do not binarise it are in :mod:`xaibench.metrics.map_scores`;
classification metrics in :mod:`xaibench.metrics.functional`. Every function validates its input
and raises :class:`~xaibench.errors.XaibenchError` with a message that says what is wrong. The
per-image scores use NaN only for what the contract of
:class:`~xaibench.metrics.base.SaliencyRegionMetric` allows: an image where the score is
undefined (e.g. its region is empty), which the aggregate excludes and counts.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from xaibench.errors import XaibenchError

__all__ = [
    "align_mask",
    "otsu_binarize",
    "region_iou",
    "threshold_binarize",
    "topk_binarize",
]

_LEVELS = 256
"""Number of grey levels of the 8-bit images Otsu's method is run on (as in CheXlocalize)."""


# --------------------------------------------------------------------------------------------
# Localisation metrics
# --------------------------------------------------------------------------------------------


def _valid_flat_maps(maps: Any, *, consequence: str, check_finite: bool = True) -> np.ndarray:
    """Check that ``maps`` is a finite real [B, H, W] tensor; return it as a [B, N] CPU array.

    A NaN or infinite saliency value usually comes from a numerical failure in the explanation
    method (e.g. a division by a zero gradient norm). Every localisation metric would turn it
    into a silently wrong number, so it is an error whose message lists the offending maps; the
    caller adds the method's name.

    The array shares memory with CPU float32 and float64 tensors. Half precision is widened to
    float32 and integers to float64, both exactly, because NumPy has no bfloat16; comparisons
    and sorts are then exact, and callers accumulate sums in float64.

    Args:
        maps: The candidate saliency maps.
        consequence: End of the message, saying why such a map cannot be scored.
        check_finite: False for a caller that checks finiteness itself, from a per-map
            reduction it needs anyway (:func:`_require_finite`), saving a pass over the maps.

    Raises:
        XaibenchError: If ``maps`` is not a 3-D real tensor or holds NaN or infinity.
    """
    if not isinstance(maps, torch.Tensor):
        raise XaibenchError(f"maps must be a torch.Tensor; got {type(maps).__name__}")
    if maps.ndim != 3:
        raise XaibenchError(f"maps must have shape [B, H, W]; got shape {tuple(maps.shape)}")
    if maps.dtype == torch.bool or maps.is_complex():
        raise XaibenchError(f"maps must be real-valued; got dtype {maps.dtype}")
    values = maps.detach().cpu()
    if values.dtype in (torch.float16, torch.bfloat16):
        values = values.float()
    elif not values.is_floating_point():
        values = values.double()
    batch, height, width = values.shape
    flat: np.ndarray = values.reshape(batch, height * width).numpy()
    if flat.size == 0 or not check_finite:
        return flat
    # Max and min propagate NaN and an infinity is an extreme, so checking the two extremes
    # of each map checks every value, several times faster than isfinite over the batch.
    _require_finite(np.isfinite(flat.max(axis=1)) & np.isfinite(flat.min(axis=1)), consequence)
    return flat


def _require_finite(finite: np.ndarray, consequence: str) -> None:
    """Raise, naming the maps, unless every entry of the per-map flags ``finite`` is True."""
    if not finite.all():
        bad = np.flatnonzero(~finite).tolist()
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise XaibenchError(
            f"maps must be finite; NaN or infinite values in {len(bad)} map(s) at batch "
            f"index {bad[:10]}{more}, {consequence}"
        )


#: Rows per block in the kernels below: a block's float64 or bool temporaries stay in cache.
_ROWS = 8


def _minmax_uint8(flat: np.ndarray, consequence: str) -> tuple[np.ndarray, np.ndarray]:
    """Min-max normalise each map to [0, 1] and truncate to 8-bit levels.

    The normalisation runs in float64 so that the 8-bit levels equal what NumPy computes for
    ``np.uint8(255 * (m - m.min()) / (m.max() - m.min()))`` in float64, whatever the input
    precision; truncation (not rounding) is what NumPy's cast of a non-negative float does.
    The same operations in the same order, on float64 blocks of a few rows that stay in cache
    (the input is widened exactly), into uint8 levels. The per-map extremes it needs also
    check that every map is finite.

    Args:
        flat: ``[B, N]`` maps, as from :func:`_valid_flat_maps` with ``check_finite=False``.
        consequence: End of the error message for a non-finite map.

    Returns:
        ``(levels, constant)``: uint8 levels in 0..255 of shape [B, N] (all 0 for constant
        maps) and a bool [B] flag marking constant maps.

    Raises:
        XaibenchError: A map holds NaN or infinity.
    """
    batch, n = flat.shape
    low = flat.min(axis=1).astype(np.float64)
    high = flat.max(axis=1).astype(np.float64)
    _require_finite(np.isfinite(low) & np.isfinite(high), consequence)
    span = high - low
    constant = span == 0
    safe_span = np.where(constant, 1.0, span)
    levels = np.empty((batch, n), dtype=np.uint8)
    work = np.empty((_ROWS, n))
    for i in range(0, batch, _ROWS):
        rows = slice(i, i + _ROWS)
        x = work[: len(flat[rows])]
        np.subtract(flat[rows], low[rows, None], out=x)
        np.divide(x, safe_span[rows, None], out=x)
        np.multiply(x, 255.0, out=x)
        np.floor(x, out=x)
        np.clip(x, 0, _LEVELS - 1, out=x)
        np.copyto(levels[rows], x, casting="unsafe")
    return levels, constant


def _otsu_levels(levels: np.ndarray) -> torch.Tensor:
    """Otsu threshold of each image of 8-bit levels, fully vectorised over the batch.

    One ``bincount`` per image (of uint8 levels: fast, and a row's counts stay in cache), then
    every threshold of every image at once. For a threshold t (class 0 = levels <= t) with
    counts w0, w1 and level sums s0, s1, the between-class variance ``w0 w1 (mu0 - mu1)^2``
    equals ``D^2 / (w0 w1)`` with ``D = N s0 - S w0`` (N, S: totals). D is an exact integer, so
    equal variances (e.g. of mirror-symmetric histograms) compare equal and the first maximum is
    well defined; evaluating ``(mu0 - mu1)`` with rounded means could break such ties at random.

    Args:
        levels: uint8 [B, N] in 0..255, each image using both 0 and 255 (as after min-max
            normalisation), so that both classes are non-empty for every t in 0..254.

    Returns:
        int64 [B] thresholds in 0..254 (the first maximiser of the between-class variance).
    """
    hist = torch.from_numpy(
        np.stack([np.bincount(row, minlength=_LEVELS) for row in levels]).astype(np.int64)
    )
    grey = torch.arange(_LEVELS, dtype=torch.int64)
    w0 = hist.cumsum(dim=1)[:, :-1]
    s0 = (hist * grey).cumsum(dim=1)[:, :-1]
    n_total = hist.sum(dim=1, keepdim=True)
    s_total = (hist * grey).sum(dim=1, keepdim=True)
    w1 = n_total - w0
    diff = (n_total * s0 - s_total * w0).to(torch.float64)
    denominator = (w0 * w1).to(torch.float64)
    # Constant maps reach here with all mass in bin 0, so w1 == 0; give them variance 0.
    variance = torch.where(denominator > 0, diff * diff / denominator.clamp(min=1.0), 0.0)
    return torch.argmax(variance, dim=1)


def otsu_binarize(maps: torch.Tensor) -> torch.Tensor:
    """Binarise saliency maps with Otsu's threshold, following CheXlocalize.

    Saliency maps have arbitrary scale, so a fixed cut-off is meaningless; Otsu's method picks,
    per map, the grey level that best separates it into two classes (maximum between-class
    variance). To stay comparable with CheXlocalize numbers, each map is first min-max
    normalised to [0, 1] and truncated to 8 bits (``floor(255 x)``), and the threshold t is the
    first maximiser over t in 0..254 with class 0 = levels <= t; the region is ``level > t``.

    Fully vectorised: one histogram pass for the whole batch, no Python loop over maps.

    Args:
        maps: Float tensor [B, H, W] (any real dtype and device; computed on CPU in float64).

    Returns:
        Bool tensor [B, H, W] on the input's device. A constant map (max == min) has no
        structure to segment and gives all False.

    Raises:
        XaibenchError: If ``maps`` is not a 3-D real tensor or a map contains NaN or infinity
            (the message lists the offending map indices).
    """
    consequence = "which cannot be min-max normalised"
    flat = _valid_flat_maps(maps, consequence=consequence, check_finite=False)
    device = maps.device
    if maps.numel() == 0:
        return torch.zeros(maps.shape, dtype=torch.bool, device=device)
    levels, constant = _minmax_uint8(flat, consequence)
    thresholds = _otsu_levels(levels).numpy().astype(np.uint8)
    binary = levels > thresholds[:, None]
    binary &= ~constant[:, None]
    return torch.from_numpy(binary).reshape(maps.shape).to(device)


def region_iou(pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Intersection over union of predicted regions and annotated masks, per image.

    An image whose mask is empty has no region to localise, so its IoU is NaN (undefined)
    rather than 0 or 1; callers exclude such images and report how many were excluded. An
    empty prediction against a non-empty mask is a genuine miss and scores 0.

    Args:
        pred: Bool tensor [B, H, W], the predicted regions (e.g. from :func:`otsu_binarize`).
        mask: Bool tensor [B, H, W], the ground-truth regions; same shape as ``pred``.

    Returns:
        Float64 tensor [B] on ``pred``'s device: ``|pred & mask| / |pred | mask|``, NaN where
        ``mask`` is empty.

    Raises:
        XaibenchError: If either input is not a bool tensor, is not 3-D, or the shapes differ
            (the message gives both shapes).
    """
    for name, tensor in (("pred", pred), ("mask", mask)):
        if not isinstance(tensor, torch.Tensor):
            raise XaibenchError(f"{name} must be a torch.Tensor; got {type(tensor).__name__}")
        if tensor.dtype != torch.bool:
            raise XaibenchError(f"{name} must be a bool tensor; got dtype {tensor.dtype}")
    if pred.shape != mask.shape:
        raise XaibenchError(
            f"pred and mask must have the same shape; got pred {tuple(pred.shape)} and "
            f"mask {tuple(mask.shape)}"
        )
    if pred.ndim != 3:
        raise XaibenchError(f"pred and mask must have shape [B, H, W]; got {tuple(pred.shape)}")
    if pred.device.type == "cpu" and mask.device.type == "cpu":
        # Per-row popcounts of NumPy bool rows (|A u B| = |A| + |B| - |A n B|): two orders of
        # magnitude faster than torch's bool sums over dims on CPU; the counts are exact.
        batch = pred.shape[0]
        a, b = pred.reshape(batch, -1).numpy(), mask.reshape(batch, -1).numpy()
        both = np.empty(a.shape[1], dtype=bool)
        counts = np.zeros((batch, 3))
        for i in range(batch):
            np.logical_and(a[i], b[i], out=both)
            counts[i] = np.count_nonzero(both), np.count_nonzero(a[i]), np.count_nonzero(b[i])
        inter, area_pred, area_mask = counts.T
        union = area_pred + area_mask - inter
        iou_np = np.where(area_mask > 0, inter / np.maximum(union, 1.0), np.nan)
        return torch.from_numpy(iou_np)
    mask = mask.to(pred.device)
    intersection = (pred & mask).sum(dim=(1, 2)).to(torch.float64)
    union_t = (pred | mask).sum(dim=(1, 2)).to(torch.float64)
    mask_area = mask.sum(dim=(1, 2))
    iou = intersection / union_t.clamp(min=1.0)
    return torch.where(mask_area > 0, iou, torch.full_like(iou, float("nan")))


# --------------------------------------------------------------------------------------------
# Mask alignment and fixed-size or fixed-level regions
# --------------------------------------------------------------------------------------------


def align_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize bool region masks to the saliency maps' size with nearest-neighbour sampling.

    Region masks come at the image's resolution while some explanation methods return maps at
    another one; the metrics require equal shapes instead of resizing silently, because a
    resize changes what is measured. Nearest-neighbour (PyTorch's ``nearest-exact``, which
    samples at pixel centres and so does not shift the mask by half a pixel) keeps the mask
    binary and never invents a region where there was none. Whoever calls this decides that
    the resize is acceptable and must record it with the results (e.g. in the record's
    details), since scores on resized masks are not comparable with scores at full size.

    Args:
        mask: Bool tensor [B, h, w].
        size: Target ``(H, W)``, both positive.

    Returns:
        Bool tensor [B, H, W] on the mask's device; ``mask`` itself when it already has that
        size.

    Raises:
        XaibenchError: If ``mask`` is not a 3-D bool tensor or ``size`` is not two positive
            integers.
    """
    if not isinstance(mask, torch.Tensor):
        raise XaibenchError(f"mask must be a torch.Tensor; got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise XaibenchError(f"mask must be a bool tensor; got dtype {mask.dtype}")
    if mask.ndim != 3:
        raise XaibenchError(f"mask must have shape [B, h, w]; got shape {tuple(mask.shape)}")
    target = tuple(size)
    if len(target) != 2 or not all(
        isinstance(n, int | np.integer) and not isinstance(n, bool) and n > 0 for n in target
    ):
        raise XaibenchError(f"size must be two positive integers (H, W); got {size!r}")
    height, width = int(target[0]), int(target[1])
    if tuple(mask.shape[1:]) == (height, width):
        return mask
    if mask.numel() == 0:
        return torch.zeros((mask.shape[0], height, width), dtype=torch.bool, device=mask.device)
    resized = F.interpolate(
        mask.unsqueeze(1).to(torch.uint8), size=(height, width), mode="nearest-exact"
    )
    return resized.squeeze(1).bool()


def topk_binarize(maps: torch.Tensor, percent: float = 10.0) -> torch.Tensor:
    """Keep the top ``percent`` % of each map's pixels as its region.

    Unlike Otsu's method this fixes the region's size, which makes IoU comparable across
    methods whose maps have very different value distributions.

    The cut is the value of the k-th largest pixel, ``k = ceil(percent / 100 * H * W)``
    (at least 1; the product is rounded to 9 decimals first, so that 10 % of 1000 pixels is
    exactly 100 and not 101 because of binary floating point). Ties at the cut are resolved
    without looking at pixel order: **every pixel equal to the cut value is kept**, so the
    region can be larger than k, except that **pixels at the map's minimum are never kept**.
    The exception matters for rectified maps (e.g. Grad-CAM), which are often zero almost
    everywhere: with fewer than k positive pixels the cut falls on the floor, and keeping
    every zero pixel would turn "the most salient 10 %" into "the whole image". It also makes
    a constant map select nothing, as with :func:`otsu_binarize`.

    Args:
        maps: Finite real tensor [B, H, W].
        percent: Share of pixels to keep, in (0, 100].

    Returns:
        Bool tensor [B, H, W] on the maps' device.

    Raises:
        XaibenchError: If ``percent`` is outside (0, 100] or the maps are not a finite real
            [B, H, W] tensor.
    """
    share = float(percent)
    if not 0.0 < share <= 100.0:  # also rejects NaN
        raise XaibenchError(f"percent must be in (0, 100]; got {percent!r}")
    flat = _valid_flat_maps(maps, consequence="which cannot be ranked")
    batch, n_pixels = flat.shape
    if batch == 0 or n_pixels == 0:
        return torch.zeros(maps.shape, dtype=torch.bool, device=maps.device)
    k = min(n_pixels, max(1, math.ceil(round(share * n_pixels / 100.0, 9))))
    # The k-th largest value is the (n - k)-th smallest; a partition finds it in linear time.
    cut = np.partition(flat, n_pixels - k, axis=1)[:, n_pixels - k, None]
    keep = (flat >= cut) & (flat > flat.min(axis=1, keepdims=True))
    return torch.from_numpy(keep).reshape(maps.shape).to(maps.device)


def threshold_binarize(maps: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Keep the pixels whose min-max normalised value is at least ``threshold``.

    Each map is scaled to [0, 1] by its own minimum and maximum (in float64) so that one
    threshold means the same thing for maps of any scale; the region is ``normalised >=
    threshold``. A constant map cannot be normalised and selects nothing, as with
    :func:`otsu_binarize`. ``threshold`` is strictly positive, so the map's minimum is never
    selected either, matching :func:`topk_binarize`.

    Args:
        maps: Finite real tensor [B, H, W].
        threshold: Cut-off on the normalised map, in (0, 1].

    Returns:
        Bool tensor [B, H, W] on the maps' device.

    Raises:
        XaibenchError: If ``threshold`` is outside (0, 1] or the maps are not a finite real
            [B, H, W] tensor.
    """
    cut = float(threshold)
    if not 0.0 < cut <= 1.0:  # also rejects NaN
        raise XaibenchError(f"threshold must be in (0, 1]; got {threshold!r}")
    flat = _valid_flat_maps(maps, consequence="which cannot be min-max normalised")
    if flat.size == 0:
        return torch.zeros(maps.shape, dtype=torch.bool, device=maps.device)
    flat = flat.astype(np.float64)
    low = flat.min(axis=1, keepdims=True)
    span = flat.max(axis=1, keepdims=True) - low
    constant = span == 0
    normalised = (flat - low) / np.where(constant, 1.0, span)
    keep = (normalised >= cut) & ~constant
    return torch.from_numpy(keep).reshape(maps.shape).to(maps.device)
