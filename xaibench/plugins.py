"""Plugin loading: a fresh plugin manager per call, built-ins first, then entry points.

Built-in components are plugins like any other: the modules in :data:`DEFAULT_PLUGINS` implement
the same hooks a third-party package does. Third-party plugins are found through the entry-point
group ``xaibench``. A plugin that fails to import is recorded as broken and does not stop the
others.

Escape hatches, each an environment variable so that every process of a run (workers of a
remote executor too) loads the same plugins; the CLI's ``--plugins-dir`` and ``--disable-plugin``
set the same variables:

* ``XAIBENCH_LOAD_PLUGINS``: comma-separated entry-point or distribution names to load; empty
  loads none (built-ins only).
* ``XAIBENCH_PLUGINS_DIR``: folders (``os.pathsep``-separated) whose ``*.py`` files are loaded as
  one-off local plugins, without packaging.
* ``XAIBENCH_DISABLE_PLUGINS``: comma-separated plugin names (entry-point, distribution, local
  file stem or built-in module) not to register.
* ``XAIBENCH_TRACE_PLUGINS=1``: print every hook call and every registration to stderr.
* ``XAIBENCH_TASK_PATHS``: task files, or folders whose ``*.yaml``/``*.yml`` files are task
  files (``os.pathsep``-separated), registered as tasks (:mod:`xaibench.tasks.loading`); the
  CLI's ``--include-tasks`` and a task given as a file (``xaibench run my_task.yaml``) set it.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

from xaibench import __version__, hookspecs
from xaibench.errors import XaibenchError
from xaibench.kinds import KIND_BY_KEY, KINDS
from xaibench.registry import Provider, Registry, make_register

ENTRY_POINT_GROUP = "xaibench"
LOAD_PLUGINS_ENV = "XAIBENCH_LOAD_PLUGINS"
PLUGINS_DIR_ENV = "XAIBENCH_PLUGINS_DIR"
DISABLE_PLUGINS_ENV = "XAIBENCH_DISABLE_PLUGINS"
TRACE_PLUGINS_ENV = "XAIBENCH_TRACE_PLUGINS"
TASK_PATHS_ENV = "XAIBENCH_TASK_PATHS"

#: Package under which files from a plugins folder are imported (``<this>.<file stem>``), so
#: their classes pickle by reference and load again in a worker with the same selection.
LOCAL_PLUGIN_PACKAGE = "xaibench_local_plugins"

DEFAULT_PLUGINS: tuple[str, ...] = (
    "xaibench.default_plugins.backbones",
    "xaibench.default_plugins.strategies",
    "xaibench.default_plugins.saliency",
    "xaibench.default_plugins.perturbations",
    "xaibench.default_plugins.metrics",
    "xaibench.default_plugins.tasks",
    "xaibench.default_plugins.datasets",
    "xaibench.default_plugins.executors",
    "xaibench.default_plugins.importers",
    "xaibench.default_plugins.segmenters",
    "xaibench.default_plugins.observers",
    "xaibench.default_plugins.bridges",
)


@dataclass(frozen=True)
class BrokenPlugin:
    """A plugin that could not be loaded, kept so ``xaibench plugins`` can show it."""

    name: str
    distribution: str
    version: str
    error: str


def _names(value: str | None) -> tuple[str, ...]:
    return tuple(n.strip() for n in (value or "").split(",") if n.strip())


@dataclass(frozen=True)
class PluginSelection:
    """Which plugins a manager loads: the escape hatches, as one picklable value.

    A run's executor hands it to every worker, so a cell computed on another machine (or in
    another process) uses the very plugins the driver used.

    Attributes:
        load: Entry-point or distribution names to load (None: all; empty: none).
        dirs: Folders whose ``*.py`` files are loaded as local plugins.
        disabled: Plugin names not to register.
        trace: Print hook calls and registrations to stderr.
        task_paths: Task files and folders of task files to register as tasks.
    """

    load: tuple[str, ...] | None = None
    dirs: tuple[str, ...] = ()
    disabled: tuple[str, ...] = ()
    trace: bool = False
    task_paths: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PluginSelection:
        """Read the ``XAIBENCH_*_PLUGINS`` variables (see the module docstring)."""
        env = os.environ if environ is None else environ
        load = env.get(LOAD_PLUGINS_ENV)
        dirs = tuple(d for d in env.get(PLUGINS_DIR_ENV, "").split(os.pathsep) if d.strip())
        trace = env.get(TRACE_PLUGINS_ENV, "").strip().lower() not in ("", "0", "false", "no")
        return cls(
            load=None if load is None else _names(load),
            dirs=dirs,
            disabled=_names(env.get(DISABLE_PLUGINS_ENV)),
            trace=trace,
            task_paths=tuple(p for p in env.get(TASK_PATHS_ENV, "").split(os.pathsep) if p.strip()),
        )

    def to_env(self) -> dict[str, str]:
        """The environment variables that reproduce this selection in a child process."""
        env = {
            PLUGINS_DIR_ENV: os.pathsep.join(self.dirs),
            DISABLE_PLUGINS_ENV: ",".join(self.disabled),
            TRACE_PLUGINS_ENV: "1" if self.trace else "",
            TASK_PATHS_ENV: os.pathsep.join(self.task_paths),
        }
        if self.load is not None:
            env[LOAD_PLUGINS_ENV] = ",".join(self.load)
        return env


class PluginManager(pluggy.PluginManager):
    """A pluggy manager that also remembers each plugin's provenance and load failures."""

    def __init__(self, selection: PluginSelection | None = None) -> None:
        super().__init__(ENTRY_POINT_GROUP)
        self.add_hookspecs(hookspecs)
        self.selection = selection or PluginSelection()
        self.providers: dict[str, Provider] = {}
        self.broken: list[BrokenPlugin] = []
        self.disabled: list[Provider] = []

    def register_plugin(self, plugin: object, provider: Provider) -> None:
        """Register ``plugin`` under ``provider.plugin`` and remember its provenance."""
        self.register(plugin, name=provider.plugin)
        self.providers[provider.plugin] = provider
        _trace(self, f"loaded plugin {provider.describe()}")


