"""The ``xaibench`` command line.

Errors a user can cause print one line (``xaibench: error: ...``) and exit with status 2, without a
traceback; a run in which some cells failed exits with status 1 after writing every result.

The :func:`cli` group, its plugin options and :func:`main` live here, with the small commands
(``plugins``, ``ls``, ``validate``); the other commands live in modules named for them and are
added to the group below (plugins add theirs through ``register_commands``):

* :mod:`~xaibench.cli.run_command` — ``run``, its configuration layers and printed tables;
* :mod:`~xaibench.cli.calibrate_command` — ``calibrate`` (``run``'s options, shared);
* :mod:`~xaibench.cli.board_commands` — ``leaderboard`` and ``report``;
* :mod:`~xaibench.cli.data_commands` — ``data check`` and ``data drr``;
* :mod:`~xaibench.cli.cache_commands` — ``cache info`` and ``cache prune``;
* :mod:`~xaibench.cli.export_command` — ``export``;
* :mod:`~xaibench.cli.common` — what the commands share: :class:`State`, one-line messages.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import pluggy

from xaibench import __version__
from xaibench.cli.board_commands import leaderboard_command, report_command
from xaibench.cli.cache_commands import cache
from xaibench.cli.calibrate_command import calibrate
from xaibench.cli.common import State, _one_line, _state, include_tasks_option, use_task_files
from xaibench.cli.data_commands import data
from xaibench.cli.export_command import export_command
from xaibench.cli.run_command import run
from xaibench.errors import MultipleErrors, XaibenchError
from xaibench.kinds import KIND_ALIASES, KIND_BY_KEY
from xaibench.plugins import (
    DISABLE_PLUGINS_ENV,
    PLUGINS_DIR_ENV,
    add_commands,
    describe_plugins,
    get_plugin_manager,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="xaibench")
@click.option(
    "--plugins-dir",
    "plugins_dirs",
    multiple=True,
    metavar="DIR",
    help="Also load every *.py file in DIR as a plugin (repeatable; before the command).",
)
@click.option(
    "--disable-plugin",
    "disabled_plugins",
    multiple=True,
    metavar="NAME",
    help="Do not load plugin NAME (repeatable; before the command; see 'xaibench plugins').",
)
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Log INFO messages of xaibench and let the libraries it runs (Ray) keep their log "
    "lines on stderr; without it they are quiet (before the command: xaibench -v run ...; "
    "or XAIBENCH_VERBOSE=1).",
)
def cli(plugins_dirs: tuple[str, ...], disabled_plugins: tuple[str, ...], verbose: bool) -> None:
    """Benchmark vision models on medical images: prediction and explanation, together.

    Plugins: XAIBENCH_LOAD_PLUGINS=a,b loads only these third-party plugins (empty: none),
    XAIBENCH_TRACE_PLUGINS=1 traces hook calls to stderr; --plugins-dir and --disable-plugin
    are read before the plugins load (so they must come before the command name).
    """
    if verbose:
        from xaibench.verbosity import set_verbose

        set_verbose()


#: The commands that live in their own modules (``plugins``, ``ls`` and ``validate`` are below).
for _command in (run, calibrate, data, cache, leaderboard_command, report_command, export_command):
    cli.add_command(_command)


#: Group options that decide which plugins load: read from argv before click parses it, since
#: plugins add commands (``register_commands``) and so must be loaded first.
_PLUGIN_OPTIONS = {"--plugins-dir": PLUGINS_DIR_ENV, "--disable-plugin": DISABLE_PLUGINS_ENV}


def _plugin_arguments(argv: Sequence[str]) -> dict[str, list[str]]:
    """The values of ``--plugins-dir`` and ``--disable-plugin`` before the command name.

    Raises:
        click.UsageError: One of them is given without a value.
    """
    found: dict[str, list[str]] = {env: [] for env in _PLUGIN_OPTIONS.values()}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-") or arg == "--":
            break  # the command: what follows belongs to it
        name, eq, value = arg.partition("=")
        if name in _PLUGIN_OPTIONS:
            if not eq:
                if i + 1 >= len(argv):
                    raise click.UsageError(f"option {name} requires a value")
                i += 1
                value = argv[i]
            found[_PLUGIN_OPTIONS[name]].append(value)
        i += 1
    return found


def _apply_plugin_arguments(argv: Sequence[str]) -> None:
    """Put the plugin options into the environment, so worker processes load the same plugins."""
    import os

    found = _plugin_arguments(argv)
    dirs = found[PLUGINS_DIR_ENV]
    if dirs:
        previous = [d for d in os.environ.get(PLUGINS_DIR_ENV, "").split(os.pathsep) if d]
        os.environ[PLUGINS_DIR_ENV] = os.pathsep.join(
            [*previous, *(str(Path(d).resolve()) for d in dirs)]
        )
    names = found[DISABLE_PLUGINS_ENV]
    if names:
        previous = [n for n in os.environ.get(DISABLE_PLUGINS_ENV, "").split(",") if n]
        os.environ[DISABLE_PLUGINS_ENV] = ",".join([*previous, *names])


@cli.command()
def plugins() -> None:
    """List installed plugins (built-ins too) as JSON: name, version, hooks, components."""
    state = _state()
    click.echo(json.dumps(describe_plugins(state.pm, state.components), indent=2))


@cli.command(name="ls")
@click.argument("kind")
@click.argument("pattern", required=False)
@click.option("--exclude", help="Wildcard pattern of names to leave out.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@include_tasks_option
def ls_command(
    kind: str,
    pattern: str | None,
    exclude: str | None,
    as_json: bool,
    include_tasks: tuple[Path, ...],
) -> None:
    """List registered components of KIND, optionally filtered by a wildcard PATTERN.

    KIND is one of: backbones, strategies, saliency, perturbations, metrics, tasks, datasets,
    executors. Example: xaibench ls backbones 'test_*'.
    """
    use_task_files(None, include_tasks)
    key = KIND_ALIASES.get(kind, kind)
    if key not in KIND_BY_KEY:
        import difflib

        options = sorted(KIND_BY_KEY)
        close = difflib.get_close_matches(kind, [*options, *KIND_ALIASES], n=1, cutoff=0.5)
        hint = f"; did you mean {KIND_ALIASES.get(close[0], close[0])!r}?" if close else ""
        raise XaibenchError(f"unknown kind {kind!r}{hint} (kinds: {', '.join(options)})")
    registry = _state().components[key]
    rows = [
        {
            "name": e.name,
            "provider": e.provider.distribution,
            "version": e.provider.version,
            "summary": e.summary,
        }
        for e in registry.entries()
        if e.name in set(registry.names(pattern, exclude))
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        what = KIND_BY_KEY[key].key
        click.echo(
            f"no {what} match {pattern!r}" if pattern else f"no {what} are registered", err=True
        )
        return
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        click.echo(f"{r['name']:<{width}}  {r['summary']}  [{r['provider']} {r['version']}]")


@cli.command()
@click.argument(
    "config_files", metavar="CONFIG...", nargs=-1, required=True, type=click.Path(path_type=Path)
)
@click.option("--task", help="The task (a name or a task file), when CONFIG has no 'task' key.")
@click.option("--grid", help="Named grid preset of the task, applied under CONFIG.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the report (and resolved config) as JSON."
)
@include_tasks_option
def validate(
    config_files: tuple[Path, ...],
    task: str | None,
    grid: str | None,
    as_json: bool,
    include_tasks: tuple[Path, ...],
) -> int:
    """Check CONFIG without running it: every key, component, option, weight and region.

    A CONFIG that is a task file (it has 'labels'; docs/tasks/writing-tasks.md), or a task
    file given as --task, is checked as one: its keys (did-you-mean), classes and regions,
    and its defaults and grids as run configurations.

    Resolves CONFIG as 'xaibench run TASK --config CONFIG' would (the task's defaults, then
    --grid, then the file; several files merge in order, later wins) and lists every problem
    at once: unknown keys, unknown components (with did-you-mean), options a component
    rejects, backbone weights not found, an unavailable device. Regions the dataset lacks are
    warnings (the run skips them). Nothing is trained and no weight is loaded. Exit status 0
    when the run would start, 2 otherwise.
    """
    from xaibench.engine.validation import (
        is_task_document,
        validate_config_file,
        validate_task_file,
    )
    from xaibench.tasks.loading import is_task_file
    from xaibench.tasks.spec import TaskFileError

    task_files = [p for p in config_files if is_task_document(p)]
    if task is not None and is_task_file(task):
        task_files.append(Path(task))
    configs = tuple(p for p in config_files if p not in task_files)
    code = 0
    for path in task_files:
        code = max(code, _report(validate_task_file(path, _state().components), as_json, path))
    if configs:
        try:
            name = use_task_files(task, include_tasks)
        except TaskFileError:
            return 2  # the task file's problems are listed above
        report = validate_config_file(configs, _state().components, task=name, grid=grid)
        code = max(code, _report(report, as_json, *configs))
    return code


def _report(report: Any, as_json: bool, *files: Path) -> int:
    """Print a validation report; 0 when fine, 2 when it has problems."""
    config_file = ", ".join(str(p) for p in files)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        for warning in report.warnings:
            click.echo(f"xaibench: warning: {_one_line(warning)}", err=True)
        if report.ok and report.config is not None:
            c = report.config
            click.echo(
                f"{config_file}: ok: task {c.task}, dataset {c.dataset.key}, {report.cells} "
                f"cells ({len(c.backbones)} backbones x {len(c.strategies)} strategies x "
                f"{len(c.seeds)} seeds), {len(c.saliency)} saliency methods, "
                f"{len(c.perturbations)} perturbations, {len(c.metrics)} metrics"
            )
            for row in report.components:
                click.echo(f"  {row['kind']:<13} {row['key']:<40} [{row['provider']}]")
        elif report.ok:
            click.echo(f"{config_file}: ok")
    if not report.ok:
        if not as_json:
            noun = "problem" if len(report.problems) == 1 else "problems"
            click.echo(f"xaibench: error: {config_file}: {len(report.problems)} {noun}:", err=True)
            for problem in report.problems:
                click.echo(f"  - {_one_line(problem)}", err=True)
        return 2
    return 0


def _os_error(exc: OSError) -> str:
    """``FILE: reason`` for an error of the operating system (no traceback: not our bug)."""
    reason = exc.strerror or str(exc)
    files = [f for f in (exc.filename, exc.filename2) if f is not None]
    where = " -> ".join(str(f) for f in files)
    return f"{where}: {reason}" if where else reason


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``xaibench`` console script and ``python -m xaibench``.

    It first sets OpenMP's wait policy and thread count where the user has not (before any
    module imports torch; :mod:`xaibench.threads`).
    """
    from xaibench.threads import configure_threads

    configure_threads()
    args = list(argv) if argv is not None else sys.argv[1:]
    try:
        _apply_plugin_arguments(args)
        pm = get_plugin_manager()
        add_commands(pm, cli)
        code = cli.main(
            args=args,
            prog_name="xaibench",
            standalone_mode=False,
            obj=State(pm),
        )
    except click.UsageError as exc:
        click.echo(f"xaibench: error: {_one_line(exc.format_message())}", err=True)
        sys.exit(2)
    except MultipleErrors as exc:
        click.echo(f"xaibench: error: {_one_line(exc.summary)}:", err=True)
        for item in exc.items:
            click.echo(f"  - {_one_line(item)}", err=True)
        sys.exit(2)
    except (XaibenchError, pluggy.PluginValidationError) as exc:
        click.echo(f"xaibench: error: {_one_line(str(exc))}", err=True)
        sys.exit(getattr(exc, "exit_code", 2))
    except click.ClickException as exc:
        click.echo(f"xaibench: error: {_one_line(exc.format_message())}", err=True)
        sys.exit(exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        click.echo("xaibench: interrupted", err=True)
        sys.exit(130)
    except OSError as exc:  # a full disk, a read-only folder, a vanished file: the system's
        click.echo(f"xaibench: error: {_one_line(_os_error(exc))}", err=True)
        sys.exit(1)
    except MemoryError:
        click.echo("xaibench: error: out of memory", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
