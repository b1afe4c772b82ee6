"""The in-process executor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from xaibench.executors.base import CellJob, Executor

C = TypeVar("C")
R = TypeVar("R")


class LocalExecutor(Executor):
    """Runs cells one after another in this process (the default; deterministic on CPU)."""

    display_name = "Local"

    def run(self, cells: Sequence[C], job: CellJob[C, R]) -> list[R]:
        """Run each cell in order, checkpointing each as it finishes."""
        results = []
        for index, cell in enumerate(cells):
            result = job(cell)
            job.done(index, result)
            results.append(result)
        return results
