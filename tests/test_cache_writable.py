"""A cache folder a run cannot use costs one warning, never the run (issue 16, items 1 and 5).

The folder is checked when the run starts, before any data or training: created with its
marker, a probe file written and deleted. An unwritable folder is reported once, by name and
reason, and the run goes on without writing to it; a folder that holds other files and no
xaibench marker is not an xaibench cache and is neither read nor written.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from cli_runs import TINY_PHANTOM_RUN

from xaibench.cache import TensorCache, content_key
from xaibench.config import resolve_config
from xaibench.data.phantom import PhantomDataset
from xaibench.engine.benchmark import run_benchmark
from xaibench.progress import NullProgress

RUN = {
    **TINY_PHANTOM_RUN,
    "cache": True,  # what these tests are about
    "saliency": [],
    "perturbations": [],
    "metrics": ["auc"],
    "strategies": ["full", "linear_probe"],
}


class Log(NullProgress):
    """Keeps the run's log lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(message)


def _run(components, cache_dir: Path, out: Path, **overrides):
    config = resolve_config(
        components.tasks.create("osteoporosis").defaults(),
        {**RUN, **overrides},
        {"cache_dir": str(cache_dir)},
    )
    log = Log()
    return run_benchmark(config, components, out, log), log.lines


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _inodes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_ino for p in folder.rglob("*")}


def test_a_cache_folder_that_cannot_be_created_costs_one_warning(components, tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("a regular file, so nothing can be created under it")
    cache = blocker / "cache"
    outcome, lines = _run(components, cache, tmp_path / "run")
    assert [r.status for r in outcome.results] == ["ok", "ok"], [r.error for r in outcome.results]
    warned = [line for line in lines if str(cache) in line]
    assert len(warned) == 1, lines
    assert "not writable" in warned[0]
    assert "Not a directory" in warned[0]  # the reason
    # reported when the run starts, before any cell
    first_cell = next(i for i, line in enumerate(lines) if "cell[/bold]" in line)
    assert lines.index(warned[0]) < first_cell
    assert blocker.read_text().startswith("a regular file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to a read-only folder")
def test_a_read_only_cache_folder_costs_one_warning(components, tmp_path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o555)
    try:
        outcome, lines = _run(components, cache, tmp_path / "run", strategies=["full"])
    finally:
        cache.chmod(0o755)
    assert [r.status for r in outcome.results] == ["ok"]
    assert len([line for line in lines if str(cache) in line]) == 1
    assert _files(cache) == []


def test_a_read_only_cache_is_read_but_never_written(components, tmp_path, monkeypatch) -> None:
    """Simulated for root too: the probe write fails, as it would in a read-only folder."""
    import xaibench.cache.folder as folder

    cache = tmp_path / "cache"
    first, _ = _run(components, cache, tmp_path / "first", strategies=["full"])
    written = _inodes(cache)

    def read_only(root: Path) -> None:
        raise PermissionError(13, "Permission denied", str(root))

    monkeypatch.setattr(folder, "_probe", read_only)

    outcome, lines = _run(components, cache, tmp_path / "second", strategies=["full"])
    assert [r.status for r in outcome.results] == ["ok"]
    warned = [line for line in lines if str(cache) in line]
    assert len(warned) == 1
    assert "Permission denied" in warned[0]
    assert any("trained model from the cache" in line for line in lines)  # still read
    assert _inodes(cache) == written  # no file added, replaced or removed
    assert outcome.document["records"] == first.document["records"]


def test_a_folder_of_other_files_is_not_used_as_a_cache(tmp_path, monkeypatch, caplog) -> None:
    folder = tmp_path / "documents"
    folder.mkdir()
    (folder / "thesis.tex").write_text("\\documentclass{article}")
    before = _files(folder)
    monkeypatch.setenv("XAIBENCH_CACHE_DIR", str(folder))
    dataset = PhantomDataset(n_images=4, image_size=32, seed=1)
    image = dataset[0].image
    cache = TensorCache()
    cache.put(content_key("x"), torch.ones(2))
    assert cache.get(content_key("x")) is None
    assert _files(folder) == before  # nothing written into someone else's folder
    warned = [r.getMessage() for r in caplog.records if str(folder) in r.getMessage()]
    assert len(warned) == 1  # once per folder, not per write
    assert "not an xaibench cache" in warned[0]
    uncached = PhantomDataset(n_images=4, image_size=32, seed=1)
    uncached.use_cache(None, enabled=False)
    assert torch.equal(uncached[0].image, image)


def test_an_empty_folder_becomes_a_marked_cache(tmp_path) -> None:
    cache = TensorCache(tmp_path)
    cache.put(content_key("x"), torch.ones(2))
    tag = (tmp_path / "CACHEDIR.TAG").read_text()
    assert tag.startswith("Signature: 8a477f597d28d172789f06886806bc55\n")
    assert (tmp_path / "xaibench-cache.json").is_file()
    assert torch.equal(cache.get(content_key("x")), torch.ones(2))
