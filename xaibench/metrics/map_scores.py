"""Saliency maps scored against region masks without binarising them.

:func:`pointing_game`, :func:`relevance_mass`, :func:`relevance_rank`, :func:`pixel_auc` and
:func:`energy_ratio` take each map as it is (no normalisation, no threshold); maps that must be
turned into regions first are handled in :mod:`xaibench.metrics.binarize`, which also holds
:func:`~xaibench.metrics.binarize.align_mask` for masks of another size.

Inputs are checked, and NaN marks an undefined score, as in :mod:`~xaibench.metrics.binarize`.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from xaibench.errors import XaibenchError
from xaibench.metrics.binarize import _require_finite, _valid_flat_maps

__all__ = [
    "PointingTies",
    "energy_ratio",
    "pixel_auc",
    "pointing_game",
    "relevance_mass",
    "relevance_rank",
]


# --------------------------------------------------------------------------------------------
# Saliency maps against region masks (localisation)
# --------------------------------------------------------------------------------------------
#
# Every kernel below takes maps [B, H, W] and bool masks [B, H, W] of the same shape and returns
# float64 [B] on the maps' device, NaN where the score is undefined for that image (an empty
# region, always; other cases are listed per function). Maps are never normalised or made
# absolute here: each definition says which part of the attribution it uses, so that a map's
# sign convention cannot change a score behind the caller's back.
#
# Inputs and outputs are tensors, but the work is done on CPU (where the runner keeps saliency
# maps) with NumPy: its SIMD sort is 10-40x faster than torch.sort on CPU for saliency-sized
# rows, and its row reductions (counts, float64 sums of float32) 3-10x faster than torch's.
# Moving to CPU is free for CPU tensors (NumPy shares their memory).

_CONSEQUENCE = "so no localisation score can be computed from them"

#: Rows per block: a block's temporaries stay in the processor's cache.
_ROWS = 8

PointingTies = Literal["fraction", "any"]
"""How :func:`pointing_game` scores a map whose maximum is reached at several pixels."""


def _region_inputs(
    maps: Any, masks: Any, *, check_finite: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (maps, masks) pair and flatten both to [B, N] NumPy arrays.

    ``check_finite=False`` is for a kernel that checks finiteness itself from the per-map
    extremes it computes anyway (:func:`_require_finite`).

    Raises:
        XaibenchError: If the maps are not a finite real [B, H, W] tensor, or the masks are not
            a bool tensor of exactly the maps' shape (resize them with :func:`align_mask`).
    """
    values = _valid_flat_maps(maps, consequence=_CONSEQUENCE, check_finite=check_finite)
    if not isinstance(masks, torch.Tensor):
        raise XaibenchError(f"masks must be a torch.Tensor; got {type(masks).__name__}")
    if masks.dtype != torch.bool:
        raise XaibenchError(f"masks must be a bool tensor; got dtype {masks.dtype}")
    if masks.shape != maps.shape:
        raise XaibenchError(
            f"maps and masks must have the same shape; got maps {tuple(maps.shape)} and masks "
            f"{tuple(masks.shape)} (resize the masks with align_mask and record that you did)"
        )
    batch, height, width = masks.shape
    region: np.ndarray = masks.detach().cpu().reshape(batch, height * width).numpy()
    return values, region


def _count(flags: np.ndarray) -> np.ndarray:
    """Number of True values per row, as float64 (exact: counts stay far below 2**53).

    Float64 so that every ratio of counts is computed in float64 without further casts. Row
    by row: NumPy counts a 1-D bool array with a vectorised popcount, but a count along an
    axis goes through a generic sum (about 20x slower on a batch of 224 px maps).
    """
    counts = np.empty(flags.shape[0], dtype=np.float64)
    for i, row in enumerate(flags):
        counts[i] = np.count_nonzero(row)
    return counts


