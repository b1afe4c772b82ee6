"""Pixel shuffle inside the region: same intensities, no structure."""

from __future__ import annotations

import torch

from xaibench.perturbations.base import Perturbation


class RegionShuffle(Perturbation):
    """Permute the region's pixels among the region's positions, independently per image.

    The region keeps its exact intensity histogram (mean, spread, every quantile) but loses all
    spatial structure: edges, texture and shape within the region are gone, its outline is not.
    Comparing it with ``mean`` separates "the model reads the region's intensity distribution"
    (shuffle does not hurt) from "the model reads its structure" (shuffle hurts).

    Each permutation is uniform over the region's pixels and drawn from ``generator``; one random
    key is drawn per pixel of the batch, so the result depends only on the seed, the batch shape
    and the masks. It works for a mask of any size, including the complement of a small region
    (the whole background is shuffled) and a region of one pixel (nothing moves).
    """

    display_name = "Region shuffle"

    def apply(
        self, images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """Shuffle the masked pixels of each image with a permutation drawn from ``generator``."""
        b, c, h, w = images.shape
        n = h * w
        inside = masks.reshape(b, n)
        # float64 keys: with float32's 2**24 values, a 256 x 256 region would have ~100 ties.
        keys = torch.rand(
            (b, n), generator=generator, device=generator.device, dtype=torch.float64
        ).to(images.device)
        position = torch.arange(n, device=images.device, dtype=torch.float64)
        # Region pixels get random keys in [0, 1); outside pixels keys above 1 in raster order.
        # Sorting then lists the region's positions in random order followed by the outside in
        # raster order, while sorting "outside?" lists the region's positions in raster order
        # followed by the same outside order. Pairing the two orders moves region pixels among
        # region positions and maps every outside pixel to itself.
        keys = torch.where(inside, keys, 1.0 + position)
        source = torch.sort(keys, dim=1, stable=True).indices
        target = torch.sort((~inside).to(torch.int8), dim=1, stable=True).indices
        flat = images.reshape(b, c, n)
        gathered = flat.gather(2, source.unsqueeze(1).expand(b, c, n))
        shuffled = torch.empty_like(flat).scatter_(2, target.unsqueeze(1).expand(b, c, n), gathered)
        # Outside pixels already map to themselves; the where only makes that bit-exact by
        # construction rather than by argument.
        return torch.where(masks.unsqueeze(1), shuffled.reshape(b, c, h, w), images)
