"""The cells bar's remaining time: known answers of the estimator, and its use by the display."""

from __future__ import annotations

import io

import pytest

from xaibench import progress as progress_module
from xaibench.eta import first_cell_seconds, remaining_seconds
from xaibench.progress import NullProgress, RichProgress, expect_cells, format_eta


def test_first_cell_guess_of_the_default_run():
    # 1,000 images x (0.002 + 12 epochs x 0.0005) = 8 s.
    assert first_cell_seconds(1000, 12) == pytest.approx(8.0)
    assert first_cell_seconds(500, 0) == pytest.approx(1.0)
    assert first_cell_seconds(0, 12) == 0.0


def test_before_any_cell_the_first_guess_counts():
    # 12 cells at 8 s, 3 s into the first: 11 x 8 + 5.
    got = remaining_seconds(
        remaining=12, finished=0, elapsed=3.0, last_finish=0.0, first_estimate=8.0
    )
    assert got == pytest.approx(93.0)


def test_without_a_guess_nothing_is_known_until_a_cell_finishes():
    assert (
        remaining_seconds(
            remaining=4, finished=0, elapsed=9.0, last_finish=0.0, first_estimate=None
        )
        is None
    )


def test_finished_cells_replace_the_guess():
    # 2 cells done in 30 s (15 s each), 5 s into the third; 10 left: 9 x 15 + 10.
    got = remaining_seconds(
        remaining=10, finished=2, elapsed=35.0, last_finish=30.0, first_estimate=8.0
    )
    assert got == pytest.approx(145.0)


def test_an_overdue_cell_does_not_go_below_the_cells_waiting():
    # 1 done in 10 s; the second has run 25 s (overdue): 3 waiting after it x 10.
    got = remaining_seconds(
        remaining=4, finished=1, elapsed=35.0, last_finish=10.0, first_estimate=None
    )
    assert got == pytest.approx(30.0)


def test_nothing_left():
    assert (
        remaining_seconds(remaining=0, finished=3, elapsed=1, last_finish=1, first_estimate=1) == 0
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-:--:--"), (0.0, "0:00:00"), (0.2, "0:00:01"), (93.0, "0:01:33"), (3725, "1:02:05")],
)
def test_format(seconds, text):
    assert format_eta(seconds) == text


class _Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_cells_bar_shows_an_eta_from_the_first_cell_on(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(progress_module.time, "monotonic", clock)
    display = RichProgress()
    display.console.file = io.StringIO()
    advance = display.start("cells", total=5)
    advance()  # a cell read back from its checkpoint: instant, and left out of the estimate
    expect_cells(display, 4, 8.0)
    bar = display._clock
    assert bar is not None
    clock.now += 2.0
    assert bar.seconds_left() == pytest.approx(3 * 8.0 + 6.0)
    clock.now += 18.0  # the first computed cell took 20 s
    advance()
    assert bar.seconds_left() == pytest.approx(3 * 20.0)
    # Rendered by the bar's eta column.
    task = display._progress.tasks[0]
    column = display._progress.columns[-1]
    assert str(column.render(task)) == "0:01:00"


def test_displays_without_a_clock_ignore_the_expectation():
    expect_cells(NullProgress(), 3, 1.0)  # no error, nothing to do
