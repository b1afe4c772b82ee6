"""The plugin escape hatches: load only some plugins, local plugin files, disabling, tracing."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from xaibench.errors import XaibenchError
from xaibench.plugins import (
    DEFAULT_PLUGINS,
    PluginSelection,
    collect_components,
    describe_plugins,
    get_plugin_manager,
)

ROOT = Path(__file__).resolve().parents[1]

LOCAL_PLUGIN = '''
import torch

from xaibench.hookspecs import hookimpl
from xaibench.saliency.base import SaliencyMethod, check_maps


class Flat(SaliencyMethod):
    """The same value everywhere: a control."""

    control = True

    def explain(self, model, images, targets):
        return check_maps(torch.ones_like(images[:, 0]), images, "flat_local")


@hookimpl
def register_saliency_methods(register):
    register("flat_local", Flat, summary="flat map (local plugin file)")
'''


def _xaibench(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    full = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "xaibench", *args],
        capture_output=True,
        text=True,
        env=full,
        cwd=cwd,
        timeout=300,
    )


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "my_plugins"
    folder.mkdir()
    (folder / "flat.py").write_text(LOCAL_PLUGIN)
    (folder / "_helper.py").write_text("raise RuntimeError('a file starting with _ is no plugin')")
    return folder


def test_load_plugins_smoke_script():
    """The shell smoke test: XAIBENCH_LOAD_PLUGINS= hides every third-party plugin."""
    script = ROOT / "tests" / "smoke" / "load_plugins.sh"
    env = {k: v for k, v in os.environ.items() if k != "XAIBENCH_LOAD_PLUGINS"}
    proc = subprocess.run(
        ["bash", str(script)],
        capture_output=True,
        text=True,
        env={**env, "PYTHON": sys.executable, "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "example" in proc.stdout.split("hid:")[1].split()


def test_plugins_dir_registers_a_local_file_with_its_hash(plugin_dir: Path):
    pm = get_plugin_manager(selection=PluginSelection(dirs=(str(plugin_dir),)))
    entry = collect_components(pm).saliency.get("flat_local")
    digest = __import__("hashlib").sha256((plugin_dir / "flat.py").read_bytes()).hexdigest()
    assert entry.provider.plugin == "flat"
    assert entry.provider.distribution == f"plugins-dir:{plugin_dir.resolve()}"
    assert entry.provider.version == digest[:12]
    assert not pm.broken  # _helper.py was not loaded


def test_plugins_dir_class_pickles_by_reference(plugin_dir: Path):
    """A worker with the same selection can unpickle a local plugin's component."""
    pm = get_plugin_manager(selection=PluginSelection(dirs=(str(plugin_dir),)))
    method = collect_components(pm).saliency.create("flat_local")
    assert type(pickle.loads(pickle.dumps(method))) is type(method)


def test_plugins_dir_through_the_cli(plugin_dir: Path):
    proc = _xaibench("--plugins-dir", str(plugin_dir), "ls", "saliency", "flat_*", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["name"] for r in rows] == ["flat_local"]
    assert rows[0]["provider"].startswith("plugins-dir:")
    # and it is gone without the option
    assert "flat_local" not in _xaibench("ls", "saliency").stdout


def test_missing_plugins_dir_is_an_error_naming_it(tmp_path: Path):
    proc = _xaibench("--plugins-dir", str(tmp_path / "nope"), "plugins")
    assert proc.returncode == 2
    assert "nope" in proc.stderr
    assert "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_broken_local_plugin_is_reported_not_fatal(tmp_path: Path):
    (tmp_path / "bad.py").write_text("import no_such_module_xyz\n")
    pm = get_plugin_manager(selection=PluginSelection(dirs=(str(tmp_path),)))
    assert [b.name for b in pm.broken] == ["bad"]
    assert "no_such_module_xyz" in pm.broken[0].error
    assert "gradcam" in collect_components(pm).saliency


