"""Read back what W&B wrote offline, without network and without xaibench-wandb's code.

wandb 0.31 writes an offline run's data to ``run-<id>.wandb`` only (``files/config.yaml`` and
``files/wandb-summary.json`` are written by ``wandb sync`` or online runs, not offline) and has
no Python reader for it. The file is a LevelDB-style log: a 7-byte header (``:W&B``, a 2-byte
magic, a version byte), then 32 KiB blocks of chunks, each chunk a 7-byte header (CRC-32, 2-byte
little-endian length, type: 1 full, 2 first, 3 middle, 4 last) and its bytes; a block's tail
shorter than a chunk header is zero padding. Each whole record is one ``Record`` protobuf of
wandb's own (``wandb.proto.wandb_internal_pb2``), which this reader decodes.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
HEADER = 7


def raw_records(path: Path) -> list[bytes]:
    """The records of a ``.wandb`` file, as protobuf bytes (whole: chunks joined)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a W&B transaction log"
    pos, out, pending = HEADER, [], b""
    while pos < len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if kind == 0 and length == 0:  # zero padding up to the block's end
            pos += left
            continue
        chunk = data[pos + HEADER : pos + HEADER + length]
        assert len(chunk) == length, f"{path}: truncated at byte {pos}"
        pos += HEADER + length
        if kind == 1:
            out.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            out.append(pending + chunk)
            pending = b""
        else:
            raise AssertionError(f"{path}: unknown chunk type {kind} at byte {pos}")
    return out


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
    from wandb.proto import wandb_internal_pb2 as pb

    (log,) = folder.glob("run-*.wandb")
    run = OfflineRun(folder=folder)
    for raw in raw_records(log):
        record = pb.Record()
        record.ParseFromString(raw)
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
    return run


def offline_runs(root: Path) -> list[OfflineRun]:
    """Every offline run folder under ``root/wandb`` (W&B's ``dir``), oldest first."""
    return [read_run(p) for p in sorted((root / "wandb").glob("offline-run-*")) if p.is_dir()]
