"""Observer checks: declarations, and the event sequence of a made-up run stays in its folder.

An observer is called by every run that selects it, so the kit checks what a run relies on:
its methods take the documented event, it can be built from its registered options, and —
unless it declares itself :attr:`~xaibench.observers.base.Observer.external` (it talks to a
tracking server, which the kit must never send a made-up run) — the whole event sequence of a
small run (start, a finished cell with records and a gallery PNG, a failed cell, the end) runs
without raising and writes nothing outside the run folder: the working folder and the home
folder stay as they were.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from xaibench.observers.base import CellFinished, Observer, RunFinished, RunStarted
from xaibench.testing.core import Subject

_METHODS = ("run_started", "cell_finished", "run_finished")


def _png() -> bytes:
    """A 4x4 grey PNG, the made-up cell's gallery image."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("L", (4, 4), 128).save(out, format="PNG")
    return out.getvalue()


def declarations(subject: Subject) -> None:
    """An Observer that overrides an event method, each taking one event argument."""
    cls = subject.component_class()
    if not (isinstance(cls, type) and issubclass(cls, Observer)):
        subject.fail(f"{cls!r} is not an Observer")
    overridden = [m for m in _METHODS if getattr(cls, m) is not getattr(Observer, m)]
    if not overridden:
        subject.fail(f"overrides none of {', '.join(_METHODS)}: it would observe nothing")
    for method in overridden:
        parameters = list(inspect.signature(getattr(cls, method)).parameters.values())[1:]
        required = [
            p
            for p in parameters
            if p.default is inspect.Parameter.empty
            and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        ]
        if len(parameters) < 1 or len(required) > 1:
            subject.fail(f"{method} must take exactly one argument, the event (besides self)")


@contextlib.contextmanager
def _elsewhere(root: Path) -> Iterator[tuple[Path, Path]]:
    """HOME and the working folder moved to empty folders under ``root`` for the block."""
    home, cwd = root / "home", root / "cwd"
    home.mkdir()
    cwd.mkdir()
    saved_home, saved_cwd = os.environ.get("HOME"), os.getcwd()
    os.environ["HOME"] = str(home)
    os.chdir(cwd)
    try:
        yield home, cwd
    finally:
        os.chdir(saved_cwd)
        if saved_home is None:
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = saved_home


def _record(metric: str, value: float) -> dict[str, object]:
    return {
        "task": "conformance",
        "dataset": "made_up",
        "backbone": "tiny",
        "strategy": "linear_probe",
        "seed": 0,
        "metric": metric,
        "category": "performance",
        "saliency": None,
        "perturbation": None,
        "region": None,
        "value": value,
        "ci_low": value - 0.1,
        "ci_high": value + 0.1,
        "n": 20,
        "status": "ok",
        "reason": None,
        "details": {},
    }


def _events(run_dir: Path) -> tuple[RunStarted, list[CellFinished], RunFinished]:
    """A made-up two-cell run in ``run_dir``: one cell finished, one failed."""
    cell_dir = run_dir / "cells" / "tiny__linear_probe__seed0__0123456789ab"
    (cell_dir / "gallery").mkdir(parents=True)
    (cell_dir / "cell.json").write_text("{}")
    (cell_dir / "gallery" / "best.png").write_bytes(_png())
    (run_dir / "results.json").write_text('{"schema_version": "made up"}')
    (run_dir / "leaderboard_performance.md").write_text("| cell | AUC |\n|---|---|\n")
    started = RunStarted(
        run_id="0123456789abcdef",
        run_dir=run_dir,
        task="conformance",
        study_hash="0" * 64,
        started="2026-01-01T00:00:00+00:00",
        resumed=False,
        config={"task": "conformance", "seeds": [0]},
        cells=("tiny x linear_probe (seed 0)", "tiny x full (seed 0)"),
        provenance={"xaibench_version": "0", "components": {}},
    )
    common = {"run_id": started.run_id, "backbone": "tiny", "seed": 0}
    cells = [
        CellFinished(
            **common,  # type: ignore[arg-type]
            label=started.cells[0],
            strategy="linear_probe",
            key="a" * 64,
            status="ok",
            error=None,
            from_checkpoint=False,
            params={"task": "conformance", "backbone": "tiny", "strategy": "linear_probe"},
            records=(_record("auc", 0.75), _record("accuracy", 0.6)),
            files=(cell_dir / "cell.json", cell_dir / "gallery" / "best.png"),
            seconds=1.5,
        ),
        CellFinished(
            **common,  # type: ignore[arg-type]
            label=started.cells[1],
            strategy="full",
            key="b" * 64,
            status="failed",
            error="RuntimeError: made up",
            from_checkpoint=False,
            params={"task": "conformance", "backbone": "tiny", "strategy": "full"},
            records=(),
            files=(),
        ),
    ]
    finished = RunFinished(
        run_id=started.run_id,
        run_dir=run_dir,
        status="failed",
        cells_failed=1,
        files=(run_dir / "leaderboard_performance.md", run_dir / "results.json"),
    )
    return started, cells, finished


def events_stay_in_the_run_folder(subject: Subject) -> None:
    """The events of a made-up run: no exception, nothing written outside the run folder."""
    cls = subject.component_class()
    if getattr(cls, "external", False):
        subject.skip("external (talks to a tracking server): never sent a made-up run")
    observer: Observer = subject.create()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run_dir = root / "run"
        run_dir.mkdir()
        started, cells, finished = _events(run_dir)
        with _elsewhere(root) as (home, cwd):
            try:
                observer.run_started(started)
                for cell in cells:
                    observer.cell_finished(cell)
                observer.run_finished(finished)
            except Exception as exc:
                subject.fail(f"raised on a made-up run: {type(exc).__name__}: {exc}")
        strays = sorted(
            str(p.relative_to(root))
            for p in root.rglob("*")
            if not p.is_relative_to(run_dir) and p not in (home, cwd)
        )
        if strays:
            subject.fail(f"wrote outside the run folder: {', '.join(strays[:5])}")
        if cells[0].files[1].read_bytes() != _png():
            subject.fail("changed a file of the cell it was given")
