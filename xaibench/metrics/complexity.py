"""Complexity of a saliency map alone: how concentrated its attribution is.

Three :class:`~xaibench.metrics.base.MapMetric` scores of the absolute attribution ``|a|`` of
each map, computed once per method and image (no region, no model):

* :class:`Sparseness` — the Gini index of ``|a|`` (Chalasani et al., 2020): 0 when every pixel
  carries the same attribution, towards 1 when one pixel carries it all. Higher is better.
* :class:`Complexity` — the Shannon entropy (natural log) of ``|a| / sum |a|`` (Bhatt et al.,
  2020): 0 for a single pixel, ``log(H W)`` for a flat map. Lower is better.
* :class:`EffectiveComplexity` — the number of pixels whose ``|a|``, divided by the map's
  largest ``|a|``, exceeds ``eps`` (Nguyen & Martinez, 2020; ``eps`` 0.01 by default where
  Quantus has 1e-5, see the class). Lower is better.

Each equals Quantus 0.6.0's metric of the same name, with its default preprocessing (absolute
value, division by the maximum absolute value), to 1e-6 wherever both define a value, with two
deliberate differences:

* **Per map, not per batch.** Quantus' default ``normalise_by_max`` divides by the largest
  value of the whole *batch*, so a map's effective complexity (and, through the 1e-7 offset
  below, its sparseness) depends on which other maps share its batch. Here each map is divided
  by its own maximum. (Quantus with ``normalise_func_kwargs={"normalise_axes": [1, 2, 3]}``
  does the same; the tests compare with that.)
* **A map with no attribution** (all zero) has no sparseness and no complexity: NaN, where
  Quantus returns 0 for the Gini index (of its 1e-7 offset alone) and NaN for the entropy. Its
  effective complexity is 0 in both.

Sparseness keeps Quantus' offset: ``1e-7`` is added to every normalised value before the Gini
index is taken (so the index of a sparse map is a little below the offset-free value: for a
map whose mean normalised value is ``m``, by a factor ``1 / (1 + 1e-7 / m)``). Complexity's
``log(p + 1e-12)`` is taken as ``log p`` (with ``0 log 0 = 0``); the two differ by less than
``1e-12 H W``, far below 1e-6.

Floors (:meth:`~xaibench.metrics.base.MapMetric.floor`, a map of i.i.d. uniform ``[0, 1)``
noise): a Gini index of 1/3 (that of the uniform distribution), an entropy of ``log(H W / 2) +
1/2`` (``log(H W) - 0.193``: the entropy of ``u / sum u``) and an effective complexity of
``H W (1 - eps)`` (all but the pixels below ``eps`` times the maximum), each up to sampling
noise of order ``1 / sqrt(H W)``.

Why written here rather than bridged: the runner scores every map of a run, and these batched
kernels are faster than Quantus' per-batch functions on the same maps (sorts and reductions on
the float32 values, one float64 accumulation; ``docs/performance.md``), with no input copies.
The work is done with NumPy on CPU, where the maps live, for the reason given in
:mod:`xaibench.metrics.map_scores` (its sort is several times faster than torch's on CPU).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from pydantic import Field

from xaibench.metrics.base import MapMetric
from xaibench.metrics.binarize import _require_finite, _valid_flat_maps

__all__ = [
    "Complexity",
    "EffectiveComplexity",
    "Sparseness",
    "effective_complexity",
    "entropy_complexity",
    "gini_sparseness",
]

#: Quantus' offset added to the normalised attribution before its Gini index.
GINI_OFFSET = 1e-7

_CONSEQUENCE = "so no complexity score can be computed from them"


#: Rows per block: a block's float64 or bool temporaries stay in the processor's cache.
_ROWS = 8


def _flat(maps: torch.Tensor) -> np.ndarray:
    """Maps as a ``[B, N]`` array; finiteness is checked from a reduction each kernel needs."""
    return _valid_flat_maps(maps, consequence=_CONSEQUENCE, check_finite=False)


def _result(values: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.asarray(values, dtype=np.float64)).to(device)


def gini_sparseness(maps: torch.Tensor) -> torch.Tensor:
    """Gini index of each map's absolute attribution, Quantus' offset included.

    With ``a`` the absolute values sorted ascending, ``m`` their maximum, ``n`` their number
    and ``c`` :data:`GINI_OFFSET`, the index of ``a / m + c`` is::

        sum_i (2 i - n - 1) a_i / (n (sum_i a_i + n c m))

    (the offset cancels from the numerator, whose weights sum to zero, and the maximum is
    divided out), so the sort runs on the values as they are (float32 sorts about twice as fast
    as float64, and order is exact in either) and only the sums are accumulated in float64.

    Args:
        maps: Finite real ``[B, H, W]``.

    Returns:
        Float64 ``[B]`` in ``[0, 1)``; NaN for a map with no attribution (all zero).

    Raises:
        XaibenchError: If the maps are not a finite real ``[B, H, W]`` tensor.
    """
    ordered = np.abs(_flat(maps))
    batch, n = ordered.shape
    if n == 0:
        return _result(np.full(batch, np.nan), maps.device)
    ordered.sort(axis=1)  # in place: np.abs made the copy
    top = ordered[:, -1].astype(np.float64)  # NaN sorts last, so this also checks finiteness
    _require_finite(np.isfinite(top), _CONSEQUENCE)
    weights = np.arange(1 - n, n, 2, dtype=np.float64)  # 2 i - n - 1 for i = 1..n
    numerator = np.empty(batch)
    total = np.empty(batch)
    for i in range(0, batch, _ROWS):
        block = ordered[i : i + _ROWS].astype(np.float64)
        numerator[i : i + _ROWS] = block @ weights
        total[i : i + _ROWS] = block.sum(axis=1)
    denominator = n * (total + n * GINI_OFFSET * top)
    gini = np.where(top > 0, numerator / np.where(top > 0, denominator, 1.0), np.nan)
    return _result(gini, maps.device)


def entropy_complexity(maps: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of each map's ``|a| / sum |a|``.

    Computed as ``log S - sum(a log a) / S`` with ``S = sum a`` (``0 log 0 = 0``), in float64
    blocks of rows, which avoids the division of every value by ``S``.

    Args:
        maps: Finite real ``[B, H, W]``.

    Returns:
        Float64 ``[B]`` in ``[0, log(H W)]``; NaN for a map with no attribution.

    Raises:
        XaibenchError: If the maps are not a finite real ``[B, H, W]`` tensor.
    """
    flat = _flat(maps)
    batch, n = flat.shape
    total = np.zeros(batch)
    weighted = np.zeros(batch)
    block = np.empty((_ROWS, n))
    logs = np.empty((_ROWS, n))
    for i in range(0, batch, _ROWS):
        rows = flat[i : i + _ROWS]
        a = block[: len(rows)]
        np.abs(rows, out=a)
        total[i : i + _ROWS] = a.sum(axis=1)
        log_a = logs[: len(rows)]
        log_a.fill(0.0)
        np.log(a, out=log_a, where=a > 0)
        weighted[i : i + _ROWS] = np.einsum("ij,ij->i", a, log_a)
    _require_finite(np.isfinite(total), _CONSEQUENCE)
    defined = total > 0
    safe = np.where(defined, total, 1.0)
    return _result(np.where(defined, np.log(safe) - weighted / safe, np.nan), maps.device)


