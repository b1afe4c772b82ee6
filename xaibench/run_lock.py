"""One writer per run folder: an exclusive lock held for the whole run.

Two runs writing into one folder would delete each other's half-written checkpoints or mix the
cells of two configurations. :func:`run_lock` creates the run folder (an ``--out`` that is a
file, lies under a file or is read-only fails here, before any work) and takes an exclusive
``flock`` on ``RUN_DIR/.xaibench.lock``, which holds the holder's pid, host and start time; a
second run is refused with one line naming them. The kernel releases an ``flock`` when its
process dies, so a killed run (SIGKILL, a lost node) leaves no stale lock; the lock file is
removed when the run ends. Only the process that runs the benchmark (the driver) takes the
lock: cells that an executor runs elsewhere never write into the run folder (their results
come back to the driver, which writes the checkpoints).

Readers (``xaibench report``, ``xaibench leaderboard``) take no lock, which would need a
writable folder; :func:`writer_of` tells them that a run is writing the folder right now, and
they refuse it rather than read a half-updated set of files.

Where ``fcntl`` does not exist (Windows) or the file system has no ``flock`` (some network
mounts), runs are not locked; the run says so in its log.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from xaibench.errors import XaibenchError
from xaibench.paths import temporary_path

try:
    import fcntl
except ImportError:  # pragma: no cover (Windows)
    fcntl = None  # type: ignore[assignment]

#: The lock file inside a run folder.
LOCK_FILE = ".xaibench.lock"

#: Run folders this process holds (resolved): its own reads of them are not refused.
_HELD: set[Path] = set()

_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS}


@dataclass
class RunLock:
    """A held run lock.

    Attributes:
        run_dir: The locked run folder.
        warning: Why the folder is not actually locked (no ``flock`` here), else None.
    """

    run_dir: Path
    warning: str | None = None


def _make_folder(run_dir: Path) -> list[Path]:
    """Create ``run_dir`` if needed; return the folders this made, deepest first.

    Its missing parents are made too (``./xaibench-runs/`` for the default run folder), and
    listed, so a run that fails before writing anything removes them all again.
    """
    if run_dir.is_dir():
        return []
    if run_dir.exists() or run_dir.is_symlink():
        raise XaibenchError(
            f"run directory {run_dir}: exists and is not a folder; choose another --out"
        )
    blocker = next((p for p in run_dir.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise XaibenchError(f"run directory {run_dir}: {blocker} is a file; choose another --out")
    missing = [run_dir, *(p for p in run_dir.parents if not p.exists())]
    try:
        run_dir.mkdir(parents=True)
    except FileExistsError:  # made by someone else just now: fine if it is a folder
        if not run_dir.is_dir():
            raise XaibenchError(
                f"run directory {run_dir}: exists and is not a folder; choose another --out"
            ) from None
        return []
    except OSError as exc:
        raise XaibenchError(
            f"run directory {run_dir}: cannot be created "
            f"({exc.strerror or exc}); choose another --out"
        ) from None
    return missing


def _open_lock_file(run_dir: Path, flags: int) -> int:
    """Open the lock file (never through a symlink, never a FIFO); return its descriptor."""
    path = run_dir / LOCK_FILE
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise XaibenchError(f"{path}: not a regular file; delete it")
    return fd


def _printable(value: object) -> str:
    return "".join(c for c in str(value) if c.isprintable())[:100]


def _holder(fd: int) -> str:
    """Who holds the lock, from the lock file's content (printable characters only)."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        host, started = _printable(info["host"]), _printable(info["started"])
        return f"xaibench pid {int(info['pid'])} on {host} (since {started})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another xaibench process (starting)"


def _same_file(fd: int, path: Path) -> bool:
    try:
        now = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino)


def _acquire(run_dir: Path) -> tuple[int | None, str | None]:
    """Take the lock; return its descriptor (None when unlocked) and a warning."""
    if fcntl is None:  # pragma: no cover (Windows)
        return None, "run folder not locked: this platform has no flock"
    path = run_dir / LOCK_FILE
    for _ in range(100):  # the holder may remove the file between our open and our flock
        try:
            fd = _open_lock_file(run_dir, os.O_RDWR | os.O_CREAT)
        except OSError as exc:
            raise XaibenchError(
                f"run directory {run_dir}: cannot create {LOCK_FILE} "
                f"({exc.strerror or exc}); choose another --out"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise XaibenchError(
                f"run directory {run_dir} is in use by {holder}; wait for it to "
                "finish or choose another --out"
            ) from None
        except OSError as exc:
            os.close(fd)
            if exc.errno in _NO_FLOCK:
                return None, f"run folder not locked: its file system has no flock ({exc.strerror})"
            raise XaibenchError(f"{path}: cannot be locked ({exc.strerror or exc})") from None
        if _same_file(fd, path):
            return fd, None
        os.close(fd)  # locked a file its holder had just removed: take the new one
    raise XaibenchError(f"{path}: cannot be locked (it keeps being replaced)")


def _release(run_dir: Path, fd: int) -> None:
    path = run_dir / LOCK_FILE
    try:
        if _same_file(fd, path):
            path.unlink()
    except OSError:
        pass  # a read-only folder: the file stays, unlocked, and is harmless
    with contextlib.suppress(OSError):  # no host name left behind in a folder to be published
        os.ftruncate(fd, 0)
    os.close(fd)  # releases the flock


@contextmanager
def run_lock(run_dir: Path) -> Iterator[RunLock]:
    """Create ``run_dir`` if needed and hold its exclusive lock while the block runs.

    A folder this call created is removed again on the way out if nothing was written into it
    (a run that failed before writing anything leaves no empty folder behind).

    Raises:
        XaibenchError: ``run_dir`` is a file, lies under a file or cannot be written (checked
            by creating it and its lock file), or another process holds its lock (the message
            names its pid and host).
    """
    run_dir = Path(run_dir)
    created = _make_folder(run_dir)
    try:
        fd, warning = _acquire(run_dir)
        probe = temporary_path(run_dir / "probe")  # the folder is writable, not just the file
        try:
            if fd is not None:
                started = datetime.now(UTC).isoformat(timespec="seconds")
                info = {"pid": os.getpid(), "host": socket.gethostname(), "started": started}
                os.ftruncate(fd, 0)
                os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            if fd is not None:
                _release(run_dir, fd)
            raise XaibenchError(
                f"run directory {run_dir}: cannot be written ({exc.strerror or exc}); "
                "choose another --out"
            ) from None
    except BaseException:
        _remove_if_empty(created)
        raise
    key = run_dir.resolve()
    _HELD.add(key)
    try:
        yield RunLock(run_dir, warning)
    finally:
        _HELD.discard(key)
        if fd is not None:
            _release(run_dir, fd)
        _remove_if_empty(created)


def _remove_if_empty(folders: list[Path]) -> None:
    """Remove the folders a run made (deepest first) that it left empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (the run wrote something), or gone: keep it and above
            return


def writer_of(run_dir: Path) -> str | None:
    """Who is writing ``run_dir`` right now (pid and host), or None; never blocks or writes."""
    run_dir = Path(run_dir)
    if fcntl is None or run_dir.resolve() in _HELD:
        return None
    try:
        fd = _open_lock_file(run_dir, os.O_RDONLY)
    except (OSError, XaibenchError):
        return None  # no lock file: nobody is writing (or it cannot be checked)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    return None
