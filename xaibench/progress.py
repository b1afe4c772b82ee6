"""Progress display for long steps, shared by the runner, strategies and saliency.

Components receive a :class:`Progress` and never create their own bars, so nested work (cells,
epochs, batches) shows as one coherent display, and tests can pass :class:`NullProgress`.

The persistent ``cells`` bar shows its remaining time from the first cell on: the run tells the
display, through :func:`expect_cells`, how many cells it will compute and what one is expected
to cost, and the estimate is refined as cells finish (:mod:`xaibench.eta`). Bars of a display
without that (rich's own estimate) show ``-:--:--`` until two steps fall within half a minute.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, TypeVar

from xaibench.eta import remaining_seconds

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


def expect_cells(progress: Progress, cells: int, first_cell_seconds: float | None) -> None:
    """Tell ``progress``, if it can use it, that ``cells`` cells are about to be computed.

    Cells counted before (read back from checkpoints) are left out of the estimate: its clock
    starts now. Displays without an ``expect`` method ignore it.

    Args:
        progress: The run's display.
        cells: Cells still to compute.
        first_cell_seconds: The guess of one cell's seconds
            (:func:`xaibench.eta.first_cell_seconds`).
    """
    expect = getattr(progress, "expect", None)
    if callable(expect):
        expect(cells, first_cell_seconds)


class _CellClock:
    """What the ``cells`` bar's estimate needs: when its clock started, and the finishes since."""

    def __init__(self, remaining: int, first_estimate: float | None = None) -> None:
        self.reset(remaining, first_estimate)

    def reset(self, remaining: int, first_estimate: float | None) -> None:
        self.start = time.monotonic()
        self.remaining = remaining
        self.first_estimate = first_estimate
        self.finished = 0
        self.last_finish = 0.0

    def finish_one(self) -> None:
        self.finished += 1
        self.remaining -= 1
        self.last_finish = time.monotonic() - self.start

    def seconds_left(self) -> float | None:
        return remaining_seconds(
            remaining=self.remaining,
            finished=self.finished,
            elapsed=time.monotonic() - self.start,
            last_finish=self.last_finish,
            first_estimate=self.first_estimate,
        )


def format_eta(seconds: float | None) -> str:
    """``h:mm:ss`` (rounded up to whole seconds), or ``-:--:--`` when unknown."""
    if seconds is None:
        return "-:--:--"
    whole = int(-(-seconds // 1))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


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
            ProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as _Progress
        from rich.text import Text

        class _Remaining(ProgressColumn):
            """The cell clock's estimate on a bar that has one, rich's own elsewhere."""

            def __init__(self) -> None:
                super().__init__()
                self._rich = TimeRemainingColumn()

            def render(self, task: Any) -> Any:
                clock = task.fields.get("clock")
                if clock is None or task.finished:
                    return self._rich.render(task)
                return Text(format_eta(clock.seconds_left()), style="progress.remaining")

        self.console = Console(stderr=True)
        self._clock: _CellClock | None = None
        self._progress = _Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            _Remaining(),
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
        """Add a persistent bar; the returned function advances it.

        The ``cells`` bar gets a clock (its estimate from the first cell on, :func:`expect_cells`).
        """
        clock = _CellClock(total) if description == "cells" else None
        task = self._progress.add_task(description, total=total, clock=clock)
        if clock is not None:
            self._clock = clock

        def advance() -> None:
            if clock is not None:
                clock.finish_one()
            self._progress.advance(task)

        return advance

    def expect(self, cells: int, first_cell_seconds: float | None) -> None:
        """Restart the ``cells`` bar's clock: ``cells`` to compute, each guessed at the seconds."""
        if self._clock is not None:
            self._clock.reset(cells, first_cell_seconds)
