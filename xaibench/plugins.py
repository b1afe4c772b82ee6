"""Plugin loading: a fresh plugin manager per call, built-ins first, then entry points.

Built-in components are plugins like any other: the modules in :data:`DEFAULT_PLUGINS` implement
the same hooks a third-party package does. Third-party plugins are found through the entry-point
group ``xaibench``; ``XAIBENCH_LOAD_PLUGINS`` (comma-separated entry-point or distribution names;
empty = none) restricts which load. A plugin that fails to import is recorded as broken and does not
stop the others.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import pluggy

from xaibench import __version__, hookspecs
from xaibench.errors import XaibenchError
from xaibench.kinds import KIND_BY_KEY, KINDS
from xaibench.registry import Provider, Registry, make_register

ENTRY_POINT_GROUP = "xaibench"
LOAD_PLUGINS_ENV = "XAIBENCH_LOAD_PLUGINS"

DEFAULT_PLUGINS: tuple[str, ...] = (
    "xaibench.default_plugins.backbones",
    "xaibench.default_plugins.strategies",
    "xaibench.default_plugins.saliency",
    "xaibench.default_plugins.perturbations",
    "xaibench.default_plugins.metrics",
    "xaibench.default_plugins.tasks",
    "xaibench.default_plugins.datasets",
    "xaibench.default_plugins.executors",
)


@dataclass(frozen=True)
class BrokenPlugin:
    """A plugin that could not be loaded, kept so ``xaibench plugins`` can show it."""

    name: str
    distribution: str
    version: str
    error: str


class PluginManager(pluggy.PluginManager):
    """A pluggy manager that also remembers each plugin's provenance and load failures."""

    def __init__(self) -> None:
        super().__init__(ENTRY_POINT_GROUP)
        self.add_hookspecs(hookspecs)
        self.providers: dict[str, Provider] = {}
        self.broken: list[BrokenPlugin] = []

    def register_plugin(self, plugin: object, provider: Provider) -> None:
        """Register ``plugin`` under ``provider.plugin`` and remember its provenance."""
        self.register(plugin, name=provider.plugin)
        self.providers[provider.plugin] = provider


def get_plugin_manager(
    *, entry_points: bool = True, load_plugins: str | None = None
) -> PluginManager:
    """Return a new plugin manager with the built-ins and (optionally) installed plugins.

    Args:
        entry_points: Load third-party plugins from the ``xaibench`` entry-point group.
        load_plugins: Comma-separated entry-point or distribution names to load; ``""`` loads none.
            Defaults to the ``XAIBENCH_LOAD_PLUGINS`` environment variable; unset loads all.

    Raises:
        pluggy.PluginValidationError: A plugin implements a hook that does not exist (a typo),
            caught by ``check_pending()`` rather than silently ignored.
    """
    pm = PluginManager()
    for module_name in DEFAULT_PLUGINS:
        module = importlib.import_module(module_name)
        pm.register_plugin(module, Provider(module_name, "xaibench", __version__, builtin=True))
    if entry_points:
        if load_plugins is None:
            load_plugins = os.environ.get(LOAD_PLUGINS_ENV)
        _load_entry_points(pm, load_plugins)
    pm.check_pending()
    return pm


def _load_entry_points(pm: PluginManager, load_plugins: str | None) -> None:
    wanted = None
    if load_plugins is not None:
        wanted = {n.strip() for n in load_plugins.split(",") if n.strip()}
    for ep in sorted(
        importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name
    ):
        dist_name = ep.dist.name if ep.dist is not None else "unknown"
        dist_version = ep.dist.version if ep.dist is not None else "unknown"
        if wanted is not None and ep.name not in wanted and dist_name not in wanted:
            continue
        if pm.has_plugin(ep.name):
            continue
        try:
            plugin = ep.load()
            pm.register_plugin(plugin, Provider(ep.name, dist_name, dist_version))
        except Exception as exc:  # a broken plugin must not take the others down
            pm.broken.append(
                BrokenPlugin(ep.name, dist_name, dist_version, f"{type(exc).__name__}: {exc}")
            )
            print(
                f"xaibench: warning: plugin {ep.name!r} ({dist_name}) failed to load: {exc}",
                file=sys.stderr,
            )


@dataclass
class Components:
    """Every registry, filled by calling each plugin's registration hooks."""

    registries: dict[str, Registry[Any]] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Registry[Any]:
        return self.registries[key]

    @property
    def backbones(self) -> Registry[Any]:
        """Backbone factories."""
        return self.registries["backbones"]

    @property
    def strategies(self) -> Registry[Any]:
        """Adaptation strategies."""
        return self.registries["strategies"]

    @property
    def saliency(self) -> Registry[Any]:
        """Saliency methods."""
        return self.registries["saliency"]

    @property
    def perturbations(self) -> Registry[Any]:
        """Region perturbations."""
        return self.registries["perturbations"]

    @property
    def metrics(self) -> Registry[Any]:
        """Metrics."""
        return self.registries["metrics"]

    @property
    def tasks(self) -> Registry[Any]:
        """Tasks."""
        return self.registries["tasks"]

    @property
    def datasets(self) -> Registry[Any]:
        """Dataset sources."""
        return self.registries["datasets"]

    @property
    def executors(self) -> Registry[Any]:
        """Executors."""
        return self.registries["executors"]


def collect_components(pm: PluginManager) -> Components:
    """Call every registration hook, one plugin at a time, and return the filled registries.

    Each plugin gets its own ``register`` callable, so every entry knows its provider. Plugins are
    called in registration order (built-ins first); a name collision raises, naming both.
    """
    components = Components()
    for kind in KINDS:
        registry: Registry[Any] = Registry(kind.noun, kind.base)
        caller = getattr(pm.hook, kind.hook)
        for impl in caller.get_hookimpls():
            provider = pm.providers.get(impl.plugin_name) or Provider(
                impl.plugin_name, "unknown", "unknown"
            )
            try:
                impl.function(register=make_register(registry, provider))
            except XaibenchError:
                raise  # collisions and invalid registrations must stop the run
            except Exception as exc:
                raise XaibenchError(
                    f"plugin {provider.describe()} failed in {kind.hook}: "
                    f"{type(exc).__name__}: {exc} (XAIBENCH_LOAD_PLUGINS can leave it out)"
                ) from exc
        components.registries[kind.key] = registry
    return components


def describe_plugins(pm: PluginManager, components: Components) -> list[dict[str, Any]]:
    """Describe each plugin for ``xaibench plugins``: name, version, hooks and components."""
    out: list[dict[str, Any]] = []
    for name, provider in pm.providers.items():
        plugin = pm.get_plugin(name)
        hooks = sorted(c.name for c in pm.get_hookcallers(plugin) or [])
        provided: dict[str, list[str]] = {}
        for key in KIND_BY_KEY:
            names = [e.name for e in components[key].entries() if e.provider.plugin == name]
            if names:
                provided[key] = names
        out.append(
            {
                "name": name,
                "distribution": provider.distribution,
                "version": provider.version,
                "builtin": provider.builtin,
                "hooks": hooks,
                "components": provided,
            }
        )
    for broken in pm.broken:
        out.append(
            {
                "name": broken.name,
                "distribution": broken.distribution,
                "version": broken.version,
                "builtin": False,
                "broken": True,
                "error": broken.error,
                "hooks": [],
                "components": {},
            }
        )
    return out
