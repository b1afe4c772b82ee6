"""The explanation stage of a cell: saliency maps, their scores, sanity checks and galleries.

:class:`ExplainStage` is mixed into :class:`~xaibench.engine.runner.CellRunner`, which provides the
run's configuration, data, components and record helpers. Every saliency method runs on its own:
one that raises fails only its own records (:data:`ISOLATED`), and so does a metric that raises
on one method's maps; the cell's other results stand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from xaibench.analysis import CellMaps
from xaibench.cell_result import CellResult, Gallery, make_record
from xaibench.chance_tally import ChanceTally
from xaibench.config import RunConfig
from xaibench.cut_off_tuning import TunedCutOffs, tune_cut_offs
from xaibench.data.arrays import Rows, SplitArrays
from xaibench.device import Runtime
from xaibench.explain_scoring import MethodScorer, ModelGuard
from xaibench.explain_scoring import restore_inference as restore_inference  # re-exported
from xaibench.gallery_evidence import PROBABILITY_DROP, GalleryEvidence, collect_evidence
from xaibench.isolation import ISOLATED, error_text
from xaibench.metrics.base import (
    ExplainerMetric,
    FaithfulnessMetric,
    MapMetric,
    Metric,
    SaliencyRegionMetric,
    ScoreFn,
)
from xaibench.models.base import Classifier
from xaibench.perturbations.base import Perturbation
from xaibench.progress import Progress
from xaibench.report.gallery import GALLERY_KINDS, SPECIFIC, GalleryPicker
from xaibench.run_data import RunData, batch_slices
from xaibench.saliency.base import SaliencyMethod
from xaibench.sanity import run_sanity_checks


@dataclass
class MethodOutcome:
    """What one saliency method produced in a cell (kept only when it finished)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    explanations: list[pd.DataFrame] = field(default_factory=list)
    galleries: list[Gallery] = field(default_factory=list)
    drift: CellMaps | None = None


