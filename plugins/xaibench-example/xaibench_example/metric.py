"""Top-fraction hit rate: a saliency-region metric, to show the metric contract."""

from __future__ import annotations

import torch
from pydantic import Field

from xaibench.metrics.base import SaliencyRegionMetric


class TopFractionHit(SaliencyRegionMetric):
    """Share of the map's most salient pixels that lie inside the region (higher is better).

    The most salient pixels are those at or above the map's ``1 - fraction`` quantile, so ties
    at the cut are all counted (no arbitrary tie-breaking; a constant map scores the region's
    share of the image, its chance level). NaN where the region is empty.
    """

    display_name = "Top-fraction hit (example)"
    higher_is_better = True

    fraction: float = Field(0.05, gt=0.0, le=1.0, description="Share of pixels counted as top.")

    def per_sample(self, maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Return ``[B]`` float64 scores for maps and masks ``[B, H, W]``."""
        flat = maps.detach().flatten(1).to(torch.float64)
        region = masks.flatten(1)
        cut = torch.quantile(flat, 1.0 - self.fraction, dim=1, keepdim=True)
        top = flat >= cut
        hits = (top & region).sum(1).to(torch.float64) / top.sum(1).to(torch.float64)
        return torch.where(region.any(1), hits, torch.full_like(hits, float("nan")))
