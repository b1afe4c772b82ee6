"""The xaibench-wandb plugin: registers the observer ``wandb`` (Weights & Biases, offline first).

Importing this package imports neither wandb nor torch: the observer class is registered by
name and wandb is imported only when a run uses it.
"""

from __future__ import annotations

from xaibench.hookspecs import hookimpl
from xaibench.registry import Register

__version__ = "0.1.0"


@hookimpl
def register_observers(register: Register) -> None:
    """Register ``wandb`` (lazy: wandb is imported only when a run uses the observer)."""
    register(
        "wandb",
        "xaibench_wandb.observer:WandbObserver",
        summary="each cell a Weights & Biases run, grouped by study (offline by default)",
    )
