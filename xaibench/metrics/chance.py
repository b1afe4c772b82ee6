"""Chance levels of region metrics: what a map that knows nothing about the region would score.

A localisation score means little without its chance level: relevance mass of any map is about
the region's area fraction, and IoU of a large region is high for a map that ignores it. Every
built-in :class:`~xaibench.metrics.base.SaliencyRegionMetric` therefore reports, per image, the
value the *same map* would get if its pixels were placed without regard to the region, and the
runner turns the two into a normalised score ``(value - chance) / (best - chance)`` (0 = chance,
1 = best) with a paired bootstrap CI and a one-sided test (:func:`chance_details`).

Two nulls, both keeping each map's own value distribution:

* **Permutation null** (analytic, exact): the map's pixels placed by a uniformly random
  permutation. Metrics that are linear in "is this pixel inside the region" have an exact
  expectation under it: relevance mass, relevance rank and the pointing game (``ties='fraction'``)
  expect the region's area fraction ``|R| / (H W)``, pixel AUC expects 0.5 (:func:`area_fraction`,
  :func:`half`). Every pixel visits every position equally often under uniform toroidal
  translations too, so these expectations are also exact under the shift null below (pixel AUC
  needs the 180° rotation in it, which the null contains): a smooth map does not change them.
* **Shift null** (seeded, estimated): a map's value distribution *and* its smoothness are kept
  by moving it rigidly: a uniformly random toroidal translation (``torch.roll`` semantics) and
  one of the four axis flips (none, vertical, horizontal, both), ``draws`` moves per image, each
  image its own; the chance value is the mean of the metric over the moves
  (:func:`draw_moves`, :func:`apply_moves`, :func:`shift_null`). It is needed where the metric
  is not linear in the pixels' positions: IoU, whose value is convex in the overlap, has a
  higher expectation for a blob than for the same pixels scattered (by about 0.01 for smooth
  noise against a region of 20% of the image), so under the permutation null a smooth map that
  knows nothing would "beat chance"; the pointing game with ``ties='any'`` hits less often from a
  plateau of tied maxima than from as many scattered pixels. IoU's binarisations (Otsu, top-k,
  fixed) depend on the map's values only, not on where they are, so they commute with every
  move: the map is binarised once and the binary mask is moved (:func:`iou_shift_null`), which
  gives the same numbers as binarising each moved map at a fraction of the cost.

The moves are written here rather than with ``torch.roll``: every image gets its own move, and a
slice of the map tiled 2 x 2 is a moved map in one block copy. IoU's overlaps are counted on
bit-packed masks, 64 pixels per word.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.stats import ttest_1samp

__all__ = [
    "AREA_FRACTION",
    "DEFAULT_DRAWS",
    "HALF",
    "SHIFT_NULL",
    "ChanceLevel",
    "ShiftMoves",
    "apply_moves",
    "area_fraction",
    "chance_details",
    "draw_moves",
    "half",
    "iou_shift_null",
    "shift_null",
]

#: Moves per image of the shift null unless the run configures ``chance.draws``.
DEFAULT_DRAWS = 16

#: What :attr:`ChanceLevel.method` says, per null (documented in ``docs/explainability.md``).
AREA_FRACTION = "area fraction"
HALF = "0.5"
SHIFT_NULL = "shift null"


@dataclass(frozen=True)
class ChanceLevel:
    """Per-image chance values of one metric on one region, and how they were obtained.

    Attributes:
        values: ``[B]`` float64, NaN where the metric (or its null) is undefined.
        method: ``"area fraction"``, ``"0.5"`` or ``"shift null"``.
        exact: True for an analytic expectation, False for the seeded shift-null estimate.
    """

    values: torch.Tensor
    method: str
    exact: bool


@dataclass(frozen=True)
class ShiftMoves:
    """``draws x B`` rigid moves: a flip code and a toroidal translation per (draw, image).

    Attributes:
        dy: ``[K, B]`` int64 row offsets in ``0 .. H-1``.
        dx: ``[K, B]`` int64 column offsets in ``0 .. W-1``.
        flips: ``[K, B]`` int64 codes: 0 none, 1 vertical, 2 horizontal, 3 both (180° rotation).
    """

    dy: np.ndarray
    dx: np.ndarray
    flips: np.ndarray


def draw_moves(
    batch: int, height: int, width: int, draws: int, generator: torch.Generator
) -> ShiftMoves:
    """Draw the shift null's moves from ``generator`` (one translation and flip per draw and image).

    The draws depend only on the shape and on the generator's state, so a metric that binarises
    first and one that moves the raw map see the same moves from the same state.
    """
    size = (draws, batch)
    dy = torch.randint(0, max(height, 1), size, generator=generator)
    dx = torch.randint(0, max(width, 1), size, generator=generator)
    flips = torch.randint(0, 4, size, generator=generator)
    return ShiftMoves(dy.numpy(), dx.numpy(), flips.numpy())


def apply_moves(maps: torch.Tensor, moves: ShiftMoves) -> torch.Tensor:
    """Every move applied to every map: ``[K, B, H, W]`` from maps ``[B, H, W]`` (any dtype).

    Draw ``k`` of image ``b`` is ``maps[b]`` flipped as the code says, then translated
    toroidally: ``out[i, j] = flipped[(i + dy) mod H, (j + dx) mod W]``. A uniform flip and a
    uniform translation give a uniform element of the group they generate.

    Each moved map is one slice of the map tiled 2 x 2 (every toroidal window is a plain slice,
    and a flip of the tiling is the tiling of the flip, so the flips are views): one block copy
    per (draw, image), several times faster than a NumPy fancy index over all of them.
    """
    values = maps.detach().cpu()
    if values.dtype in (torch.float16, torch.bfloat16):  # NumPy has no bfloat16: widen exactly
        values = values.float()
    array = values.numpy()
    height, width = array.shape[1:]
    tiled = np.tile(array, (1, 2, 2))
    views = (tiled, tiled[:, ::-1], tiled[:, :, ::-1], tiled[:, ::-1, ::-1])
    out = np.empty((*moves.dy.shape, height, width), dtype=array.dtype)
    rows = zip(moves.dy.tolist(), moves.dx.tolist(), moves.flips.tolist(), strict=True)
    for k, (dys, dxs, flips) in enumerate(rows):
        for b, (y, x, flip) in enumerate(zip(dys, dxs, flips, strict=True)):
            out[k, b] = views[flip][b, y : y + height, x : x + width]
    return torch.from_numpy(out)


def _undefined_like(values: torch.Tensor, undefined: torch.Tensor) -> torch.Tensor:
    return torch.where(undefined, torch.full_like(values, math.nan), values)


def area_fraction(masks: torch.Tensor) -> torch.Tensor:
    """``|R| / (H W)`` per image, float64 ``[B]``; NaN where the region is empty.

    The exact expectation, under a uniformly random permutation of a map's pixels, of relevance
    mass (the positive mass is permutation-invariant, and each pixel lands inside with
    probability ``|R| / N``), of relevance rank and of the pointing game with ``ties='fraction'``
    (both average, with fractional credit for ties, indicators of "this pixel is inside").
    """
    flat = masks.reshape(masks.shape[0], -1).cpu()
    inside = flat.sum(dim=1).to(torch.float64)
    fraction = inside / max(flat.shape[1], 1)
    return _undefined_like(fraction, inside == 0)


def half(masks: torch.Tensor) -> torch.Tensor:
    """0.5 per image (pixel AUC's chance), NaN where the region is empty or the whole image.

    Under a random permutation every (inside, outside) pair of pixels is equally likely to be
    ordered either way, ties counting one half, so the expected AUC is exactly 0.5.
    """
    flat = masks.reshape(masks.shape[0], -1).cpu()
    inside = flat.sum(dim=1)
    values = torch.full((flat.shape[0],), 0.5, dtype=torch.float64)
    return _undefined_like(values, (inside == 0) | (inside == flat.shape[1]))


def shift_null(
    per_sample: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    maps: torch.Tensor,
    masks: torch.Tensor,
    generator: torch.Generator,
    draws: int = DEFAULT_DRAWS,
) -> torch.Tensor:
    """The mean of ``per_sample`` over ``draws`` moved copies of each map, float64 ``[B]``.

    One call of ``per_sample`` scores all ``draws x B`` moved maps against their (unmoved)
    regions. Draws where the metric is undefined are left out of the mean; NaN where all are.
    """
    batch, height, width = maps.shape
    moves = draw_moves(batch, height, width, draws, generator)
    moved = apply_moves(maps, moves).reshape(draws * batch, height, width)
    regions = masks.cpu().repeat(draws, 1, 1)
    scores = per_sample(moved, regions).detach().cpu().double().reshape(draws, batch)
    return _nanmean_over_draws(scores)


def _nanmean_over_draws(scores: torch.Tensor) -> torch.Tensor:
    defined = ~torch.isnan(scores)
    count = defined.sum(dim=0)
    total = torch.where(defined, scores, torch.zeros_like(scores)).sum(dim=0)
    mean = total / count.clamp(min=1)
    return _undefined_like(mean, count == 0)


def iou_shift_null(
    binary: torch.Tensor,
    masks: Mapping[str, torch.Tensor],
    generator: torch.Generator,
    draws: int = DEFAULT_DRAWS,
) -> dict[str, torch.Tensor]:
    """IoU's shift null for several regions from one binarisation and one set of moves.

    ``|moved P ∩ R| / (|P| + |R| - |moved P ∩ R|)`` per draw, ``|P|`` being invariant under the
    moves; every region sees the same moves (the generator is read once). The overlaps are
    counted on bit-packed masks (:func:`_overlaps`). Float64 ``[B]`` per region, NaN where the
    region is empty, as :func:`~xaibench.metrics.binarize.region_iou`.
    """
    batch, height, width = binary.shape
    moves = draw_moves(batch, height, width, draws, generator)
    moved = _packed(apply_moves(binary.cpu(), moves).numpy().reshape(draws, batch, -1))
    selected = binary.reshape(batch, -1).sum(dim=1).double().numpy()  # |P| under every move
    out = {}
    for name, mask in masks.items():
        region = mask.cpu().reshape(batch, -1).numpy()
        area = region.sum(axis=1).astype(np.float64)
        overlap = _popcount(moved & _packed(region)[None]).sum(axis=-1, dtype=np.float64)
        union = selected + area - overlap
        iou = overlap / np.maximum(union, 1.0)
        values = torch.from_numpy(iou.mean(axis=0))
        out[name] = _undefined_like(values, torch.from_numpy(area == 0))
    return out


def _packed(flags: np.ndarray) -> np.ndarray:
    """Bool rows ``[..., N]`` as 64-bit words ``[..., ceil(N / 64)]`` (zero-padded)."""
    packed = np.packbits(flags, axis=-1)
    pad = -packed.shape[-1] % 8
    if pad:
        packed = np.concatenate([packed, np.zeros((*packed.shape[:-1], pad), np.uint8)], -1)
    return np.ascontiguousarray(packed).view(np.uint64)


_M1, _M2, _M4, _H01 = (
    np.uint64(v)
    for v in (0x5555555555555555, 0x3333333333333333, 0x0F0F0F0F0F0F0F0F, 0x0101010101010101)
)


def _popcount(words: np.ndarray) -> np.ndarray:
    """Set bits per uint64 word (the classic SWAR count: NumPy < 2 has no ``bitwise_count``)."""
    words = words - ((words >> np.uint64(1)) & _M1)
    words = (words & _M2) + ((words >> np.uint64(2)) & _M2)
    words = (words + (words >> np.uint64(4))) & _M4
    return (words * _H01) >> np.uint64(56)


# --------------------------------------------------------------------------------------------
# Aggregation: chance, normalised score, its paired CI and the test against chance
# --------------------------------------------------------------------------------------------


def _normalised(value: np.ndarray, chance: np.ndarray, best: float) -> np.ndarray:
    span = best - chance
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(span > 0, (value - chance) / np.where(span > 0, span, 1.0), np.nan)


def chance_details(
    values: np.ndarray,
    chance: np.ndarray,
    *,
    best: float | None,
    method: str,
    exact: bool,
    hits: bool = False,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """The record details of contract C1 from per-image values and chance values.

    Images where either is undefined are left out of everything (``chance_n`` counts those
    kept). ``chance`` is the mean per-image chance; ``normalised`` is ``(mean value - mean
    chance) / (best - mean chance)`` (None without ``best``, below 1 image, or where the chance
    reaches ``best``); ``normalised_ci`` the 95% percentile interval over ``resamples`` paired
    image-bootstrap resamples (images drawn with replacement, both means recomputed on the same
    draw, ``numpy.random.default_rng(seed)``; :func:`_resample_weights`), or Wilson's interval
    when the metric scores ``hits`` and every image missed (or every image hit), where the
    bootstrap collapses (:func:`_normalised_ci`), None below 2 images or when a resample has no
    room above chance; ``p_chance`` the one-sided p-value of a one-sample
    t-test that the mean of the per-image differences ``value - chance`` is above 0.

    Why a t-test on the differences: the normalised score is built from the two means, so the
    test should be about the mean difference. Wilcoxon's signed-rank test is about the median
    (a symmetric location), which for the pointing game's skewed differences (``1 - a`` rarely,
    ``-a`` often) says nothing about the hit rate; a percentile-bootstrap p-value cannot go
    below ``1 / (resamples + 1)``, too coarse for Holm's adjustment over a large table. With
    every difference equal the t statistic is undefined: p is 0 if they are positive, else 1.
    Unadjusted: the leaderboard applies Holm within its table.
    """
    value = np.asarray(values, dtype=np.float64)
    level = np.asarray(chance, dtype=np.float64)
    paired = np.isfinite(value) & np.isfinite(level)
    value, level = value[paired], level[paired]
    n = int(value.size)
    details: dict[str, Any] = {
        "chance": float(level.mean()) if n else None,
        "chance_method": method,
        "chance_exact": exact,
        "chance_n": n,
        "best": best,
        "normalised": None,
        "normalised_ci": None,
        "p_chance": None,
    }
    if n == 0:
        return details
    if best is not None:
        norm = _normalised(np.array(value.mean()), np.array(level.mean()), best)
        details["normalised"] = float(norm) if np.isfinite(norm) else None
        if n >= 2 and details["normalised"] is not None:
            details["normalised_ci"] = _normalised_ci(value, level, best, hits, resamples, seed)
    details["p_chance"] = _p_above_zero(value - level)
    return details


def _normalised_ci(
    value: np.ndarray, level: np.ndarray, best: float, hits: bool, resamples: int, seed: int
) -> list[float] | None:
    """95% interval of the normalised score: Wilson's for hits, else the paired bootstrap.

    For a metric that scores hits (``hits``: the pointing game) the mean is a binomial
    proportion, and a percentile bootstrap of it collapses to a point when every image scores the
    same (no random peak in a region of 1% of the image in 120 images: [-0.01, -0.01], as if
    that were known exactly). Wilson's score interval for the hit rate (Brown, Cai & DasGupta
    2001: close to nominal coverage near 0 and 1) is then mapped through the normalisation at
    the mean chance, whose own spread over images is left out. Used only then (every image
    missed, or every image hit); otherwise both means are resampled together
    (:func:`_resample_weights`).
    """
    if hits and (np.all(value == 0.0) or np.all(value == 1.0)):
        from xaibench.stats.intervals import wilson_ci

        chance = float(level.mean())
        low, high = wilson_ci(int(value.sum()), int(value.size))
        bounds = _normalised(np.array([low, high]), np.array(chance), best)
        return [float(bounds[0]), float(bounds[1])] if np.isfinite(bounds).all() else None
    weights = _resample_weights(len(value), resamples, seed)
    replicates = _normalised(weights @ value, weights @ level, best)
    if not np.isfinite(replicates).all():
        return None
    low, high = np.quantile(replicates, [0.025, 0.975])
    return [float(low), float(high)]


@functools.lru_cache(maxsize=8)
def _resample_weights(n: int, resamples: int, seed: int) -> np.ndarray:
    """``[resamples, n]``: how often each image is drawn in each resample, over ``n``.

    A resample's mean of any per-image values is then one row times the values, so the records
    of a cell (every metric x region with the same ``n``) share one draw and one matrix product
    each instead of a fancy index per record. Read-only: it is cached.
    """
    rng = np.random.default_rng(seed)
    index = rng.integers(0, n, size=(resamples, n))
    rows = np.repeat(np.arange(resamples), n)
    counts = np.bincount(rows * n + index.ravel(), minlength=resamples * n)
    weights = counts.reshape(resamples, n) / n
    weights.setflags(write=False)
    return weights


def _p_above_zero(differences: np.ndarray) -> float | None:
    """One-sided p-value that the mean of ``differences`` is above 0 (one-sample t-test)."""
    if differences.size < 2:
        return None
    if np.ptp(differences) == 0:
        return 0.0 if differences[0] > 0 else 1.0
    return float(ttest_1samp(differences, 0.0, alternative="greater").pvalue)
