"""``xaibench cache info|prune``: what the cache holds, and deleting only what xaibench wrote.

Prune deletes a file only when it can prove the file is xaibench's: the folder carries the
xaibench marker (or holds nothing but entries of the format before markers); the file lies
directly in a namespace folder (a real folder named by the namespace rule); its name follows
the entry pattern and it starts with a valid entry header (or it is named and shaped as an
entry of the format before markers); or it is a temporary file of xaibench's own naming whose
last write is more than :data:`~xaibench.cache.folder.TEMP_GRACE_SECONDS` ago, so that no
live writer owns it. Symbolic links are never followed (a link is left alone), folders are
never removed, and everything left alone is reported.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xaibench.cache.entries import header_is_valid
from xaibench.cache.folder import (
    ENTRY_RE,
    NAMESPACE_RE,
    OWN_FILES,
    TEMP_GRACE_SECONDS,
    TEMP_RE,
    cache_lock,
    default_cache_dir,
    foreign_reason,
    legacy_entry,
)
from xaibench.errors import XaibenchError


class NotACacheError(XaibenchError):
    """A folder that is not an xaibench cache was given to ``cache info|prune``."""


@dataclass
class PruneResult:
    """What prune deleted (or would, on a dry run) and what it left alone.

    Attributes:
        files: Files deleted.
        bytes: Their size.
        left_alone: ``(path, why)`` of every file or link prune did not delete although it
            lies in the cache and is not one of the folder's own files.
    """

    files: int = 0
    bytes: int = 0
    left_alone: list[tuple[Path, str]] = field(default_factory=list)


def _legacy_shape(path: Path, size: int) -> bool:
    """Whether an old-format entry looks like one: a safetensors header, or a JSON value."""
    try:
        with open(path, "rb") as file:
            head = file.read(9)
    except OSError:
        return False
    if path.suffix == ".json":
        return head[:1] in (b"[", b"{")
    if len(head) < 9:
        return False
    return head[8:9] == b"{" and 8 + int.from_bytes(head[:8], "little") <= size


def _kind(namespace: str, item: os.DirEntry[str], now: float) -> tuple[str, str]:
    """``("entry"|"temp"|"keep", why)`` of one item of a namespace folder."""
    if item.is_symlink():
        return "keep", "a symbolic link (never followed)"
    if item.is_dir(follow_symlinks=False):
        return "keep", "a folder (entries are files)"
    info = item.stat(follow_symlinks=False)
    if not stat.S_ISREG(info.st_mode):
        return "keep", "not a regular file"
    path = Path(item.path)
    temp = TEMP_RE.fullmatch(item.name)
    if (temp and temp.group("target").endswith(".xbc")) or (
        item.name.endswith(".tmp") and legacy_entry(namespace, item.name)
    ):
        if now - info.st_mtime < TEMP_GRACE_SECONDS:
            return "keep", "a writer's temporary file, written to within the hour"
        return "temp", ""
    if ENTRY_RE.fullmatch(item.name):
        if header_is_valid(path, info.st_size):
            return "entry", ""
        return "keep", "named like an entry, without a valid entry header"
    if legacy_entry(namespace, item.name):
        if _legacy_shape(path, info.st_size):
            return "entry", ""
        return "keep", "named like an entry of an earlier version, not shaped like one"
    return "keep", "not a cache entry"


def _namespaces(root: Path, result: PruneResult, now: float) -> tuple[list[Path], list[Path]]:
    """Namespace folders of ``root``, and its own temporary files whose writer is gone."""
    folders, stale = [], []
    with os.scandir(root) as items:
        for item in sorted(items, key=lambda i: i.name):
            if item.name in OWN_FILES:
                continue
            if NAMESPACE_RE.fullmatch(item.name) and item.is_dir(follow_symlinks=False):
                folders.append(Path(item.path))
            elif item.is_symlink():
                result.left_alone.append((Path(item.path), "a symbolic link (never followed)"))
            elif TEMP_RE.fullmatch(item.name) and item.is_file(follow_symlinks=False):
                if now - item.stat(follow_symlinks=False).st_mtime < TEMP_GRACE_SECONDS:
                    result.left_alone.append((Path(item.path), "a writer's temporary file"))
                else:
                    stale.append(Path(item.path))
            else:
                result.left_alone.append((Path(item.path), "not a cache namespace"))
    return folders, stale


def _check_root(root: Path) -> None:
    reason = foreign_reason(root)
    if reason is not None:
        raise NotACacheError(f"{root} is {reason}; nothing done")


def cache_info(root: Path | None = None) -> list[dict[str, Any]]:
    """Per namespace: ``namespace``, ``files``, ``bytes``, ``oldest``, ``newest`` (Unix mtime).

    Counts entries only (of this format and the one before markers), never other files.

    Raises:
        NotACacheError: ``root`` exists and is not an xaibench cache.
    """
    root = root or default_cache_dir()
    if not root.exists():
        return []
    _check_root(root)
    rows: list[dict[str, Any]] = []
    now = time.time()
    for folder in _namespaces(root, PruneResult(), now)[0]:
        stats = []
        with os.scandir(folder) as items:
            for item in items:
                if _kind(folder.name, item, now)[0] == "entry":
                    stats.append(item.stat(follow_symlinks=False))
        rows.append(
            {
                "namespace": folder.name,
                "files": len(stats),
                "bytes": sum(st.st_size for st in stats),
                "oldest": min((st.st_mtime for st in stats), default=None),
                "newest": max((st.st_mtime for st in stats), default=None),
            }
        )
    return rows


def _delete(root: Path, path: Path, seen: os.stat_result) -> bool:
    """Unlink ``path`` if it is still the file that was inspected (a rewrite is spared)."""
    with cache_lock(root):
        try:
            now = os.lstat(path)
            if (now.st_dev, now.st_ino) != (seen.st_dev, seen.st_ino):
                return False
            path.unlink()
        except OSError:
            return False
    return True


def prune_cache(
    root: Path | None = None,
    *,
    older_than_days: float | None = None,
    namespace: str | None = None,
    everything: bool = False,
    dry_run: bool = False,
) -> PruneResult:
    """Delete cache entries that xaibench wrote (see the module docstring).

    ``older_than_days`` keeps entries written more recently, ``everything`` takes all of
    them; temporary files of dead writers go either way. The folder, its marker and its
    namespace folders are kept.

    Raises:
        XaibenchError: Neither ``older_than_days`` nor ``everything`` is given, or
            ``namespace`` does not exist.
        NotACacheError: ``root`` is not an xaibench cache.
    """
    root = root or default_cache_dir()
    if older_than_days is None and not everything:
        raise XaibenchError("say what to prune: --older-than DAYS or --all")
    result = PruneResult()
    if not root.exists():
        return result
    _check_root(root)
    now = time.time()
    cutoff = None if older_than_days is None else now - older_than_days * 86400
    folders, stale = _namespaces(root, result, now)
    if namespace is not None:
        chosen = [f for f in folders if f.name == namespace]
        if not chosen:
            names = ", ".join(f.name for f in folders) or "none"
            raise XaibenchError(f"no cache namespace {namespace!r} in {root} (namespaces: {names})")
        folders, stale = chosen, []
    for temp in stale:
        seen = temp.lstat()
        if dry_run or _delete(root, temp, seen):
            result.files += 1
            result.bytes += seen.st_size
    for folder in folders:
        with os.scandir(folder) as items:
            found = sorted(items, key=lambda i: i.name)
        for item in found:
            kind, why = _kind(folder.name, item, now)
            if kind == "keep":
                result.left_alone.append((Path(item.path), why))
                continue
            seen = item.stat(follow_symlinks=False)
            old = cutoff is not None and seen.st_mtime < cutoff
            if kind == "entry" and not (everything or old):
                continue
            if dry_run or _delete(root, Path(item.path), seen):
                result.files += 1
                result.bytes += seen.st_size
    return result
