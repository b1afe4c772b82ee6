"""The executor contract: run independent cells, return their results in order.

An executor receives the cells and a :class:`CellJob`. The job is the only thing that crosses a
process or machine boundary: it is picklable, and calling it on a cell (in any process that has
the same plugins and data) runs that cell and returns its result, with the cell's own failures
caught and returned as a ``failed`` result. Two more methods run in the calling process only:
:meth:`CellJob.done`, as each cell finishes (progress, the resumable checkpoint), and
:meth:`CellJob.lost`, for a cell that could not run at all (its worker died more often than the
executor retries), so that one lost cell never loses the others.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Protocol, TypeVar

from xaibench.component import Component

C = TypeVar("C")
R = TypeVar("R")
C_contra = TypeVar("C_contra", contravariant=True)


class CellJob(Protocol[C_contra, R]):
    """What an executor runs: picklable, callable on one cell (see the module docstring)."""

    def __call__(self, cell: C_contra) -> R:
        """Run ``cell`` (in any process); failures of the cell are returned, not raised."""

    def done(self, index: int, result: R) -> None:
        """Called in the calling process when cell ``index`` has finished, in any order."""

    def lost(self, cell: C_contra, error: str) -> R:
        """The result of a cell the executor could not run (``error`` says why)."""


class Executor(Component):
    """Runs a :class:`CellJob` on every cell and returns the results in the order of the cells.

    Every result passes through ``job.done`` exactly once, as soon as it exists, so that a run
    killed halfway keeps what had finished. Results must equal what the ``local`` executor
    returns for the same cells: cells are independent and each seeds itself.
    """

    @abstractmethod
    def run(self, cells: Sequence[C], job: CellJob[C, R]) -> list[R]:
        """Return ``[job(cell) for cell in cells]``, calling ``job.done`` on each result."""
        raise NotImplementedError(f"{type(self).__name__} must implement run()")