def get_plugin_manager(
    *,
    entry_points: bool = True,
    load_plugins: str | None = None,
    selection: PluginSelection | None = None,
) -> PluginManager:
    """Return a new plugin manager with the built-ins and (optionally) installed plugins.

    Args:
        entry_points: Load third-party plugins (entry points and plugin folders).
        load_plugins: Comma-separated entry-point or distribution names to load; ``""`` loads none.
            Overrides ``selection.load``.
        selection: Which plugins to load; defaults to :meth:`PluginSelection.from_env`.

    Raises:
        pluggy.PluginValidationError: A plugin implements a hook that does not exist (a typo),
            caught by ``check_pending()`` rather than silently ignored.
        XaibenchError: A plugin folder does not exist, or a disabled name matches no plugin.
    """
    if selection is None:
        selection = PluginSelection.from_env()
    if load_plugins is not None:
        selection = PluginSelection(
            _names(load_plugins),
            selection.dirs,
            selection.disabled,
            selection.trace,
            selection.task_paths,
        )
    pm = PluginManager(selection)
    if selection.trace:
        _enable_tracing(pm)
    disabled = set(selection.disabled)
    seen: set[str] = set()
    for module_name in DEFAULT_PLUGINS:
        provider = Provider(module_name, "xaibench", __version__, builtin=True)
        seen.add(module_name)
        if _is_disabled(provider, disabled, pm):
            continue
        pm.register_plugin(importlib.import_module(module_name), provider)
    if entry_points:
        seen |= _load_entry_points(pm, selection.load, disabled)
        for folder in selection.dirs:
            seen |= _load_plugins_dir(pm, Path(folder), disabled)
    unknown = sorted(
        name
        for name in disabled
        if name not in seen and not any(name == p.distribution for p in pm.disabled)
    )
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, sorted(seen), n=1, cutoff=0.6)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise XaibenchError(
            f"cannot disable {', '.join(hints)}: no such plugin (see 'xaibench plugins')"
        )
    pm.check_pending()
    return pm


