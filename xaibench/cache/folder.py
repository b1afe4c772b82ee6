"""The cache folder: where it is, how it is marked as xaibench's, whether a run may use it.

A cache folder is xaibench's when it holds the marker ``xaibench-cache.json`` (its cache
format) next to a ``CACHEDIR.TAG`` (the `Cache Directory Tagging`_ convention, so backup
tools skip it). Both are written when xaibench first uses a folder that is new or empty;
a folder that xaibench wrote before markers existed is adopted the same way when every
entry in it is provably such an old entry (:func:`legacy_entry`). A folder that holds
anything else and no marker is not an xaibench cache: it is neither read nor written, and
``xaibench cache prune`` refuses it.

:func:`prepare_cache_dir` checks a folder once per process (a run checks again when it starts,
before any data or training): it creates the folder and its marker and writes and deletes a
probe file. A folder that cannot be used is reported once, by name and reason, and the process
goes on without it: unreadable and unwritable, or (marked but read-only) read but never
written.

Entry files and their temporary files follow fixed name patterns (``ENTRY_RE``, ``TEMP_RE``),
so that prune can tell xaibench's files from anything else. Renames into the cache and the
deletion of bad entries happen under an exclusive ``flock`` on ``.lock`` in the folder
(:func:`cache_lock`), where the platform has one.

.. _Cache Directory Tagging: https://bford.info/cachedir/
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import secrets
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover (Windows)
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger("xaibench.cache")

CACHE_ENV = "XAIBENCH_CACHE_DIR"

#: Version of the cache layout and entry format; a folder of a newer format is left alone.
CACHE_FORMAT = 1
MARKER = "xaibench-cache.json"
TAG = "CACHEDIR.TAG"
TAG_SIGNATURE = "Signature: 8a477f597d28d172789f06886806bc55"
LOCK = ".lock"
#: Files of the folder itself (not entries).
OWN_FILES = frozenset({MARKER, TAG, LOCK})

#: Suffix of entry files (``<namespace>/<name>.xbc``: "xaibench cache").
SUFFIX = ".xbc"
NAMESPACE_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,199}")
ENTRY_RE = re.compile(rf"(?P<name>{NAME_RE.pattern})\.xbc")
#: Temporary file of a writer: ``.<target>.<pid>.<16 hex>.tmp`` (an entry or a folder file).
TEMP_RE = re.compile(
    rf"\.(?P<target>{NAME_RE.pattern}\.xbc|{re.escape(MARKER)}|{re.escape(TAG)}|probe)"
    r"\.(?P<pid>[0-9]+)\.[0-9a-f]{16}\.tmp"
)
#: A temporary file this much older than its last write has lost its writer.
TEMP_GRACE_SECONDS = 3600.0

_KEY = r"[0-9a-f]{64}"
#: Entries of xaibench before markers and headers (never read; adopted, then pruned).
LEGACY_ENTRIES: dict[str, re.Pattern[str]] = {
    "features": re.compile(rf"{_KEY}\.safetensors"),
    "phantom": re.compile(rf"{_KEY}-[0-9]+-[0-9]+\.safetensors"),
    "fits": re.compile(rf"{_KEY}\.(safetensors|json)"),
    "cardiac_phantom": re.compile(rf"{_KEY}-ctr-[0-9]+\.json"),
}
_LEGACY_TEMP = re.compile(r"\.(?P<target>.+)\.[0-9]+\.tmp")


def default_cache_dir() -> Path:
    """Where the cache lives: ``$XAIBENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/xaibench``.

    Without either: ``~/.cache/xaibench``.
    """
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "xaibench"


def temp_name(target: str) -> str:
    """A temporary file name for ``target`` unique to this process, thread and call."""
    return f".{target}.{os.getpid()}.{secrets.token_hex(8)}.tmp"


def atomic_write(path: Path, data: bytes | Callable[[int], None], root: Path) -> None:
    """Write ``path`` through a temporary file of its own and one rename (under the lock).

    A reader sees the old file or the new one, never part of one; two writers of one path
    never share a temporary file, and the last rename wins.

    Args:
        path: The file to write, in the cache folder ``root`` or one of its namespaces.
        data: The bytes, or a function that writes them to a file descriptor.
        root: The cache folder (whose lock the rename takes).

    Raises:
        OSError: The file could not be written; nothing is left behind.
    """
    tmp = path.with_name(temp_name(path.name))
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        try:
            if callable(data):
                data(fd)
            else:
                _write_all(fd, data)
        finally:
            os.close(fd)
        with cache_lock(root):
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@contextmanager
def cache_lock(root: Path) -> Iterator[None]:
    """Hold the cache folder's exclusive lock (renames in, deletions), where there is one.

    Held for a rename or an unlink only. Without ``fcntl``, a lock file that cannot be
    opened (a read-only folder) or a file system without ``flock``, nothing is locked.
    """
    fd = None
    if fcntl is not None:
        try:
            flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
            fd = os.open(root / LOCK, flags | getattr(os, "O_CLOEXEC", 0), 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            if fd is not None:
                os.close(fd)
            fd = None
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


# ---- what a folder is ----------------------------------------------------------------------


def read_marker(root: Path) -> int | None:
    """The cache format in ``root``'s marker, or None when there is no valid marker."""
    try:
        info = os.lstat(root / MARKER)
        if not stat.S_ISREG(info.st_mode) or info.st_size > 4096:
            return None
        value = json.loads((root / MARKER).read_text())["format"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def legacy_entry(namespace: str, name: str) -> bool:
    """Whether ``namespace/name`` is named as xaibench named entries before markers existed."""
    pattern = LEGACY_ENTRIES.get(namespace)
    if pattern is None:
        return False
    temp = _LEGACY_TEMP.fullmatch(name)
    return bool(pattern.fullmatch(temp.group("target") if temp else name))


def _adoptable(root: Path) -> str | None:
    """Why ``root`` (no marker) is not xaibench's; None when it is empty or all legacy entries."""
    strays = []
    with os.scandir(root) as items:
        for item in items:
            if item.name in OWN_FILES or TEMP_RE.fullmatch(item.name):
                continue
            if item.name in LEGACY_ENTRIES and item.is_dir(follow_symlinks=False):
                with os.scandir(item.path) as inner:
                    for entry in inner:
                        if not (
                            entry.is_file(follow_symlinks=False)
                            and legacy_entry(item.name, entry.name)
                        ):
                            strays.append(f"{item.name}/{entry.name}")
                            break
                continue
            strays.append(item.name)
            if len(strays) >= 3:
                break
    if not strays:
        return None
    shown = ", ".join(sorted(strays)[:3])
    return f"not an xaibench cache: not empty and no {MARKER} marker (holds {shown})"


def foreign_reason(root: Path) -> str | None:
    """Why ``root`` is not an xaibench cache (a phrase after "is"), or None when it is one.

    A folder is xaibench's when it holds a marker of a format this version knows; a folder
    without one is xaibench's to adopt when it is empty or holds only entries of the format
    before markers.
    """
    if not root.is_dir():
        return "not a folder"
    found = read_marker(root)
    if found is not None:
        if found > CACHE_FORMAT:
            return f"a cache of a newer xaibench (format {found}; this one reads {CACHE_FORMAT})"
        return None
    if (root / MARKER).exists() or (root / MARKER).is_symlink():
        return f"not an xaibench cache: its {MARKER} marker is not valid"
    try:
        return _adoptable(root)
    except OSError as exc:
        return f"not an xaibench cache: cannot be listed ({exc.strerror or exc})"


def write_marker(root: Path) -> None:
    """Write ``CACHEDIR.TAG`` and the xaibench marker into ``root`` (atomically)."""
    if not (root / TAG).is_file():
        atomic_write(
            root / TAG,
            (
                f"{TAG_SIGNATURE}\n"
                "# This file is a cache directory tag created by xaibench.\n"
                "# For information about cache directory tags see https://bford.info/cachedir/\n"
            ).encode(),
            root,
        )
    if read_marker(root) is None:
        from xaibench import __version__

        text = json.dumps({"format": CACHE_FORMAT, "created_by": f"xaibench {__version__}"})
        atomic_write(root / MARKER, (text + "\n").encode(), root)


# ---- may this process use it ---------------------------------------------------------------


@dataclass(frozen=True)
class CacheState:
    """What this process may do with one cache folder.

    Attributes:
        root: The folder.
        readable: Entries may be read.
        writable: Entries may be written (and bad ones deleted).
        reason: Why not, when either is False.
    """

    root: Path
    readable: bool
    writable: bool
    reason: str | None = None

    def describe(self) -> str:
        """One line for the log: what the folder is and what the process does without it."""
        if self.readable:
            return (
                f"cache folder {self.root} is not writable ({self.reason}): "
                "reading entries, writing none"
            )
        if (self.reason or "").startswith(("not an xaibench cache", "a cache of")):
            return f"cache folder {self.root} is {self.reason}: running without the cache"
        return f"cache folder {self.root} is not writable ({self.reason}): running uncached"


_STATES: dict[str, CacheState] = {}
_STATES_LOCK = threading.Lock()


def _probe(root: Path) -> None:
    """Write and delete a small file in ``root``; raise OSError when that fails."""
    probe = root / temp_name("probe")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(probe, flags, 0o644)
    try:
        os.write(fd, b"probe")
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _check(root: Path) -> CacheState:
    try:
        if root.exists() and not root.is_dir():
            return CacheState(root, False, False, os.strerror(errno.ENOTDIR))
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return CacheState(root, False, False, _reason(exc))
    foreign = foreign_reason(root)
    if foreign is not None:
        return CacheState(root, False, False, foreign)
    try:
        write_marker(root)
        _probe(root)
    except OSError as exc:
        return CacheState(root, read_marker(root) is not None, False, _reason(exc))
    return CacheState(root, True, True)


def _key(root: Path) -> str:
    return os.path.abspath(root)


def prepare_cache_dir(
    root: Path | str | None = None,
    *,
    report: Callable[[str], None] | None = None,
    recheck: bool = False,
) -> CacheState:
    """Check that ``root`` can be used as the cache, once per process; report when it cannot.

    The folder is created with its marker if needed, and a probe file is written and
    deleted. The answer is remembered, so later readers and writers ask again for free and
    nothing writes into a folder found unwritable.

    Args:
        root: The cache folder (default: :func:`default_cache_dir`).
        report: Where the one line about an unusable folder goes (default: the
            ``xaibench.cache`` logger, as a warning).
        recheck: Check again even if this process has checked already (a run starting).

    Returns:
        What the process may do with the folder.
    """
    folder = Path(root).expanduser() if root is not None else default_cache_dir()
    key = _key(folder)
    with _STATES_LOCK:
        state = _STATES.get(key)
        if state is not None and not recheck:
            return state
        state = _check(folder)
        _STATES[key] = state
    if not state.writable:
        (report or logger.warning)(state.describe())
    return state


def cache_state(root: Path) -> CacheState:
    """What this process may do with ``root`` (checked on first use; see prepare_cache_dir)."""
    state = _STATES.get(_key(root))
    return state if state is not None else prepare_cache_dir(root)


def stop_writing(root: Path, reason: str) -> None:
    """After a failed write: write nothing more to ``root`` in this process, and say so once."""
    with _STATES_LOCK:
        state = _STATES.get(_key(root)) or CacheState(root, True, True)
        if not state.writable:
            return
        state = replace(state, writable=False, reason=reason)
        _STATES[_key(root)] = state
    logger.warning(state.describe())
