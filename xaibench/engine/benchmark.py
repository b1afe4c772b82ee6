"""One call from a resolved configuration to a written run directory.

The CLI is a thin layer over :func:`run_benchmark`; notebooks and tests call it directly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml

from xaibench import __version__
from xaibench.analysis import (
    explanation_drift,
    performance_explanation_correlation,
    perturbation_rank_agreement,
)
from xaibench.breakdowns import run_breakdowns
from xaibench.config import RunConfig
from xaibench.engine.cell_job import RunCellJob, cell_id
from xaibench.engine.checkpoints import (
    cell_key,
    checkpoint_files,
    checkpoint_galleries,
    load_cell,
    read_run_state,
    remove_partial,
    write_run_state,
)
from xaibench.engine.grid import build_cells, check_components
from xaibench.engine.results import (
    build_document,
    component_options,
    component_provenance,
    environment,
    write_run,
)
from xaibench.engine.runner import CellResult, CellRunner, RunData, prepare_data
from xaibench.errors import XaibenchError
from xaibench.eta import first_cell_seconds
from xaibench.evidence import evidence_agreement
from xaibench.leaderboard import Leaderboards, build_leaderboards, write_leaderboard_files
from xaibench.observers.base import Observer
from xaibench.observers.dispatch import RunObservers
from xaibench.paths import is_temporary, write_whole
from xaibench.plugins import Components
from xaibench.progress import NullProgress, Progress, expect_cells
from xaibench.report.run_files import load_run
from xaibench.run_lock import LOCK_FILE, run_lock
from xaibench.stats.strata import strata_from_table
from xaibench.trust import Calibration, trust_rows


@dataclass(frozen=True)
class RunOutcome:
    """What a run produced: its directory, results document, cell results and leaderboards."""

    run_dir: Path
    document: dict[str, Any]
    results: list[CellResult]
    leaderboards: Leaderboards
    observer_failures: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> list[CellResult]:
        """Cells that raised."""
        return [r for r in self.results if r.status == "failed"]

    @property
    def partly_failed(self) -> list[dict[str, Any]]:
        """The ``failed`` records of cells that finished.

        A saliency method, perturbation or metric that raised while the rest of its cell stood.
        """
        return [
            rec
            for r in self.results
            if r.status == "ok"
            for rec in r.records
            if rec.get("status") == "failed"
        ]


def run_benchmark(
    config: RunConfig,
    components: Components,
    run_dir: Path,
    progress: Progress | None = None,
    calibration: Calibration | None = None,
    observers: Mapping[str, Observer] | None = None,
) -> RunOutcome:
    """Resolve every component, run every cell, write results and leaderboards to ``run_dir``.

    ``observers`` (name -> instance, ``xaibench.observers``) are told when the run starts, as
    each cell is checkpointed and when it ends; they change nothing the run computes or writes.

    With a ``calibration`` (``xaibench calibrate``), ``results.json`` records each cell's
    known-answer badge per saliency method under ``trust`` (:func:`xaibench.trust.trust_rows`),
    and the explainability leaderboard shows them.

    A run directory that already holds this configuration's run is resumed: cells with a
    checkpoint (``xaibench.engine.checkpoints``) are read back, not recomputed; failed cells are
    retried. The results files are always assembled from the checkpoints, so a resumed run
    writes what an uninterrupted one would.

    The run holds an exclusive lock on ``run_dir`` (``xaibench.run_lock``) from before it
    looks at the folder until its last file is written.

    Raises:
        XaibenchError: A name, option or region is wrong; ``run_dir`` cannot be a run folder
            (a file, under a file, not writable); another run holds it; or it is not empty and
            holds no run, or a run of another configuration. Nothing is run or written then.
    """
    progress = progress or NullProgress()
    check_components(config, components)
    # Deterministic kernels for every cell, and recorded as such even when every cell comes
    # from a checkpoint (each cell also asks for them when it seeds itself).
    torch.use_deterministic_algorithms(True, warn_only=True)
    # The folder is made and locked before any work: an --out that cannot be written fails
    # now, not after training, and no other run can write into it until this one is done.
    with run_lock(run_dir) as lock:
        if lock.warning:
            progress.log(f"[yellow]warning[/yellow]: {lock.warning}")
        watchers = RunObservers(observers or {}, progress.log)
        try:
            outcome = _run_locked(config, components, run_dir, progress, calibration, watchers)
        except BaseException as exc:  # told, then raised as it was
            if watchers.run_id:
                watchers.run_finished(run_dir, "interrupted", 0, error=_one_line(exc))
            raise
        failed = len(outcome.failed)
        watchers.run_finished(run_dir, "failed" if failed else "ok", failed)
        return replace(outcome, observer_failures=dict(watchers.failures))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _run_locked(
    config: RunConfig,
    components: Components,
    run_dir: Path,
    progress: Progress,
    calibration: Calibration | None,
    watchers: RunObservers,
) -> RunOutcome:
    """The rest of :func:`run_benchmark`, with the run folder locked."""
    state = _resumable(run_dir, config)
    remove_partial(run_dir)  # temporary files of an unfinished write (safe: we hold the lock)
    started = datetime.fromisoformat(state["started"]) if state else datetime.now(UTC)
    cells = build_cells(config)
    executor = components.executors.create(config.executor.name, config.executor.options)
    verb = "resuming" if state else "starting"
    progress.log(
        f"xaibench {__version__}: {verb} task {config.task}, {len(cells)} cells -> {run_dir}"
    )
    if config.cache:  # checked before any data or training; an unusable folder: one line here
        from xaibench.cache import prepare_cache_dir

        prepare_cache_dir(config.cache_dir, report=progress.log, recheck=True)
    data = prepare_data(config, components, progress)
    # Only now, with every component and the data checked, is the run recorded in its folder.
    write_run_state(run_dir, config, started.isoformat(timespec="seconds"))
    write_whole(
        run_dir / "config.yaml", yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    )
    versions = component_provenance(config, components)
    fingerprint = data.dataset.fingerprint()
    keys = {cell_id(c): cell_key(config, c, fingerprint, versions) for c in cells}
    advance = progress.start("cells", total=len(cells))
    todo = []
    restored = []
    for cell in cells:
        previous = load_cell(run_dir, cell, keys[cell_id(cell)])
        if previous is not None and previous.status == "ok":
            progress.log(f"cell {cell.label()}: finished earlier (checkpoint)")
            restored.append(previous)
            advance()
        else:
            todo.append(cell)
    n_images = sum(split["images"] for split in data.split_sizes.values())
    expect_cells(progress, len(todo), first_cell_seconds(n_images, config.train.epochs))
    if watchers:
        watchers.run_started(
            config,
            run_dir,
            started.isoformat(timespec="seconds"),
            resumed=state is not None,
            cells=[c.label() for c in cells],
            provenance=versions,
            options=component_options(config, components),
        )

    def observe(result: CellResult, from_checkpoint: bool) -> None:
        key = keys[cell_id(result.cell)]
        files = checkpoint_files(run_dir, result.cell, key)
        watchers.cell_finished(result, key, files, from_checkpoint=from_checkpoint)

    for previous in restored:
        observe(previous, True)

    def done(result: CellResult) -> None:
        advance()
        observe(result, False)

    runner = CellRunner(config, components, data, progress)
    job = RunCellJob(config, run_dir, keys, runner, on_done=done)
    computed = {cell_id(r.cell): r for r in executor.run(todo, job)} if todo else {}
    results = []
    for cell in cells:
        checkpoint = load_cell(run_dir, cell, keys[cell_id(cell)])
        # a lost cell is checkpointed as failed if the executor passed it to `done`; if not,
        # its `lost` result stands
        results.append(checkpoint if checkpoint is not None else computed[cell_id(cell)])
    galleries = [
        g for cell in cells for g in checkpoint_galleries(run_dir, cell, keys[cell_id(cell)])
    ]
    analysis, failures = _analyses(config, data, results, progress)
    evidence = _evidence(results, failures, progress)
    document = build_document(
        config, components, data, results, environment(config), started, analysis, evidence
    )
    if failures:
        document["analysis_failures"] = failures
    if calibration is not None:
        cells_run = [(c["backbone"], c["strategy"], c["seed"]) for c in document["cells"]]
        methods = [ref.key for ref in config.saliency]
        document["trust"] = trust_rows(calibration, cells_run, methods)
    write_run(run_dir, document, results, galleries)
    # The leaderboards are built from the files just written, exactly as
    # `xaibench leaderboard RUN_DIR` would: one code path, and `--check` holds on a fresh run.
    progress.log("leaderboards: paired tests between cells")
    boards = build_leaderboards(
        [load_run(run_dir)], resamples=config.analysis.bootstrap or 1000, seed=config.seeds[0]
    )
    write_leaderboard_files(boards, run_dir)
    return RunOutcome(run_dir, document, results, boards)


def _resumable(run_dir: Path, config: RunConfig) -> dict[str, Any] | None:
    """The state of the run to resume in ``run_dir``, None for a new run.

    A folder that holds nothing but the lock file and temporary files of an unfinished write
    (a full disk, a killed first write) is empty: a new run starts there.

    Raises:
        XaibenchError: ``run_dir`` is not empty but holds no run, or another configuration's.
    """
    if not run_dir.is_dir():
        return None
    content = [p for p in run_dir.iterdir() if p.name != LOCK_FILE and not is_temporary(p.name)]
    if not content:
        return None
    state = read_run_state(run_dir)
    if state is None:
        raise XaibenchError(
            f"run directory {str(run_dir)!r} exists, is not empty and holds no xaibench run; "
            "choose another --out"
        )
    if state.get("study_hash") != config.study_hash():
        raise XaibenchError(
            f"run directory {str(run_dir)!r} holds a run of another configuration; resume it "
            f"with `xaibench run {config.task} --resume --out {run_dir}` (its own config.yaml), "
            "or choose another --out"
        )
    return state


def _analyses(
    config: RunConfig, data: RunData, results: list[CellResult], progress: Progress
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str]]:
    """The cross-cell tables, each on its own: one that raises is left out, never the run.

    Every cell's results are in their checkpoints by now; an analysis that fails (a bug, or a
    corner no test foresaw) must not lose them, nor make ``--resume`` fail the same way
    forever. Its error is returned (``analysis_failures`` in ``results.json``) and logged.
    """
    records = [rec for r in results for rec in r.records]
    stages: dict[str, Callable[[], dict[str, list[dict[str, Any]]]]] = {
        "explanation_drift": lambda: {
            "explanation_drift": explanation_drift(
                {
                    (r.cell.backbone.key, r.cell.strategy.key, r.cell.seed): r.drift_maps
                    for r in results
                    if r.status == "ok" and r.drift_maps
                },
                resamples=config.analysis.bootstrap,
                seed=config.seeds[0],
            )
        },
        "perturbation_rank_agreement": lambda: {
            "perturbation_rank_agreement": perturbation_rank_agreement(records)
        },
        "performance_explanation_correlation": lambda: {
            "performance_explanation_correlation": performance_explanation_correlation(
                records, resamples=config.analysis.bootstrap, seed=config.seeds[0]
            )
        },
        "breakdowns": lambda: _breakdowns(config, data, results),
    }
    analysis: dict[str, list[dict[str, Any]]] = {}
    failures: dict[str, str] = {}
    for name, compute in stages.items():
        try:
            analysis.update(compute())
        except Exception as exc:  # the cells' results stand without this table
            failures[name] = f"{type(exc).__name__}: {exc}"
            progress.log(
                f"[yellow]warning[/yellow]: analysis {name} failed ({failures[name]}); "
                "its tables are left out, every cell's results are kept"
            )
    return analysis, failures


def _evidence(
    results: list[CellResult], failures: dict[str, str], progress: Progress
) -> list[dict[str, Any]]:
    """The evidence-agreement rows of every cell (``xaibench.evidence``), after all cells.

    Like the analyses, a failure here is recorded in ``failures`` (as ``evidence``) and leaves
    the table empty rather than losing the run.
    """
    try:
        return evidence_agreement(rec for r in results for rec in r.records)
    except Exception as exc:  # the cells' results stand without this table
        failures["evidence"] = f"{type(exc).__name__}: {exc}"
        progress.log(
            f"[yellow]warning[/yellow]: evidence agreement failed ({failures['evidence']}); "
            "it is left out, every cell's results are kept"
        )
        return []


def _breakdowns(
    config: RunConfig, data: RunData, results: list[CellResult]
) -> dict[str, list[dict[str, Any]]]:
    """Per-class, calibration and stratified tables of the cells that finished."""
    ok = [r for r in results if r.status == "ok"]
    preds = [f for r in ok for f in r.predictions]
    expl = [f for r in ok for f in r.explanations]
    if not preds:
        return {}
    test_ids = list(data.splits["test"].sample_ids)
    # A column that defines the label (a CTR, a finding) would only restate it as a stratum.
    columns = [c for c in data.dataset.strata_columns if c not in data.task.label_columns]
    strata = {}
    if columns:
        table = data.dataset.table().set_index("sample_id").loc[test_ids]
        strata = strata_from_table(table.reset_index(), columns)
    return run_breakdowns(
        pd.concat(preds, ignore_index=True),
        pd.concat(expl, ignore_index=True) if expl else pd.DataFrame(),
        data.task.class_names,
        data.task.positive_class,
        strata,
        resamples=config.analysis.bootstrap,
        seed=config.seeds[0],
    )
