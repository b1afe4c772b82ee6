"""Typed, lazy registries of components, one per kind.

Design choices, each learned from a registry that got it wrong:

* A name registered twice is an error that names both providers (timm only warns, llm renames:
  both let a leaderboard row silently come from the wrong code).
* An unknown name answers with "did you mean" suggestions (lm-evaluation-harness).
* Targets may be ``"package.module:Attr"`` strings, imported only when the component is used, so
  ``xaibench ls`` never imports torch.
* Every entry records the plugin and distribution (with version) that provided it; that provenance
  goes into every results file.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from xaibench.component import Component, build_component
from xaibench.errors import RegistryCollisionError, UnknownComponentError, XaibenchError

T = TypeVar("T", bound=Component)


@dataclass(frozen=True)
class Provider:
    """Who registered a component: the pluggy plugin name and its distribution."""

    plugin: str
    distribution: str
    version: str
    builtin: bool = False

    def describe(self) -> str:
        """Return ``"plugin (distribution version)"`` for messages."""
        return f"{self.plugin} ({self.distribution} {self.version})"


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered component: a name, a (possibly lazy) class, preset options, provenance."""

    kind: str
    name: str
    target: type[T] | str
    provider: Provider
    summary: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)

    def load(self) -> type[T]:
        """Import (if lazy) and return the component class.

        Raises:
            XaibenchError: The target cannot be imported; the message names the provider.
        """
        if not isinstance(self.target, str):
            return self.target
        module_name, _, attr = self.target.partition(":")
        try:
            module = importlib.import_module(module_name)
            return getattr(module, attr) if attr else module  # type: ignore[return-value]
        except (ImportError, AttributeError) as exc:
            raise XaibenchError(
                f"{self.kind} {self.name!r} from {self.provider.describe()} cannot be loaded: "
                f"{self.target!r}: {exc}"
            ) from exc

    def create(self, options: Mapping[str, Any] | None = None) -> T:
        """Build the component with the entry's preset options updated by ``options``."""
        merged = {**self.options, **(options or {})}
        return build_component(self.load(), merged, label=f"{self.kind} {self.name!r}")  # type: ignore[return-value]


class Register(Protocol):
    """The callable a registration hook receives.

    Call it once per component::

        register("my_method", "my_pkg.saliency:MyMethod", summary="What it does")

    ``target`` is a :class:`~xaibench.component.Component` subclass, or a lazy
    ``"module:Attr"`` string naming one (preferred: listing then imports nothing heavy).
    ``options`` are preset keyword options, so one class can back several names.
    """

    def __call__(
        self,
        name: str,
        target: type[Component] | str,
        *,
        summary: str = "",
        options: Mapping[str, Any] | None = None,
    ) -> None:
        """Register one component."""


class Registry(Generic[T]):
    """All components of one kind, keyed by their stable snake_case (or ``arch.tag``) names."""

    def __init__(self, kind: str, base: str) -> None:
        """Create an empty registry.

        Args:
            kind: Singular noun used in messages, e.g. ``"saliency method"``.
            base: ``"module:Class"`` of the base class every target must derive from; checked when
                a target is loaded, so a wrong registration fails with a clear message.
        """
        self.kind = kind
        self.base = base
        self._entries: dict[str, Entry[T]] = {}

    def add(
        self,
        name: str,
        target: type[T] | str,
        provider: Provider,
        *,
        summary: str = "",
        options: Mapping[str, Any] | None = None,
    ) -> Entry[T]:
        """Add a component.

        Raises:
            RegistryCollisionError: ``name`` is taken; the message names both providers.
            XaibenchError: ``name`` is empty or contains whitespace, or ``target`` is malformed.
        """
        if not isinstance(name, str) or not name or any(c.isspace() for c in name):
            raise XaibenchError(
                f"{provider.describe()} registered a {self.kind} with an invalid name {name!r}"
            )
        if isinstance(target, str) and ":" not in target:
            raise XaibenchError(
                f"{provider.describe()} registered {self.kind} {name!r} with target {target!r}; "
                "a lazy target must look like 'package.module:ClassName'"
            )
        if name in self._entries:
            other = self._entries[name].provider
            raise RegistryCollisionError(
                f"{self.kind} {name!r} is registered twice: by {other.describe()} and by "
                f"{provider.describe()}; uninstall or disable one of them "
                "(XAIBENCH_LOAD_PLUGINS restricts which plugins load)"
            )
        entry = Entry(self.kind, name, target, provider, summary, dict(options or {}))
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> Entry[T]:
        """Return the entry for ``name``.

        Raises:
            UnknownComponentError: With close matches as suggestions.
        """
        try:
            return self._entries[name]
        except KeyError:
            names = sorted(self._entries)
            suggestions = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
            raise UnknownComponentError(self.kind, name, suggestions, names) from None

    def create(self, name: str, options: Mapping[str, Any] | None = None) -> T:
        """Load and build the named component, checking it derives from the kind's base class."""
        entry = self.get(name)
        cls = entry.load()
        base: type = Entry(self.kind, "<base>", self.base, entry.provider).load()
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise XaibenchError(
                f"{self.kind} {name!r} from {entry.provider.describe()} is {cls!r}, "
                f"which is not a subclass of {self.base}"
            )
        return entry.create(options)

    def names(self, include: str | None = None, exclude: str | None = None) -> list[str]:
        """List names, sorted, filtered by shell-style wildcards (as ``timm.list_models``)."""
        out = []
        for name in sorted(self._entries):
            if include and not fnmatch.fnmatchcase(name, include):
                continue
            if exclude and fnmatch.fnmatchcase(name, exclude):
                continue
            out.append(name)
        return out

    def entries(self) -> Iterator[Entry[T]]:
        """Iterate over entries in name order."""
        for name in sorted(self._entries):
            yield self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)


def make_register(registry: Registry[Any], provider: Provider) -> Register:
    """Build the ``register`` callable handed to one plugin's registration hook."""

    def register(
        name: str,
        target: type[Component] | str,
        *,
        summary: str = "",
        options: Mapping[str, Any] | None = None,
    ) -> None:
        registry.add(name, target, provider, summary=summary, options=options)

    return register
