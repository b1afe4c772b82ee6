import importlib.metadata
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import pluggy
import pytest

from xaibench import hookspecs
from xaibench.errors import RegistryCollisionError, XaibenchError
from xaibench.hookspecs import hookimpl
from xaibench.kinds import KINDS
from xaibench.plugins import (
    DEFAULT_PLUGINS,
    collect_components,
    describe_plugins,
    get_plugin_manager,
)

ROOT = Path(__file__).resolve().parents[1]


def test_every_kind_has_a_hookspec_and_builtins(components):
    for kind in KINDS:
        assert hasattr(hookspecs, kind.hook), kind.hook
        assert len(components[kind.key]) > 0, f"no built-in {kind.key}"


def test_builtins_are_registered_through_the_hooks(pm):
    names = [name for name, _ in pm.list_name_plugin()]
    assert names == list(DEFAULT_PLUGINS)
    assert all(pm.providers[n].builtin for n in names)


def test_each_call_returns_a_fresh_manager():
    a = get_plugin_manager(entry_points=False)
    b = get_plugin_manager(entry_points=False)
    assert a is not b
    a.register(object(), name="extra")
    assert not b.has_plugin("extra")


def test_misspelled_hook_fails_loudly(monkeypatch):
    class Typo:
        @hookimpl
        def register_backbone(self, register):  # missing "s"
            pass

    pm = get_plugin_manager(entry_points=False)
    pm.register(Typo(), name="typo")
    with pytest.raises(pluggy.PluginValidationError, match="register_backbone"):
        pm.check_pending()


def test_third_party_collision_is_an_error_naming_both(pm):
    class Clash:
        @hookimpl
        def register_saliency_methods(self, register):
            register("gradcam", "xaibench.saliency.gradcam:GradCAM")

    pm.register(Clash(), name="clash")
    with pytest.raises(RegistryCollisionError, match=r"xaibench.default_plugins.saliency.*clash"):
        collect_components(pm)


def test_entry_point_plugin_is_discovered_with_its_version():
    dist = importlib.metadata.distribution("xaibench-example")  # installed by the test setup
    pm = get_plugin_manager()
    info = {p["name"]: p for p in describe_plugins(pm, collect_components(pm))}
    example = info["example"]
    assert example["distribution"] == "xaibench-example"
    assert example["version"] == dist.version
    assert example["hooks"] == [
        "register_backbones", "register_metrics", "register_perturbations",
        "register_saliency_methods",
    ]  # fmt: skip
    assert example["components"] == {
        "backbones": ["example_densenet121", "example_densenet_tiny.random"],
        "saliency": ["example_method"],
        "perturbations": ["example_median"],
        "metrics": ["example_top_hit"],
    }
    assert example["builtin"] is False


@pytest.mark.parametrize(
    ("value", "loaded"),
    [("", False), ("example", True), ("xaibench-example", True), ("other", False)],
)
def test_load_plugins_restricts_entry_points(value, loaded):
    pm = get_plugin_manager(load_plugins=value)
    assert pm.has_plugin("example") is loaded


def test_load_plugins_env_var(monkeypatch):
    monkeypatch.setenv("XAIBENCH_LOAD_PLUGINS", "")
    assert not get_plugin_manager().has_plugin("example")
    monkeypatch.delenv("XAIBENCH_LOAD_PLUGINS")
    assert get_plugin_manager().has_plugin("example")


def test_importing_xaibench_loads_no_plugins_and_no_torch():
    code = (
        "import sys, xaibench, xaibench.plugins, xaibench.hookspecs; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_listing_components_imports_no_torch():
    code = (
        "import sys; from xaibench.plugins import *; "
        "c = collect_components(get_plugin_manager()); c.backbones.names(); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _documented_hooks() -> set[str]:
    doc = (ROOT / "docs" / "plugins" / "hooks.md").read_text()
    return set(re.findall(r"^## `(register_\w+\(.*\).*)`$", doc, flags=re.M))


def _hook_signatures() -> set[str]:
    return {
        f"{name}{inspect.signature(fn)}".replace("'", "")
        for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(fn, "xaibench_spec")
    }


def test_every_hook_is_documented_with_its_exact_signature():
    """A new hook without a section, or a changed signature, fails here."""
    missing = _hook_signatures() - _documented_hooks()
    assert not missing, f"docs/plugins/hooks.md has no heading for {sorted(missing)}"


def test_no_section_documents_a_hook_that_does_not_exist():
    stale = _documented_hooks() - _hook_signatures()
    assert not stale, f"docs/plugins/hooks.md documents hooks that are gone: {sorted(stale)}"


def test_every_hook_section_says_what_it_receives_and_shows_an_example():
    doc = (ROOT / "docs" / "plugins" / "hooks.md").read_text()
    sections = re.split(r"^## ", doc, flags=re.M)
    for signature in _hook_signatures():
        body = next(s for s in sections if s.startswith(f"`{signature}`"))
        assert "**Receives**" in body, signature
        assert "@hookimpl" in body, signature
        assert f"def {signature.split('(')[0]}(" in body, signature


def test_plugins_command_prints_json():
    out = subprocess.run(
        [sys.executable, "-m", "xaibench", "plugins"], capture_output=True, text=True, check=True
    )
    data = json.loads(out.stdout)
    names = {p["name"] for p in data}
    assert set(DEFAULT_PLUGINS) <= names
    assert "example" in names
    assert all({"name", "version", "hooks", "components"} <= set(p) for p in data)


def test_a_plugin_that_fails_to_import_is_reported_and_skipped(monkeypatch, capsys):
    broken = importlib.metadata.EntryPoint(
        name="broken", value="no_such_module_xyz", group="xaibench"
    )
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [broken])
    pm = get_plugin_manager()
    assert "failed to load" in capsys.readouterr().err
    info = describe_plugins(pm, collect_components(pm))
    entry = next(p for p in info if p["name"] == "broken")
    assert entry["broken"] is True
    assert "no_such_module_xyz" in entry["error"]
    assert "gradcam" in collect_components(pm).saliency  # the others still work


def test_a_hook_that_raises_names_the_plugin(pm):
    class Faulty:
        @hookimpl
        def register_metrics(self, register):
            raise RuntimeError("boom")

    pm.register(Faulty(), name="faulty")
    with pytest.raises(
        XaibenchError, match=r"plugin faulty .*register_metrics: RuntimeError: boom"
    ):
        collect_components(pm)


def test_register_commands_adds_a_cli_command(pm):
    import click
    from click.testing import CliRunner

    class Greeter:
        @hookimpl
        def register_commands(self, cli):
            @cli.command()
            def hello():
                """Say hello."""
                click.echo("hello from a plugin")

    pm.register(Greeter(), name="greeter")
    group = click.Group("xaibench")
    pm.hook.register_commands(cli=group)
    result = CliRunner().invoke(group, ["hello"])
    assert result.exit_code == 0
    assert result.output == "hello from a plugin\n"
