"""`xaibench cache prune|info` touch only what xaibench wrote (issue 16, item 1).

Prune deletes entries it can prove are its own: a marked cache folder, a namespace folder, an
entry file name of xaibench's pattern with a valid header; temporary files only of xaibench's
own naming and only once no writer can be alive. It never follows a symbolic link, and it
refuses a folder that is not an xaibench cache.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch

from xaibench.cache import TensorCache, content_key
from xaibench.cli import main

WEEK_AGO = time.time() - 8 * 86400


def _xaibench(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as stop:
        main(list(args))
    out, err = capsys.readouterr()
    code = stop.value.code
    return (code if isinstance(code, int) else 0), out, err


def _tree(*folders: Path) -> dict[str, bytes | str]:
    """Every path under ``folders`` (links as their target, files as their content)."""
    found: dict[str, bytes | str] = {}
    for folder in folders:
        for dirpath, dirnames, filenames in os.walk(folder):
            for name in dirnames + filenames:
                path = Path(dirpath) / name
                if path.is_symlink():
                    found[str(path)] = f"-> {os.readlink(path)}"
                elif path.is_file():
                    found[str(path)] = path.read_bytes()
                else:
                    found[str(path)] = "dir"
    return found


def _age(path: Path, when: float = WEEK_AGO) -> None:
    os.utime(path, (when, when), follow_symlinks=False)


@pytest.fixture
def foreign(tmp_path: Path) -> tuple[Path, Path]:
    """A folder of someone's files with a link to another folder: not an xaibench cache."""
    folder, other = tmp_path / "mine", tmp_path / "other"
    (folder / "photos").mkdir(parents=True)
    (folder / "docs").mkdir()
    other.mkdir()
    (folder / "notes.txt").write_text("important")
    (folder / "photos" / "a.jpg").write_bytes(b"\xff\xd8 picture")
    (folder / ".draft.tmp").write_text("an editor's temporary file")
    (folder / "docs" / ".x.tmp").write_text("another")
    (other / "precious.txt").write_text("keep me")
    (folder / "link").symlink_to(other, target_is_directory=True)
    for path in (folder / ".draft.tmp", folder / "docs" / ".x.tmp", folder / "notes.txt"):
        _age(path)
    return folder, other


@pytest.mark.parametrize("how", [["--all"], ["--older-than", "0"], ["--all", "--dry-run"]])
def test_prune_refuses_a_folder_that_is_not_an_xaibench_cache(
    foreign: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, capsys, how: list[str]
) -> None:
    folder, other = foreign
    before = _tree(folder, other)
    monkeypatch.setenv("XAIBENCH_CACHE_DIR", str(folder))
    code, out, err = _xaibench(capsys, "cache", "prune", *how)
    assert _tree(folder, other) == before  # nothing deleted, in the folder or through the link
    assert code == 2, (out, err)
    [line] = err.strip().splitlines()
    assert "not an xaibench cache" in line
    assert str(folder) in line


def test_info_refuses_a_folder_that_is_not_an_xaibench_cache(foreign, capsys) -> None:
    folder, _ = foreign
    code, _, err = _xaibench(capsys, "cache", "info", "--cache-dir", str(folder))
    assert code == 2
    assert "not an xaibench cache" in err


def _tensor_entry(cache: TensorCache, *parts: object) -> Path:
    key = content_key(*parts)
    cache.put(key, torch.arange(4.0))
    return cache.path(key)


