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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from xaibench.analysis import CellMaps
from xaibench.cache import TensorCache, content_key
from xaibench.config import RunConfig
from xaibench.data.arrays import (
    ImageWriter,
    LazyRows,
    MappedRows,
    Rows,
    SplitArrays,
    materialize,
    read_ahead,
)
from xaibench.data.base import Dataset
from xaibench.data.check import format_problems, normalise_split, split_problems
from xaibench.data.splits import SPLITS, patient_split
from xaibench.device import Runtime, resolve_device
from xaibench.errors import XaibenchError
from xaibench.fit_cache import FitCache, fit_key
from xaibench.grid import Cell, build_cells, create_backbone
from xaibench.metrics.base import (
    FaithfulnessMetric,
    Metric,
    PerformanceMetric,
    PerturbationMetric,
    Predictions,
    SaliencyRegionMetric,
    ScoreFn,
)
from xaibench.metrics.functional import align_mask, youden_threshold
from xaibench.models.base import Classifier
from xaibench.perturbations.base import Perturbation
from xaibench.plugins import Components
from xaibench.progress import NullProgress, Progress
from xaibench.report.gallery import GALLERY_KINDS, GalleryPicker
from xaibench.saliency.base import SaliencyMethod
from xaibench.sanity import run_sanity_checks
from xaibench.stats.intervals import study_wald_ci
from xaibench.strategies.base import FitContext
from xaibench.tasks.base import Task

#: Scratch-disk bytes kept for perturbed test images shared between cells (recomputed beyond).
PERTURBED_CACHE_BYTES = 16 * 1024**3

#: A region covering at least this share of a test image is flagged (``near_full_region``):
#: perturbing it edits the whole image, and its complement almost nothing.
NEAR_FULL_COVERAGE = 0.99

#: What a failing component may raise and still fail only its own records, cell or method:
#: any error, and ``SystemExit`` too (a plugin calling ``sys.exit()`` must not end the run).
_ISOLATED = (Exception, SystemExit)


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _restore(model: Classifier) -> None:
    """Back to inference after a method failed half-way: eval mode, no gradients kept."""
    model.eval()
    model.zero_grad(set_to_none=True)


@dataclass
class CellResult:
    """Everything one cell produced."""

    cell: Cell
    status: str = "ok"
    error: str | None = None
    traceback: str | None = None
    random_init: bool | None = None
    weights: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    fit: dict[str, Any] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)
    predictions: list[pd.DataFrame] = field(default_factory=list)
    explanations: list[pd.DataFrame] = field(default_factory=list)
    galleries: list[Gallery] = field(default_factory=list)
    drift_maps: dict[str, CellMaps] = field(default_factory=dict)