def _scores(scores: np.ndarray, undefined: np.ndarray, device: torch.device) -> torch.Tensor:
    """``scores`` as a float64 tensor on ``device``, NaN where ``undefined`` is True."""
    result = np.where(undefined, np.nan, scores).astype(np.float64)
    return torch.from_numpy(result).to(device)


def _all_undefined(batch: int, device: torch.device) -> torch.Tensor:
    """A [B] float64 tensor of NaN, for batches whose maps have no pixels."""
    return torch.full((batch,), float("nan"), dtype=torch.float64, device=device)


def pointing_game(
    maps: torch.Tensor, masks: torch.Tensor, ties: PointingTies = "fraction"
) -> torch.Tensor:
    """Whether each map's most salient pixel lies inside the region (Zhang et al.).

    The score asks only "does the explanation point at the right place", which is robust to
    how the rest of the map is scaled. When the maximum is reached at several pixels (a
    plateau, e.g. a coarse map upsampled with nearest-neighbour, or a constant map), "the"
    argmax is not defined, and ``ties`` says what is scored:

    * ``"fraction"`` (default): the share of the tied maxima that lie in the region, i.e. the
      expected hit when one of them is picked at random. It equals the plain hit (0 or 1)
      whenever the maximum is unique, does not reward coarse maps for having large plateaus,
      and gives a constant map the chance level ``|region| / (H W)`` instead of a free hit.
    * ``"any"``: a hit if any tied maximum lies in the region, as Quantus 0.6.0's
      ``PointingGame`` does; a constant map then scores 1 whenever the region is non-empty.

    Args:
        maps: Finite real tensor [B, H, W]; the raw values are used (no absolute value).
        masks: Bool tensor [B, H, W], the regions.
        ties: ``"fraction"`` or ``"any"``, see above.

    Returns:
        Float64 [B] in [0, 1]; NaN where the region is empty (there is nothing to point at).

    Raises:
        XaibenchError: On invalid maps or masks (see :func:`relevance_mass`) or an unknown
            ``ties``.
    """
    if ties not in ("fraction", "any"):
        raise XaibenchError(f"ties must be 'fraction' or 'any'; got {ties!r}")
    values, region = _region_inputs(maps, masks, check_finite=False)
    batch, n_pixels = values.shape
    if n_pixels == 0:
        return _all_undefined(batch, maps.device)
    peak = values.max(axis=1, keepdims=True)
    _require_finite(np.isfinite(peak[:, 0]) & np.isfinite(values.min(axis=1)), _CONSEQUENCE)
    at_max = values == peak
    inside = _count(at_max & region)
    score = (inside > 0).astype(np.float64) if ties == "any" else inside / _count(at_max)
    return _scores(score, _count(region) == 0, maps.device)


