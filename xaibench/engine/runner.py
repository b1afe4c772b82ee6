"""The run: data once, then one cell per (backbone, strategy, seed), each through every stage.

Flow, one direction only::

    task + dataset -> patient-level split -> split arrays on scratch disk (shared by all cells)
    cell: build backbone -> strategy prepares & fits -> predictions (val threshold, test metrics)
          -> region perturbations -> Delta metrics
          -> saliency maps (batched) -> region metrics per image
    -> records (one per cell x metric x method x region) -> results files -> leaderboards

A cell that raises is recorded as ``failed`` with its error; the other cells still run.

Every stage reads its images batch by batch (:mod:`xaibench.data.arrays`), and perturbed test
images shared between cells are kept on scratch disk, so a run's memory does not grow with the
number of images beyond its per-image score tables.
"""

from __future__ import annotations

import dataclasses
import random
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from xaibench.cache import TensorCache, content_key
from xaibench.cell_result import CellResult, Gallery, make_record
from xaibench.config import RunConfig
from xaibench.control_regions import ControlRows, FieldRows
from xaibench.control_stage import COMPLEMENT_REASON, ControlStage
from xaibench.data.arrays import ImageWriter, LazyRows, MappedRows, Rows, SplitArrays, read_ahead
from xaibench.data.check import FULL_MASK_FRACTION
from xaibench.device import Runtime, resolve_device
from xaibench.engine.fit_cache import FitCache, fit_key
from xaibench.engine.grid import Cell, build_cells, create_backbone
from xaibench.errors import XaibenchError
from xaibench.explain_stage import ISOLATED, ExplainStage, error_text
from xaibench.metrics.base import (
    Metric,
    PerformanceMetric,
    PerturbationMetric,
    Predictions,
)
from xaibench.metrics.binarize import align_mask
from xaibench.metrics.explanation import DeltaRegion
from xaibench.metrics.functional import youden_threshold
from xaibench.models.base import Classifier
from xaibench.perturbations.base import Perturbation
from xaibench.plugins import Components
from xaibench.prediction_scores import LOG_PROB_PREFIX, PROB_PREFIX
from xaibench.progress import NullProgress, Progress
from xaibench.run_data import (
    REGION_USES,
    RunData,
    batch_slices,
    empty_regions,
    prepare_data,
    region_coverage,
    usable_regions,
)
from xaibench.saliency.base import SaliencyMethod
from xaibench.stats.intervals import study_wald_ci
from xaibench.strategies.base import FitContext

__all__ = [
    "PERTURBED_CACHE_BYTES",
    "REGION_USES",
    "CellResult",
    "CellRunner",
    "Gallery",
    "RunData",
    "empty_regions",
    "predict_log_probs",
    "predictions_from_log_probs",
    "prepare_data",
    "region_coverage",
    "seed_everything",
    "usable_regions",
]

#: Scratch-disk bytes kept for perturbed test images shared between cells (recomputed beyond).
PERTURBED_CACHE_BYTES = 16 * 1024**3

#: A region covering at least this share of a test image is flagged (``near_full_region``):
#: perturbing it edits the whole image, and its complement almost nothing. The same share makes
#: ``xaibench data check`` report a mask as (almost) full.
NEAR_FULL_COVERAGE = FULL_MASK_FRACTION


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, and ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


@torch.inference_mode()
def predict_log_probs(
    model: Classifier, images: Rows, batch_size: int, runtime: Runtime | None = None
) -> np.ndarray:
    """Float64 log-softmax of the logits ``[N, C]`` (CPU) for raw images, read batch by batch.

    Log-probabilities, not probabilities: a confident model's softmax saturates (in float32
    every logit margin beyond about 17 gives exactly 1.0), so confident images would tie and
    corrupt every rank-based score (AUC, Δ). The log-softmax is taken in float64 from the
    logits, and :func:`predictions_from_log_probs` derives both the probabilities (thresholds,
    calibration) and the order-keeping log-odds (ranks) from it.
    """
    runtime = runtime or Runtime()
    model.eval()
    forward = runtime.forward(model)
    out = []
    for batch in read_ahead(images, list(batch_slices(len(images), batch_size))):
        with runtime.autocast():
            logits = forward(runtime.to(batch))
        out.append(torch.log_softmax(logits.double(), dim=1).cpu())
    return torch.cat(out).numpy()


