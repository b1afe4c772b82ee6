"""An example xaibench plugin: registers the saliency method ``example_method``."""

from __future__ import annotations

from xaibench.hookspecs import hookimpl
from xaibench.registry import Register

__version__ = "0.1.0"


@hookimpl
def register_saliency_methods(register: Register) -> None:
    """Register ``example_method`` (lazy: the module imports torch only when used)."""
    register(
        "example_method",
        "xaibench_example.method:GradientTimesInput",
        summary="|gradient x input| (example plugin)",
    )
