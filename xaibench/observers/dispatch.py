"""Calling a run's observers: the events built from the run's state, and failures contained.

:class:`RunObservers` is what the run machinery holds. It builds each event of
:mod:`xaibench.observers.base` from the run's configuration and cell results, and calls every
observer in turn. An observer that raises is reported once (one warning line naming it, the
event and the error) and not called again in this run: a tracker that is down must never cost
a run its results, nor stop the other observers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from xaibench import __version__, failpoints
from xaibench.observers.base import CellFinished, Observer, RunFinished, RunStarted

if TYPE_CHECKING:
    from xaibench.cell_result import CellResult
    from xaibench.config import RunConfig


def result_files(run_dir: Path) -> tuple[Path, ...]:
    """The results files at the top of ``run_dir`` (``results.json``, CSVs, leaderboards)."""
    from xaibench.engine.checkpoints import RUN_STATE
    from xaibench.paths import is_temporary
    from xaibench.run_lock import LOCK_FILE

    bookkeeping = (RUN_STATE, LOCK_FILE)
    return tuple(
        sorted(
            p
            for p in run_dir.iterdir()
            if p.is_file() and p.name not in bookkeeping and not is_temporary(p.name)
        )
    )


def run_id(study_hash: str, started: str) -> str:
    """The run's identity across sessions (:attr:`RunStarted.run_id`)."""
    return hashlib.sha256(f"{study_hash}\n{started}".encode()).hexdigest()[:16]


def cell_params(
    config: RunConfig,
    options: Mapping[str, Mapping[str, Any]],
    backbone: str,
    strategy: str,
    seed: int,
) -> dict[str, Any]:
    """The resolved options of one cell (:attr:`CellFinished.params`), flat where it helps.

    Args:
        config: The run's configuration.
        options: :func:`xaibench.engine.results.component_options` of the run.
        backbone: The cell's backbone key.
        strategy: The cell's strategy key.
        seed: The cell's seed.
    """
    return {
        "task": config.task,
        "dataset": config.dataset.name,
        "seed": seed,
        "backbone": backbone,
        "backbone_options": dict(options.get("backbones", {}).get(backbone, {})),
        "strategy": strategy,
        "strategy_options": dict(options.get("strategies", {}).get(strategy, {})),
        "train": config.train.model_dump(mode="json"),
        "saliency": [r.key for r in config.saliency],
        "perturbations": [r.key for r in config.perturbations],
        "metrics": [r.key for r in config.metrics],
        "device": config.device,
        "precision": config.precision,
    }


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class RunObservers:
    """The observers of one run, called safely (see the module docstring).

    Args:
        observers: Observer name (for messages) -> instance; empty: every call is a no-op.
        log: Where warnings go (the run's progress log).
    """

    def __init__(self, observers: Mapping[str, Observer], log: Callable[[str], None]) -> None:
        self._active = dict(observers)
        self._log = log
        self.failures: dict[str, str] = {}
        self.run_id = ""
        self._options: Mapping[str, Mapping[str, Any]] = {}
        self._config: RunConfig | None = None

    def __bool__(self) -> bool:
        return bool(self._active)

    def _call(self, event: str, method: Callable[[Observer], None]) -> None:
        for name, observer in list(self._active.items()):
            try:
                method(observer)
            except Exception as exc:  # a tracker's failure must not cost the run
                self.failures[name] = f"{event}: {_one_line(exc)}"
                del self._active[name]
                self._log(
                    f"[yellow]warning[/yellow]: observer {name} failed in {event} "
                    f"({_one_line(exc)}); it is not called again in this run, which goes on"
                )

    def run_started(
        self,
        config: RunConfig,
        run_dir: Path,
        started: str,
        resumed: bool,
        cells: list[str],
        provenance: dict[str, Any],
        options: Mapping[str, Mapping[str, Any]],
    ) -> None:
        """Tell every observer the run starts (see :class:`RunStarted`)."""
        study = config.study_hash()
        self.run_id = run_id(study, started)
        self._config = config
        self._options = options
        event = RunStarted(
            run_id=self.run_id,
            run_dir=Path(run_dir).resolve(),
            task=config.task,
            study_hash=study,
            started=started,
            resumed=resumed,
            config=config.model_dump(mode="json"),
            cells=tuple(cells),
            provenance={"xaibench_version": __version__, "components": provenance},
        )
        self._call("run_started", lambda o: o.run_started(event))

    def cell_finished(
        self, result: CellResult, key: str, files: list[Path], *, from_checkpoint: bool
    ) -> None:
        """Tell every observer a cell is checkpointed (see :class:`CellFinished`)."""
        if not self._active or self._config is None:
            return
        cell = result.cell
        status: Literal["ok", "failed"] = "ok" if result.status == "ok" else "failed"
        error = None if status == "ok" else " ".join(str(result.error or result.status).split())
        event = CellFinished(
            run_id=self.run_id,
            label=cell.label(),
            backbone=cell.backbone.key,
            strategy=cell.strategy.key,
            seed=cell.seed,
            key=key,
            status=status,
            error=error,
            from_checkpoint=from_checkpoint,
            params=cell_params(
                self._config, self._options, cell.backbone.key, cell.strategy.key, cell.seed
            ),
            records=tuple(dict(r) for r in result.records),
            files=tuple(sorted(p.resolve() for p in files)),
            seconds=result.seconds or None,
        )
        self._call("cell_finished", lambda o: o.cell_finished(event))
        failpoints.hit("observed")  # tests: killed after a cell was observed

    def run_finished(
        self,
        run_dir: Path,
        status: str,
        cells_failed: int,
        error: str | None = None,
    ) -> None:
        """Tell every observer the run ended (see :class:`RunFinished`)."""
        if not self._active:
            return
        run_dir = Path(run_dir).resolve()
        files = () if status == "interrupted" or not run_dir.is_dir() else result_files(run_dir)
        event = RunFinished(
            run_id=self.run_id,
            run_dir=run_dir,
            status=status,  # type: ignore[arg-type]
            cells_failed=cells_failed,
            files=files,
            error=error,
        )
        self._call("run_finished", lambda o: o.run_finished(event))