def _is_disabled(provider: Provider, disabled: set[str], pm: PluginManager) -> bool:
    if provider.plugin in disabled or provider.distribution in disabled:
        pm.disabled.append(provider)
        _trace(pm, f"{provider.describe()} disabled")
        return True
    return False


def _load_entry_points(
    pm: PluginManager, load: tuple[str, ...] | None, disabled: set[str]
) -> set[str]:
    wanted = None if load is None else set(load)
    seen: set[str] = set()
    for ep in sorted(
        importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name
    ):
        dist_name = ep.dist.name if ep.dist is not None else "unknown"
        dist_version = ep.dist.version if ep.dist is not None else "unknown"
        seen |= {ep.name, dist_name}
        if wanted is not None and ep.name not in wanted and dist_name not in wanted:
            continue
        if pm.has_plugin(ep.name):
            continue
        provider = Provider(ep.name, dist_name, dist_version)
        if _is_disabled(provider, disabled, pm):
            continue
        try:
            plugin = ep.load()
            pm.register_plugin(plugin, provider)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit too: a broken plugin, not an exit
            _broken(pm, provider, exc)
    return seen


def _load_plugins_dir(pm: PluginManager, folder: Path, disabled: set[str]) -> set[str]:
    """Load every ``*.py`` file in ``folder`` (sorted) as a plugin named by its stem.

    The provider's distribution is ``plugins-dir:<folder>`` and its version the first 12 hex
    digits of the file's SHA-256, so results record exactly which local code produced them.
    """
    if not folder.is_dir():
        raise XaibenchError(f"plugins folder {str(folder)!r} does not exist or is not a folder")
    seen: set[str] = set()
    if LOCAL_PLUGIN_PACKAGE not in sys.modules:
        package = importlib.util.module_from_spec(
            importlib.machinery.ModuleSpec(LOCAL_PLUGIN_PACKAGE, None, is_package=True)
        )
        package.__path__ = []
        sys.modules[LOCAL_PLUGIN_PACKAGE] = package
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith(("_", ".")):
            continue
        stem = path.stem
        seen.add(stem)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        provider = Provider(stem, f"plugins-dir:{folder.resolve()}", digest)
        if pm.has_plugin(stem):
            raise XaibenchError(
                f"plugin file {str(path)!r}: a plugin named {stem!r} is already loaded "
                f"({pm.providers[stem].describe()}); rename the file"
            )
        if _is_disabled(provider, disabled, pm):
            continue
        module_name = f"{LOCAL_PLUGIN_PACKAGE}.{stem}"
        try:
            module = sys.modules.get(module_name)
            if module is None or getattr(module, "__file__", None) != str(path.resolve()):
                spec = importlib.util.spec_from_file_location(module_name, path.resolve())
                if spec is None or spec.loader is None:
                    raise ImportError(f"cannot import {str(path)!r}")
                module = importlib.util.module_from_spec(spec)
                sys.modules[module_name] = module
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    sys.modules.pop(module_name, None)
                    raise
            pm.register_plugin(module, provider)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit too: a broken plugin, not an exit
            _broken(pm, provider, exc)
    return seen


def _broken(pm: PluginManager, provider: Provider, exc: BaseException) -> None:
    """Record a plugin that failed to load, and warn; the others still load.

    Any exception counts, ``SystemExit`` included: a plugin calling ``sys.exit()`` at import
    would otherwise end every command silently with its status (a tampered leaderboard's
    ``--check`` exiting 0). Only ``KeyboardInterrupt`` is let through.
    """
    pm.broken.append(
        BrokenPlugin(
            provider.plugin, provider.distribution, provider.version, f"{type(exc).__name__}: {exc}"
        )
    )
    print(
        f"xaibench: warning: plugin {provider.plugin!r} ({provider.distribution}) failed to "
        f"load: {type(exc).__name__}: {exc}",
        file=sys.stderr,
    )


def _trace(pm: PluginManager, message: str) -> None:
    if pm.selection.trace:
        print(f"xaibench: trace: {message}", file=sys.stderr)


