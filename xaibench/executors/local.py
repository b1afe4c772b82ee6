"""The in-process executor."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from xaibench.executors.base import Executor

C = TypeVar("C")
R = TypeVar("R")


class LocalExecutor(Executor):
    """Runs cells one after another in this process (the default; deterministic on CPU)."""

    display_name = "Local"

    def run(self, cells: Sequence[C], fn: Callable[[C], R]) -> list[R]:
        """Run each cell in order."""
        return [fn(cell) for cell in cells]