@pytest.fixture
def cache_with_strays(tmp_path: Path) -> dict[str, Path]:
    """A cache written by xaibench, with an old and a new entry, and strays of every kind."""
    root, outside = tmp_path / "cache", tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me")
    features = TensorCache(root)
    old = _tensor_entry(features, "old")
    new = _tensor_entry(features, "new")
    _age(old)
    ns = old.parent
    paths = {"root": root, "outside": outside, "old": old, "new": new}
    # xaibench's own temporaries: one left by a killed writer, one of a writer still at work
    paths["stale_tmp"] = ns / f".{new.name}.4242.0123456789abcdef.tmp"
    paths["live_tmp"] = ns / f".{old.name}.4243.fedcba9876543210.tmp"
    paths["stale_tmp"].write_bytes(b"half an entry")
    paths["live_tmp"].write_bytes(b"being written")
    _age(paths["stale_tmp"])
    # strays: not written by xaibench, or not provably so
    strays = {
        "draft": ns / ".draft.tmp",
        "notes": ns / "notes.txt",
        "lookalike": ns / (("a" * 64) + ".xbc"),  # the name of an entry, not its header
        "deep": ns / "sub" / "deep.bin",
        "root_file": root / "readme.txt",
        "root_tmp": root / ".other.tmp",
    }
    strays["deep"].parent.mkdir()
    for path in strays.values():
        path.write_text("not a cache entry")
        _age(path)
    (ns / "link").symlink_to(outside, target_is_directory=True)
    (ns / "file-link.xbc").symlink_to(outside / "precious.txt")
    (root / "phantom").symlink_to(outside, target_is_directory=True)  # a namespace that is a link
    paths.update(strays)
    return paths


def test_prune_older_than_deletes_only_old_entries_and_dead_temporaries(
    cache_with_strays: dict[str, Path], capsys
) -> None:
    p = cache_with_strays
    root = p["root"]
    code, out, err = _xaibench(capsys, "cache", "prune", "--cache-dir", str(root),
                               "--older-than", "7")  # fmt: skip
    assert code == 0, err
    assert not p["old"].exists()
    assert not p["stale_tmp"].exists()
    for kept in ("new", "live_tmp", "draft", "notes", "lookalike", "deep", "root_file", "root_tmp"):
        assert p[kept].exists(), kept
    assert (p["outside"] / "precious.txt").read_text() == "keep me"
    assert "deleted 2 files" in out
    assert "left alone" in out


def test_prune_all_deletes_every_entry_and_nothing_else(
    cache_with_strays: dict[str, Path], capsys
) -> None:
    p = cache_with_strays
    root, outside = p["root"], p["outside"]
    outside_before = _tree(outside)
    code, out, _ = _xaibench(capsys, "cache", "prune", "--cache-dir", str(root), "--all",
                             "--dry-run")  # fmt: skip
    assert code == 0
    assert "would delete 3 files" in out  # two entries and the dead temporary file
    assert p["old"].exists()
    code, out, _ = _xaibench(capsys, "cache", "prune", "--cache-dir", str(root), "--all")
    assert code == 0
    assert "deleted 3 files" in out
    assert not p["old"].exists()
    assert not p["new"].exists()
    for kept in ("live_tmp", "draft", "notes", "lookalike", "deep", "root_file", "root_tmp"):
        assert p[kept].exists(), kept
    assert (p["old"].parent / "link").is_symlink()
    assert (p["old"].parent / "file-link.xbc").is_symlink()
    assert (root / "phantom").is_symlink()
    assert _tree(outside) == outside_before
    assert "left alone" in out
    # the cache stays a cache: its marker is kept and a new entry can be written
    assert (
        (root / "CACHEDIR.TAG")
        .read_text()
        .startswith("Signature: 8a477f597d28d172789f06886806bc55")
    )
    again = TensorCache(root)
    again.put(content_key("after"), torch.ones(2))
    assert torch.equal(again.get(content_key("after")), torch.ones(2))


def test_prune_of_one_namespace_and_an_unknown_one(tmp_path: Path, capsys) -> None:
    root = tmp_path / "cache"
    feature = _tensor_entry(TensorCache(root), "f")
    other = _tensor_entry(TensorCache(root, namespace="other_ns"), "o")
    code, _, _ = _xaibench(capsys, "cache", "prune", "--cache-dir", str(root), "--all",
                           "--namespace", "other_ns")  # fmt: skip
    assert code == 0
    assert feature.exists()
    assert not other.exists()
    code, _, err = _xaibench(capsys, "cache", "prune", "--cache-dir", str(root), "--all",
                             "--namespace", "nope")  # fmt: skip
    assert code == 2
    assert "no cache namespace 'nope'" in err
    code, _, err = _xaibench(capsys, "cache", "prune", "--cache-dir", str(root))
    assert code == 2
    assert "--older-than DAYS or --all" in err


