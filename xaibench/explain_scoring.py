"""Per-batch scoring of one saliency method's maps by every explanation metric of a cell.

:class:`MethodScorer` is what :mod:`xaibench.explain_stage` hands each batch of maps to. It feeds
each metric kind (:mod:`xaibench.metrics.base`) what it consumes:

* region metrics: the maps and every explain region's masks (with their chance levels);
* faithfulness metrics: the model's score function, the raw images and the maps;
* map metrics: the maps alone, once per method (not once per region), then the floor of the
  same shape of i.i.d. uniform noise;
* explainer metrics: the model, the saliency method, the images and targets on the run's
  device, and the maps, behind a :class:`ModelGuard`.

Every map and explainer metric draws from its own generator, seeded with the cell's seed for
each method, so its values do not depend on which other metrics run (faithfulness metrics share
one, in their configured order, as they always have). A metric
that raises (or returns the wrong shape) fails alone: its error is kept in ``errors`` and the
method's other scores stand.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from xaibench.chance_tally import ChanceTally
from xaibench.cut_off_tuning import TunedCutOffs
from xaibench.errors import XaibenchError
from xaibench.isolation import ISOLATED, error_text
from xaibench.metrics.base import (
    ExplainerMetric,
    FaithfulnessMetric,
    MapMetric,
    Metric,
    SaliencyRegionMetric,
    ScoreFn,
)
from xaibench.metrics.chexlocalize import ChexlocalizeMetric, RegionContext
from xaibench.models.base import Classifier
from xaibench.saliency.base import SaliencyMethod

#: Hook tables of a module, and torch's global ones: what an explainer metric must not leave.
_MODULE_HOOKS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_pre_hooks_with_kwargs",
)
_GLOBAL_HOOKS = (
    "_global_forward_hooks",
    "_global_forward_pre_hooks",
    "_global_backward_hooks",
    "_global_backward_pre_hooks",
)


def restore_inference(model: nn.Module) -> None:
    """Back to inference after a method failed half-way: eval mode, no gradients kept."""
    model.eval()
    model.zero_grad(set_to_none=True)


class ModelGuard:
    """What an explainer metric must leave as it found the cell's model, checked and restored.

    An :class:`~xaibench.metrics.base.ExplainerMetric` gets the cell's own model (copying a large
    model per batch for every metric would cost more than the metric), so every call runs inside
    :meth:`check`: afterwards the model is back in eval mode, its gradients are None, its
    parameters' ``requires_grad`` flags are as before, and the hooks the metric registered (on
    the model's modules or torch's global tables) are removed. A metric that changed a weight
    or buffer in place (a randomisation test that forgot ``copy.deepcopy``) is caught by a
    per-tensor fingerprint (identity, storage, sum and a position-weighted sum, so a permutation
    shows too), and the weights are put back from the snapshot taken when the guard was made:
    the other methods and metrics of the cell score the fitted model.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.snapshot = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        self.fingerprint = self._fingerprint()

    def _fingerprint(self) -> tuple[list[tuple[str, int, int]], torch.Tensor]:
        identity = []
        sums = []
        for name, tensor in self.model.state_dict(keep_vars=True).items():
            identity.append((name, id(tensor), tensor.data_ptr()))
            flat = tensor.detach().reshape(-1).float()
            ramp = torch.arange(flat.numel(), device=flat.device, dtype=flat.dtype)
            sums.append(torch.stack([flat.sum(), (flat * ramp).sum()]))
        stacked = torch.stack(sums).cpu() if sums else torch.zeros(0, 2)
        return identity, stacked

    def _hooks(self) -> dict[tuple[str, str], set[int]]:
        tables: dict[tuple[str, str], set[int]] = {}
        for where, module in self.model.named_modules():
            for attr in _MODULE_HOOKS:
                tables[(where, attr)] = set(getattr(module, attr, {}))
        glob = nn.modules.module
        for attr in _GLOBAL_HOOKS:
            tables[("torch", attr)] = set(getattr(glob, attr, {}))
        return tables

    def _remove_new_hooks(self, before: dict[tuple[str, str], set[int]]) -> int:
        removed = 0
        modules = dict(self.model.named_modules())
        for (where, attr), keys in self._hooks().items():
            owner: Any = nn.modules.module if where == "torch" else modules[where]
            table = getattr(owner, attr)
            for key in keys - before.get((where, attr), set()):
                del table[key]
                removed += 1
        return removed

    def check(self, call: Callable[[], Any]) -> Any:
        """Run ``call``, restore the model, and raise if it changed the model in place.

        Raises:
            XaibenchError: The call changed a weight or buffer in place (weights restored
                first) or left hooks on the model (removed first).
        """
        flags = {name: p.requires_grad for name, p in self.model.named_parameters()}
        hooks = self._hooks()
        try:
            return call()
        finally:
            restore_inference(self.model)
            for name, param in self.model.named_parameters():
                param.requires_grad_(flags.get(name, param.requires_grad))
            removed = self._remove_new_hooks(hooks)
            changed = self._restore_weights()
            if changed:
                raise XaibenchError(
                    "changed the cell's model in place (weights or buffers); an explainer "
                    "metric must work on copy.deepcopy(model). The weights were restored"
                )
            if removed:
                raise XaibenchError(f"left {removed} hook(s) on the model (removed)")

    def _restore_weights(self) -> bool:
        identity, sums = self._fingerprint()
        if identity == self.fingerprint[0] and torch.equal(sums, self.fingerprint[1]):
            return False
        self.model.load_state_dict(self.snapshot)
        return True


