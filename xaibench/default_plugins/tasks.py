"""Built-in tasks: task files shipped in :mod:`xaibench.tasks`, read by ``FileTask``."""

from __future__ import annotations

from xaibench.hookspecs import hookimpl
from xaibench.registry import Register


@hookimpl
def register_tasks(register: Register) -> None:
    """Register ``osteoporosis`` (``xaibench/tasks/osteoporosis.yaml``)."""
    register(
        "osteoporosis",
        "xaibench.tasks.file_task:FileTask",
        summary="WHO T-score classes from chest X-rays; osteoporosis vs rest; region: bone",
        options={"file": "xaibench.tasks:osteoporosis.yaml"},
    )
