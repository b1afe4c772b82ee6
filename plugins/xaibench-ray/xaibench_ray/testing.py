"""A toy cell job for testing executors, importable on every Ray worker.

It lives in the package rather than in the tests folder because Ray workers import the classes
of the objects they unpickle by module name: a class in a test module is only importable in the
driver, whose ``sys.path`` pytest has changed. It is also a quick way to check that a cluster's
workers run this plugin: ``RayExecutor(address="auto").run(range(8), SquareJob())``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ToyResult:
    """What :class:`SquareJob` returns for a cell: its square, or why it has none."""

    cell: int
    value: int | None
    status: str = "ok"
    error: str | None = None


class SquareJob:
    """A picklable cell job: ``job(n)`` is ``n * n``; ``done`` records calls in the driver.

    Args:
        hang: Cells whose first attempt writes the worker's pid to ``<hang_dir>/<cell>.pid``
            and then sleeps for ``hang_seconds``, so that a test can kill that worker
            mid-cell; later attempts (the pid file exists) return at once.
        hang_dir: Where the pid files go; required with ``hang``.
        hang_seconds: How long a hanging first attempt sleeps.
        fail: Cells on which the job raises (breaking the job contract on purpose), to check
            that an executor reports them through ``lost`` and runs the others.
    """

    def __init__(
        self,
        hang: tuple[int, ...] = (),
        hang_dir: str | os.PathLike[str] | None = None,
        hang_seconds: float = 120.0,
        fail: tuple[int, ...] = (),
    ) -> None:
        if hang and hang_dir is None:
            raise ValueError("hang needs hang_dir")
        self.hang = tuple(hang)
        self.hang_dir = None if hang_dir is None else str(hang_dir)
        self.hang_seconds = hang_seconds
        self.fail = tuple(fail)
        self.driver_pid = os.getpid()
        self.done_calls: list[tuple[int, ToyResult, int]] = []

    def __getstate__(self) -> dict[str, Any]:
        """Leave the driver's bookkeeping behind when the job is sent to workers."""
        state = dict(self.__dict__)
        state["done_calls"] = []
        return state

    def __call__(self, cell: int) -> ToyResult:
        """Square ``cell``, hanging on the first attempt of a cell listed in ``hang``."""
        if cell in self.fail:
            raise RuntimeError(f"cell {cell} was told to fail")
        if cell in self.hang and self.hang_dir is not None:
            pid_file = Path(self.hang_dir) / f"{cell}.pid"
            if not pid_file.exists():
                # Written under another name and renamed, so a reader never sees it half-written.
                partial = pid_file.with_suffix(".tmp")
                partial.write_text(str(os.getpid()))
                partial.replace(pid_file)
                time.sleep(self.hang_seconds)
        return ToyResult(cell, cell * cell)

    def done(self, index: int, result: ToyResult) -> None:
        """Record the call with the pid of the process it ran in (must be the driver's)."""
        self.done_calls.append((index, result, os.getpid()))

    def lost(self, cell: int, error: str) -> ToyResult:
        """The failed result of a cell that could not run."""
        return ToyResult(cell, None, status="lost", error=error)
