"""Bridged methods and metrics, registered through the same hooks as any plugin.

Only bridges whose library is installed register names, so ``xaibench ls saliency`` lists
``captum:…``/``gradcam:…``/``zennit:…`` and ``xaibench ls metrics`` ``quantus:…`` exactly when
they can run; an unknown bridged name otherwise says which extra installs it
(:func:`xaibench.bridges.extras.missing_extra_hint`).
"""

from __future__ import annotations

from xaibench.bridges.extras import BRIDGED_OPTION, BRIDGES
from xaibench.hookspecs import hookimpl
from xaibench.registry import Register


def _register(register: Register, kind: str) -> None:
    for bridge in BRIDGES:
        if bridge.kind != kind or not bridge.installed():
            continue
        for entry in bridge.names():
            register(
                f"{bridge.prefix}:{entry.name}",
                entry.target,
                summary=entry.summary,
                options={BRIDGED_OPTION: entry.name},
            )


@hookimpl
def register_saliency_methods(register: Register) -> None:
    """Register ``captum:``, ``gradcam:`` and ``zennit:`` names whose library is installed."""
    _register(register, "saliency")


@hookimpl
def register_metrics(register: Register) -> None:
    """Register ``quantus:`` names when Quantus is installed."""
    _register(register, "metrics")
