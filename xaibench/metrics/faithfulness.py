"""Faithfulness: does removing what a map ranks first change the model's output?

Region metrics ask whether a map points at the anatomy; these ask whether the model actually
*uses* what the map points at, by editing the image in the map's order and re-scoring it:

* ``deletion_auc`` — replace pixels most-relevant-first by a canvas; the area under the
  explained-class probability curve (lower = the map found what matters);
* ``insertion_auc`` — start from the canvas and reveal pixels most-relevant-first (higher is
  better);
* ``road`` — ROAD (Rong et al., ICML 2022): remove the top p% with *noisy linear imputation*
  instead of a constant, so the removal itself leaks no shape of the removed set to the model;
  the mean explained-class probability over the removal levels (lower is better).

Every value comes with the same score for a random ranking of the same pixels
(``details["random_floor"]``), because a deletion AUC of 0.3 means nothing until one knows that
random removal gives 0.35. Written here rather than taken from Quantus: Quantus' versions score
one image at a time through its own model wrappers; these are batched through the runner's
score function, state their canvas, and share one ranking convention (ties broken by pixel
index, so results do not depend on the sort implementation).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field

from xaibench.errors import XaibenchError
from xaibench.metrics.base import FaithfulnessMetric, ScoreFn
from xaibench.perturbations.blur import gaussian_blur

Canvas = Literal["zero", "mean", "blur"]


def relevance_rank(maps: torch.Tensor) -> torch.Tensor:
    """Rank of every pixel, 0 = most relevant, ties broken by pixel index: ``[B, H*W]``.

    Raises:
        XaibenchError: A map holds NaN or inf.
    """
    flat = maps.flatten(1).double()
    if not torch.isfinite(flat).all():
        raise XaibenchError("saliency map is not finite (NaN or inf); cannot rank its pixels")
    order = torch.argsort(flat, dim=1, descending=True, stable=True)
    return _rank_from_order(order)


def random_rank(shape: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """A uniformly random pixel ranking per image ``[B, P]`` (the floor of every score)."""
    order = torch.argsort(torch.rand(shape, generator=generator, dtype=torch.float64), dim=1)
    return _rank_from_order(order)


def _rank_from_order(order: torch.Tensor) -> torch.Tensor:
    rank = torch.empty_like(order)
    positions = torch.arange(order.shape[1], device=order.device).expand_as(order)
    rank.scatter_(1, order, positions)
    return rank


def make_canvas(images: torch.Tensor, canvas: Canvas, blur_sigma: float) -> torch.Tensor:
    """What removed pixels become: 0, the image's mean, or a blurred copy of the image."""
    if canvas == "zero":
        return torch.zeros_like(images)
    if canvas == "mean":
        return images.mean(dim=(1, 2, 3), keepdim=True).expand_as(images).clone()
    return gaussian_blur(images, blur_sigma * images.shape[-1]).clamp(0.0, 1.0)


def removal_curve(
    score: ScoreFn,
    images: torch.Tensor,
    canvas: torch.Tensor,
    rank: torch.Tensor,
    fractions: torch.Tensor,
    *,
    insert: bool,
) -> torch.Tensor:
    """Explained-class probability after each removal (or insertion) level: ``[B, S]``.

    At level ``f`` the ``round(f * H * W)`` top-ranked pixels come from ``canvas`` (deletion) or
    are the only ones taken from ``images`` (insertion).
    """
    b, _, h, w = images.shape
    counts = torch.round(fractions.double() * h * w).long()
    curve = []
    for count in counts.tolist():
        chosen = (rank < count).view(b, 1, h, w)
        x = torch.where(chosen, images, canvas) if insert else torch.where(chosen, canvas, images)
        curve.append(score(x).double().cpu())
    return torch.stack(curve, dim=1)


