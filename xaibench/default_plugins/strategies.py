"""Built-in adaptation strategies."""

from __future__ import annotations

from xaibench.hookspecs import hookimpl
from xaibench.registry import Register


@hookimpl
def register_strategies(register: Register) -> None:
    """Register ``linear_probe`` and ``full``."""
    register(
        "linear_probe",
        "xaibench.strategies.linear_probe:LinearProbe",
        summary="frozen backbone, linear head on cached features",
    )
    register("full", "xaibench.strategies.full:FullFineTuning", summary="fine-tune every parameter")
