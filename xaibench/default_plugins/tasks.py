"""Built-in tasks."""

from __future__ import annotations

from xaibench.hookspecs import hookimpl
from xaibench.registry import Register


@hookimpl
def register_tasks(register: Register) -> None:
    """Register ``osteoporosis``."""
    register(
        "osteoporosis",
        "xaibench.tasks.osteoporosis:Osteoporosis",
        summary="WHO T-score classes from chest X-rays; osteoporosis vs rest; region: bone",
    )