def effective_complexity(maps: torch.Tensor, eps: float = 0.01) -> torch.Tensor:
    """Number of pixels with ``|a| / max |a| > eps``, per map.

    Compared as ``|a| > t`` with ``t = eps max |a|``, which agrees with the division except
    for a value within one rounding of the threshold. For float32 maps ``t`` is rounded down
    to float32 first (exact: a float32 value exceeds ``t`` exactly when it exceeds that
    rounding), so the comparison runs in float32, on blocks of rows that stay in cache.

    Args:
        maps: Finite real ``[B, H, W]``.
        eps: Threshold on the normalised absolute attribution.

    Returns:
        Float64 ``[B]`` counts; 0 for a map with no attribution.

    Raises:
        XaibenchError: If the maps are not a finite real ``[B, H, W]`` tensor.
    """
    flat = _flat(maps)
    batch, n = flat.shape
    counts = np.zeros(batch)
    top = np.zeros(batch)
    block = np.empty((_ROWS, n), dtype=flat.dtype)
    above = np.empty((_ROWS, n), dtype=bool)
    for i in range(0, batch, _ROWS):
        rows = flat[i : i + _ROWS]
        a = block[: len(rows)]
        np.abs(rows, out=a)
        peak = a.max(axis=1).astype(np.float64) if n else np.zeros(len(rows))
        top[i : i + _ROWS] = peak
        cut = _round_down(eps * peak, flat.dtype)
        np.greater(a, cut[:, None], out=above[: len(rows)])
        for j in range(len(rows)):  # a 1-D count is a fast popcount; an axis count is not
            counts[i + j] = np.count_nonzero(above[j])
    _require_finite(np.isfinite(top), _CONSEQUENCE)
    return _result(counts, maps.device)


