"""A toy cell job for executor checks, importable wherever xaibench is installed.

It lives in the package, not in a test module, because executors that run cells in other
processes (Ray workers, a batch queue) unpickle the job there, which imports its class by module
name. It imports nothing heavy.
"""

from __future__ import annotations

import os
from typing import Any


class RecordingJob:
    """``job(cell)`` returns ``("squared", cell, cell * cell)``; ``done`` records each call.

    ``done`` and ``lost`` run in the calling process by contract; each record carries the pid
    it ran in, so a check can tell. The records stay behind when the job is pickled.
    """

    def __init__(self) -> None:
        self.driver_pid = os.getpid()
        self.done_calls: list[tuple[int, Any, int]] = []
        self.lost_calls: list[tuple[Any, str]] = []

    def __getstate__(self) -> dict[str, Any]:
        """Send the job without the calling process's records."""
        state = dict(self.__dict__)
        state["done_calls"] = []
        state["lost_calls"] = []
        return state

    def __call__(self, cell: int) -> tuple[str, int, int]:
        """The cell's result."""
        return ("squared", cell, cell * cell)

    def done(self, index: int, result: Any) -> None:
        """Record that cell ``index`` finished with ``result``, and in which process."""
        self.done_calls.append((index, result, os.getpid()))

    def lost(self, cell: Any, error: str) -> tuple[str, Any, str]:
        """The result of a cell the executor could not run."""
        self.lost_calls.append((cell, error))
        return ("lost", cell, error)
