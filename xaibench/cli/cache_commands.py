"""``xaibench cache``: inspect (``cache info``) and prune (``cache prune``) the disk cache."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group()
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
