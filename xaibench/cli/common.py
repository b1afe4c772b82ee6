"""What every command module shares: the per-invocation :class:`State` and one-line messages."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def include_tasks_option(command: Any) -> Any:
    """The ``--include-tasks PATH`` option (repeatable): task files, or folders of them."""
    return click.option(
        "--include-tasks",
        "include_tasks",
        multiple=True,
        type=click.Path(path_type=Path),
        help="A task file (*.yaml) or a folder of them to register as tasks (repeatable; also "
        "XAIBENCH_TASK_PATHS; docs/tasks/writing-tasks.md).",
    )(command)


def use_task_files(task: str | None, include: Sequence[Path | str] = ()) -> str | None:
    """Register the task files of ``--include-tasks`` and of a TASK given as a file.

    Sets ``XAIBENCH_TASK_PATHS`` (so worker processes register the same tasks) and this
    invocation's plugin selection, before the registries are built.

    Args:
        task: The TASK argument: a registry name, or a task file (``*.yaml``/``*.yml``).
        include: ``--include-tasks`` paths.

    Returns:
        The registry name of TASK (the task file's ``name`` when TASK is a file).

    Raises:
        XaibenchError: TASK's file is invalid (every problem listed) or defines several tasks.
    """
    from xaibench.run_config import task_file_paths
    from xaibench.tasks.loading import add_task_paths

    name, paths = task_file_paths(task, include)
    if paths:
        state = _state()
        selection = dataclasses.replace(state.pm.selection, task_paths=add_task_paths(paths))
        state.pm.selection = selection
        state._components = None
    return name


@dataclass(frozen=True)
class View:
    """How a command prints its leaderboards (``xaibench.leaderboard.terminal``)."""

    wide: bool = False
    ci_lines: bool = False


def wide_option(command: Any) -> Any:
    """The ``--wide`` flag: the full leaderboard tables instead of the headline view."""
    return click.option(
        "--wide",
        is_flag=True,
        help="Print both full leaderboards (every column of the Markdown files, as wide as they "
        "are) instead of the headline view that fits 100 columns.",
    )(command)


def ci_lines_option(command: Any) -> Any:
    """The ``--ci-lines`` flag: each CI on a second line of the headline view."""
    return click.option(
        "--ci-lines",
        is_flag=True,
        help="Headline view: each value's CI (±, the wider half) on a second line.",
    )(command)