def _round_down(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The largest values of ``dtype`` at most ``values`` (float64)."""
    cast = values.astype(dtype)
    return np.where(cast > values, np.nextafter(cast, np.array(-np.inf, dtype=dtype)), cast)


class Sparseness(MapMetric):
    """Gini index of the absolute attribution (Chalasani et al.); higher = sparser.

    Floor: 1/3, the Gini index of i.i.d. uniform noise. NaN for an all-zero map.
    """

    display_name = "Sparseness (Gini)"
    citation = (
        "Chalasani et al., Concise explanations of neural networks using adversarial "
        "training, ICML 2020"
    )
    higher_is_better: ClassVar[bool] = True

    def per_sample(self, maps: torch.Tensor) -> torch.Tensor:
        """Gini index per map."""
        return gini_sparseness(maps)


class Complexity(MapMetric):
    """Entropy of the normalised absolute attribution (Bhatt et al.); lower = simpler.

    Floor: ``log(H W / 2) + 1/2`` for i.i.d. uniform noise. NaN for an all-zero map.
    """

    display_name = "Complexity (entropy)"
    citation = (
        "Bhatt, Weller & Moura, Evaluating and aggregating feature-based model explanations, "
        "IJCAI 2020"
    )
    higher_is_better: ClassVar[bool] = False

    def per_sample(self, maps: torch.Tensor) -> torch.Tensor:
        """Entropy per map, in nats."""
        return entropy_complexity(maps)


class EffectiveComplexity(MapMetric):
    """Pixels whose absolute attribution exceeds ``eps`` times the map's maximum; lower = simpler.

    ``eps`` defaults to 0.01, not Quantus' 1e-5: at 1e-5 every pixel of a map with any noise
    (gradients, noise-averaged maps) counts, so a map concentrated on a small square with 1 %
    noise scores the same as pure noise and the count says nothing. ``eps=1e-5`` reproduces
    Quantus' default. Floor: about ``H W (1 - eps)`` for i.i.d. uniform noise.
    """

    display_name = "Effective complexity"
    citation = (
        "Nguyen & Martinez, On quantitative aspects of model interpretability, "
        "arXiv:2007.07584, 2020"
    )
    higher_is_better: ClassVar[bool] = False

    eps: float = Field(
        0.01,
        ge=0,
        lt=1,
        description="Threshold on |a| / max |a| above which a pixel counts (Quantus: 1e-5).",
    )

    def per_sample(self, maps: torch.Tensor) -> torch.Tensor:
        """Count of pixels above the threshold per map."""
        return effective_complexity(maps, self.eps)