class ExplainStage:
    """The saliency stage of :class:`~xaibench.engine.runner.CellRunner` (a mixin)."""

    config: RunConfig
    data: RunData
    metrics: dict[str, Metric]
    saliency: dict[str, SaliencyMethod]
    perturbations: dict[str, Perturbation]
    runtime: Runtime
    progress: Progress
    _resized_masks: set[str]

    if TYPE_CHECKING:  # provided by CellRunner

        def _mask(self, split: SplitArrays, region: str) -> Rows: ...
        def _regions(self, use: str) -> list[str]: ...
        def _coverage_flags(self, region: str, complement: bool) -> dict[str, Any]: ...

    def _skip_explanations(
        self,
        base: dict[str, Any],
        sname: str,
        reason: str,
        metrics: Mapping[str, Metric],
        status: str = "skipped",
    ) -> list[dict[str, Any]]:
        records = []
        for mname, metric in metrics.items():
            regions = self._regions("explain_regions") if metric.needs == "saliency" else [None]
            for region in regions:
                records.append(
                    make_record(
                        base,
                        mname,
                        metric,
                        value=None,
                        n=None,
                        status=status,
                        reason=reason,
                        saliency=sname,
                        region=region,
                    )
                )
        return records

    def _score_fn(self, model: Classifier, target: int) -> ScoreFn:
        """The explained class's probability for raw images, float64, for faithfulness curves.

        Probabilities, not log-odds: deletion and insertion scores are areas under the
        probability curve and ROAD a mean of probabilities, and none of them ranks images, so
        saturation (a probability of exactly 1.0 for a logit margin beyond about 37 in float64)
        moves them by less than 1e-16 and ties nothing that is compared. The softmax is taken in
        float64 from the logits, as the runner's predictions are (it was float32, saturating
        beyond a margin of about 17).
        """
        bs = self.config.train.eval_batch_size
        forward = self.runtime.forward(model)  # inference only: no hooks, no input gradients

        @torch.inference_mode()
        def score(images: torch.Tensor) -> torch.Tensor:
            out = []
            for s in batch_slices(len(images), bs):
                with self.runtime.autocast():
                    logits = forward(self.runtime.to(images[s]))
                out.append(torch.softmax(logits.double(), dim=1)[:, target].cpu())
            return torch.cat(out)

        return score

    def _explain(
        self,
        model: Classifier,
        base: dict[str, Any],
        result: CellResult,
        calls: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Every saliency method on the test images, each on its own.

        A method that raises fails alone: its records are ``failed`` with the error, and the
        other methods, the performance and the Δ results of the cell stand. So does a metric
        that raises on one method's maps (its records for that method are ``failed``).

        Args:
            model: The cell's fitted model.
            base: The cell's record fields.
            result: Where the records go.
            calls: Split name (``val``, ``test``) -> the model's positive call per image at
                the operating threshold, for metrics that need them
                (:class:`~xaibench.metrics.chexlocalize.ChexlocalizeMetric`); None: every
                image called positive.
        """
        cfg = self.config
        kinds = (SaliencyRegionMetric, FaithfulnessMetric, MapMetric, ExplainerMetric)
        scored = {n: m for n, m in self.metrics.items() if isinstance(m, kinds)}
        if not (scored or cfg.sanity.images or cfg.analysis.drift_grid):
            return
        evidence = self._gallery_evidence(result) if cfg.gallery_images else None
        # the fitted weights, to put back if an explainer metric changes them in place
        explainers = any(isinstance(m, ExplainerMetric) for m in scored.values())
        guard = ModelGuard(model) if explainers else None
        for sname, method in self.saliency.items():
            reason = method.supports(model)
            if reason is not None:
                result.records.extend(self._skip_explanations(base, sname, reason, scored))
                continue
            try:
                outcome = self._explain_method(model, base, sname, method, evidence, calls, guard)
            except ISOLATED as exc:
                error = error_text(exc)
                self.progress.log(f"  [red]failed[/red]: saliency {sname}: {error}")
                restore_inference(model)
                result.records.extend(
                    self._skip_explanations(base, sname, error, scored, status="failed")
                )
            else:
                result.records.extend(outcome.records)
                result.explanations.extend(outcome.explanations)
                result.galleries.extend(outcome.galleries)
                if outcome.drift is not None:
                    result.drift_maps[sname] = outcome.drift
            if cfg.sanity.images:
                try:
                    result.records.extend(self._sanity(model, method, base, sname))
                except ISOLATED as exc:
                    error = error_text(exc)
                    self.progress.log(f"  [red]failed[/red]: sanity checks of {sname}: {error}")
                    restore_inference(model)
                    result.records.extend(self._failed_sanity(base, sname, error))

    def _explain_method(
        self,
        model: Classifier,
        base: dict[str, Any],
        sname: str,
        method: SaliencyMethod,
        evidence: GalleryEvidence | None = None,
        calls: Mapping[str, np.ndarray] | None = None,
        guard: ModelGuard | None = None,
    ) -> MethodOutcome:
        """One method's maps on the test images, with every score; raises if the method does.

        The scoring of each batch by every metric kind is :class:`MethodScorer`'s
        (:mod:`xaibench.explain_scoring`); ``guard`` watches the model around explainer metrics.
        """
        cfg, test, task = self.config, self.data.splits["test"], self.data.task
        region_metrics = {
            n: m for n, m in self.metrics.items() if isinstance(m, SaliencyRegionMetric)
        }
        n = len(test) if cfg.max_explain_images is None else min(len(test), cfg.max_explain_images)
        explain_regions = self._regions("explain_regions")
        masks = {region: self._mask(test, region) for region in explain_regions}
        score = self._score_fn(model, task.positive_index)
        gallery_key = self._gallery_key(region_metrics, explain_regions)
        outcome = MethodOutcome()
        tuned = self._tune_cut_offs(model, method, region_metrics, calls)
        test_calls = None if calls is None else calls.get("test")
        chance = ChanceTally(region_metrics, base["seed"], cfg.chance.draws)
        scorer = MethodScorer(self.metrics, model, method, base["seed"], chance, tuned, guard)
        values, floors, errors = scorer.values, scorer.floors, scorer.errors
        drift: list[np.ndarray] = []
        constant = 0  # maps with no variation: no foreground, reported with the scores
        picker = GalleryPicker(cfg.gallery_images, n, base["seed"])
        drops = evidence.drops if evidence is not None else None
        specific = GalleryPicker(cfg.gallery_images, n, base["seed"]) if drops is not None else None
        batches = list(batch_slices(n, cfg.train.eval_batch_size))
        for s in self.progress.track(batches, total=len(batches), description=f"saliency {sname}"):
            batch = test.images[s]  # read once, used by the map and the faithfulness scores
            images = self.runtime.to(batch)
            targets = torch.full((len(images),), task.positive_index, dtype=torch.long)
            targets = self.runtime.to(targets)
            maps = method.explain(model, images, targets).cpu()
            flat = maps.flatten(1)
            constant += int((flat.amax(1) == flat.amin(1)).sum())
            if cfg.analysis.drift_grid:
                grid = cfg.analysis.drift_grid
                small = F.adaptive_avg_pool2d(maps.unsqueeze(1).double(), grid)[:, 0]
                drift.append(small.float().numpy())
            # each region's masks read once per batch, for every region metric
            batch_masks = (
                {region: masks[region][s] for region in explain_regions} if region_metrics else {}
            )
            scorer.add(s, batch, images, targets, maps, batch_masks, score, test_calls)
            if cfg.gallery_images:
                ranked = values.get(gallery_key) if gallery_key else None
                if ranked is not None and gallery_key and gallery_key[0] in errors:
                    ranked = None
                picker.add(s.start, maps.numpy(), ranked[-1].numpy() if ranked else None)
                if specific is not None and drops is not None:
                    specific.add(s.start, maps.numpy(), drops[s])
        if cfg.gallery_images:
            ranked_all = values.get(gallery_key) if gallery_key else None
            if gallery_key and gallery_key[0] in errors:
                ranked_all = None
            outcome.galleries = self._galleries(
                sname, picker, gallery_key, ranked_all, evidence, specific
            )
        if drift:
            outcome.drift = CellMaps(tuple(test.sample_ids[:n]), np.concatenate(drift))
        for mname, error in errors.items():
            self.progress.log(f"  [red]failed[/red]: metric {mname} on {sname}: {error}")
            outcome.records.extend(
                self._skip_explanations(
                    base, sname, error, {mname: self.metrics[mname]}, status="failed"
                )
            )
        for mname, reason in scorer.skipped.items():
            outcome.records.extend(
                self._skip_explanations(base, sname, reason, {mname: self.metrics[mname]})
            )
        for (mname, where), chunks in values.items():
            if mname in errors:
                continue
            per_sample = torch.cat(chunks).numpy()
            scored = self.metrics[mname]
            try:
                if isinstance(scored, (FaithfulnessMetric, MapMetric, ExplainerMetric)):
                    mv = scored.aggregate(per_sample, torch.cat(floors[mname]).numpy())
                else:
                    mv = region_metrics[mname].aggregate(per_sample)
            except ISOLATED as exc:
                outcome.records.append(
                    make_record(
                        base, mname, scored, value=None, n=None, status="failed",
                        reason=error_text(exc), saliency=sname, region=where,
                    )
                )  # fmt: skip
                continue
            details = {"explained_images": n, "constant_maps": constant, **mv.details}
            per_image_chance = chance.per_image(mname, where, len(per_sample))
            if isinstance(scored, SaliencyRegionMetric):
                details.update(chance.details(mname, where, per_sample, per_image_chance))
            if mv.ci is not None:
                details.setdefault("ci_method", "image bootstrap of the mean")
            details.update(tuned.details.get((mname, where or ""), {}))
            if where in self._resized_masks:
                details["mask_resized"] = "nearest"
            if where is not None:
                details.update(self._coverage_flags(where, False))
            outcome.records.append(
                make_record(
                    base,
                    mname,
                    scored,
                    value=mv.value,
                    n=mv.n,
                    saliency=sname,
                    region=where,
                    details={**details, **scored.options()},
                    ci=mv.ci,
                )
            )
            outcome.explanations.append(
                pd.DataFrame(
                    {
                        "backbone": base["backbone"],
                        "strategy": base["strategy"],
                        "seed": base["seed"],
                        "sample_id": list(test.sample_ids[:n]),
                        "label": test.labels[:n].numpy(),
                        "metric": mname,
                        "saliency": sname,
                        "region": where or "",
                        "value": per_sample,
                        "chance": per_image_chance,
                    }
                )
            )
        return outcome

    def _tune_cut_offs(
        self,
        model: Classifier,
        method: SaliencyMethod,
        metrics: Mapping[str, SaliencyRegionMetric],
        calls: Mapping[str, np.ndarray] | None,
    ) -> TunedCutOffs:
        """Cut-offs of metrics with ``threshold: tuned``, on this method's validation maps."""
        cfg, val = self.config, self.data.splits["val"]
        n = len(val) if cfg.max_explain_images is None else min(len(val), cfg.max_explain_images)
        regions = self._regions("explain_regions")

        def explain(s: slice) -> torch.Tensor:
            images = self.runtime.to(val.images[s])
            targets = torch.full((len(images),), self.data.task.positive_index, dtype=torch.long)
            return method.explain(model, images, self.runtime.to(targets)).cpu()

        masks = {r: self._mask(val, r) for r in regions if r in val.regions}
        return tune_cut_offs(
            metrics,
            explain,
            masks,
            regions,
            n,
            None if calls is None else calls.get("val"),
            cfg.train.eval_batch_size,
        )

    def _failed_sanity(self, base: dict[str, Any], sname: str, error: str) -> list[dict[str, Any]]:
        """The two sanity records of a method whose checks raised, ``failed`` with the error."""
        k = min(self.config.sanity.images, len(self.data.splits["test"]))
        return [
            {
                **base, "metric": name, "category": "sanity", "higher_is_better": False,
                "saliency": sname, "perturbation": None, "region": None, "value": None,
                "ci_low": None, "ci_high": None, "n": k, "status": "failed", "reason": error,
                "details": {
                    "passed": None, "threshold": self.config.sanity.threshold, "run_to_run": None,
                },
            }
            for name in ("sanity_model_randomisation", "sanity_target_randomisation")
        ]  # fmt: skip

    def _sanity(
        self, model: Classifier, method: SaliencyMethod, base: dict[str, Any], sname: str
    ) -> list[dict[str, Any]]:
        """Both sanity checks on the first test images, as two ``sanity`` records."""
        cfg, test, task = self.config, self.data.splits["test"], self.data.task
        k = min(cfg.sanity.images, len(test))
        images = self.runtime.to(test.images[:k])
        targets = torch.full((k,), task.positive_index, dtype=torch.long)
        outcome = run_sanity_checks(
            model,
            method,
            images,
            self.runtime.to(targets),
            len(task.class_names),
            steps=cfg.sanity.steps,
            threshold=cfg.sanity.threshold,
            generator=torch.Generator().manual_seed(base["seed"]),
        )
        control = bool(getattr(method, "control", False))
        common = {
            **base,
            "category": "sanity",
            "higher_is_better": False,
            "saliency": sname,
            "perturbation": None,
            "region": None,
            "ci_low": None,
            "ci_high": None,
            "n": k,
        }
        checks = [
            (
                "sanity_model_randomisation",
                outcome.model_similarity,
                outcome.model_passed,
                {"cascade": [{"from": g, "spearman": v} for g, v in outcome.cascade]},
            ),
            (
                "sanity_target_randomisation",
                outcome.target_similarity,
                outcome.target_passed,
                {},
            ),
        ]
        records = []
        for name, value, passed, extra in checks:
            reason = None
            if value is None:
                reason = "maps constant: similarity undefined"
            elif outcome.run_to_run is None:
                reason = "repeated maps constant: run-to-run similarity undefined"
            records.append(
                {
                    **common,
                    "metric": name,
                    "value": value,
                    "status": "ok" if reason is None else "skipped",
                    "reason": reason,
                    "details": {
                        "passed": passed,
                        "threshold": cfg.sanity.threshold,
                        "run_to_run": outcome.run_to_run,
                        "control": control,
                        **extra,
                    },
                }
            )
        return records

    def _gallery_key(
        self, region_metrics: Mapping[str, SaliencyRegionMetric], regions: Sequence[str]
    ) -> tuple[str, str | None] | None:
        """The per-image score that picks the best and worst gallery images.

        IoU on the task's primary region when it runs (the study's localisation score), else the
        first configured region metric on that region; None when no region metric runs.
        """
        primary = next((r for r in self.data.task.regions_of_interest if r in regions), None)
        if primary is None or not region_metrics:
            return None
        name = "iou_region" if "iou_region" in region_metrics else next(iter(region_metrics))
        return (name, primary)

    def _gallery_evidence(self, result: CellResult) -> GalleryEvidence:
        """The cell's gallery labels, outlines and specific region (``xaibench.gallery_evidence``).

        Every explain and perturbed region the test split has masks for is outlined, the
        primary region first.
        """
        test, task = self.data.splits["test"], self.data.task
        primary = next((r for r in task.regions_of_interest if r in test.regions), None)
        scored = [
            *([primary] if primary else []),
            *self._regions("explain_regions"),
            *self._regions("perturb_regions"),
        ]
        outlines = [r for r in dict.fromkeys(scored) if r in test.regions]
        return collect_evidence(
            records=result.records,
            predictions=result.predictions,
            sample_ids=list(test.sample_ids),
            labels=test.labels.numpy(),
            class_names=list(task.class_names),
            positive_index=task.positive_index,
            outlines=outlines,
            primary=primary,
            perturbations=list(self.perturbations),
        )

    def _gallery(
        self,
        method: str,
        kind: str,
        index: list[int],
        maps: np.ndarray,
        scores: tuple[float | None, ...],
        score_metric: str | None,
        region: str | None,
        evidence: GalleryEvidence | None,
        perturbation: str | None = None,
    ) -> Gallery:
        """One gallery of images ``index`` with their maps, outlines and panel labels."""
        test = self.data.splits["test"]
        outlines = list(evidence.outlines) if evidence is not None else ([region] if region else [])
        masks = {r: self._mask(test, r)[index].numpy().astype(bool) for r in outlines}
        if score_metric == PROBABILITY_DROP:
            label = f"drop {region}"
        elif score_metric:
            label = f"{score_metric} {region}" if region else score_metric
        else:
            label = None
        return Gallery(
            saliency=method,
            kind=kind,
            sample_ids=tuple(test.sample_ids[i] for i in index),
            scores=scores,
            score_metric=score_metric,
            region=region,
            images=test.images[index, 0].numpy().copy(),
            maps=maps,
            masks=masks or None,
            score_label=label,
            classes=tuple(evidence.classes[i] for i in index) if evidence else (),
            called=tuple(evidence.called[i] for i in index) if evidence else (),
            positive_probs=tuple(
                None if np.isnan(evidence.p_positive[i]) else float(evidence.p_positive[i])
                for i in index
            )
            if evidence
            else (),
            positive_class=evidence.positive_class if evidence else None,
            perturbation=perturbation,
        )

    def _galleries(
        self,
        method: str,
        picker: GalleryPicker,
        key: tuple[str, str | None] | None,
        chunks: list[torch.Tensor] | None,
        evidence: GalleryEvidence | None = None,
        specific: GalleryPicker | None = None,
    ) -> list[Gallery]:
        test = self.data.splits["test"]
        region = (
            key[1]
            if key
            else next((r for r in self.data.task.regions_of_interest if r in test.regions), None)
        )
        per_image = torch.cat(chunks).numpy() if chunks else None
        out = []
        picks = picker.picks()
        for kind in GALLERY_KINDS:
            picked = picks.get(kind)
            if picked is None:
                continue
            index, _, maps = picked
            scores = tuple(
                None if per_image is None or np.isnan(per_image[i]) else float(per_image[i])
                for i in index
            )
            score_metric = key[0] if key else None
            out.append(
                self._gallery(method, kind, index, maps, scores, score_metric, region, evidence)
            )
        chosen = evidence.specific if evidence is not None else None
        ranked = specific.picks().get("best") if specific is not None else None
        if chosen is not None and ranked is not None:
            index, values, maps = ranked
            out.append(
                self._gallery(
                    method, SPECIFIC, index, maps, tuple(values), PROBABILITY_DROP,
                    chosen.region, evidence, chosen.perturbation,
                )
            )  # fmt: skip
        return out
