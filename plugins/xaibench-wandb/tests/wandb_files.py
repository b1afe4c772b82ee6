"""Read back what W&B wrote offline, without network: each offline run folder's fields.

wandb 0.31 writes an offline run's data to ``run-<id>.wandb`` only (``files/config.yaml`` and
``files/wandb-summary.json`` are written by ``wandb sync`` or online runs, not offline); the
records are wandb's own ``Record`` protobuf messages (:mod:`xaibench_wandb.offline`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xaibench_wandb.offline import records


@dataclass
class OfflineRun:
    """What one offline run folder holds: the run's fields, config, summary, history, files."""

    folder: Path
    id: str = ""
    name: str = ""
    project: str = ""
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    notes: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    exited: bool = False


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)  # nested keys: W&B's own nesting


def read_run(folder: Path) -> OfflineRun:
    """Decode ``folder/run-*.wandb`` (one offline run folder)."""
    (log,) = folder.glob("run-*.wandb")
    assert log.read_bytes()[:4] == b":W&B"
    run = OfflineRun(folder=folder)
    for record in records(log):
        kind = record.WhichOneof("record_type")
        run.kinds.append(kind)
        if kind == "run":
            r = record.run
            run.id, run.name, run.project = r.run_id, r.display_name, r.project
            run.group, run.job_type, run.notes = r.run_group, r.job_type, r.notes
            run.tags = list(r.tags)
            for item in r.config.update:
                run.config[_key(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                run.config[_key(item)] = json.loads(item.value_json)
        elif kind == "summary":
            for item in record.summary.update:
                run.summary[_key(item)] = json.loads(item.value_json)
        elif kind == "history":
            run.history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "files":
            run.files += [f.path for f in record.files.files]
        elif kind == "exit":
            run.exited = True
    assert run.kinds[:2] == ["header", "run"], (folder, run.kinds)
    assert run.kinds[-1] == "exit", (folder, run.kinds)
    return run


def offline_runs(root: Path) -> list[OfflineRun]:
    """Every offline run folder under ``root/wandb`` (W&B's ``dir``), oldest first."""
    return [read_run(p) for p in sorted((root / "wandb").glob("offline-run-*")) if p.is_dir()]
