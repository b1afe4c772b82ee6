"""``xaibench export``: a run's tables as Parquet or JSON Lines files (:mod:`xaibench.export`)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(name="export")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["parquet", "jsonl"]),
    default="parquet",
    show_default=True,
    help="File format: Parquet (needs pyarrow: pip install 'xaibench[export]') or JSON Lines.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    help="Folder to write the files into (default RUN_DIR/export).",
)
@click.option("--overwrite", is_flag=True, help="Replace an earlier export in the folder.")
def export_command(run_dir: Path, fmt: str, out_dir: Path | None, overwrite: bool) -> None:
    """Export RUN_DIR's records and per-image tables for pandas, Hugging Face datasets and others.

    One file per table (records, cells, predictions, explanations and the run's analysis
    tables) and export.json with the results schema version, xaibench version and configuration
    hash (also in each Parquet file's metadata). Values are the run's own: the spreadsheet
    escaping of the CSV files is undone. See docs/results-schema.md, "Exporting results".
    """
    from xaibench.export import export_run

    folder = export_run(run_dir, fmt, out_dir, overwrite=overwrite)
    click.echo(f"exported to {folder}")