def _enable_tracing(pm: PluginManager) -> None:
    """Route pluggy's hook-call trace (plain hooks such as ``register_commands``) to stderr."""

    def write(text: str) -> None:
        for line in text.rstrip("\n").splitlines():
            print(f"xaibench: trace: {line.strip()}", file=sys.stderr)

    pm.trace.root.setwriter(write)
    pm.enable_tracing()


@dataclass
class Components:
    """Every registry, filled by calling each plugin's registration hooks."""

    registries: dict[str, Registry[Any]] = field(default_factory=dict)
    #: The plugin selection the registries came from (handed to workers of a run).
    selection: PluginSelection = field(default_factory=PluginSelection)

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

    @property
    def importers(self) -> Registry[Any]:
        """Importers of public collections (``xaibench data import``)."""
        return self.registries["importers"]

    @property
    def observers(self) -> Registry[Any]:
        """Run observers (experiment trackers)."""
        return self.registries["observers"]

    @property
    def segmenters(self) -> Registry[Any]:
        """Segmenters of anatomy (``xaibench data masks``)."""
        return self.registries["segmenters"]


def add_commands(pm: PluginManager, cli: Any) -> None:
    """Call every plugin's ``register_commands(cli)``, one plugin at a time.

    Raises:
        XaibenchError: A plugin raised (``SystemExit`` included), naming it and the hook, so a
            plugin cannot end every command silently.
    """
    impls = pm.hook.register_commands.get_hookimpls()
    _trace(pm, f"register_commands(cli): {len(impls)} implementation(s)")
    for impl in impls:
        provider = pm.providers.get(impl.plugin_name) or Provider(
            impl.plugin_name, "unknown", "unknown"
        )
        _trace(pm, f"register_commands({provider.describe()})")
        try:
            impl.function(cli=cli)
        except (XaibenchError, KeyboardInterrupt):
            raise
        except BaseException as exc:  # a plugin's SystemExit is its failure too
            raise XaibenchError(
                f"plugin {provider.describe()} failed in register_commands: "
                f"{type(exc).__name__}: {exc} (--disable-plugin {provider.plugin} leaves it out)"
            ) from exc


def collect_components(pm: PluginManager) -> Components:
    """Call every registration hook, one plugin at a time, and return the filled registries.

    Each plugin gets its own ``register`` callable, so every entry knows its provider. Plugins are
    called in registration order (built-ins first); a name collision raises, naming both.
    """
    components = Components(selection=pm.selection)
    for kind in KINDS:
        registry: Registry[Any] = Registry(kind.noun, kind.base)
        caller = getattr(pm.hook, kind.hook)
        for impl in caller.get_hookimpls():
            provider = pm.providers.get(impl.plugin_name) or Provider(
                impl.plugin_name, "unknown", "unknown"
            )
            before = set(registry.names()) if pm.selection.trace else set()
            started = time.perf_counter()
            try:
                impl.function(register=make_register(registry, provider))
            except (XaibenchError, KeyboardInterrupt):
                raise  # collisions and invalid registrations must stop the run
            except BaseException as exc:  # a plugin's SystemExit is its failure too
                raise XaibenchError(
                    f"plugin {provider.describe()} failed in {kind.hook}: "
                    f"{type(exc).__name__}: {exc} (XAIBENCH_LOAD_PLUGINS can leave it out)"
                ) from exc
            if pm.selection.trace:
                added = [n for n in registry.names() if n not in before]
                _trace(
                    pm,
                    f"{kind.hook}({provider.describe()}) registered {len(added)}: "
                    f"{', '.join(added) or '-'} [{(time.perf_counter() - started) * 1e3:.1f} ms]",
                )
        components.registries[kind.key] = registry
    if pm.selection.task_paths:
        from xaibench.tasks.loading import register_task_files

        register_task_files(components.tasks, pm.selection.task_paths)
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
    for provider in pm.disabled:
        out.append(
            {
                "name": provider.plugin,
                "distribution": provider.distribution,
                "version": provider.version,
                "builtin": provider.builtin,
                "disabled": True,
                "hooks": [],
                "components": {},
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
