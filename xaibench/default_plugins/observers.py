"""Built-in run observers (``xaibench run --observer NAME``)."""

from __future__ import annotations

from xaibench.hookspecs import hookimpl
from xaibench.registry import Register


@hookimpl
def register_observers(register: Register) -> None:
    """Register ``jsonl``, which appends every event to a JSON-lines file."""
    register(
        "jsonl",
        "xaibench.observers.jsonl:JsonlObserver",
        summary="every run event as one JSON line in a file",
    )