def _per_image(values: object, n: int, what: str) -> torch.Tensor:
    """``values`` as a CPU float64 ``[n]`` tensor, or a one-line error naming ``what``."""
    if not isinstance(values, torch.Tensor):
        raise XaibenchError(f"{what} returned {type(values).__name__}, expected a torch tensor")
    if tuple(values.shape) != (n,):
        raise XaibenchError(
            f"{what} returned shape {tuple(values.shape)}, expected ({n},): one value per image"
        )
    return values.detach().double().cpu()


class MethodScorer:
    """Every metric's per-image values for one saliency method in a cell, batch by batch.

    Attributes:
        values: ``(metric, region)`` -> per-batch values; region None for metrics without one.
        floors: Metric -> per-batch floor values (faithfulness, map and explainer metrics).
        errors: Metric -> the error that failed it on this method's maps.
        skipped: Explainer metric -> why it does not apply to this method or model.
    """

    def __init__(
        self,
        metrics: Mapping[str, Metric],
        model: Classifier,
        method: SaliencyMethod,
        seed: int,
        chance: ChanceTally,
        tuned: TunedCutOffs,
        guard: ModelGuard | None = None,
    ):
        self.model, self.method, self.chance, self.tuned = model, method, chance, tuned
        self.region = {n: m for n, m in metrics.items() if isinstance(m, SaliencyRegionMetric)}
        self.faithfulness = {n: m for n, m in metrics.items() if isinstance(m, FaithfulnessMetric)}
        self.map = {n: m for n, m in metrics.items() if isinstance(m, MapMetric)}
        self.explainer = {n: m for n, m in metrics.items() if isinstance(m, ExplainerMetric)}
        self.guard = guard
        self.values: dict[tuple[str, str | None], list[torch.Tensor]] = {}
        self.floors: dict[str, list[torch.Tensor]] = {}
        self.errors: dict[str, str] = dict(tuned.errors)
        self.skipped: dict[str, str] = {}
        for name, metric in self.explainer.items():
            try:
                reason = metric.supports(model, method)
            except ISOLATED as exc:
                self.errors[name] = error_text(exc)
                continue
            if reason is not None:
                self.skipped[name] = reason
        # One generator per map and explainer metric: its values do not depend on the other
        # metrics run. Faithfulness metrics share one, in their configured order, as before.
        self.generators = {
            name: torch.Generator().manual_seed(seed) for name in [*self.map, *self.explainer]
        }
        self.faithfulness_generator = torch.Generator().manual_seed(seed)

    def _keep(self, name: str, value: torch.Tensor, floor: torch.Tensor | None = None) -> None:
        self.values.setdefault((name, None), []).append(value)
        if floor is not None:
            self.floors.setdefault(name, []).append(floor)

    def add(
        self,
        s: slice,
        batch: torch.Tensor,
        images: torch.Tensor,
        targets: torch.Tensor,
        maps: torch.Tensor,
        masks: Mapping[str, torch.Tensor],
        score: ScoreFn,
        calls: Any = None,
    ) -> None:
        """Score one batch: raw ``batch`` (CPU), ``images``/``targets`` on the device, CPU maps.

        Args:
            s: The batch's slice of the explained test images.
            batch: ``[B, 1, H, W]`` raw images as read (faithfulness metrics re-score them).
            images: The same images on the run's device (explainer metrics explain them again).
            targets: ``[B]`` explained class indices on the run's device.
            maps: ``[B, H, W]`` the method's maps, CPU.
            masks: Region -> ``[B, H, W]`` masks of the batch (region metrics only).
            score: The explained class's probability for raw images.
            calls: The model's positive calls on the test images (CheXlocalize), or None.
        """
        self._regions(s, maps, masks, calls)
        n = len(maps)
        for name, fmetric in self.faithfulness.items():
            if name not in self.errors:
                try:
                    value, floor = fmetric.per_sample(
                        score, batch, maps, self.faithfulness_generator
                    )
                    self._keep(name, value.double(), floor.double())
                except ISOLATED as exc:
                    self.errors[name] = error_text(exc)
        for name, mmetric in self.map.items():
            if name not in self.errors:
                try:
                    value = _per_image(mmetric.per_sample(maps), n, "per_sample()")
                    floor = _per_image(mmetric.floor(maps, self.generators[name]), n, "floor()")
                    self._keep(name, value, floor)
                except ISOLATED as exc:
                    self.errors[name] = error_text(exc)
        for name, emetric in self.explainer.items():
            if name not in self.errors and name not in self.skipped:
                try:
                    value, floor = self._explainer(emetric, name, images, targets, maps)
                    self._keep(name, value, floor)
                except ISOLATED as exc:
                    self.errors[name] = error_text(exc)

    def _explainer(
        self,
        metric: ExplainerMetric,
        name: str,
        images: torch.Tensor,
        targets: torch.Tensor,
        maps: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        def call() -> Any:
            return metric.per_sample(
                self.model, self.method, images, targets, maps, self.generators[name]
            )

        out = self.guard.check(call) if self.guard is not None else call()
        if not (isinstance(out, tuple) and len(out) == 2):
            raise XaibenchError(
                f"per_sample() returned {type(out).__name__}, expected (values, floor)"
            )
        n = len(maps)
        return _per_image(out[0], n, "per_sample() values"), _per_image(
            out[1], n, "per_sample() floor"
        )

    def _regions(
        self, s: slice, maps: torch.Tensor, masks: Mapping[str, torch.Tensor], calls: Any
    ) -> None:
        for name, metric in self.region.items():
            if name in self.errors:
                continue
            context = None
            if isinstance(metric, ChexlocalizeMetric):
                context = RegionContext(
                    None if calls is None else torch.from_numpy(calls[s]),
                    self.tuned.cut_offs.get(name, {}),
                )
            try:
                regional = (
                    metric.per_sample_regions(maps, masks, context)
                    if isinstance(metric, ChexlocalizeMetric)
                    else metric.per_sample_regions(maps, masks)
                )
                scores = {region: value.double() for region, value in regional.items()}
            except ISOLATED as exc:
                self.errors[name] = error_text(exc)
                continue
            for region, value in scores.items():
                self.values.setdefault((name, region), []).append(value)
            self.chance.add(name, maps, masks, scores, context)
