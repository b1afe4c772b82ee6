"""The executor contract: run independent cells, return their results in order."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import TypeVar

from xaibench.component import Component

C = TypeVar("C")
R = TypeVar("R")


class Executor(Component):
    """Runs ``fn`` on every cell; ``fn`` catches cell failures and returns them as results."""

    @abstractmethod
    def run(self, cells: Sequence[C], fn: Callable[[C], R]) -> list[R]:
        """Return ``[fn(cell) for cell in cells]``, in the order of ``cells``."""
