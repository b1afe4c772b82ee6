"""The job an executor runs: one cell, in this process or in a worker anywhere.

:class:`RunCellJob` is what crosses to remote workers (the Ray executor pickles it once): it
carries the resolved configuration, not the data or models. Called in a process that has no
runner yet, it builds one from the configuration (plugins, dataset, splits) and keeps it for
the next cell of the same run; in the calling process it uses the runner it was given, so the
local executor shares the already loaded data and perturbed images. ``done`` and ``lost`` run
in the calling process only: ``done`` writes the cell's checkpoint the moment its result arrives.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from xaibench.config import RunConfig
from xaibench.engine.checkpoints import save_cell
from xaibench.engine.grid import Cell
from xaibench.engine.runner import CellResult, CellRunner, prepare_data
from xaibench.plugins import PluginSelection

#: Runners built in worker processes, per configuration hash (one per run and process).
_WORKER_RUNNERS: dict[str, CellRunner] = {}


def cell_id(cell: Cell) -> tuple[str, str, int]:
    """The cell's identity in a run: backbone key, strategy key, seed."""
    return (cell.backbone.key, cell.strategy.key, cell.seed)


def _worker_runner(config: RunConfig, selection: PluginSelection | None) -> CellRunner:
    key = config.config_hash()
    if key not in _WORKER_RUNNERS:
        from xaibench.plugins import collect_components, get_plugin_manager
        from xaibench.progress import NullProgress

        components = collect_components(get_plugin_manager(selection=selection))
        data = prepare_data(config, components, NullProgress())
        _WORKER_RUNNERS.clear()  # one run per worker process at a time
        _WORKER_RUNNERS[key] = CellRunner(config, components, data)
    return _WORKER_RUNNERS[key]


class RunCellJob:
    """Run, checkpoint and account for the cells of one run (see the module docstring).

    Args:
        config: The resolved run configuration.
        run_dir: Where checkpoints go.
        keys: Checkpoint key per :func:`cell_id`.
        runner: The calling process's runner (None: build one on first call).
        on_done: Called in the calling process after each checkpoint (progress).
        selection: The plugins the calling process loaded; a worker loads the same ones
            (None: the runner's, else the worker's environment).
    """

    def __init__(
        self,
        config: RunConfig,
        run_dir: Path,
        keys: dict[tuple[str, str, int], str],
        runner: CellRunner | None = None,
        on_done: Callable[[CellResult], None] | None = None,
        selection: PluginSelection | None = None,
    ) -> None:
        self.config = config
        if selection is None and runner is not None:
            selection = runner.components.selection
        self.selection = selection
        self.run_dir = Path(run_dir)
        self.keys = dict(keys)
        self._runner = runner
        self._on_done = on_done

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the configuration only: workers build their own runner and report nothing."""
        state = dict(self.__dict__)
        state["_runner"] = None
        state["_on_done"] = None
        return state

    def __call__(self, cell: Cell) -> CellResult:
        """Run ``cell`` (its failures come back as a ``failed`` result)."""
        runner = (
            self._runner
            if self._runner is not None
            else _worker_runner(self.config, self.selection)
        )
        return runner(cell)

    def done(self, index: int, result: CellResult) -> None:
        """Checkpoint ``result`` (atomically) and report progress."""
        save_cell(self.run_dir, self.keys[cell_id(result.cell)], result)
        if self._on_done is not None:
            self._on_done(result)

    def lost(self, cell: Cell, error: str) -> CellResult:
        """A failed result for a cell no worker could finish."""
        return CellResult(cell, status="failed", error=error)
