"""Executor checks, with a toy picklable job on three cells.

An executor that needs a service starts it the way a user's run would (the ``ray`` executor of
``xaibench-ray`` starts a private local Ray instance, about 7 s on a 2-core machine, and shuts
it down); an executor whose construction raises a user error (its library is missing) is skipped
with the reason.
"""

from __future__ import annotations

import os

from xaibench.errors import XaibenchError
from xaibench.executors.base import Executor
from xaibench.testing.core import Subject
from xaibench.testing.jobs import RecordingJob

#: Out of order on purpose: results must follow the cells, not their values.
CELLS = (3, 1, 2)


def _executor(subject: Subject) -> Executor:
    try:
        executor: Executor = subject.create()
    except XaibenchError as exc:
        subject.skip(f"cannot be built here: {exc}")
    return executor


def results_in_order(subject: Subject) -> None:
    """Results come back in cell order; ``job.done`` ran once per cell, in this process."""
    job = RecordingJob()
    results = _executor(subject).run(list(CELLS), job)
    expected = [job(cell) for cell in CELLS]
    if list(results) != expected:
        subject.fail(f"run() returned {results!r} for cells {list(CELLS)}, expected {expected!r}")
    indices = sorted(index for index, _, _ in job.done_calls)
    if indices != list(range(len(CELLS))):
        subject.fail(
            f"job.done was called with indices {indices}, expected each of "
            f"{list(range(len(CELLS)))} exactly once (it writes the resumable checkpoint)"
        )
    wrong = [(i, r) for i, r, _ in job.done_calls if r != expected[i]]
    if wrong:
        subject.fail(f"job.done received results that do not match their cells: {wrong}")
    elsewhere = {pid for _, _, pid in job.done_calls if pid != os.getpid()}
    if elsewhere:
        subject.fail(f"job.done ran in process(es) {sorted(elsewhere)}, not the calling process")
    if job.lost_calls:
        subject.fail(f"job.lost was called for cells that can run: {job.lost_calls}")


def no_cells(subject: Subject) -> None:
    """No cells: an empty list back, and no ``job.done`` call."""
    job = RecordingJob()
    results = _executor(subject).run([], job)
    if list(results) != []:
        subject.fail(f"run() with no cells returned {results!r}")
    if job.done_calls:
        subject.fail(f"run() with no cells called job.done {len(job.done_calls)} time(s)")
