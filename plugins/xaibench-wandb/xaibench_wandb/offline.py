"""W&B's offline transaction log (``run-<id>.wandb``): reading it, and waiting until it is whole.

wandb (0.31) writes an offline run's data only to this log, from its ``wandb-core`` process, a
moment after ``Run.finish()`` returns; and it has no Python reader for it. The observer waits
until a run's log ends with its exit record before marking the cell logged, so a process killed
right after a cell cannot leave a marker for an incomplete log; the tests read the log back.

The format (a LevelDB-style log, read from the files wandb writes): a 7-byte header (``:W&B``, a
2-byte magic, a version byte); then 32 KiB blocks of chunks, each a 7-byte header (CRC-32,
2-byte little-endian length, type: 1 whole, 2 first, 3 middle, 4 last part of a record) and its
bytes; a block's tail too short for a chunk header is padding. Each record is one ``Record``
protobuf message of wandb's own (``wandb.proto.wandb_internal_pb2``).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
HEADER = 7
MAGIC = b":W&B"


def raw_records(path: Path) -> Iterator[bytes]:
    """The whole records of a log, as protobuf bytes; stops at a truncated tail."""
    data = Path(path).read_bytes()
    if data[:4] != MAGIC:
        return
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if kind == 0 and length == 0:  # padding to the block's end
            pos += left
            continue
        chunk = data[pos + HEADER : pos + HEADER + length]
        if len(chunk) < length:
            return  # still being written
        pos += HEADER + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk
            pending = b""
        else:
            raise ValueError(f"{path.name}: unknown chunk type {kind} at byte {pos}")


def records(path: Path) -> Iterator[Any]:
    """The records of a log as wandb's ``Record`` messages."""
    from wandb.proto import wandb_internal_pb2 as pb

    for raw in raw_records(path):
        record = pb.Record()  # type: ignore[attr-defined]
        record.ParseFromString(raw)
        yield record


def complete(folder: Path) -> bool:
    """Whether the run folder's log holds the run's exit record (wandb is done with it)."""
    logs = list(Path(folder).glob("run-*.wandb"))
    return len(logs) == 1 and any(r.HasField("exit") for r in records(logs[0]))


def wait_complete(folder: Path, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for :func:`complete`; whether it is."""
    deadline = time.monotonic() + timeout
    while not complete(folder):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
