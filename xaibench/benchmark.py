"""One call from a resolved configuration to a written run directory.

The CLI is a thin layer over :func:`run_benchmark`; notebooks and tests call it directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from xaibench import __version__
from xaibench.analysis import (
    explanation_drift,
    performance_explanation_correlation,
    perturbation_rank_agreement,
)
from xaibench.breakdowns import run_breakdowns
from xaibench.config import RunConfig
from xaibench.errors import XaibenchError
from xaibench.grid import Cell, build_cells, check_components
from xaibench.leaderboard import Leaderboards, build_leaderboards, write_leaderboard_files
from xaibench.plugins import Components
from xaibench.progress import NullProgress, Progress
from xaibench.report.run_files import load_run
from xaibench.results import build_document, environment, write_run
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

    Raises:
        XaibenchError: A name, option or region is wrong, or ``run_dir`` is not empty; nothing is
            run or written in that case.
    """
    progress = progress or NullProgress()
    check_components(config, components)
    if run_dir.exists() and any(run_dir.iterdir()):
        raise XaibenchError(
            f"run directory {str(run_dir)!r} exists and is not empty; choose another --out"
        )
    started = datetime.now(UTC)
    cells = build_cells(config)
    executor = components.executors.create(config.executor.name, config.executor.options)
    progress.log(f"xaibench {__version__}: task {config.task}, {len(cells)} cells -> {run_dir}")
    data = prepare_data(config, components, progress)
    runner = CellRunner(config, components, data, progress)
    advance = progress.start("cells", total=len(cells))

    def run_cell(cell: Cell) -> CellResult:
        result = runner(cell)
        advance()
        return result

    results = executor.run(cells, run_cell)
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
    write_run(run_dir, document, results)
    # The leaderboards are built from the files just written, exactly as
    # `xaibench leaderboard RUN_DIR` would: one code path, and `--check` holds on a fresh run.
    progress.log("leaderboards: paired tests between cells")
    boards = build_leaderboards(
        [load_run(run_dir)], resamples=config.analysis.bootstrap or 1000, seed=config.seeds[0]
    )
    write_leaderboard_files(boards, run_dir)
    return RunOutcome(run_dir, document, results, boards)


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
