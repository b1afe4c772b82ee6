"""Progress display for long steps, shared by the runner, strategies and saliency.

Components receive a :class:`Progress` and never create their own bars, so nested work (cells,
epochs, batches) shows as one coherent display, and tests can pass :class:`NullProgress`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, TypeVar

T = TypeVar("T")


class Progress(Protocol):
    """Something that can show progress over an iterable."""

    def track(self, items: Iterable[T], *, total: int | None, description: str) -> Iterator[T]:
        """Yield ``items`` while showing progress under ``description``."""
        ...

    def log(self, message: str) -> None:
        """Show one line of status."""
        ...

    def start(self, description: str, total: int) -> Callable[[], None]:
        """Show a bar that stays until the end; return the function that advances it by one."""
        ...


class NullProgress:
    """Shows nothing (tests, library use)."""

    def track(self, items: Iterable[T], *, total: int | None, description: str) -> Iterator[T]:
        """Yield ``items`` unchanged."""
        yield from items

    def log(self, message: str) -> None:
        """Discard ``message``."""

    def start(self, description: str, total: int) -> Callable[[], None]:
        """Return a function that does nothing."""
        return lambda: None


class RichProgress:
    """Progress bars on standard error with elapsed and remaining time (rich)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as _Progress

        self.console = Console(stderr=True)
        self._progress = _Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def track(self, items: Iterable[T], *, total: int | None, description: str) -> Iterator[T]:
        """Yield ``items`` under a bar that is removed when done (the log line remains)."""
        task = self._progress.add_task(description, total=total)
        try:
            for item in items:
                yield item
                self._progress.advance(task)
        finally:
            self._progress.remove_task(task)

    def log(self, message: str) -> None:
        """Print ``message`` above the bars."""
        self._progress.console.print(message, highlight=False)

    def start(self, description: str, total: int) -> Callable[[], None]:
        """Add a persistent bar; the returned function advances it."""
        task = self._progress.add_task(description, total=total)
        return lambda: self._progress.advance(task)
