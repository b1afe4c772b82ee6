"""Every cache entry is verified on read; writers never collide (issue 16, items 3 and 4).

A cache entry whose bytes changed (bit rot, a truncated copy, a hand edit, an entry renamed onto
another key) is logged, deleted and recomputed: it never reaches a number. Two writers of one
entry, threads or processes, never corrupt or delete each other's files, and a reader sees a
whole entry or none.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runs import TINY_PHANTOM_RUN

from xaibench.cache import TensorCache, content_key
from xaibench.config import resolve_config
from xaibench.data.phantom import PhantomDataset
from xaibench.engine.benchmark import run_benchmark
from xaibench.engine.fit_cache import FitCache
from xaibench.progress import NullProgress
from xaibench.strategies.base import FitReport


def _flip(path: Path, at: float = 0.5) -> None:
    """Flip one byte at relative position ``at`` of ``path`` (the size stays the same)."""
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0x5A
    path.write_bytes(bytes(data))


def _only_file(folder: Path) -> Path:
    [file] = [p for p in folder.iterdir() if not p.name.startswith(".")]
    return file


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_flipped_byte_in_a_feature_entry_is_a_logged_miss(tmp_path, caplog) -> None:
    cache = TensorCache(tmp_path)
    key = content_key("features")
    cache.put(key, torch.arange(1000.0))
    file = _only_file(tmp_path / "features")
    _flip(file, 0.9)  # in the tensor data, not the safetensors header
    assert cache.get(key) is None
    [line] = _warnings(caplog)
    assert str(file) in line
    assert "corrupt" in line
    assert not file.exists()  # discarded
    cache.put(key, torch.arange(1000.0))  # recomputed and stored again
    assert torch.equal(cache.get(key), torch.arange(1000.0))


@pytest.mark.parametrize("at", [0.0, 0.01, 0.5, 0.99])
def test_a_truncated_or_flipped_entry_is_never_used(tmp_path, caplog, at: float) -> None:
    cache = TensorCache(tmp_path)
    cache.put("k", torch.arange(1000.0))
    file = _only_file(tmp_path / "features")
    _flip(file, at)
    assert cache.get("k") is None
    cache.put("k", torch.arange(1000.0))
    file.write_bytes(file.read_bytes()[:-10])  # truncated
    assert cache.get("k") is None
    assert len(_warnings(caplog)) == 2


def test_an_entry_copied_onto_another_key_is_rejected(tmp_path, caplog) -> None:
    cache = TensorCache(tmp_path)
    cache.put("a", torch.zeros(3))
    cache.put("b", torch.ones(3))
    cache.path("a").replace(cache.path("b"))  # valid bytes, wrong key
    assert cache.get("b") is None
    assert "corrupt" in _warnings(caplog)[0]


def test_a_flipped_byte_in_a_phantom_chunk_is_rendered_again(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("XAIBENCH_CACHE_DIR", str(tmp_path))
    clean = PhantomDataset(n_images=8, image_size=32, seed=5)
    want = [clean[i].image for i in range(8)]
    file = _only_file(tmp_path / "phantom")
    _flip(file, 0.6)
    again = PhantomDataset(n_images=8, image_size=32, seed=5)
    assert all(torch.equal(again[i].image, want[i]) for i in range(8))
    [line] = _warnings(caplog)
    assert str(file) in line
    assert file.exists()  # rendered again and stored again
    third = PhantomDataset(n_images=8, image_size=32, seed=5)
    assert torch.equal(third[3].image, want[3])
    assert len(_warnings(caplog)) == 1


def _report(epochs: int) -> FitReport:
    return FitReport(epochs, epochs, 0.5, None, 10, 10)


def test_a_flipped_byte_in_a_fit_entry_is_a_logged_miss(tmp_path, caplog) -> None:
    model = torch.nn.Linear(64, 64)
    cache = FitCache(tmp_path)
    cache.save("k" * 64, model, _report(1))
    biggest = max((tmp_path / "fits").iterdir(), key=lambda p: p.stat().st_size)
    _flip(biggest, 0.3)
    fresh = torch.nn.Linear(64, 64)
    assert cache.load("k" * 64, fresh) is None
    assert any("corrupt" in line for line in _warnings(caplog))


def test_a_fit_entry_round_trips(tmp_path) -> None:
    model = torch.nn.Linear(8, 3)
    cache = FitCache(tmp_path)
    torch.manual_seed(7)
    cache.save("k" * 64, model, _report(2))
    draw = torch.rand(3)
    fresh = torch.nn.Linear(8, 3)
    torch.manual_seed(123)
    report = cache.load("k" * 64, fresh)
    assert report is not None
    assert report.epochs_run == 2
    assert torch.equal(fresh.weight, model.weight)
    assert torch.equal(torch.rand(3), draw)  # the random state training left is restored


# --- a whole run ---------------------------------------------------------------------------

RUN = {
    **TINY_PHANTOM_RUN,
    "cache": True,  # what these tests are about
    "saliency": [],
    "perturbations": [],
    "metrics": ["auc"],
}


def test_a_run_on_a_corrupted_cache_gives_the_numbers_of_a_clean_one(components, tmp_path, caplog):
    cache = tmp_path / "cache"
    config = resolve_config(
        components.tasks.create("osteoporosis").defaults(), RUN, {"cache_dir": str(cache)}
    )
    run_benchmark(config, components, tmp_path / "clean", NullProgress())
    entries = [p for p in cache.rglob("*") if p.is_file() and p.parent != cache]
    assert {p.parent.name for p in entries} == {"features", "phantom", "fits"}
    for entry in entries:
        if entry.parent.name == "fits":  # so that the probe reads the features again
            entry.unlink()
            continue
        for at in (0.2, 0.4, 0.6, 0.8, 0.97):  # the data, not a header: numbers change if unchecked
            _flip(entry, at)
    entries = [p for p in entries if p.exists()]
    caplog.clear()
    run_benchmark(config, components, tmp_path / "corrupted", NullProgress())
    clean = json.loads((tmp_path / "clean" / "results.json").read_text())["records"]
    again = json.loads((tmp_path / "corrupted" / "results.json").read_text())["records"]
    assert again == clean
    for name in ("predictions.csv",):
        assert (tmp_path / "corrupted" / name).read_bytes() == (
            tmp_path / "clean" / name
        ).read_bytes()
    warned = _warnings(caplog)
    assert len(warned) == len(entries), warned  # one line per bad entry
    assert all("corrupt" in line for line in warned)


# --- concurrent writers --------------------------------------------------------------------


def test_threads_writing_one_entry_never_collide(tmp_path, caplog) -> None:
    cache = TensorCache(tmp_path)
    value = torch.arange(50_000.0)
    cache.put("k", value)
    errors: list[BaseException] = []
    seen: list[bool] = []

    def write() -> None:
        try:
            for _ in range(25):
                cache.put("k", value)
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    def read() -> None:
        for _ in range(50):
            got = cache.get("k")
            seen.append(got is not None and torch.equal(got, value))

    threads = [threading.Thread(target=write) for _ in range(4)] + [threading.Thread(target=read)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert all(seen)  # a reader sees the whole entry, never half of it
    assert _warnings(caplog) == []
    assert [p.name for p in (tmp_path / "features").iterdir()] == [cache.path("k").name]


def _write_many(root: str, payload: bytes, rounds: int) -> None:
    from xaibench.cache import CacheNamespace

    store = CacheNamespace("shared", Path(root))
    for _ in range(rounds):
        assert store.write("entry", payload)


def test_processes_writing_one_entry_never_collide(tmp_path, caplog) -> None:
    from xaibench.cache import CacheNamespace

    payload = np.random.default_rng(0).bytes(200_000)
    store = CacheNamespace("shared", tmp_path)
    assert store.write("entry", payload)
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=_write_many, args=(str(tmp_path), payload, 30)) for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    reads = [store.read("entry") for _ in range(60)]
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0, 0, 0]
    assert all(r == payload for r in reads)
    assert _warnings(caplog) == []
    assert [p.name for p in (tmp_path / "shared").iterdir()] == ["entry.xbc"]


def test_discarding_a_bad_entry_spares_a_good_one_written_meanwhile(tmp_path) -> None:
    from xaibench.cache import CacheNamespace

    store = CacheNamespace("ns", tmp_path)
    store.write("e", b"first")
    file = store.path("e")
    _flip(file, 0.99)
    stale = file.stat()
    store.write("e", b"second")  # another writer replaces the bad entry before it is discarded
    store.discard("e", "checksum mismatch", seen=stale)
    assert store.read("e") == b"second"
