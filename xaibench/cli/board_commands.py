"""``xaibench leaderboard`` and ``xaibench report``: published results from results files alone."""

from __future__ import annotations

from pathlib import Path

import click

from xaibench.cli.common import ci_lines_option, wide_option


@click.command(name="leaderboard")
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
@wide_option
@ci_lines_option
def leaderboard_command(
    run_dirs: tuple[Path, ...],
    out_dir: Path | None,
    check_dir: Path | None,
    alpha: float | None,
    resamples: int | None,
    seed: int | None,
    calibration_file: Path | None,
    wide: bool,
    ci_lines: bool,
) -> int:
    """Build the leaderboards of RUN_DIR... from their results files alone (no model runs).

    Runs must share the task, metric definitions and test set; cells are ranked with their
    confidence intervals and grouped in tiers by Holm-corrected paired tests. --check DIR
    compares committed leaderboard files with a rebuild (the run directories default to the
    ones DIR's leaderboard.json names): the CI guard that published numbers match their results.
    With --out, the headline view is printed (fits 100 columns; --wide: the full tables).
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
    from xaibench.leaderboard.terminal import print_leaderboards

    written = write_leaderboard_files(boards, out_dir)
    print_leaderboards(boards, wide=wide, ci_lines=ci_lines)
    click.echo(f"wrote {len(written)} files to {out_dir}")
    return 0


@click.command(name="report")
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