def _positive_mass(values: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sums of positive attribution inside and outside the region, per row, in float64.

    Both are summed directly (not one as the total minus the other), so that "nothing
    outside" is an exact zero rather than a rounding residue.
    """
    batch, n = values.shape
    inside, outside = np.empty(batch), np.empty(batch)
    # Blocks of rows in cache. Outside the region the positive part minus its masked copy is
    # the positive part itself, inside it is x - x = 0 exactly: the same values as masking
    # with the complement, so both sums are unchanged.
    positive = np.empty((_ROWS, n), dtype=values.dtype)
    masked = np.empty((_ROWS, n), dtype=values.dtype)
    for i in range(0, batch, _ROWS):
        rows = slice(i, i + _ROWS)
        k = len(values[rows])
        np.maximum(values[rows], 0, out=positive[:k])
        np.multiply(positive[:k], region[rows], out=masked[:k])
        inside[rows] = np.add.reduce(masked[:k], axis=1, dtype=np.float64)
        np.subtract(positive[:k], masked[:k], out=masked[:k])
        outside[rows] = np.add.reduce(masked[:k], axis=1, dtype=np.float64)
    return inside, outside


def relevance_mass(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Share of the positive attribution that falls inside the region (Arras et al., 2022).

    ``sum(max(a, 0) over the region) / sum(max(a, 0) over the image)``. Only positive
    attribution counts, as in Arras et al.: it is evidence *for* the explained class, while
    negative attribution is evidence against it and would otherwise cancel positive mass,
    letting the ratio leave [0, 1]. Sums are accumulated in float64.

    Args:
        maps: Finite real tensor [B, H, W].
        masks: Bool tensor [B, H, W], the regions, same shape as ``maps``.

    Returns:
        Float64 [B] in [0, 1]. NaN where the region is empty, or where the map has no positive
        attribution at all (all zero or all negative: there is no mass to locate). A full
        region gives 1.

    Raises:
        XaibenchError: If the maps are not a finite real [B, H, W] tensor (the message says
            which maps are non-finite), or the masks are not bool or differ in shape.
    """
    values, region = _region_inputs(maps, masks)
    inside, outside = _positive_mass(values, region)
    total = inside + outside
    score = inside / np.where(total > 0, total, 1.0)
    return _scores(score, (_count(region) == 0) | (total == 0), maps.device)


def relevance_rank(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Share of the K most salient pixels that lie inside the region, K = |region| (Arras et al.).

    Unlike :func:`relevance_mass` this uses only the order of the values, so it does not
    depend on the map's scale or on a few extreme pixels. Pixels are ranked by their raw
    value (most positive first).

    Ties at the cut: when the K-th largest value is shared by pixels on both sides of the
    cut, which of them are "in the top K" is arbitrary (Quantus 0.6.0 leaves it to
    ``np.argsort``). Here each tied pixel gets the same fractional credit, which is the
    expected score when the tie is broken uniformly at random::

        score = (inside_above + (K - n_above) * inside_tied / n_tied) / K

    with ``n_above`` the pixels strictly above the cut value, ``n_tied`` those equal to it and
    ``inside_*`` how many of them lie in the region. Without a tie at the cut this is the
    plain count; a constant map scores the chance level ``K / (H W)``.

    Args:
        maps: Finite real tensor [B, H, W].
        masks: Bool tensor [B, H, W], the regions.

    Returns:
        Float64 [B] in [0, 1]; NaN where the region is empty. A full region gives 1.

    Raises:
        XaibenchError: On invalid maps or masks (see :func:`relevance_mass`).
    """
    values, region = _region_inputs(maps, masks)
    batch, n_pixels = values.shape
    if batch == 0 or n_pixels == 0:
        return _all_undefined(batch, maps.device)
    k = _count(region)
    # The K-th largest value is the (N - K)-th smallest. K varies per map, so each row gets its
    # own selection (linear time, against a sort's N log N: several times faster at 224 px).
    position = np.minimum(n_pixels - k, n_pixels - 1).astype(np.int64)
    cut = np.array(
        [np.partition(row, p)[p] for row, p in zip(values, position, strict=True)],
        dtype=values.dtype,
    )[:, None]
    above = values > cut
    tied = values == cut
    n_above = _count(above)
    hits = _count(above & region) + (k - n_above) * _count(tied & region) / _count(tied)
    return _scores(hits / np.maximum(k, 1.0), k == 0, maps.device)


def _twice_u(values: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """``2 U`` per row: over the region pixels, outside pixels below plus those at or below.

    Each tie therefore counts one half of 2. Per row, the outside values and the region values
    are each sorted, and ``searchsorted`` counts, for every region value, the outside values
    below it (``left``) and at or below it (``right``, searched only when some region value
    equals an outside one). Sorting the queries too keeps the searches cheap (each continues
    from the previous one's place), so a row costs about one sort of its pixels. Comparisons
    of real values are exact (``-0.0 == +0.0``; NaN was refused by the caller), so the counts
    do not depend on how a sort ordered equal values, and one kernel serves every dtype. A
    loop over rows rather than one batched sort: the rows have different numbers of outside
    pixels, and per row the work is already vectorised.
    """
    result = np.zeros(values.shape[0], dtype=np.int64)
    outside_of = ~inside
    for i, row in enumerate(values):
        outside, queries = row[outside_of[i]], row[inside[i]]  # copies: sorted in place
        outside.sort()
        queries.sort()
        below = np.searchsorted(outside, queries, "left")
        result[i] = 2 * below.sum()
        # "at or below" differs from "below" only where a region value equals an outside one:
        # the second search is needed only then (never for a continuous map without ties).
        nearest = outside[np.minimum(below, outside.size - 1)] if outside.size else queries[:0]
        if queries.size and outside.size and np.any(nearest == queries):
            result[i] += (np.searchsorted(outside, queries, "right") - below).sum()
    return result


def pixel_auc(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """ROC AUC of the map as a per-pixel classifier of region membership.

    The probability that a random region pixel is more salient than a random pixel outside
    it, with ties counting one half; Quantus calls this ``AUC``. Like
    :func:`relevance_rank` it depends only on the order of the values, but over every
    threshold rather than one. It is computed as the Mann-Whitney U statistic: each region
    pixel is credited with the outside pixels strictly below its value plus half of those
    equal to it, all as exact integer counts, so the result does not depend on how a sort
    happened to order equal values. Per map it costs about one sort of its pixels.

    Args:
        maps: Finite real tensor [B, H, W]; raw values (no absolute value).
        masks: Bool tensor [B, H, W], the regions.

    Returns:
        Float64 [B] in [0, 1], 0.5 for a constant map; NaN where the region is empty or covers
        the whole image (an AUC needs pixels of both kinds).

    Raises:
        XaibenchError: On invalid maps or masks (see :func:`relevance_mass`).
    """
    values, region = _region_inputs(maps, masks)
    batch, n_pixels = values.shape
    if batch == 0 or n_pixels == 0:
        return _all_undefined(batch, maps.device)
    n_inside = _count(region)
    n_outside = n_pixels - n_inside
    twice_u = _twice_u(values, region).astype(np.float64)
    pairs = np.maximum(n_inside * n_outside, 1.0)
    return _scores(twice_u / (2.0 * pairs), (n_inside == 0) | (n_outside == 0), maps.device)


def energy_ratio(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mean positive attribution per pixel inside the region over that outside it.

    ``(sum(max(a, 0) in region) / |region|) / (sum(max(a, 0) outside) / |outside|)``. This is
    a size-normalised form of the energy-based pointing game (Wang et al., 2020): that score,
    the share of positive energy inside the region, is :func:`relevance_mass` and grows with
    the region's size even for a map that ignores it, whereas this ratio is 1 for a map that
    does not prefer the region (e.g. a constant positive map), above 1 for one concentrated
    on it and below 1 for one that avoids it. It is *not* Quantus' ``AttributionLocalisation``
    (a mass share with an optional size weight).

    Args:
        maps: Finite real tensor [B, H, W].
        masks: Bool tensor [B, H, W], the regions.

    Returns:
        Float64 [B] in [0, inf]. ``inf`` where there is positive attribution inside the region
        and none outside (perfect localisation, a legitimate value: aggregate with a median,
        not a mean). NaN where the region is empty or covers the whole image (no outside to
        compare with) or the map has no positive attribution at all (0 / 0).

    Raises:
        XaibenchError: On invalid maps or masks (see :func:`relevance_mass`).
    """
    values, region = _region_inputs(maps, masks)
    n_inside = _count(region)
    n_outside = values.shape[1] - n_inside
    inside, outside = _positive_mass(values, region)
    density_in = inside / np.maximum(n_inside, 1.0)
    density_out = outside / np.maximum(n_outside, 1.0)
    nothing_outside = density_out == 0
    ratio = np.where(
        nothing_outside, np.inf, density_in / np.where(nothing_outside, 1.0, density_out)
    )
    undefined = (n_inside == 0) | (n_outside == 0) | (inside + outside == 0)
    return _scores(ratio, undefined, maps.device)