def predictions_from_log_probs(
    labels: np.ndarray, log_probs: np.ndarray, positive_class: int, threshold: float
) -> Predictions:
    """:class:`Predictions` with probabilities ``exp(log_probs)`` and the log-probs kept."""
    log_probs = np.asarray(log_probs, dtype=np.float64)
    return Predictions(labels, np.exp(log_probs), positive_class, threshold, log_probs=log_probs)


class CellRunner(ExplainStage, ControlStage):
    """Runs cells of one run against shared data; picklable state only (for remote executors)."""

    def __init__(
        self,
        config: RunConfig,
        components: Components,
        data: RunData,
        progress: Progress | None = None,
    ) -> None:
        self.config = config
        self.components = components
        self.data = data
        self.progress = progress or NullProgress()
        self.runtime = Runtime(resolve_device(config.device), config.precision, config.compile)
        self.feature_cache = (
            TensorCache(Path(config.cache_dir) if config.cache_dir else None)
            if config.cache
            else None
        )
        self.metrics: dict[str, Metric] = {
            ref.key: components.metrics.create(ref.name, ref.options) for ref in config.metrics
        }
        self.perturbations: dict[str, Perturbation] = {
            ref.key: components.perturbations.create(ref.name, ref.options)
            for ref in config.perturbations
        }
        self.saliency: dict[str, SaliencyMethod] = {
            ref.key: components.saliency.create(ref.name, ref.options) for ref in config.saliency
        }
        self._perturbed: dict[tuple[str, str, bool, int, int | None], LazyRows] = {}
        # Control masks per (region, seed, draw): computed once, shared by every perturbation.
        self._controls: dict[tuple[str, int, int], ControlRows] = {}
        self._fields: FieldRows | None = None  # the test images' field of view, found once
        self._perturbed_bytes = 0
        # Perturbed images are worth keeping only for a later cell of the same seed.
        self._cells_per_seed = Counter(cell.seed for cell in build_cells(config))
        self._resized_masks: set[str] = set()

    def __call__(self, cell: Cell) -> CellResult:
        """Run one cell; failures become a ``failed`` result instead of an exception."""
        result = CellResult(cell)
        start = time.perf_counter()
        self.progress.log(f"[bold]cell[/bold] {cell.label()}")
        try:
            self._run(cell, result)
        except ISOLATED as exc:
            result.status = "failed"
            result.error = f"{type(exc).__name__}: {exc}"
            result.traceback = traceback.format_exc()
            self.progress.log(f"  [red]failed[/red]: {result.error}")
        result.seconds = round(time.perf_counter() - start, 3)
        return result

    # --- stages -------------------------------------------------------------------------------

    def _base(self, cell: Cell, random_init: bool) -> dict[str, Any]:
        return {
            "task": self.config.task,
            "dataset": self.config.dataset.name,
            "backbone": cell.backbone.key,
            "strategy": cell.strategy.key,
            "seed": cell.seed,
            "random_init": random_init,
        }

    def _run(self, cell: Cell, result: CellResult) -> None:
        cfg, data, task = self.config, self.data, self.data.task
        seed_everything(cell.seed)
        factory = create_backbone(self.components, cell.backbone)
        weights = factory.locate_weights(cell.backbone.key)
        result.random_init = weights.random_init
        result.weights = weights.describe()
        strategy = self.components.strategies.create(cell.strategy.name, cell.strategy.options)
        model = strategy.prepare(factory.build(weights), len(task.class_names))
        model.to(self.runtime.device)
        context = FitContext(
            generator=torch.Generator().manual_seed(cell.seed),
            positive_class=task.positive_index,
            progress=self.progress,
            cache=self.feature_cache,
            runtime=self.runtime,
            feature_key=content_key(
                "features-v1",
                f"{type(factory).__module__}:{type(factory).__qualname__}",
                factory.model_dump(mode="json", exclude={"weights"}),
                # random weights depend on the cell's seed; real weights only on their hash
                ["random", cell.seed] if weights.random_init else weights.sha256,
                dataclasses.asdict(model.backbone.input_spec),
                data.dataset.fingerprint(),
                # bf16 features differ from fp32 ones beyond rounding (keys of fp32 unchanged)
                *(["bf16"] if cfg.precision == "bf16" else []),
            ),
        )
        report = None
        fits = FitCache(self.feature_cache.root.parent) if self.feature_cache else None
        key = fit_key(
            context.feature_key,
            getattr(type(factory), "version", None),
            cell.strategy.model_dump(mode="json"),
            f"{type(strategy).__module__}:{type(strategy).__qualname__}",
            getattr(type(strategy), "version", None),
            cell.seed,
            cfg.train.model_dump(mode="json"),
            cfg.split.model_dump(mode="json"),
            data.split_sizes,
            cfg.device,
            cfg.precision,
            *(["compile"] if cfg.compile else []),  # keys of eager runs unchanged
        )
        if fits is not None:
            report = fits.load(key, model)
            if report is not None:
                self.progress.log("  trained model from the cache (not trained again)")
        if report is None:
            report = strategy.fit(
                model, data.splits["train"], data.splits["val"], cfg.train, context
            )
            if fits is not None:
                fits.save(key, model, report)
        result.fit = {**report.__dict__}
        model.eval()

        base = self._base(cell, result.random_init)
        pos = task.positive_index
        bs = cfg.train.eval_batch_size
        val, test = data.splits["val"], data.splits["test"]
        # The operating threshold is a probability (calls are ``probability >= threshold``);
        # float64 probabilities saturate only beyond a logit margin of about 37.
        val_probs = np.exp(predict_log_probs(model, val.images, bs, self.runtime))
        threshold = youden_threshold(val.labels.numpy() == pos, val_probs[:, pos])
        test_log_probs = predict_log_probs(model, test.images, bs, self.runtime)
        intact = predictions_from_log_probs(test.labels.numpy(), test_log_probs, pos, threshold)
        result.fit["threshold"] = threshold
        result.predictions.append(self._prediction_frame(base, test, intact, None, None))

        for name, metric in self.metrics.items():
            if isinstance(metric, PerformanceMetric):
                record = self._score(base, name, metric, lambda m=metric: m.compute(intact))
                if (
                    cfg.ci == "wald_all"
                    and record["value"] is not None
                    and record["ci_low"] is not None
                ):
                    low, high = study_wald_ci(record["value"], len(intact.labels))
                    record.update(ci_low=low, ci_high=high)
                    record["details"] = {**record["details"], "ci_method": "wald_all"}
                result.records.append(record)

        self._perturb(model, base, intact, result)
        # The model's calls (probability >= the operating threshold) for CheXlocalize's slices.
        calls = {"val": val_probs[:, pos] >= threshold, "test": intact.scores >= threshold}
        self._explain(model, base, result, calls)
        result.records.extend(self._skipped_region_records(base))
        auc = next((r["value"] for r in result.records if r["metric"] == "auc"), None)
        self.progress.log(f"  done: auc={auc if auc is None else round(auc, 3)}")

    def _score(
        self, base: dict[str, Any], name: str, metric: Metric, compute: Any, **where: Any
    ) -> dict[str, Any]:
        try:
            mv = compute()
        except XaibenchError as exc:  # e.g. no positives: recorded, not fatal
            return make_record(
                base, name, metric, value=None, n=None, status="skipped", reason=str(exc), **where
            )
        except ISOLATED as exc:  # a metric that raises fails its own record, not the cell
            self.progress.log(f"  [red]failed[/red]: metric {name}: {error_text(exc)}")
            return make_record(
                base,
                name,
                metric,
                value=None,
                n=None,
                status="failed",
                reason=error_text(exc),
                **where,
            )
        return make_record(
            base, name, metric, value=mv.value, n=mv.n, details=mv.details, ci=mv.ci, **where
        )

    def _prediction_frame(
        self,
        base: dict[str, Any],
        split: SplitArrays,
        preds: Predictions,
        perturbation: str | None,
        region: str | None,
    ) -> pd.DataFrame:
        frame = pd.DataFrame(
            {
                "backbone": base["backbone"],
                "strategy": base["strategy"],
                "seed": base["seed"],
                "split": split.name,
                "sample_id": list(split.sample_ids),
                "label": preds.labels,
                "perturbation": perturbation or "",
                "region": region or "",
            }
        )
        for i, name in enumerate(self.data.task.class_names):
            frame[f"{PROB_PREFIX}{name}"] = preds.probs[:, i]
        frame["called_positive"] = preds.scores >= preds.threshold
        if preds.log_probs is not None:  # what ranks are recomputed from (prediction_scores)
            for i, name in enumerate(self.data.task.class_names):
                frame[f"{LOG_PROB_PREFIX}{name}"] = preds.log_probs[:, i]
        return frame

    def _perturbedbatch_slices(
        self,
        pname: str,
        perturbation: Perturbation,
        region: str,
        complement: bool,
        seed: int,
        control: int | None = None,
    ) -> Iterator[torch.Tensor]:
        """The test images with ``region`` (or everything but it) perturbed, batch by batch.

        With ``control`` set, the perturbed pixels are those of the region's control draw
        ``control`` instead (:meth:`_control_rows`); they are cached the same way.

        Perturbations act on raw images and masks only, so the result is the same for every
        cell with the same seed. When a later cell of that seed will need it, it is written to
        scratch disk as it streams past and read back from there (inpainting a large region
        costs far more than scoring it), within :data:`PERTURBED_CACHE_BYTES` of disk;
        otherwise, or beyond that budget, it is recomputed. Either way only one batch is in
        memory at a time.
        """
        key = (pname, region, complement, seed, control)
        bs = self.config.train.eval_batch_size
        cached = self._perturbed.get(key)
        if cached is not None:
            for s in batch_slices(len(cached), bs):
                yield cached[s]
            return
        test = self.data.splits["test"]
        masks = (
            self._mask(test, region)
            if control is None
            else self._control_rows(region, seed, control)
        )
        if complement:
            masks = MappedRows(masks, torch.logical_not)
        size = tuple(int(d) for d in test.images.shape[-2:])
        keep = self._cells_per_seed[seed] > 1 and (
            self._perturbed_bytes + len(test) * size[0] * size[1] * 4 <= PERTURBED_CACHE_BYTES
        )
        writer = ImageWriter((size[0], size[1])) if keep else None
        # A fresh generator per (perturbation, region): results do not depend on order.
        gen = torch.Generator().manual_seed(seed)
        for s in batch_slices(len(test), bs):
            batch = perturbation.apply(test.images[s], masks[s], gen).contiguous()
            if writer is not None:
                if batch.dtype == torch.float32 and batch.ndim == 4 and batch.shape[1] == 1:
                    try:
                        writer.append(batch[:, 0].cpu().numpy())
                    except OSError:  # a full scratch disk only costs recomputation
                        writer = None
                else:  # only float32 [B, 1, H, W] round-trips through the scratch file
                    writer = None
            yield batch
        if writer is not None:
            self._perturbed[key] = writer.finish()
            self._perturbed_bytes += writer.nbytes

    def _regions(self, use: str) -> list[str]:
        """The configured regions of ``use`` that this dataset can score."""
        return self.data.regions.get(use, list(getattr(self.config, use)))

    def _skipped_region_records(self, base: dict[str, Any]) -> list[dict[str, Any]]:
        """``skipped`` records, with the reason, for every region the data could not score."""
        records = []
        for use, reasons in self.data.skipped_regions.items():
            for region, reason in reasons.items():
                for mname, metric in self.metrics.items():
                    if use == "explain_regions" and metric.needs == "saliency":
                        by_saliency, names, label = True, list(self.saliency), region
                    elif use != "explain_regions" and metric.needs == "perturbation":
                        by_saliency, names = False, list(self.perturbations)
                        label = f"outside_{region}" if use == "complement_regions" else region
                    else:
                        continue
                    for name in names:
                        records.append(
                            make_record(
                                base, mname, metric, value=None, n=None, status="skipped",
                                reason=reason, saliency=name if by_saliency else None,
                                perturbation=None if by_saliency else name, region=label,
                            )
                        )  # fmt: skip
        return records

    def _mask(self, split: SplitArrays, region: str) -> Rows:
        """Region masks on the image grid (resized nearest-neighbour, per batch, when they differ).

        The resize is row-wise, so resizing each batch as it is read equals resizing the whole
        split, without holding it.
        """
        masks = split.regions[region]
        size = (int(split.images.shape[-2]), int(split.images.shape[-1]))
        if tuple(masks.shape[-2:]) != size:
            self._resized_masks.add(region)
            return MappedRows(masks, lambda m: align_mask(m, size), row_shape=size)
        return masks

    def _predict_perturbed(
        self, model: Classifier, batches: Iterator[torch.Tensor], intact: Predictions
    ) -> Predictions:
        # One batch at a time, each predicted as a whole: the same forward passes as
        # predicting the perturbed split in batches of eval_batch_size.
        bs = self.config.train.eval_batch_size
        log_probs = np.concatenate([predict_log_probs(model, b, bs, self.runtime) for b in batches])
        return predictions_from_log_probs(
            intact.labels, log_probs, intact.positive_class, intact.threshold
        )

    def _perturb(
        self, model: Classifier, base: dict[str, Any], intact: Predictions, result: CellResult
    ) -> None:
        test = self.data.splits["test"]
        metrics = {n: m for n, m in self.metrics.items() if isinstance(m, PerturbationMetric)}
        if not metrics:
            return
        specific = any(isinstance(m, DeltaRegion) for m in metrics.values())
        variants = [(r, False) for r in self._regions("perturb_regions")]
        variants += [(r, True) for r in self._regions("complement_regions")]
        plans = {r: self._control_plan(r, base["seed"]) for r, c in variants if not c and specific}
        for pname, perturbation in self.perturbations.items():
            for region, complement in variants:
                label = f"outside_{region}" if complement else region
                try:
                    perturbed = self._predict_perturbed(
                        model,
                        self._perturbedbatch_slices(
                            pname, perturbation, region, complement, base["seed"]
                        ),
                        intact,
                    )
                except ISOLATED as exc:  # this perturbation fails alone; the cell stands
                    error = error_text(exc)
                    self.progress.log(
                        f"  [red]failed[/red]: perturbation {pname} on {label}: {error}"
                    )
                    for mname, metric in metrics.items():
                        result.records.append(
                            make_record(
                                base, mname, metric, value=None, n=None, status="failed",
                                reason=error, perturbation=pname, region=label,
                            )
                        )  # fmt: skip
                    continue
                result.predictions.append(
                    self._prediction_frame(base, test, perturbed, pname, label)
                )
                details: dict[str, Any] = {"complement_of": region} if complement else {}
                if region in self._resized_masks:
                    details["mask_resized"] = "nearest"
                details.update(self._coverage_flags(region, complement))
                control = (
                    self._controls_of(
                        model, base, intact, result, pname, perturbation, region, plans
                    )
                    if specific and not complement
                    else {"reason": COMPLEMENT_REASON}
                )
                for mname, metric in metrics.items():
                    record = self._score(
                        base,
                        mname,
                        metric,
                        lambda m=metric, p=perturbed: m.compute(intact, p),
                        perturbation=pname,
                        region=label,
                    )
                    record["details"] = {**record["details"], **details}
                    if isinstance(metric, DeltaRegion) and record["status"] == "ok":
                        record["details"].update(self._specific_details(control, intact, perturbed))
                    result.records.append(record)

    def _coverage_flags(self, region: str, complement: bool) -> dict[str, Any]:
        """``details`` flags for a region that covers (almost) the whole of some test image.

        Perturbing such a region edits the whole image (its Δ measures any large edit, not the
        region), and its complement perturbs almost nothing. Images excluded from the region
        by ``qc_exclude`` are counted per reason (``qc_excluded``).
        """
        qc: dict[str, Any] = {}
        if not complement and region in self.data.qc_excluded:
            counts = self.data.qc_excluded[region]
            qc = {"qc_excluded": {"images": sum(counts.values()), "reasons": dict(counts)}}
        fractions = self.data.coverage.get(region)
        if fractions is None:
            return qc
        full = int((fractions >= NEAR_FULL_COVERAGE).sum())
        if not full:
            return qc
        what = "almost nothing is perturbed" if complement else "the whole image is perturbed"
        return {
            **qc,
            "near_full_region": {
                "images": full,
                "of": len(fractions),
                "threshold": NEAR_FULL_COVERAGE,
                "warning": f"region {region!r} covers at least {NEAR_FULL_COVERAGE:.0%} of "
                f"{full} of {len(fractions)} test images: {what} there",
            },
        }