@dataclass
class _MethodOutcome:
    """What one saliency method produced in a cell (kept only when it finished)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    explanations: list[pd.DataFrame] = field(default_factory=list)
    galleries: list[Gallery] = field(default_factory=list)
    drift: CellMaps | None = None


@dataclass(frozen=True)
class Gallery:
    """Test images of a cell with one method's maps, for a picture (see ``report.gallery``).

    Attributes:
        saliency: The method.
        kind: ``best``, ``worst`` or ``random`` (by ``score_metric`` on ``region``).
        sample_ids: The images' sample ids, in gallery order.
        scores: Their per-image scores (None where there is none).
        score_metric: The metric that ranked them, or None when no region metric ran.
        region: The region outlined (and scored), or None.
    """

    saliency: str
    kind: str
    sample_ids: tuple[str, ...]
    scores: tuple[float | None, ...]
    score_metric: str | None
    region: str | None
    images: np.ndarray
    maps: np.ndarray
    masks: np.ndarray | None


#: The three ways a run uses regions, named as in :class:`~xaibench.config.RunConfig`.
REGION_USES: tuple[str, str, str] = ("explain_regions", "perturb_regions", "complement_regions")


@dataclass
class RunData:
    """The task, dataset and split arrays, shared by every cell.

    Attributes:
        regions: Per use (``explain_regions``, ``perturb_regions``, ``complement_regions``), the
            configured regions this run can score, in configuration order.
        skipped_regions: Per use, the configured regions it cannot score, each with the reason
            (the dataset lacks the region, or test images lack its annotation).
        split_from_dataset: The dataset's own ``split`` column made the splits (the configured
            split fractions and seed were not used).
        coverage: Per usable region, the share of each test image it covers (``[N_test]``).
    """

    task: Task
    dataset: Dataset
    splits: dict[str, SplitArrays]
    split_sizes: dict[str, dict[str, int]]
    regions: dict[str, list[str]] = field(default_factory=dict)
    skipped_regions: dict[str, dict[str, str]] = field(default_factory=dict)
    split_from_dataset: bool = False
    coverage: dict[str, np.ndarray] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, and ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def prepare_data(config: RunConfig, components: Components, progress: Progress) -> RunData:
    """Build the task and dataset, split by patient and stream the splits to scratch files.

    The dataset's ``split`` column, when it has one, makes the splits; otherwise
    :func:`~xaibench.data.splits.patient_split` does. Configured regions the dataset lacks, or
    whose annotation is missing where a use needs it, are skipped with a reason (see
    :func:`usable_regions`) rather than failing the run.

    Raises:
        XaibenchError: A class missing from a split, a bad ``split`` column, bad dataset options.
    """
    task: Task = components.tasks.create(config.task)
    dataset: Dataset = components.datasets.create(config.dataset.name, config.dataset.options)
    dataset.use_cache(Path(config.cache_dir) if config.cache_dir else None, enabled=config.cache)
    table = dataset.table()
    labels = task.labels(table)
    if "split" in table.columns:
        problems = split_problems(table["patient_id"].to_numpy(), list(table["split"]))
        if problems:
            raise XaibenchError(
                f"the split column of dataset {config.dataset.name!r} is invalid:\n"
                + format_problems(problems)
            )
        assignment = np.array([normalise_split(v) for v in table["split"]])
    else:
        assignment = patient_split(
            table["patient_id"].to_numpy(), labels, config.split.fractions, config.split.seed
        )
    splits: dict[str, SplitArrays] = {}
    sizes: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        idx = np.flatnonzero(assignment == split)
        counts = {name: int((labels[idx] == i).sum()) for i, name in enumerate(task.class_names)}
        sizes[split] = {"images": len(idx), **counts}
        if counts[task.positive_class] == 0 or counts[task.positive_class] == len(idx):
            raise XaibenchError(
                f"the {split} split has {counts[task.positive_class]} {task.positive_class} images "
                f"out of {len(idx)}; AUC needs both kinds (use more images or other class shares)"
            )
    test_idx = np.flatnonzero(assignment == "test")
    regions, skipped = usable_regions(config, dataset, test_idx)
    if dataset.fixed_regions:  # the phantom: an unknown region is a typo, not a gap in the data
        import difflib

        for reasons in skipped.values():
            for region in reasons:
                if region not in dataset.region_names:
                    close = difflib.get_close_matches(region, dataset.region_names, n=1)
                    hint = f"; did you mean {close[0]!r}?" if close else ""
                    raise XaibenchError(
                        f"region {region!r} is not provided by dataset {config.dataset.name!r}"
                        f"{hint} (it has: {', '.join(dataset.region_names)})"
                    )
    for use, reasons in skipped.items():
        for region, reason in reasons.items():
            progress.log(f"[yellow]skipping[/yellow] {use} {region!r}: {reason}")
    for split in SPLITS:
        idx = np.flatnonzero(assignment == split)
        splits[split] = materialize(dataset, split, idx, labels[idx], progress)
    coverage = region_coverage(splits["test"], sorted({r for rs in regions.values() for r in rs}))
    for use, reasons in empty_regions(regions, coverage).items():
        for region, reason in reasons.items():
            regions[use].remove(region)
            skipped.setdefault(use, {})[region] = reason
            progress.log(f"[yellow]skipping[/yellow] {use} {region!r}: {reason}")
    return RunData(
        task,
        dataset,
        splits,
        sizes,
        regions=regions,
        skipped_regions=skipped,
        split_from_dataset="split" in table.columns,
        coverage=coverage,
    )


def region_coverage(split: SplitArrays, regions: Sequence[str]) -> dict[str, np.ndarray]:
    """Per region, the share of each image of ``split`` its mask covers (read batch by batch)."""
    out: dict[str, np.ndarray] = {}
    for region in regions:
        masks = split.regions[region]
        out[region] = (
            np.concatenate(
                [masks[s].flatten(1).double().mean(1).numpy() for s in _batches(len(split), 256)]
            )
            if len(split)
            else np.zeros(0)
        )
    return out


def empty_regions(
    regions: Mapping[str, Sequence[str]], coverage: Mapping[str, np.ndarray]
) -> dict[str, dict[str, str]]:
    """Per use, the usable regions whose masks are empty where the use needs them, with reasons.

    An annotated but empty mask perturbs nothing, so a Δ over it would be 0 and look like a
    real "the model does not use this region"; it is skipped like an unannotated one
    (perturbation and complement tests need the region on every test image). Localisation
    scores exclude an image with an empty mask (its score is undefined), so they only skip a
    region empty on every test image.
    """
    found: dict[str, dict[str, str]] = {}
    for use, names in regions.items():
        for region in names:
            fractions = coverage.get(region)
            if fractions is None or not len(fractions):
                continue
            empty = int((fractions == 0).sum())
            if use == "explain_regions" and empty == len(fractions):
                reason = f"region {region!r} is empty on every test image"
            elif use != "explain_regions" and empty:
                reason = (
                    f"region {region!r} is empty on {empty} of {len(fractions)} test images; "
                    "perturbation tests need it on every test image"
                )
            else:
                continue
            found.setdefault(use, {})[region] = reason
    return found


def usable_regions(
    config: RunConfig, dataset: Dataset, test_indices: np.ndarray
) -> tuple[dict[str, list[str]], dict[str, dict[str, str]]]:
    """Split the configured regions of each use into usable ones and skipped ones with reasons.

    A region is skipped for every use when the dataset does not provide it (a manifest without
    that ``mask_`` column). Perturbation and complement tests also need the region annotated on
    every test image: perturbing an unannotated (empty) region would leave the image intact and
    dilute the drop, and its complement would perturb the whole image. Localisation scores
    only need one annotated test image, since an empty mask makes an image's score undefined
    and it is excluded.

    Args:
        config: The run configuration.
        dataset: The dataset.
        test_indices: Dataset indices of the test split.

    Returns:
        Per use, the usable regions (configuration order) and the skipped ones with reasons.
    """
    available = dataset.region_names
    usable: dict[str, list[str]] = {}
    skipped: dict[str, dict[str, str]] = {}
    for use in REGION_USES:
        usable[use], skipped[use] = [], {}
        for region in getattr(config, use):
            if region not in available:
                skipped[use][region] = (
                    f"region {region!r} is not provided by dataset {config.dataset.name!r} "
                    f"(it has: {', '.join(available) or 'none'})"
                )
                continue
            annotated = np.asarray(dataset.annotated(region), dtype=bool)[test_indices]
            missing = int((~annotated).sum())
            if use == "explain_regions" and missing == len(test_indices):
                skipped[use][region] = f"region {region!r} is annotated on no test image"
            elif use != "explain_regions" and missing:
                skipped[use][region] = (
                    f"region {region!r} is not annotated on {missing} of {len(test_indices)} "
                    "test images; perturbation tests need it on every test image"
                )
            else:
                usable[use].append(region)
    return usable, {use: reasons for use, reasons in skipped.items() if reasons}


def _batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


@torch.inference_mode()
def predict(
    model: Classifier, images: Rows, batch_size: int, runtime: Runtime | None = None
) -> np.ndarray:
    """Softmax probabilities ``[N, C]`` (float64, CPU) for raw images, read batch by batch."""
    runtime = runtime or Runtime()
    model.eval()
    forward = runtime.forward(model)
    out = []
    for batch in read_ahead(images, list(_batches(len(images), batch_size))):
        with runtime.autocast():
            logits = forward(runtime.to(batch))
        out.append(torch.softmax(logits.float(), dim=1).cpu())
    return torch.cat(out).double().numpy()


class CellRunner:
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
        self._perturbed: dict[tuple[str, str, bool, int], LazyRows] = {}
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
        except _ISOLATED as exc:
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

    def _record(
        self,
        base: dict[str, Any],
        name: str,
        metric: Metric,
        *,
        value: float | None,
        n: int | None,
        status: str = "ok",
        reason: str | None = None,
        saliency: str | None = None,
        perturbation: str | None = None,
        region: str | None = None,
        details: dict[str, Any] | None = None,
        ci: tuple[float, float] | None = None,
    ) -> dict[str, Any]:
        finite = value is not None and np.isfinite(value)
        if status == "ok" and not finite:
            status = "skipped"
            if value is not None and np.isinf(value):
                reason = reason or "value infinite (see the metric's definition)"
            else:
                reason = reason or "value undefined (no image had the region)"
        return {
            **base,
            "metric": name,
            "category": metric.category,
            "higher_is_better": metric.higher_is_better,
            "saliency": saliency,
            "perturbation": perturbation,
            "region": region,
            "value": float(value) if finite else None,  # type: ignore[arg-type]
            "ci_low": float(ci[0]) if finite and ci is not None else None,
            "ci_high": float(ci[1]) if finite and ci is not None else None,
            "n": n,
            "status": status,
            "reason": reason,
            "details": details or {},
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
        val_probs = predict(model, val.images, bs, self.runtime)
        threshold = youden_threshold(val.labels.numpy() == pos, val_probs[:, pos])
        test_probs = predict(model, test.images, bs, self.runtime)
        intact = Predictions(test.labels.numpy(), test_probs, pos, threshold)
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
        self._explain(model, base, result)
        result.records.extend(self._skipped_region_records(base))
        auc = next((r["value"] for r in result.records if r["metric"] == "auc"), None)
        self.progress.log(f"  done: auc={auc if auc is None else round(auc, 3)}")

    def _score(
        self, base: dict[str, Any], name: str, metric: Metric, compute: Any, **where: Any
    ) -> dict[str, Any]:
        try:
            mv = compute()
        except XaibenchError as exc:  # e.g. no positives: recorded, not fatal
            return self._record(
                base, name, metric, value=None, n=None, status="skipped", reason=str(exc), **where
            )
        except _ISOLATED as exc:  # a metric that raises fails its own record, not the cell
            self.progress.log(f"  [red]failed[/red]: metric {name}: {_error_text(exc)}")
            return self._record(
                base,
                name,
                metric,
                value=None,
                n=None,
                status="failed",
                reason=_error_text(exc),
                **where,
            )
        return self._record(
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
            frame[f"prob_{name}"] = preds.probs[:, i]
        frame["called_positive"] = preds.scores >= preds.threshold
        return frame

    def _perturbed_batches(
        self, pname: str, perturbation: Perturbation, region: str, complement: bool, seed: int
    ) -> Iterator[torch.Tensor]:
        """The test images with ``region`` (or everything but it) perturbed, batch by batch.

        Perturbations act on raw images and masks only, so the result is the same for every
        cell with the same seed. When a later cell of that seed will need it, it is written to
        scratch disk as it streams past and read back from there (inpainting a large region
        costs far more than scoring it), within :data:`PERTURBED_CACHE_BYTES` of disk;
        otherwise, or beyond that budget, it is recomputed. Either way only one batch is in
        memory at a time.
        """
        key = (pname, region, complement, seed)
        bs = self.config.train.eval_batch_size
        cached = self._perturbed.get(key)
        if cached is not None:
            for s in _batches(len(cached), bs):
                yield cached[s]
            return
        test = self.data.splits["test"]
        masks = self._mask(test, region)
        if complement:
            masks = MappedRows(masks, torch.logical_not)
        size = tuple(int(d) for d in test.images.shape[-2:])
        keep = self._cells_per_seed[seed] > 1 and (
            self._perturbed_bytes + len(test) * size[0] * size[1] * 4 <= PERTURBED_CACHE_BYTES
        )
        writer = ImageWriter((size[0], size[1])) if keep else None
        # A fresh generator per (perturbation, region): results do not depend on order.
        gen = torch.Generator().manual_seed(seed)
        for s in _batches(len(test), bs):
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
                        for sname in self.saliency:
                            records.append(
                                self._record(
                                    base, mname, metric, value=None, n=None, status="skipped",
                                    reason=reason, saliency=sname, region=region,
                                )
                            )  # fmt: skip
                    elif use != "explain_regions" and metric.needs == "perturbation":
                        label = f"outside_{region}" if use == "complement_regions" else region
                        for pname in self.perturbations:
                            records.append(
                                self._record(
                                    base, mname, metric, value=None, n=None, status="skipped",
                                    reason=reason, perturbation=pname, region=label,
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

    def _perturb(
        self, model: Classifier, base: dict[str, Any], intact: Predictions, result: CellResult
    ) -> None:
        cfg, test = self.config, self.data.splits["test"]
        metrics = {n: m for n, m in self.metrics.items() if isinstance(m, PerturbationMetric)}
        if not metrics:
            return
        variants = [(r, False) for r in self._regions("perturb_regions")]
        variants += [(r, True) for r in self._regions("complement_regions")]
        for pname, perturbation in self.perturbations.items():
            for region, complement in variants:
                label = f"outside_{region}" if complement else region
                try:
                    batches = self._perturbed_batches(
                        pname, perturbation, region, complement, base["seed"]
                    )
                    # One batch at a time, each predicted as a whole: the same forward passes
                    # as predicting the perturbed split in batches of eval_batch_size.
                    bs = cfg.train.eval_batch_size
                    probs = np.concatenate([predict(model, b, bs, self.runtime) for b in batches])
                except _ISOLATED as exc:  # this perturbation fails alone; the cell stands
                    error = _error_text(exc)
                    self.progress.log(
                        f"  [red]failed[/red]: perturbation {pname} on {label}: {error}"
                    )
                    for mname, metric in metrics.items():
                        result.records.append(
                            self._record(
                                base, mname, metric, value=None, n=None, status="failed",
                                reason=error, perturbation=pname, region=label,
                            )
                        )  # fmt: skip
                    continue
                perturbed = Predictions(
                    intact.labels, probs, intact.positive_class, intact.threshold
                )
                result.predictions.append(
                    self._prediction_frame(base, test, perturbed, pname, label)
                )
                details = {"complement_of": region} if complement else {}
                if region in self._resized_masks:
                    details["mask_resized"] = "nearest"
                details.update(self._coverage_flags(region, complement))
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
                    result.records.append(record)

    def _coverage_flags(self, region: str, complement: bool) -> dict[str, Any]:
        """``details`` flags for a region that covers (almost) the whole of some test image.

        Perturbing such a region edits the whole image (its Δ measures any large edit, not the
        region), and its complement perturbs almost nothing.
        """
        fractions = self.data.coverage.get(region)
        if fractions is None:
            return {}
        full = int((fractions >= NEAR_FULL_COVERAGE).sum())
        if not full:
            return {}
        what = "almost nothing is perturbed" if complement else "the whole image is perturbed"
        return {
            "near_full_region": {
                "images": full,
                "of": len(fractions),
                "threshold": NEAR_FULL_COVERAGE,
                "warning": f"region {region!r} covers at least {NEAR_FULL_COVERAGE:.0%} of "
                f"{full} of {len(fractions)} test images: {what} there",
            }
        }

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
                    self._record(
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
        bs = self.config.train.eval_batch_size
        forward = self.runtime.forward(model)  # inference only: no hooks, no input gradients

        @torch.inference_mode()
        def score(images: torch.Tensor) -> torch.Tensor:
            out = []
            for s in _batches(len(images), bs):
                with self.runtime.autocast():
                    logits = forward(self.runtime.to(images[s]))
                out.append(torch.softmax(logits.float(), dim=1)[:, target].cpu())
            return torch.cat(out)

        return score

    def _explain(self, model: Classifier, base: dict[str, Any], result: CellResult) -> None:
        """Every saliency method on the test images, each on its own.

        A method that raises fails alone: its records are ``failed`` with the error, and the
        other methods, the performance and the Δ results of the cell stand. So does a metric
        that raises on one method's maps (its records for that method are ``failed``).
        """
        cfg = self.config
        region_metrics = {
            n: m for n, m in self.metrics.items() if isinstance(m, SaliencyRegionMetric)
        }
        faithfulness = {n: m for n, m in self.metrics.items() if isinstance(m, FaithfulnessMetric)}
        wanted = region_metrics or faithfulness or cfg.sanity.images or cfg.analysis.drift_grid
        if not wanted:
            return
        scored: dict[str, Metric] = {**region_metrics, **faithfulness}
        for sname, method in self.saliency.items():
            reason = method.supports(model)
            if reason is not None:
                result.records.extend(self._skip_explanations(base, sname, reason, scored))
                continue
            try:
                outcome = self._explain_method(model, base, sname, method)
            except _ISOLATED as exc:
                error = _error_text(exc)
                self.progress.log(f"  [red]failed[/red]: saliency {sname}: {error}")
                _restore(model)
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
                except _ISOLATED as exc:
                    error = _error_text(exc)
                    self.progress.log(f"  [red]failed[/red]: sanity checks of {sname}: {error}")
                    _restore(model)
                    result.records.extend(self._failed_sanity(base, sname, error))

    def _explain_method(
        self, model: Classifier, base: dict[str, Any], sname: str, method: SaliencyMethod
    ) -> _MethodOutcome:
        """One method's maps on the test images, with every score; raises if the method does."""
        cfg, test, task = self.config, self.data.splits["test"], self.data.task
        region_metrics = {
            n: m for n, m in self.metrics.items() if isinstance(m, SaliencyRegionMetric)
        }
        faithfulness = {n: m for n, m in self.metrics.items() if isinstance(m, FaithfulnessMetric)}
        n = len(test) if cfg.max_explain_images is None else min(len(test), cfg.max_explain_images)
        explain_regions = self._regions("explain_regions")
        masks = {region: self._mask(test, region) for region in explain_regions}
        score = self._score_fn(model, task.positive_index)
        gallery_key = self._gallery_key(region_metrics, explain_regions)
        outcome = _MethodOutcome()
        values: dict[tuple[str, str | None], list[torch.Tensor]] = {}
        floors: dict[str, list[torch.Tensor]] = {}
        errors: dict[str, str] = {}  # metric -> its error on this method's maps
        drift: list[np.ndarray] = []
        constant = 0  # maps with no variation: no foreground, reported with the scores
        gen = torch.Generator().manual_seed(base["seed"])
        picker = GalleryPicker(cfg.gallery_images, n, base["seed"])
        batches = list(_batches(n, cfg.train.eval_batch_size))
        for s in self.progress.track(batches, total=len(batches), description=f"saliency {sname}"):
            batch = test.images[s]  # read once, used by the map and the faithfulness scores
            images = self.runtime.to(batch)
            targets = torch.full((len(images),), task.positive_index, dtype=torch.long)
            maps = method.explain(model, images, self.runtime.to(targets)).cpu()
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
            for mname, metric in region_metrics.items():
                if mname in errors:
                    continue
                try:
                    scores = {
                        region: metric.per_sample(maps, batch_masks[region]).double()
                        for region in explain_regions
                    }
                except _ISOLATED as exc:
                    errors[mname] = _error_text(exc)
                    continue
                for region, value in scores.items():
                    values.setdefault((mname, region), []).append(value)
            for mname, fmetric in faithfulness.items():
                if mname in errors:
                    continue
                try:
                    value, floor = fmetric.per_sample(score, batch, maps, gen)
                except _ISOLATED as exc:
                    errors[mname] = _error_text(exc)
                    continue
                values.setdefault((mname, None), []).append(value.double())
                floors.setdefault(mname, []).append(floor.double())
            if cfg.gallery_images:
                ranked = values.get(gallery_key) if gallery_key else None
                if ranked is not None and gallery_key and gallery_key[0] in errors:
                    ranked = None
                picker.add(s.start, maps.numpy(), ranked[-1].numpy() if ranked else None)
        if cfg.gallery_images:
            ranked_all = values.get(gallery_key) if gallery_key else None
            if gallery_key and gallery_key[0] in errors:
                ranked_all = None
            outcome.galleries = self._galleries(sname, picker, gallery_key, ranked_all)
        if drift:
            outcome.drift = CellMaps(tuple(test.sample_ids[:n]), np.concatenate(drift))
        for mname, error in errors.items():
            self.progress.log(f"  [red]failed[/red]: metric {mname} on {sname}: {error}")
            outcome.records.extend(
                self._skip_explanations(
                    base, sname, error, {mname: self.metrics[mname]}, status="failed"
                )
            )
        for (mname, where), chunks in values.items():
            if mname in errors:
                continue
            per_sample = torch.cat(chunks).numpy()
            scored = self.metrics[mname]
            try:
                if isinstance(scored, FaithfulnessMetric):
                    mv = scored.aggregate(per_sample, torch.cat(floors[mname]).numpy())
                else:
                    mv = region_metrics[mname].aggregate(per_sample)
            except _ISOLATED as exc:
                outcome.records.append(
                    self._record(
                        base, mname, scored, value=None, n=None, status="failed",
                        reason=_error_text(exc), saliency=sname, region=where,
                    )
                )  # fmt: skip
                continue
            details = {"explained_images": n, "constant_maps": constant, **mv.details}
            if mv.ci is not None:
                details.setdefault("ci_method", "image bootstrap of the mean")
            if where in self._resized_masks:
                details["mask_resized"] = "nearest"
            if where is not None:
                details.update(self._coverage_flags(where, False))
            outcome.records.append(
                self._record(
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
                    }
                )
            )
        return outcome

    def _failed_sanity(self, base: dict[str, Any], sname: str, error: str) -> list[dict[str, Any]]:
        """The two sanity records of a method whose checks raised, ``failed`` with the error."""
        k = min(self.config.sanity.images, len(self.data.splits["test"]))
        return [
            {
                **base, "metric": name, "category": "sanity", "higher_is_better": False,
                "saliency": sname, "perturbation": None, "region": None, "value": None,
                "ci_low": None, "ci_high": None, "n": k, "status": "failed", "reason": error,
                "details": {"passed": None, "threshold": self.config.sanity.threshold},
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
            undefined = value is None
            records.append(
                {
                    **common,
                    "metric": name,
                    "value": value,
                    "status": "skipped" if undefined else "ok",
                    "reason": "maps constant: similarity undefined" if undefined else None,
                    "details": {
                        "passed": passed,
                        "threshold": cfg.sanity.threshold,
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

    def _galleries(
        self,
        method: str,
        picker: GalleryPicker,
        key: tuple[str, str | None] | None,
        chunks: list[torch.Tensor] | None,
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
            out.append(
                Gallery(
                    saliency=method,
                    kind=kind,
                    sample_ids=tuple(test.sample_ids[i] for i in index),
                    scores=scores,
                    score_metric=key[0] if key else None,
                    region=region,
                    images=test.images[index, 0].numpy().copy(),
                    maps=maps,
                    masks=None if region is None else test.regions[region][index].numpy().copy(),
                )
            )
        return out
