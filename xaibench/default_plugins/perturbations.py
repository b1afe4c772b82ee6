"""Built-in region perturbations."""

from __future__ import annotations

from xaibench.hookspecs import hookimpl
from xaibench.registry import Register


@hookimpl
def register_perturbations(register: Register) -> None:
    """Register ``zero`` and ``mean``."""
    register("zero", "xaibench.perturbations.fill:ZeroFill", summary="region set to 0")
    register(
        "mean",
        "xaibench.perturbations.fill:MeanFill",
        summary="region set to the image mean (over pixels outside the region)",
    )
