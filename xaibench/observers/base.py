"""The observer contract: what a run tells its observers, and when.

An observer is a component (registered through ``register_observers``, options as pydantic
fields) selected per run: ``xaibench run TASK --observer mlflow``, or
``xaibench.run(task, observers=["mlflow"])``. Observers never change what a run computes: they
are not part of the configuration, its hashes or its results files, and a run may be resumed
with other observers than it started with.

The run calls, in the calling process and in this order:

1. :meth:`Observer.run_started` once, after the configuration, components and data have been
   checked and before the first cell runs;
2. :meth:`Observer.cell_finished` once per cell of the grid, in the order the cells arrive:
   cells restored from an earlier, interrupted session of the same run folder first (with
   ``from_checkpoint=True``: an observer that logged them then must not log them twice), then each
   computed cell as soon as its checkpoint is written;
3. :meth:`Observer.run_finished` once, after the results files and leaderboards are written, or
   with ``status="interrupted"`` when the run stops on an error or Ctrl-C (a process that is
   killed calls nothing: the next ``--resume`` starts over at 1. with ``resumed=True``).

Every event is a frozen dataclass of plain values; paths are absolute paths inside the run
folder. An observer that raises is reported in one warning line and not called again in this
run; the run and its results are unaffected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from xaibench.component import Component


@dataclass(frozen=True)
class RunStarted:
    """A run is about to compute its cells.

    Attributes:
        run_id: The run's identity, the same in every session of one run folder (a resumed
            run keeps it): SHA-256 of the study hash and the first start time, 16 hex digits.
        run_dir: The run folder.
        task: The task's name.
        study_hash: SHA-256 of everything that determines the numbers (``run-state.json``).
        started: When the run first started (ISO 8601, UTC), the same on every resume.
        resumed: Whether an earlier session of this run folder ran before.
        config: The resolved configuration, as in ``config.yaml``.
        cells: Every cell's label (``backbone x strategy (seed n)``), in grid order.
        provenance: xaibench's version and the distribution and version of each component.
    """

    run_id: str
    run_dir: Path
    task: str
    study_hash: str
    started: str
    resumed: bool
    config: dict[str, Any]
    cells: tuple[str, ...]
    provenance: dict[str, Any]


@dataclass(frozen=True)
class CellFinished:
    """One cell of the grid is finished (or failed) and checkpointed.

    Attributes:
        run_id: :attr:`RunStarted.run_id`.
        label: ``backbone x strategy (seed n)``.
        backbone: The backbone's key in results.
        strategy: The strategy's key in results.
        seed: The cell's seed.
        key: The checkpoint key: SHA-256 of everything that determines this cell's numbers.
            Stable across sessions; an observer de-duplicates by it.
        status: ``ok``, or ``failed`` (``error`` says why; ``records`` may be empty).
        error: The failure, one line; None when ``ok``.
        from_checkpoint: Restored from an earlier session's checkpoint, not computed now.
        params: The cell's resolved options: task, dataset, seed, the backbone's and the
            strategy's options (defaults included), training settings, and the explanation
            components' keys; JSON-able scalars, lists and mappings.
        records: The cell's results records, exactly as in ``results.json`` (``metric``,
            ``value``, ``ci_low``, ``ci_high``, ``status``, ...).
        files: The cell's checkpoint files (tables and gallery PNGs), absolute paths.
        seconds: Wall time of the cell when it ran (None if unknown).
    """

    run_id: str
    label: str
    backbone: str
    strategy: str
    seed: int
    key: str
    status: Literal["ok", "failed"]
    error: str | None
    from_checkpoint: bool
    params: dict[str, Any]
    records: tuple[dict[str, Any], ...]
    files: tuple[Path, ...]
    seconds: float | None = None


@dataclass(frozen=True)
class RunFinished:
    """The run is over.

    Attributes:
        run_id: :attr:`RunStarted.run_id`.
        run_dir: The run folder.
        status: ``ok`` (every cell finished), ``failed`` (some cell failed; the results files
            are written), or ``interrupted`` (an error or Ctrl-C stopped the run before its
            results files were written; ``error`` says which).
        cells_failed: How many cells failed.
        files: The run's results files (``results.json``, the CSVs, ``leaderboard_*``
            tables), absolute paths; empty when interrupted.
        error: Why the run was interrupted, one line; None otherwise.
    """

    run_id: str
    run_dir: Path
    status: Literal["ok", "failed", "interrupted"]
    cells_failed: int
    files: tuple[Path, ...] = field(default_factory=tuple)
    error: str | None = None


class Observer(Component):
    """Told about a run as it happens (subclass per tracker; see the module docstring).

    Every method is optional: the base class's do nothing. Options are pydantic fields;
    per-run state (a client, the tracker's run ids) goes in private attributes
    (``pydantic.PrivateAttr``), set in :meth:`run_started`. One instance serves one run.

    Attributes:
        external: The observer sends events to a service outside the run folder (a tracking
            server). The conformance kit then checks its declarations only and never calls
            it, so a check never logs a made-up run to a user's server. An observer that only
            writes into the run folder (``jsonl``, ``wandb`` offline) leaves it ``False`` and
            gets the kit's event checks.
    """

    external: ClassVar[bool] = False

    def run_started(self, run: RunStarted) -> None:
        """The run is about to compute its cells (after all its checks passed)."""

    def cell_finished(self, cell: CellFinished) -> None:
        """A cell is checkpointed (or was, in an earlier session: ``cell.from_checkpoint``)."""

    def run_finished(self, run: RunFinished) -> None:
        """The run ended (written, or interrupted); release what :meth:`run_started` opened."""
