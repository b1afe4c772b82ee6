"""``jsonl``: every observer event as one JSON line in a file (the built-in observer).

For a CI job or a script that follows a run as it goes (``tail -f``), and the reference
implementation of the observer contract. Each line is one event: ``{"event": "run_started" |
"cell_finished" | "run_finished", ...}`` with the event's fields (paths relative to the run
folder, so the file holds no folder of the user's). The file is appended to, so a resumed run
adds its second session below the first; a reader de-duplicates cells by ``key`` (or skips
events with ``from_checkpoint``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from pydantic import Field, PrivateAttr

from xaibench.observers.base import CellFinished, Observer, RunFinished, RunStarted


def _plain(value: Any, run_dir: Path) -> Any:
    """JSON-able: paths relative to the run folder, NaN and infinities as null."""
    if isinstance(value, Path):
        try:
            return value.relative_to(run_dir).as_posix()
        except ValueError:
            return value.name
    if isinstance(value, dict):
        return {str(k): _plain(v, run_dir) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, run_dir) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and not isinstance(value, str):
        return _plain(value.item(), run_dir)
    return value


class JsonlObserver(Observer):
    """Append each event to a JSON-lines file (default ``observer-events.jsonl`` in the run)."""

    display_name = "JSON lines"

    path: str | None = Field(
        None,
        description="The file to append to (default: observer-events.jsonl in the run folder).",
    )

    _file: Path | None = PrivateAttr(None)
    _run_dir: Path = PrivateAttr(Path("."))

    def _write(self, name: str, event: Any) -> None:
        if self._file is None:
            return
        fields = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
        line = json.dumps({"event": name, **_plain(fields, self._run_dir)}, sort_keys=True)
        with self._file.open("a", encoding="utf-8") as out:
            out.write(line + "\n")

    def run_started(self, run: RunStarted) -> None:
        """Open (append to) the events file."""
        self._run_dir = run.run_dir
        self._file = Path(self.path) if self.path else run.run_dir / "observer-events.jsonl"
        self._write("run_started", run)

    def cell_finished(self, cell: CellFinished) -> None:
        """One line with the cell's params, records and files."""
        self._write("cell_finished", cell)

    def run_finished(self, run: RunFinished) -> None:
        """The last line of this session."""
        self._write("run_finished", run)