class _Curve(FaithfulnessMetric):
    steps: int = Field(
        20, ge=2, le=1000, description="Removal levels after the intact image (1/steps each)."
    )
    blur_sigma: float = Field(
        0.05, gt=0, le=1, description="Blur canvas: Gaussian sigma as a fraction of the side."
    )

    #: Insertion (reveal pixels onto the canvas) instead of deletion.
    insert: ClassVar[bool] = False
    canvas: Canvas = Field("zero", description="What removed pixels become.")

    def per_sample(
        self,
        score: ScoreFn,
        images: torch.Tensor,
        maps: torch.Tensor,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Area under the probability curve for the map's ranking and a random one."""
        fractions = torch.linspace(0, 1, self.steps + 1, dtype=torch.float64)
        canvas = make_canvas(images, self.canvas, self.blur_sigma)
        values = []
        b = images.shape[0]
        p = images.shape[-1] * images.shape[-2]
        for rank in (relevance_rank(maps).to(images.device), random_rank((b, p), generator)):
            curve = removal_curve(
                score, images, canvas, rank.to(images.device), fractions, insert=self.insert
            )
            values.append(torch.trapezoid(curve, fractions, dim=1))
        return values[0], values[1]


class DeletionAUC(_Curve):
    """Area under the explained-class probability as pixels are deleted most-relevant-first.

    The canvas (what deleted pixels become) is stated in every result: ``zero`` by default, as in
    RISE's deletion metric; ``mean`` (the image's mean) and ``blur`` are options. Lower is better.
    """

    display_name = "Deletion AUC"
    citation = "Petsiuk, Das, Saenko, RISE, BMVC 2018, arXiv:1806.07421"
    higher_is_better = False

    canvas: Canvas = Field("zero", description="What deleted pixels become.")


class InsertionAUC(_Curve):
    """Area under the explained-class probability as pixels are revealed most-relevant-first.

    Starts from a blurred copy of the image (RISE's insertion canvas) by default. Higher is
    better.
    """

    display_name = "Insertion AUC"
    citation = "Petsiuk, Das, Saenko, RISE, BMVC 2018, arXiv:1806.07421"

    insert: ClassVar[bool] = True
    canvas: Canvas = Field("blur", description="What unrevealed pixels are.")


#: Neighbour offsets and weights of ROAD's noisy linear imputation (axis 1/6, diagonal 1/12).
_NEIGHBOURS = (
    (-1, 0, 1 / 6),
    (1, 0, 1 / 6),
    (0, -1, 1 / 6),
    (0, 1, 1 / 6),
    (-1, -1, 1 / 12),
    (-1, 1, 1 / 12),
    (1, -1, 1 / 12),
    (1, 1, 1 / 12),
)


def linear_impute(image: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """Fill ``missing`` pixels so each is the weighted mean of its 8 neighbours.

    One sparse linear system per image (``scipy.sparse.linalg.spsolve``): missing neighbours
    are unknowns, present ones move to the right-hand side; at the border only the neighbours
    inside the image count. Linear intensity ramps are reproduced exactly away from the border.

    Args:
        image: ``[H, W]`` float image.
        missing: ``[H, W]`` bool, the pixels to fill; at least one pixel must be present.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    h, w = image.shape
    out = image.astype(np.float64).copy()
    if not missing.any():
        return out
    if missing.all():
        raise XaibenchError("cannot impute an image with every pixel removed")
    index = -np.ones((h, w), dtype=np.int64)
    ys, xs = np.nonzero(missing)
    index[ys, xs] = np.arange(len(ys))
    rows, cols, vals = [], [], []
    diag = np.zeros(len(ys))
    rhs = np.zeros(len(ys))
    for dy, dx, weight in _NEIGHBOURS:
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        u, ny, nx = np.flatnonzero(inside), ny[inside], nx[inside]
        diag[u] += weight
        neighbour = index[ny, nx]
        unknown = neighbour >= 0
        rows.append(u[unknown])
        cols.append(neighbour[unknown])
        vals.append(np.full(int(unknown.sum()), -weight))
        np.add.at(rhs, u[~unknown], weight * image[ny[~unknown], nx[~unknown]])
    n = len(ys)
    matrix = coo_matrix(
        (
            np.concatenate([diag, *vals]),
            (np.concatenate([np.arange(n), *rows]), np.concatenate([np.arange(n), *cols])),
        ),
        shape=(n, n),
    ).tocsc()
    out[ys, xs] = spsolve(matrix, rhs)
    return out


class ROAD(FaithfulnessMetric):
    """ROAD: most-relevant-first removal with noisy linear imputation (Rong et al., 2022).

    For each removal level (a share of the pixels, most relevant first) the removed pixels are
    imputed from their neighbours (:func:`linear_impute`) plus Gaussian noise, so the model
    cannot read the removed set's outline from a constant fill; the value is the explained-class
    probability averaged over the levels. Lower is better. One sparse solve per image and level:
    slow on large images, so it is not in the default metric set.
    """

    display_name = "ROAD (MoRF)"
    citation = (
        "Rong et al., A Consistent and Efficient Evaluation Strategy for Attribution Methods, "
        "ICML 2022, arXiv:2202.00449"
    )
    higher_is_better = False

    levels: tuple[float, ...] = Field(
        (0.1, 0.3, 0.5, 0.7, 0.9), min_length=1, description="Shares of pixels removed."
    )
    noise: float = Field(0.01, ge=0, le=1, description="Std of the imputation noise (raw units).")

    def per_sample(
        self,
        score: ScoreFn,
        images: torch.Tensor,
        maps: torch.Tensor,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean explained-class probability over the removal levels, map and random ranking."""
        if any(not 0 < level < 1 for level in self.levels):
            raise XaibenchError(f"ROAD levels must lie strictly between 0 and 1, got {self.levels}")
        b, _, h, w = images.shape
        raw = images[:, 0].detach().cpu().double().numpy()
        values = []
        for rank in (relevance_rank(maps).cpu(), random_rank((b, h * w), generator)):
            scores = []
            for level in self.levels:
                removed = (rank < round(level * h * w)).view(b, h, w).numpy()
                filled = np.stack([linear_impute(raw[i], removed[i]) for i in range(b)])
                noise = torch.randn(filled.shape, generator=generator, dtype=torch.float64)
                x = torch.from_numpy(filled) + self.noise * noise * torch.from_numpy(removed)
                x = x.clamp(0.0, 1.0).to(images.dtype).unsqueeze(1).to(images.device)
                scores.append(score(x).double().cpu())
            values.append(torch.stack(scores, dim=1).mean(dim=1))
        return values[0], values[1]
