"""What every command module shares: the per-invocation :class:`State` and one-line messages."""

from __future__ import annotations

from dataclasses import dataclass, field

import click

from xaibench.plugins import Components, PluginManager, collect_components


@dataclass
class State:
    """Per-invocation state: the plugin manager and, when first needed, the registries."""

    pm: PluginManager
    _components: Components | None = field(default=None, repr=False)

    @property
    def components(self) -> Components:
        """Registries, built on first use."""
        if self._components is None:
            self._components = collect_components(self.pm)
        return self._components


def _state() -> State:
    return click.get_current_context().find_object(State)  # type: ignore[return-value]


def _one_line(message: str) -> str:
    return " ".join(str(message).split())
