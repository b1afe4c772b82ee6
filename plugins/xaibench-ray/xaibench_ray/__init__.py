"""The xaibench-ray plugin: registers the executor ``ray``, which runs each cell as a Ray task."""

from __future__ import annotations

from xaibench.hookspecs import hookimpl
from xaibench.registry import Register

__version__ = "0.1.0"


@hookimpl
def register_executors(register: Register) -> None:
    """Register ``ray`` (lazy: Ray is imported only when a run uses the executor)."""
    register(
        "ray",
        "xaibench_ray.executor:RayExecutor",
        summary="cells run as Ray tasks, on this machine or a Ray cluster",
    )
