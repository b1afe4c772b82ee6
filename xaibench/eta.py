"""The remaining time of a run's cells, estimated from the first cell on.

Pure functions, shown by :class:`~xaibench.progress.RichProgress` on the ``cells`` bar:

* before any cell has finished, a cell is expected to cost :func:`first_cell_seconds`, a rough
  model of the number of images and training epochs, calibrated on the default run (12 cells,
  1,000 phantom images at 128 px, 12 epochs: about 8 s a cell on two idle CPU cores). Backbone
  size, image resolution and the device are not in it, so it is only the first guess;
* from the first finished cell on, a cell costs the mean time per finished cell (the seconds
  since the bar's clock started up to the last finish, over the cells finished): the estimate
  is refined as cells finish, and with parallel workers it is their throughput.

:func:`remaining_seconds` then takes off the time the running cell has already had, never going
below the cells still waiting.
"""

from __future__ import annotations

#: Seconds per image of a cell's fixed work (features, predictions, explanations, Δ).
SECONDS_PER_IMAGE = 0.002
#: Seconds per image and training epoch.
SECONDS_PER_IMAGE_EPOCH = 0.0005


def first_cell_seconds(n_images: int, epochs: int) -> float:
    """The first guess of one cell's seconds: ``n_images x (0.002 + 0.0005 x epochs)``.

    Args:
        n_images: Images in the run's dataset (all splits).
        epochs: Training epochs of a cell.
    """
    return max(n_images, 0) * (SECONDS_PER_IMAGE + SECONDS_PER_IMAGE_EPOCH * max(epochs, 0))


def remaining_seconds(
    *,
    remaining: int,
    finished: int,
    elapsed: float,
    last_finish: float,
    first_estimate: float | None,
) -> float | None:
    """Seconds until the last cell finishes, or ``None`` when there is nothing to go on.

    Args:
        remaining: Cells not finished yet (the running one included).
        finished: Cells finished since the clock started.
        elapsed: Seconds since the clock started.
        last_finish: Seconds from the clock's start to the last finish (0 when none).
        first_estimate: The guess of a cell's seconds before any has finished (``None``: none).

    Returns:
        ``(remaining - 1) x per_cell + max(per_cell - running, 0)``, where ``per_cell`` is the
        mean seconds per finished cell (``last_finish / finished``), or ``first_estimate`` while
        none has finished, and ``running`` the seconds since the last finish.
    """
    if remaining <= 0:
        return 0.0
    if finished > 0:
        per_cell = last_finish / finished
    elif first_estimate is not None:
        per_cell = first_estimate
    else:
        return None
    running = max(elapsed - last_finish, 0.0)
    return (remaining - 1) * per_cell + max(per_cell - running, 0.0)
