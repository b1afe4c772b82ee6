"""``xaibench run``: the run configuration from the task, presets, files and options; the tables.

:func:`xaibench.run_config.resolved_config` layers the configuration (``calibrate`` and the
Python API share it; imported here as ``_resolved_config``), :func:`_resumed_config`
reads back the one a ``--resume`` finishes, and :func:`_execute` runs the grid and prints the
leaderboards' headline columns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from xaibench.cli.common import (
    View,
    _one_line,
    _state,
    ci_lines_option,
    include_tasks_option,
    use_task_files,
    wide_option,
)
from xaibench.errors import XaibenchError
from xaibench.plugins import Components
from xaibench.run_config import resolved_config as _resolved_config
from xaibench.run_config import with_task_file


@click.command()
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
    "--image-root",
    type=click.Path(path_type=Path),
    help="The folder a manifest's image and mask paths are relative to and must stay inside "
    "(default: the manifest's folder); e.g. the dataset folder of 'xaibench data import'.",
)
@click.option(
    "--calibration",
    "calibration_file",
    type=click.Path(path_type=Path),
    help="calibration.json of 'xaibench calibrate': record each cell's trust badge per "
    "saliency method (matched by backbone architecture, strategy and method; else 'untested').",
)
@click.option(
    "--observer",
    "observer_names",
    multiple=True,
    help="Tell an observer about the run as it goes, e.g. an experiment tracker (repeatable; "
    "xaibench ls observers). Changes nothing the run computes; allowed with --resume.",
)
@click.option(
    "--observer-option",
    "observer_options",
    multiple=True,
    metavar="NAME.KEY=VALUE",
    help="An option of an observer given with --observer (repeatable; VALUE read as YAML).",
)
@click.option(
    "--tracking-uri",
    help="Where tracking observers log (e.g. --observer mlflow; default: the tracker's own "
    "variable, MLFLOW_TRACKING_URI).",
)
@click.option("--quiet", is_flag=True, help="No progress display.")
@wide_option
@ci_lines_option
@include_tasks_option
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
    image_root: Path | None,
    calibration_file: Path | None,
    observer_names: tuple[str, ...],
    observer_options: tuple[str, ...],
    tracking_uri: str | None,
    quiet: bool,
    wide: bool,
    ci_lines: bool,
    include_tasks: tuple[Path, ...],
) -> int:
    """Run TASK's benchmark grid and print its leaderboards.

    TASK is a registered task or a task file (my_task.yaml, docs/tasks/writing-tasks.md).
    Defaults come from the task ('xaibench run osteoporosis' needs nothing else); a --config
    file overrides them, and command-line options override both. Exit status: 0 all cells
    succeeded, 1 some cell failed (all results are still written), 2 usage error.
    """
    from xaibench.config import resolve_config
    from xaibench.early_checks import check_run_files

    # Names and files first, before anything imports torch (xaibench.early_checks); --resume
    # refuses the options that change the configuration, so their files are not looked at.
    check_run_files(
        data_path=None if resume else data_path,
        image_root=None if resume else image_root,
        calibration_file=calibration_file,
    )
    task = str(use_task_files(task, include_tasks))
    state = _state()
    components = state.components
    task_obj = components.tasks.create(task)
    if resume:
        given = {
            "--config": config_files, "--grid": grid, "--data": data_path,
            "--backbone": backbones, "--strategy": strategies, "--saliency": saliency,
            "--perturbation": perturbations, "--metric": metrics, "--seed": seeds,
            "--random-init": random_init, "--epochs": epochs,
            "--max-explain-images": max_explain_images,
            "--device": device, "--precision": precision, "--compile": compile_,
            "--allow-outside-paths": allow_outside_paths, "--image-root": image_root,
        }  # fmt: skip
        resumed = _resumed_config(task, out_dir, given, task_obj)
        if executor:  # where the rest runs may change; what it computes may not
            resumed = resolve_config(resumed.model_dump(mode="json"), {"executor": executor})
            resumed = with_task_file(resumed, task_obj)
        calibration, observers = _checked_extras(
            resumed, components, calibration_file, observer_names, observer_options, tracking_uri
        )
        return _execute(
            resumed, components, out_dir, quiet, calibration, observers, View(wide, ci_lines)
        )
    config = _resolved_config(
        task_obj,
        task,
        config_files=config_files, grid=grid, data_path=data_path, backbones=backbones,
        strategies=strategies, saliency=saliency, perturbations=perturbations, metrics=metrics,
        seeds=seeds, random_init=random_init, epochs=epochs,
        max_explain_images=max_explain_images, executor=executor, device=device,
        precision=precision, compile_=compile_, allow_outside_paths=allow_outside_paths,
        image_root=image_root,
    )  # fmt: skip
    calibration, observers = _checked_extras(
        config, components, calibration_file, observer_names, observer_options, tracking_uri
    )
    return _execute(
        config, components, out_dir, quiet, calibration, observers, View(wide, ci_lines)
    )


def _checked_extras(
    config: Any,
    components: Components,
    calibration_file: Path | None,
    observer_names: tuple[str, ...],
    observer_options: tuple[str, ...],
    tracking_uri: str | None,
) -> tuple[Any, Any]:
    """Check ``config``'s names and files (torch not yet imported); the calibration, observers.

    Raises:
        XaibenchError: An unknown component name (did-you-mean) or a missing manifest, before
            anything heavy is imported; a faulty calibration file or observer.
    """
    from xaibench.early_checks import check_config_files, check_names

    check_names(config, components)
    check_config_files(config)
    from xaibench.observers.select import create_observers, parse_observer_options
    from xaibench.trust import read_calibration

    calibration = read_calibration(calibration_file) if calibration_file is not None else None
    observers = create_observers(
        components, observer_names, parse_observer_options(observer_options), tracking_uri
    )
    return calibration, observers


def _resumed_config(
    task: str, out_dir: Path | None, given: dict[str, Any], task_obj: Any = None
) -> Any:
    """The configuration of the run in ``out_dir``, for ``--resume``.

    Raises:
        click.UsageError: No --out, or options that would change the configuration.
        XaibenchError: ``out_dir`` holds no run, or a run of another task.
    """
    from xaibench.config import load_config_file, resolve_config
    from xaibench.engine.checkpoints import read_run_state
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
    config = with_task_file(resolve_config(stored), task_obj)
    if config.study_hash() != state.get("study_hash"):
        what = " or the task file changed" if config.task_sha256 else ""
        raise XaibenchError(
            f"{out_dir}/config.yaml no longer matches the run it started (edited by hand?{what})"
        )
    return config


def _execute(
    config: Any,
    components: Components,
    out_dir: Path | None,
    quiet: bool,
    calibration: Any = None,
    observers: Any = None,
    view: View | None = None,
) -> int:
    from xaibench.engine.benchmark import run_benchmark
    from xaibench.engine.results import default_run_dir
    from xaibench.progress import NullProgress, RichProgress

    view = view or View()
    run_dir = out_dir or default_run_dir(config.task)
    if quiet:
        outcome = run_benchmark(config, components, run_dir, NullProgress(), calibration, observers)
    else:
        with RichProgress() as progress:
            outcome = run_benchmark(config, components, run_dir, progress, calibration, observers)
    from xaibench.leaderboard.terminal import print_leaderboards

    print_leaderboards(outcome.leaderboards, wide=view.wide, ci_lines=view.ci_lines)
    for r in outcome.failed:
        click.echo(f"xaibench: cell {r.cell.label()} failed: {r.error}", err=True)
    for what, error in _partial_failures(outcome.partly_failed):
        click.echo(f"xaibench: {what} failed: {_one_line(error)}", err=True)
    for name, error in outcome.observer_failures.items():
        click.echo(
            f"xaibench: observer {name} failed in {_one_line(error)}; the run's results are "
            "complete (log them again with --resume --observer ...)",
            err=True,
        )
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