def test_disable_plugin_by_entry_point_or_distribution_name():
    for name in ("example", "xaibench-example"):
        pm = get_plugin_manager(selection=PluginSelection(disabled=(name,)))
        assert not pm.has_plugin("example")
        info = {p["name"]: p for p in describe_plugins(pm, collect_components(pm))}
        assert info["example"]["disabled"] is True
        assert "example_method" not in collect_components(pm).saliency


def test_disable_a_builtin_lets_a_plugin_replace_its_components():
    """Disabling a built-in module frees its names (otherwise a collision error)."""
    from xaibench.hookspecs import hookimpl

    class MyLocal:
        @hookimpl
        def register_executors(self, register):
            register("local", "xaibench.executors.local:LocalExecutor", summary="mine")

    pm = get_plugin_manager(
        entry_points=False,
        selection=PluginSelection(disabled=("xaibench.default_plugins.executors",)),
    )
    pm.register(MyLocal(), name="mine")
    assert collect_components(pm).executors.get("local").summary == "mine"
    assert not pm.has_plugin("xaibench.default_plugins.executors")
    assert pm.has_plugin(DEFAULT_PLUGINS[0])


def test_disabling_an_unknown_plugin_is_an_error_with_a_suggestion():
    with pytest.raises(XaibenchError, match=r"'exampel' \(did you mean 'example'\?\)"):
        get_plugin_manager(selection=PluginSelection(disabled=("exampel",)))


def test_disable_plugin_through_the_cli():
    proc = _xaibench("--disable-plugin", "example", "ls", "saliency")
    assert proc.returncode == 0, proc.stderr
    assert "example_method" not in proc.stdout
    assert "gradcam" in proc.stdout
    bad = _xaibench("--disable-plugin", "exampel", "plugins")
    assert bad.returncode == 2
    assert "did you mean 'example'" in bad.stderr


def test_plugin_options_must_come_before_the_command():
    proc = _xaibench("ls", "saliency", "--disable-plugin", "example")
    assert proc.returncode == 2
    assert "No such option" in proc.stderr or "no such option" in proc.stderr


def test_trace_plugins_prints_every_hook_call_and_registration():
    proc = _xaibench("ls", "tasks", env={"XAIBENCH_TRACE_PLUGINS": "1"})
    assert proc.returncode == 0, proc.stderr
    trace = [line for line in proc.stderr.splitlines() if line.startswith("xaibench: trace:")]
    assert any("loaded plugin example (xaibench-example" in line for line in trace)
    assert any("register_commands" in line for line in trace)
    assert any(
        "register_saliency_methods(example (xaibench-example" in line
        and "registered 1: example_method" in line
        for line in trace
    )
    quiet = _xaibench("ls", "tasks")
    assert "trace" not in quiet.stderr


def test_selection_round_trips_through_the_environment(tmp_path: Path):
    selection = PluginSelection(
        load=("example",), dirs=(str(tmp_path),), disabled=("ray",), trace=True
    )
    assert PluginSelection.from_env(selection.to_env()) == selection
    assert PluginSelection.from_env({}) == PluginSelection()
    assert PluginSelection.from_env({"XAIBENCH_LOAD_PLUGINS": ""}).load == ()


def test_a_cell_job_carries_the_selection_to_workers(plugin_dir: Path):
    """Workers of a remote executor load the plugins the driver loaded, not their own env."""
    from xaibench.config import resolve_config
    from xaibench.engine.cell_job import RunCellJob

    selection = PluginSelection(dirs=(str(plugin_dir),), disabled=("ray",))
    config = resolve_config({
        "task": "osteoporosis", "dataset": "phantom", "backbones": ["test_resnet.random"],
        "strategies": ["linear_probe"], "metrics": ["auc"],
    })  # fmt: skip
    job = RunCellJob(config, Path("."), {}, selection=selection)
    assert pickle.loads(pickle.dumps(job)).selection == selection


def test_components_remember_their_selection(plugin_dir: Path):
    selection = PluginSelection(dirs=(str(plugin_dir),))
    assert collect_components(get_plugin_manager(selection=selection)).selection == selection
