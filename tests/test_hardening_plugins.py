"""Issue 16, item 13: a plugin that raises SystemExit (or any BaseException but Ctrl-C) while it
loads or registers is a broken plugin, never a silent no-op of the whole command."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
from cli_runs import cli

from xaibench.errors import XaibenchError
from xaibench.hookspecs import hookimpl
from xaibench.plugins import PluginSelection, collect_components, get_plugin_manager


@pytest.mark.parametrize("body", ["raise SystemExit(0)\n", "import sys\nsys.exit(3)\n"])
def test_a_local_plugin_exiting_at_import_is_broken_not_a_silent_exit(tmp_path: Path, body: str):
    (tmp_path / "quitter.py").write_text(body)
    pm = get_plugin_manager(selection=PluginSelection(dirs=(str(tmp_path),)))
    assert [b.name for b in pm.broken] == ["quitter"]
    assert "SystemExit" in pm.broken[0].error
    assert "gradcam" in collect_components(pm).saliency


def test_the_command_still_runs_and_warns(tmp_path: Path):
    (tmp_path / "quitter.py").write_text("raise SystemExit(0)\n")
    proc = cli("--plugins-dir", str(tmp_path), "ls", "saliency", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "gradcam" in proc.stdout  # the command did its work
    assert "plugin 'quitter'" in proc.stderr
    assert "failed to load" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_tampered_board_is_still_caught_with_an_exiting_plugin(tmp_path: Path):
    """The issue's scenario: `leaderboard --check` must not exit 0 because a plugin exited."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "quitter.py").write_text("raise SystemExit(0)\n")
    proc = cli("--plugins-dir", str(plugins), "leaderboard", "--check", "b", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "no leaderboard.json" in proc.stderr


def test_an_entry_point_plugin_exiting_at_import_is_broken(monkeypatch: pytest.MonkeyPatch):
    class ExitingEntryPoint:
        name = "quitter"
        dist = None

        def load(self) -> object:
            raise SystemExit(0)

    real = importlib.metadata.entry_points

    def entry_points(**kwargs: object) -> list[object]:
        return [*real(**kwargs), ExitingEntryPoint()]  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    pm = get_plugin_manager()
    assert "quitter" in [b.name for b in pm.broken]


def test_keyboard_interrupt_while_loading_is_not_swallowed(tmp_path: Path):
    (tmp_path / "interrupted.py").write_text("raise KeyboardInterrupt\n")
    with pytest.raises(KeyboardInterrupt):
        get_plugin_manager(selection=PluginSelection(dirs=(str(tmp_path),)))


def test_a_registration_hook_exiting_is_an_error_naming_the_plugin():
    class Quitter:
        @hookimpl
        def register_saliency_methods(self, register: object) -> None:
            raise SystemExit(0)

    pm = get_plugin_manager(entry_points=False)
    pm.register(Quitter(), name="quitter")
    with pytest.raises(XaibenchError, match=r"quitter.*register_saliency_methods.*SystemExit"):
        collect_components(pm)


def test_a_command_hook_exiting_is_reported_not_silent(tmp_path: Path):
    (tmp_path / "cmdquit.py").write_text(
        "from xaibench.hookspecs import hookimpl\n\n"
        "@hookimpl\ndef register_commands(cli):\n    raise SystemExit(0)\n"
    )
    proc = cli("--plugins-dir", str(tmp_path), "ls", "saliency", cwd=tmp_path)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "cmdquit" in proc.stderr
    assert "register_commands" in proc.stderr
    assert "Traceback" not in proc.stderr
