"""The table of plugin packages in ``plugins/`` and the hint an unknown name gets from it.

The table (:mod:`xaibench.known_plugins`) is checked against the packages themselves: each
``plugins/*/pyproject.toml`` present names its entry points; the module each names is loaded from
that folder (not from whatever copy is installed), registered alone on a fresh plugin manager
next to the built-ins, and what it registers must be exactly what the table says.
"""

from __future__ import annotations

import importlib.util
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

from xaibench import known_plugins
from xaibench.cli import main
from xaibench.errors import UnknownComponentError
from xaibench.kinds import KIND_BY_KEY
from xaibench.known_plugins import KNOWN_PLUGINS, known_providers, plugin_hint
from xaibench.plugins import collect_components, get_plugin_manager
from xaibench.registry import Provider, Registry

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"


def _packages() -> dict[str, Path]:
    """Distribution name -> folder, for every ``plugins/*/pyproject.toml``."""
    found = {}
    for pyproject in sorted(PLUGINS.glob("*/pyproject.toml")):
        project = tomllib.loads(pyproject.read_text())["project"]
        found[project["name"]] = pyproject.parent
    return found


def _load(folder: Path, target: str, alias: str) -> object:
    """Import the entry point ``target`` (``package[.module][:attr]``) from ``folder``.

    The package is loaded under ``alias`` so an installed copy of it neither shadows it nor is
    replaced, and removed from ``sys.modules`` afterwards. Registration hooks name lazy
    targets, so nothing else of the package is needed.
    """
    module_name, _, attr = target.partition(":")
    top, *rest = module_name.split(".")
    init = folder / top / "__init__.py"
    spec = importlib.util.spec_from_file_location(
        alias, init, submodule_search_locations=[str(init.parent)]
    )
    assert spec is not None, init
    assert spec.loader is not None, init
    package: ModuleType = importlib.util.module_from_spec(spec)
    sys.modules[alias] = package
    try:
        spec.loader.exec_module(package)
        module = importlib.import_module(".".join([alias, *rest])) if rest else package
    finally:
        for name in [n for n in sys.modules if n == alias or n.startswith(f"{alias}.")]:
            del sys.modules[name]
    return getattr(module, attr) if attr else module


def _registered(name: str, folder: Path) -> dict[str, tuple[str, ...]]:
    """Kind key -> names that the package in ``folder`` registers (beyond the built-ins)."""
    project = tomllib.loads((folder / "pyproject.toml").read_text())["project"]
    entry_points = project["entry-points"]["xaibench"]
    pm = get_plugin_manager(entry_points=False)
    builtins = collect_components(pm)
    for ep_name, target in entry_points.items():
        plugin = _load(folder, target, f"_known_plugins_test_{ep_name}")
        pm.register_plugin(plugin, Provider(ep_name, name, "test"))
    components = collect_components(pm)
    out = {}
    for key in KIND_BY_KEY:
        added = tuple(n for n in components[key].names() if n not in builtins[key])
        if added:
            out[key] = added
    return out


def test_the_table_lists_every_package_in_plugins_folder():
    present = set(_packages())
    assert present, f"no plugin packages found in {PLUGINS}"
    missing = present - set(KNOWN_PLUGINS)
    assert not missing, f"missing from KNOWN_PLUGINS: {missing}"
    assert set(KNOWN_PLUGINS) <= present, "KNOWN_PLUGINS names packages not in plugins/"
    for kinds in KNOWN_PLUGINS.values():
        assert set(kinds) <= set(KIND_BY_KEY)


@pytest.mark.parametrize("package", sorted(_packages()))
def test_the_table_matches_what_each_package_registers(package):
    registered = _registered(package, _packages()[package])
    assert registered, f"{package} registered nothing"
    table = {kind: tuple(sorted(names)) for kind, names in KNOWN_PLUGINS[package].items()}
    assert registered == table


def test_known_providers_by_kind_and_name():
    assert known_providers("executors", "ray") == ["xaibench-ray"]
    assert known_providers("tasks", "cardiomegaly") == ["xaibench-cardiomegaly"]
    assert known_providers("observers", "mlflow") == ["xaibench-mlflow"]
    assert known_providers("observers", "wandb") == ["xaibench-wandb"]
    assert known_providers("tasks", "ray") == []  # the kind matters
    assert known_providers("executors", "rayy") == []


