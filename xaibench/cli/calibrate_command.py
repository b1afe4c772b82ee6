"""``xaibench calibrate``: known-answer calibration of saliency methods, with ``run``'s options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from xaibench.cli.common import _state, include_tasks_option, use_task_files
from xaibench.cli.run_command import _resolved_config, run

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
@click.command()
@include_tasks_option
@click.argument("task")
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    help="Folder for calibration.json, calibration.md and the two runs (runs/); created, or "
    "an earlier calibration's folder to resume (default: xaibench-runs/<task>-calibration-<time>).",
)
def calibrate(
    task: str, out_dir: Path | None, include_tasks: tuple[Path, ...], **options: Any
) -> int:
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
    from xaibench.calibrate import calibrate_defaults
    from xaibench.early_checks import check_config_files, check_names

    task = str(use_task_files(task, include_tasks))
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
    check_names(config, components)  # before anything imports torch
    check_config_files(config)
    from xaibench.calibrate import run_calibration, summary_markdown
    from xaibench.engine.results import default_run_dir
    from xaibench.progress import NullProgress, RichProgress

    folder = out_dir or default_run_dir(f"{task.replace(':', '-')}-calibration")
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
