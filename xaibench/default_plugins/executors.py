"""Built-in executors."""

from __future__ import annotations

from xaibench.hookspecs import hookimpl
from xaibench.registry import Register


@hookimpl
def register_executors(register: Register) -> None:
    """Register ``local``."""
    register("local", "xaibench.executors.local:LocalExecutor", summary="cells run in this process")
