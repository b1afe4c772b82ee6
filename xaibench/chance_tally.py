"""Per-image chance levels of one saliency method's region metrics in a cell (contract C1).

The explanation stage (:mod:`xaibench.explain_stage`) feeds each batch's maps, masks and scores
to a :class:`ChanceTally` and asks it for every record's chance details at the end.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from xaibench.isolation import ISOLATED, error_text
from xaibench.metrics.base import SaliencyRegionMetric
from xaibench.metrics.chance import SHIFT_NULL, chance_details


class ChanceTally:
    """Per-image chance levels of one method's region metrics, batch by batch (contract C1).

    Each metric draws its shift-null moves from its own generator, seeded with the cell's seed,
    so its chance values depend neither on the other metrics nor on the order of the regions
    (:meth:`~xaibench.metrics.base.SaliencyRegionMetric.chance_levels` starts every region from
    the same state). A metric whose chance level raises keeps its scores: only its chance
    fields are None, with the error in ``chance_reason``.
    """

    def __init__(self, metrics: Mapping[str, SaliencyRegionMetric], seed: int, draws: int):
        self.metrics = metrics
        self.draws = draws
        self.generators = {name: torch.Generator().manual_seed(seed) for name in metrics}
        self.values: dict[tuple[str, str], list[torch.Tensor]] = {}
        self.kind: dict[tuple[str, str], tuple[str, bool]] = {}
        self.errors: dict[str, str] = {}

    def add(
        self,
        name: str,
        maps: torch.Tensor,
        masks: Mapping[str, torch.Tensor],
        scores: Mapping[str, torch.Tensor],
        context: Any = None,
    ) -> None:
        """The batch's chance values, NaN wherever the metric's own value is undefined.

        ``context`` (a :class:`~xaibench.metrics.chexlocalize.RegionContext`: the model's calls
        and tuned cut-offs) goes to metrics that take one (``needs_context``).
        """
        metric = self.metrics[name]
        if name in self.errors or metric.best is None:
            return
        generator = self.generators[name]
        try:
            if getattr(metric, "needs_context", False):
                levels = metric.chance_levels(  # type: ignore[call-arg]
                    maps, masks, generator, self.draws, context=context
                )
            else:
                levels = metric.chance_levels(maps, masks, generator, self.draws)
        except ISOLATED as exc:
            self.errors[name] = error_text(exc)
            return
        for region, level in levels.items():
            if level is None:
                continue
            chance = level.values.detach().cpu().double()
            if chance.shape != scores[region].shape:
                self.errors[name] = (
                    f"chance level of shape {tuple(chance.shape)} for "
                    f"{tuple(scores[region].shape)} scores"
                )
                return
            chance = torch.where(torch.isnan(scores[region]), torch.nan, chance)
            self.values.setdefault((name, region), []).append(chance)
            self.kind[(name, region)] = (level.method, level.exact)

    def per_image(self, name: str, region: str | None, n: int) -> np.ndarray:
        """Per-image chance of ``name`` on ``region`` (NaN without one)."""
        chunks = self.values.get((name, region or ""), []) if name not in self.errors else []
        if region is None or not chunks or sum(len(c) for c in chunks) != n:
            return np.full(n, np.nan)
        return torch.cat(chunks).numpy()

    def details(
        self, name: str, region: str | None, values: np.ndarray, chance: np.ndarray
    ) -> dict[str, Any]:
        """Contract C1's details of ``name`` on ``region``."""
        best = self.metrics[name].best
        kind = self.kind.get((name, region or ""))
        if kind is None or name in self.errors:
            reason = self.errors.get(name, "no chance level: the metric declares no best value")
            return {
                "chance": None, "chance_method": None, "chance_exact": None, "best": best,
                "normalised": None, "normalised_ci": None, "p_chance": None,
                "chance_reason": reason,
            }  # fmt: skip
        hits = self.metrics[name].hits
        details = chance_details(
            values, chance, best=best, method=kind[0], exact=kind[1], hits=hits
        )
        if kind[0] == SHIFT_NULL:
            details["chance_draws"] = self.draws
        return details
