"""The two-level (seed x image) bootstrap of a score averaged over training seeds.

A study run with several seeds trains each backbone x strategy once per seed and scores every
model on the **same** test images (the split has its own seed, ``split.seed``). The aggregate
score is the mean over seeds of each seed's estimate; its interval must carry two sources of
variation: which seeds were drawn (training noise) and which images were drawn (test-set noise).

One replicate (:func:`draw_two_level`, then :func:`seed_mean_replicates`):

1. draw ``S`` seeds with replacement from the ``S`` seeds;
2. draw the test images once, with replacement, class-stratified where labels are given
   (positives to their count, negatives to theirs, as :func:`~xaibench.stats.intervals.
   bootstrap_auc_ci` does), and use **that one image draw for every drawn seed** (paired);
3. the replicate is the mean over the ``S`` drawn seeds of the statistic on the drawn images.

Paired, not independent per seed: the seeds and the images are *crossed* (every model sees every
test image), not nested (as neurons within animals, where each animal has its own neurons and
the hierarchical bootstrap resamples each level independently). An image that is hard for one
seed is hard for the others, so the seeds' errors from the test-set draw are correlated; drawing
images independently per seed would average that shared error away and give too narrow an
interval. Resampling both crossed factors at once is Owen's (2007) pigeonhole bootstrap.

The generator protocol, fixed so that an independent loop can reproduce every replicate:
``rng = numpy.random.default_rng(seed)``; ``seeds = rng.integers(0, S, size=(R, S))``; then
with labels ``pos = rng.integers(0, m, size=(R, m))`` and ``neg = rng.integers(0, n, size=(R,
n))`` (indices into the positive and the negative images, each in their original order),
without labels ``rng.integers(0, N, size=(R, N))``. The interval is the percentile interval
(linear interpolation, ``numpy.quantile``) of the finite replicates.

References:
    A. B. Owen. The pigeonhole bootstrap. Annals of Applied Statistics 1(2):386-411, 2007.

    V. Saravanan, G. J. Berman, S. J. Sober. Application of the hierarchical bootstrap to
    multi-level data in neuroscience. Neurons, Behavior, and Data Analysis, and Theory 3(5),
    2020.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import SupportsIndex

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import rankdata

from xaibench.errors import XaibenchError

#: Drawn values ranked at once by :func:`auc_on_draws` (about 16 MB of float64 per block).
_BLOCK_ELEMENTS = 2_000_000

__all__ = [
    "TwoLevelDraws",
    "auc_on_draws",
    "draw_two_level",
    "percentile_interval",
    "seed_mean_replicates",
    "two_level_auc",
]


@dataclass(frozen=True)
class TwoLevelDraws:
    """The draws of a two-level bootstrap.

    Attributes:
        seeds: ``(R, S)`` indices of the seeds drawn in each replicate.
        images: ``(R, N)`` indices of the images drawn in each replicate (every drawn seed of
            a replicate is scored on these images); with labels, the positives come first.
    """

    seeds: NDArray[np.int64]
    images: NDArray[np.int64]


def draw_two_level(
    n_seeds: int,
    n_images: int,
    *,
    labels: ArrayLike | None = None,
    resamples: SupportsIndex = 1000,
    seed: int = 0,
) -> TwoLevelDraws:
    """Seeds and images of ``resamples`` replicates (the protocol in the module docstring).

    Args:
        n_seeds: Number of seeds ``S`` (at least 1).
        n_images: Number of images ``N`` shared by every seed (at least 1).
        labels: ``N`` booleans (positive class); when given, each replicate draws the positives
            and the negatives separately, each to its own count.
        resamples: Number of replicates ``R``.
        seed: Seed of ``numpy.random.default_rng``.

    Raises:
        XaibenchError: ``n_seeds`` or ``n_images`` below 1, ``resamples`` below 1, labels of
            another length or a class without images.
    """
    count = operator.index(resamples)
    if count < 1 or n_seeds < 1 or n_images < 1:
        raise XaibenchError(
            f"a two-level bootstrap needs resamples, seeds and images >= 1, got {count}, "
            f"{n_seeds} and {n_images}"
        )
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, n_seeds, size=(count, n_seeds))
    if labels is None:
        return TwoLevelDraws(seeds, rng.integers(0, n_images, size=(count, n_images)))
    positive = np.asarray(labels, dtype=bool)
    if positive.shape != (n_images,):
        raise XaibenchError(f"labels has shape {positive.shape}, expected ({n_images},)")
    pos, neg = np.flatnonzero(positive), np.flatnonzero(~positive)
    if pos.size == 0 or neg.size == 0:
        raise XaibenchError(
            f"a stratified bootstrap needs both classes, got {pos.size} positive and "
            f"{neg.size} negative images"
        )
    drawn_pos = pos[rng.integers(0, pos.size, size=(count, pos.size))]
    drawn_neg = neg[rng.integers(0, neg.size, size=(count, neg.size))]
    return TwoLevelDraws(seeds, np.concatenate([drawn_pos, drawn_neg], axis=1))


def seed_mean_replicates(per_seed: ArrayLike, seeds: NDArray[np.int64]) -> NDArray[np.float64]:
    """Each replicate's mean over its drawn seeds.

    Args:
        per_seed: ``(S, R)``: seed ``s``'s statistic on replicate ``r``'s images.
        seeds: ``(R, S)`` drawn seed indices (:attr:`TwoLevelDraws.seeds`).

    Returns:
        ``(R,)`` replicates (NaN where a drawn seed's statistic is NaN).
    """
    values = np.asarray(per_seed, dtype=np.float64)
    rows = np.arange(seeds.shape[0])[:, None]
    return np.asarray(values[seeds, rows].mean(axis=1), dtype=np.float64)


def auc_on_draws(
    labels: ArrayLike, scores: ArrayLike, images: NDArray[np.int64]
) -> NDArray[np.float64]:
    """The ROC AUC (Mann-Whitney, ties one half) of ``scores`` on each row of ``images``.

    Args:
        labels: ``N`` booleans (positive class).
        scores: ``N`` scores, higher meaning more positive.
        images: ``(R, N')`` drawn image indices.

    Returns:
        ``(R,)`` AUCs; NaN for a draw without both classes.
    """
    y = np.asarray(labels, dtype=bool)
    values = np.asarray(scores, dtype=np.float64)
    out = np.empty(images.shape[0], dtype=np.float64)
    step = max(1, _BLOCK_ELEMENTS // max(1, images.shape[1]))  # bounded temporaries
    for start in range(0, images.shape[0], step):
        block = images[start : start + step]
        positive = y[block]
        ranks = rankdata(values[block], method="average", axis=1)
        m = positive.sum(axis=1).astype(np.float64)
        n = positive.shape[1] - m
        with np.errstate(divide="ignore", invalid="ignore"):
            auc = ((ranks * positive).sum(axis=1) - m * (m + 1) / 2.0) / (m * n)
        out[start : start + step] = np.where((m > 0) & (n > 0), auc, np.nan)
    return out


def percentile_interval(replicates: ArrayLike, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of the finite replicates; NaNs without any."""
    values = np.asarray(replicates, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    alpha = 1.0 - level
    low, high = np.quantile(values, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


def two_level_auc(
    labels: ArrayLike,
    scores: ArrayLike,
    *,
    resamples: SupportsIndex = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """The mean over seeds of each seed's AUC, with its two-level bootstrap interval.

    Args:
        labels: ``N`` booleans (positive class), the same images for every seed.
        scores: ``(S, N)``: each seed's scores of the ``N`` images.
        resamples: Number of replicates.
        level: Confidence level.
        seed: Seed of the generator.

    Returns:
        ``(mean AUC, low, high)``.

    Raises:
        XaibenchError: ``scores`` is not ``(S, N)`` or a class has no images.
    """
    y = np.asarray(labels, dtype=bool)
    table = np.asarray(scores, dtype=np.float64)
    if table.ndim != 2 or table.shape[1] != y.size:
        raise XaibenchError(f"scores must be (seeds, {y.size}), got shape {table.shape}")
    draws = draw_two_level(table.shape[0], y.size, labels=y, resamples=resamples, seed=seed)
    identity = np.arange(y.size)[None, :]
    point = float(np.mean([auc_on_draws(y, row, identity)[0] for row in table]))
    per_seed = np.stack([auc_on_draws(y, row, draws.images) for row in table])
    low, high = percentile_interval(seed_mean_replicates(per_seed, draws.seeds), level)
    return point, low, high