def _uninstalled(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a fresh ``pip install .``: none of the plugin packages is installed."""
    monkeypatch.setattr(known_plugins, "_installed", lambda distribution: False)


def test_an_unknown_task_names_the_package_and_how_to_install_it(monkeypatch):
    _uninstalled(monkeypatch)
    registry: Registry = Registry("task", "xaibench.tasks.base:Task")
    registry.add("osteoporosis", "xaibench.tasks.base:Task", Provider("p", "xaibench", "0"))
    with pytest.raises(UnknownComponentError) as info:
        registry.get("cardiomegaly")
    assert str(info.value) == (
        "unknown task 'cardiomegaly'; it is provided by the xaibench-cardiomegaly package "
        "(pip install ./plugins/xaibench-cardiomegaly from a clone of xaibench; it is not on "
        "PyPI) (available: osteoporosis; see `xaibench ls tasks`)"
    )
    assert info.value.plugin_hint is not None


def test_the_hint_and_did_you_mean_share_one_line(monkeypatch):
    _uninstalled(monkeypatch)
    registry: Registry = Registry("executor", "xaibench.executors.base:Executor")
    registry.add("rays", "xaibench.executors.base:Executor", Provider("p", "xaibench", "0"))
    with pytest.raises(UnknownComponentError) as info:
        registry.get("ray")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        "unknown executor 'ray'; it is provided by the xaibench-ray package (pip install "
        "./plugins/xaibench-ray from a clone of xaibench; it is not on PyPI); did you mean 'rays'?"
    )


def test_a_misspelled_plugin_name_is_suggested_with_its_package(monkeypatch):
    _uninstalled(monkeypatch)
    registry: Registry = Registry("saliency method", "xaibench.saliency.base:SaliencyMethod")
    registry.add("gradcam", "xaibench.saliency.base:SaliencyMethod", Provider("p", "x", "0"))
    with pytest.raises(UnknownComponentError) as info:
        registry.get("example_methd")
    assert str(info.value).startswith(
        "unknown saliency method 'example_methd'; did you mean 'example_method'? it is "
        "provided by the xaibench-example package (pip install ./plugins/xaibench-example "
    )
    assert info.value.plugin_name == "example_method"
    # A registered close match comes first; the plugin's name is then not offered.
    base = "xaibench.saliency.base:SaliencyMethod"
    registry.add("example_methods", base, Provider("p", "x", "0"))
    with pytest.raises(UnknownComponentError) as info:
        registry.get("example_methd")
    assert info.value.plugin_name is None
    assert "provided by" not in str(info.value)


def test_no_hint_for_a_name_no_known_package_provides(monkeypatch):
    _uninstalled(monkeypatch)
    registry: Registry = Registry("executor", "xaibench.executors.base:Executor")
    with pytest.raises(UnknownComponentError) as info:
        registry.get("dask")
    assert info.value.plugin_hint is None
    assert "provided by" not in str(info.value)


def test_an_installed_package_that_did_not_load_is_not_reinstalled(monkeypatch):
    monkeypatch.setattr(known_plugins, "_installed", lambda distribution: True)
    hint = plugin_hint("executors", "ray")
    assert hint is not None
    assert "pip install" not in hint
    assert "xaibench-ray package, which is installed but did not load" in hint
    assert "`xaibench plugins`" in hint


def test_installed_is_read_from_the_environment():
    assert known_plugins._installed("xaibench")  # this package: installed to run the tests
    assert not known_plugins._installed("xaibench-no-such-plugin")


def test_a_loaded_plugin_wins():
    # With the package loaded, the name is registered: no error and so no hint.
    components = collect_components(get_plugin_manager(load_plugins="ray"))
    assert components.executors.get("ray").provider.distribution == "xaibench-ray"


@pytest.mark.parametrize(
    ("args", "package"),
    [
        (["run", "cardiomegaly"], "xaibench-cardiomegaly"),
        (["run", "osteoporosis", "--executor", "ray"], "xaibench-ray"),
    ],
)
def test_the_command_line_says_which_package_provides_the_name(args, package, monkeypatch, capsys):
    _uninstalled(monkeypatch)
    monkeypatch.setenv("XAIBENCH_LOAD_PLUGINS", "")  # built-ins only: as after `pip install .`
    with pytest.raises(SystemExit) as done:
        main(args)
    err = capsys.readouterr().err
    assert done.value.code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert f"it is provided by the {package} package (pip install ./plugins/{package} " in lines[0]