def test_info_counts_entries_per_namespace(tmp_path: Path, capsys) -> None:
    root = tmp_path / "cache"
    cache = TensorCache(root)
    old = _tensor_entry(cache, "old")
    new = _tensor_entry(cache, "new")
    _age(old)
    (old.parent / "notes.txt").write_text("not counted")
    code, out, _ = _xaibench(capsys, "cache", "info", "--cache-dir", str(root), "--json")
    assert code == 0
    info = json.loads(out)
    assert info["root"] == str(root)
    [row] = info["namespaces"]
    assert row["namespace"] == "features"
    assert row["files"] == 2
    assert row["bytes"] == old.stat().st_size + new.stat().st_size
    assert row["oldest"] == pytest.approx(WEEK_AGO)
    assert row["newest"] == pytest.approx(new.stat().st_mtime)
    code, out, _ = _xaibench(capsys, "cache", "info", "--cache-dir", str(tmp_path / "none"))
    assert code == 0
    assert "(empty)" in out


def _legacy_cache(root: Path) -> list[Path]:
    """A cache as xaibench wrote it before the marker and the entry headers."""
    key = "0123456789abcdef" * 4
    files = [
        root / "features" / f"{key}.safetensors",
        root / "phantom" / f"{key}-0-64.safetensors",
        root / "fits" / f"{key}.safetensors",
        root / "fits" / f"{key}.json",
        root / "cardiac_phantom" / f"{key}-ctr-20.json",
        root / "features" / f".{key}.safetensors.77.tmp",
    ]
    from safetensors.torch import save

    for file in files:
        file.parent.mkdir(parents=True, exist_ok=True)
        if file.name.endswith(".safetensors"):
            file.write_bytes(save({"tensor": torch.zeros(2)}))
        elif file.name.endswith(".json"):
            file.write_text("[[0.5, 10.0, 20.0]]")
        else:
            file.write_bytes(b"half")
            _age(file)
    return files


def test_a_cache_of_an_earlier_version_is_adopted_and_pruned(tmp_path: Path, capsys) -> None:
    root = tmp_path / "cache"
    files = _legacy_cache(root)
    code, out, err = _xaibench(capsys, "cache", "prune", "--cache-dir", str(root), "--all")
    assert code == 0, err
    assert f"deleted {len(files)} files" in out
    assert not any(f.exists() for f in files)


def test_a_run_adopts_a_cache_of_an_earlier_version(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    files = _legacy_cache(root)
    cache = TensorCache(root)
    cache.put(content_key("new"), torch.ones(3))
    assert (root / "CACHEDIR.TAG").is_file()
    assert torch.equal(cache.get(content_key("new")), torch.ones(3))
    assert all(f.exists() for f in files)  # an old entry is never read, and only prune deletes it


def test_a_cache_of_a_newer_format_or_a_file_is_refused(tmp_path: Path, capsys, caplog) -> None:
    root = tmp_path / "cache"
    entry = _tensor_entry(TensorCache(root), "x")
    (root / "xaibench-cache.json").write_text('{"format": 99}')
    code, _, err = _xaibench(capsys, "cache", "prune", "--cache-dir", str(root), "--all")
    assert code == 2
    assert "a cache of a newer xaibench (format 99" in err
    assert entry.exists()
    from xaibench.cache import prepare_cache_dir

    state = prepare_cache_dir(root, recheck=True)
    assert not state.readable
    assert not state.writable
    assert "newer xaibench" in caplog.records[-1].getMessage()
    file = tmp_path / "file"
    file.write_text("x")
    code, _, err = _xaibench(capsys, "cache", "prune", "--cache-dir", str(file), "--all")
    assert code == 2
    assert "is not a folder" in err
    assert file.read_text() == "x"
