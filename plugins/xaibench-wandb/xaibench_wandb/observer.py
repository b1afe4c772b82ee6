"""``wandb``: each cell of a run a Weights & Biases run, grouped by study; offline by default.

The mapping (W&B has no nested runs): one W&B run per cell (``job_type="cell"``, named by the
cell's label) and, when the run's results are written, one W&B run for the study
(``job_type="study"``) with the leaderboards; all of them in one ``group`` (default: the
xaibench run id), so W&B's grouping shows a study's cells together and its runs table compares
cells by their config columns (backbone, strategy, seed, options).

Per cell: ``config`` = :attr:`CellFinished.params` plus ``xaibench`` (run id, cell key, study
hash, version, the backbone's and strategy's provenance); one logged step with the metrics
(:mod:`xaibench_wandb.naming`: ``<category>/<metric>/<qualifiers>``, CIs as ``.ci_low`` and
``.ci_high``), the gallery PNGs as ``gallery`` (``wandb.Image``, captioned with the file
name) and every record as the ``records`` table; summary ``xaibench/status``,
``xaibench/records_left_out`` (records not ok or not finite: in the table, not metrics) and
``xaibench/seconds``; tags backbone, strategy, ``seed-N`` and the status; notes the label (and
the error of a failed cell).

Resume: a W&B run's id is derived from the xaibench run id and the cell's checkpoint key
(:func:`xaibench_wandb.naming.wandb_id`), the same in every session, and runs are opened with
``resume="allow"``. When a cell's run is finished (offline: once W&B's transaction log of it
holds its exit record, :mod:`xaibench_wandb.offline`), a marker file is written
(``<dir>/wandb/xaibench/logged/<id>.json``); a cell restored from a checkpoint that has a
marker is not logged again. A session killed between opening and finishing a cell's W&B run
logs it again under the same id (offline: a second run folder, which ``wandb sync`` merges into
the same W&B run).

Nothing is written outside the W&B folder: W&B's cache, data, artifact and (offline) config
folders are pointed at ``<dir>/wandb/xaibench/`` while a W&B run is open, unless the user set
``WANDB_CACHE_DIR`` etc. themselves; git, code saving, console capture and the system monitor
are off (the monitor on with ``system_stats``), and so is W&B's run metadata (host name, command
line with its absolute paths, hardware; on with ``metadata``). Config values and error messages
go through :func:`xaibench_wandb.naming.public` and ``public_text`` (no absolute paths, no
passwords in URLs).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr

from xaibench.observers.base import CellFinished, Observer, RunFinished, RunStarted
from xaibench_wandb.naming import (
    metric_key,
    metric_values,
    project_name,
    public,
    public_text,
    tag,
    wandb_id,
)
from xaibench_wandb.offline import wait_complete

#: Record fields in the ``records`` table, in this order (absent ones left empty).
TABLE_COLUMNS = (
    "key",
    "category",
    "metric",
    "saliency",
    "perturbation",
    "region",
    "class",
    "value",
    "ci_low",
    "ci_high",
    "n",
    "status",
    "reason",
)

#: Results files the study run keeps (copied into its files).
STUDY_FILES = ("results.json", "config.yaml")


def _cell(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _write(path: Path, content: dict[str, Any]) -> None:
    """Write a marker whole (a process killed meanwhile leaves the old one, or none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    part.write_text(json.dumps(content, sort_keys=True) + "\n", encoding="utf-8")
    part.replace(path)


def _read(path: Path) -> dict[str, Any]:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


class WandbObserver(Observer):
    """Log each cell as a W&B run and the study's leaderboards as one more (module docstring)."""

    display_name = "Weights & Biases"

    mode: Literal["offline", "online"] = Field(
        "offline",
        description="offline: W&B run folders on disk, uploaded later with 'wandb sync'; "
        "online: straight to the W&B server (needs network and an API key).",
    )
    project: str | None = Field(None, description="W&B project (default: xaibench-<task>).")
    entity: str | None = Field(None, description="W&B entity (team or user; default: yours).")
    dir: str | None = Field(
        None,
        description="Where W&B writes (its runs go in DIR/wandb/; default: the run folder).",
    )
    group: str | None = Field(None, description="W&B group (default: the xaibench run id).")
    tags: tuple[str, ...] = Field((), description="More tags for every W&B run.")
    gallery: bool = Field(True, description="Log each cell's gallery PNGs as images.")
    records_table: bool = Field(True, description="Log each cell's records as a table.")
    study_run: bool = Field(True, description="One more W&B run with the leaderboards.")
    system_stats: bool = Field(
        False, description="W&B's system monitor (CPU, GPU, memory every 15 s)."
    )
    metadata: bool = Field(
        False,
        description="W&B's run metadata: host name, OS, Python, the command line (which may "
        "hold absolute paths) and the machine's hardware.",
    )
    flush_timeout: float = Field(
        30.0,
        gt=0,
        description="Offline: seconds to wait for W&B to finish writing a run's log before "
        "the cell counts as logged.",
    )
    base_url: str | None = Field(
        None, description="A self-hosted W&B server (online mode; never logged)."
    )

    _run: RunStarted | None = PrivateAttr(None)
    _root: Path = PrivateAttr(Path("."))

    # -- places ----------------------------------------------------------------------------

    @property
    def _state(self) -> Path:
        """This observer's folder in W&B's: markers; W&B's cache, config, data, artifacts."""
        return self._root / "wandb" / "xaibench"

    def _marker(self, run_id: str) -> Path:
        return self._state / "logged" / f"{run_id}.json"

    @contextlib.contextmanager
    def _environment(self) -> Iterator[None]:
        """W&B's own folders inside :attr:`_state` while a run is open (unless set by the user)."""
        places = {
            "WANDB_CACHE_DIR": "cache",
            "WANDB_DATA_DIR": "data",
            "WANDB_ARTIFACT_DIR": "artifacts",
        }
        if self.mode == "offline":  # online keeps the user's settings (wandb login --host)
            places["WANDB_CONFIG_DIR"] = "config"
        saved: dict[str, str | None] = {}
        for var, sub in places.items():
            if not os.environ.get(var):
                saved[var] = os.environ.get(var)
                os.environ[var] = str(self._state / sub)
        try:
            yield
        finally:
            for var, old in saved.items():
                if old is None:
                    os.environ.pop(var, None)
                else:
                    os.environ[var] = old

    # -- one W&B run ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _wandb_run(self, run_id: str, **init: Any) -> Iterator[Any]:
        """Open W&B run ``run_id``, yield it, finish it, and write its marker."""
        import wandb

        assert self._run is not None
        settings: dict[str, Any] = {
            "console": "off",
            "silent": True,
            "disable_git": True,  # a git remote URL may hold a token
            "save_code": False,
            "x_disable_stats": not self.system_stats,
        }
        if not self.metadata:
            settings.update(x_disable_meta=True, x_disable_machine_info=True, host="")
        if self.base_url:
            settings["base_url"] = self.base_url
        with self._environment():
            run = wandb.init(
                mode=self.mode,
                project=self.project or project_name(self._run.task),
                entity=self.entity,
                dir=str(self._root),
                group=self.group or self._run.run_id,
                id=run_id,
                resume="allow",
                reinit="create_new",  # never touch a run the user has open in this process
                settings=wandb.Settings(**settings),
                **init,
            )
            folder = Path(run.dir).parent
            try:
                yield run
            except BaseException:
                run.finish(exit_code=1)
                raise
            run.finish()
        if self.mode == "offline" and not wait_complete(folder, self.flush_timeout):
            return  # no marker: a resumed run logs this again, under the same id
        _write(self._marker(run_id), {"name": init.get("name"), "job_type": init.get("job_type")})

    def _tags(self, *more: str) -> list[str]:
        return [tag(t) for t in dict.fromkeys([*more, *self.tags]) if t]

    # -- events -------------------------------------------------------------------------------

    def run_started(self, run: RunStarted) -> None:
        """Remember the run; check wandb imports (else this observer is dropped now)."""
        import wandb  # noqa: F401  (fail at the start, not at the first cell)

        self._run = run
        self._root = Path(self.dir).resolve() if self.dir else run.run_dir
        self._state.mkdir(parents=True, exist_ok=True)

    def cell_finished(self, cell: CellFinished) -> None:
        """One W&B run for the cell (skipped for a restored cell already logged)."""
        import wandb

        if self._run is None:
            return
        run_id = wandb_id(cell.run_id, cell.key)
        if cell.from_checkpoint and self._marker(run_id).is_file():
            return
        components = self._run.provenance.get("components", {})
        config = {
            **public(cell.params, self._run.run_dir),
            "seed": cell.seed,
            "xaibench": {
                "version": self._run.provenance.get("xaibench_version"),
                "run_id": cell.run_id,
                "study_hash": self._run.study_hash,
                "cell_key": cell.key,
                "label": cell.label,
                "backbone": public(
                    components.get("backbones", {}).get(cell.backbone, {}), self._run.run_dir
                ),
                "strategy": public(
                    components.get("strategies", {}).get(cell.strategy, {}), self._run.run_dir
                ),
            },
        }
        error = public_text(cell.error or "", self._run.run_dir)
        notes = f"{cell.label}: {error}" if error else cell.label
        metrics, left_out = metric_values(cell.records)
        step: dict[str, Any] = dict(metrics)
        if self.gallery:
            images = [p for p in cell.files if p.suffix == ".png" and p.parent.name == "gallery"]
            if images:
                step["gallery"] = [wandb.Image(str(p), caption=p.name) for p in images]
        if self.records_table:
            rows = [
                [metric_key(r) if r.get("metric") else None]
                + [_cell(r.get(c)) for c in TABLE_COLUMNS[1:]]
                for r in cell.records
            ]
            step["records"] = wandb.Table(columns=list(TABLE_COLUMNS), data=rows)
        with self._wandb_run(
            run_id,
            name=cell.label,
            job_type="cell",
            config=config,
            tags=self._tags(cell.backbone, cell.strategy, f"seed-{cell.seed}", cell.status),
            notes=notes,
        ) as run:
            if step:
                run.log(step)
            run.summary.update(
                {
                    "xaibench/status": cell.status,
                    "xaibench/records_left_out": left_out,
                    "xaibench/seconds": cell.seconds,
                }
            )

    def run_finished(self, run: RunFinished) -> None:
        """The study's W&B run, with the leaderboards (not when the run was interrupted)."""
        if self._run is None or not self.study_run or run.status == "interrupted":
            return
        import pandas as pd
        import wandb

        files = {p.name: p for p in run.files}
        kept = [files[n] for n in STUDY_FILES if n in files]
        boards = {
            n.removeprefix("leaderboard_").removesuffix(".csv"): p
            for n, p in files.items()
            if n.startswith("leaderboard_") and n.endswith(".csv")
        }
        run_id = wandb_id(run.run_id, "study")
        marker = self._marker(run_id)
        digest = _digest(kept + sorted(boards.values()))
        if _read(marker).get("digest") == digest:
            return  # this study's results are logged already (a finished run resumed)
        started = self._run
        with self._wandb_run(
            run_id,
            name=f"{started.task} study {started.run_id}",
            job_type="study",
            config={
                **public(started.config, started.run_dir),
                "xaibench": {
                    "version": started.provenance.get("xaibench_version"),
                    "run_id": started.run_id,
                    "study_hash": started.study_hash,
                    "started": started.started,
                    "cells": list(started.cells),
                    "provenance": public(started.provenance.get("components", {}), started.run_dir),
                },
            },
            tags=self._tags("study", run.status),
            notes=f"{started.task}: {len(started.cells)} cells, {run.cells_failed} failed",
        ) as wb:
            tables = {
                f"leaderboard/{name}": wandb.Table(dataframe=pd.read_csv(path))
                for name, path in sorted(boards.items())
            }
            if tables:
                wb.log(tables)
            wb.summary.update(
                {
                    "xaibench/status": run.status,
                    "xaibench/cells": len(started.cells),
                    "xaibench/cells_failed": run.cells_failed,
                }
            )
            target = Path(wb.dir) / "results"
            target.mkdir(parents=True, exist_ok=True)
            for path in kept + sorted(boards.values()):
                shutil.copyfile(path, target / path.name)
                wb.save(str(target / path.name), base_path=wb.dir, policy="now")
        if marker.is_file():  # the study's W&B run is complete: remember what it logged
            _write(marker, {**_read(marker), "digest": digest})


def logged(root: Path | str) -> Mapping[str, dict[str, Any]]:
    """The W&B runs this observer finished under ``root`` (``dir``): id -> marker contents."""
    folder = Path(root) / "wandb" / "xaibench" / "logged"
    if not folder.is_dir():
        return {}
    return {p.stem: _read(p) for p in sorted(folder.glob("*.json"))}
