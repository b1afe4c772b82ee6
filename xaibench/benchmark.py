"""One call from a resolved configuration to a written run directory.

The CLI is a thin layer over :func:`run_benchmark`; notebooks and tests call it directly.
"""

from __future__ import annotations

from dataclasses import dataclass
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
from xaibench.cache import write_atomic
from xaibench.cell_job import RunCellJob, cell_id
from xaibench.checkpoints import (
    cell_key,
    checkpoint_galleries,
    load_cell,
    read_run_state,
    remove_partial,
    write_run_state,
)
from xaibench.config import RunConfig
from xaibench.errors import XaibenchError
from xaibench.grid import build_cells, check_components
from xaibench.leaderboard import Leaderboards, build_leaderboards, write_leaderboard_files
from xaibench.plugins import Components
from xaibench.progress import NullProgress, Progress
from xaibench.report.run_files import load_run
from xaibench.results import build_document, component_provenance, environment, write_run
from xaibench.runner import CellResult, CellRunner, RunData, prepare_data
from xaibench.stats.strata import strata_from_table


@dataclass(frozen=True)
class RunOutcome:
    """What a run produced: its directory, results document, cell results and leaderboards."""

    run_dir: Path
    document: dict[str, Any]
    results: list[CellResult]
    leaderboards: Leaderboards

    @property
    def failed(self) -> list[CellResult]:
        """Cells that raised."""
        return [r for r in self.results if r.status == "failed"]


def run_benchmark(
    config: RunConfig,
    components: Components,
    run_dir: Path,
    progress: Progress | None = None,
) -> RunOutcome:
    """Resolve every component, run every cell, write results and leaderboards to ``run_dir``.

    A run directory that already holds this configuration's run is resumed: cells with a
    checkpoint (``xaibench.checkpoints``) are read back, not recomputed; failed cells are
    retried. The results files are always assembled from the checkpoints, so a resumed run
    writes what an uninterrupted one would.

    Raises:
        XaibenchError: A name, option or region is wrong; or ``run_dir`` is not empty and holds
            no run, or a run of another configuration. Nothing is run or written then.
    """
    progress = progress or NullProgress()
    check_components(config, components)
    # Deterministic kernels for every cell, and recorded as such even when every cell comes
    # from a checkpoint (each cell also asks for them when it seeds itself).
    torch.use_deterministic_algorithms(True, warn_only=True)
    state = _resumable(run_dir, config)
    if state:
        remove_partial(run_dir)
    started = datetime.fromisoformat(state["started"]) if state else datetime.now(UTC)
    cells = build_cells(config)
    executor = components.executors.create(config.executor.name, config.executor.options)
    verb = "resuming" if state else "starting"
    progress.log(
        f"xaibench {__version__}: {verb} task {config.task}, {len(cells)} cells -> {run_dir}"
    )
    data = prepare_data(config, components, progress)
    # Only now, with every component and the data checked, does the run directory appear.
    write_run_state(run_dir, config, started.isoformat(timespec="seconds"))
    write_atomic(
        run_dir / "config.yaml", yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    )
    versions = component_provenance(config, components)
    fingerprint = data.dataset.fingerprint()
    keys = {cell_id(c): cell_key(config, c, fingerprint, versions) for c in cells}
    advance = progress.start("cells", total=len(cells))
    todo = []
    for cell in cells:
        previous = load_cell(run_dir, cell, keys[cell_id(cell)])
        if previous is not None and previous.status == "ok":
            progress.log(f"cell {cell.label()}: finished earlier (checkpoint)")
            advance()
        else:
            todo.append(cell)
    runner = CellRunner(config, components, data, progress)
    job = RunCellJob(config, run_dir, keys, runner, on_done=lambda _: advance())
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
    records = [rec for r in results for rec in r.records]
    analysis = {
        "explanation_drift": explanation_drift(
            {
                (r.cell.backbone.key, r.cell.strategy.key, r.cell.seed): r.drift_maps
                for r in results
                if r.status == "ok" and r.drift_maps
            },
            resamples=config.analysis.bootstrap,
            seed=config.seeds[0],
        ),
        "perturbation_rank_agreement": perturbation_rank_agreement(records),
        "performance_explanation_correlation": performance_explanation_correlation(
            records, resamples=config.analysis.bootstrap, seed=config.seeds[0]
        ),
    }
    analysis.update(_breakdowns(config, data, results))
    document = build_document(
        config, components, data, results, environment(config), started, analysis
    )
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

    Raises:
        XaibenchError: ``run_dir`` is not empty but holds no run, or another configuration's.
    """
    if not run_dir.exists() or not any(run_dir.iterdir()):
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
    columns = list(data.dataset.strata_columns)
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
