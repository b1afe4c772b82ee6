"""The files a manifest names: where a path leads, what it is, and reading exactly what was checked.

A manifest is data, often received from someone else, and the benchmark reads, hashes and decodes
every file it names. Three rules keep it from reaching anything else (``docs/data.md``, Security):

* **Containment.** A path must resolve — after ``..``, ``~`` and every symlink — to a file inside
  the manifest's folder (:func:`outside_folder`); a path outside is reported and never opened,
  not even to test that it exists, so error messages cannot probe the user's disk.
  ``allow_outside_paths`` lifts the rule for a manifest the user wrote over a shared store.
* **Regular files only, with one name.** Directories, FIFOs, sockets and devices are refused from
  their metadata, before any open (opening a FIFO blocks until a writer comes; reading a device
  may never end). A regular file with several hard links is refused too: a hard link is a second
  name of the same file, and its other names cannot be listed, so one of them may lie outside the
  folder (an outside file linked in). Copying the file breaks the link;
  ``allow_outside_paths`` accepts it.
* **The file read is the file checked.** A file is opened once; its descriptor is ``fstat``-ed
  (regular, one link) and compared — by device and inode — with what its path resolves to inside
  the folder *after* the open, and the bytes come from that descriptor. A symlink or hard link
  swapped in between the manifest's check and the read, or between the open and the check, is
  refused. ``O_NOFOLLOW`` is not used: a path may legitimately pass through symlinks inside the
  folder.

Paths with control characters (a NUL, a newline, an escape sequence) are refused before they reach
the file system or a terminal.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from xaibench.errors import XaibenchError

#: Flags of every open: read only, never block (a FIFO swapped in late), never a controlling tty.
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)

#: What a non-regular file is called in messages, by its ``stat`` type test.
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
)


class FileRefusedError(XaibenchError):
    """A manifest's file is not read: outside the folder, missing, not a regular file, ..."""


def has_control_character(text: str) -> bool:
    """Whether ``text`` holds a C0/C1 control character (NUL, newline, escape, DEL, ...)."""
    return any(ord(ch) < 32 or 127 <= ord(ch) < 160 for ch in text)


def resolve_cell(root: Path, cell: str) -> Path:
    r"""Absolute, normalised path of a manifest cell, relative to ``root``; ``\`` reads as ``/``.

    ``~`` and ``~user`` are expanded; an unknown user leaves the name as written (a folder
    called ``~user``). Symlinks are not followed here (see :class:`Containment`).
    """
    path = Path(cell.replace("\\", "/"))
    with contextlib.suppress(RuntimeError):  # no such user, or no home folder
        path = path.expanduser()
    return Path(os.path.normpath(path if path.is_absolute() else root / path))


def outside_folder(root: Path, path: Path) -> Path | None:
    """Where ``path`` really leads, if that is outside the folder ``root``; else None.

    Both are resolved first (``..`` collapsed, every symlink followed, also for files that do
    not exist), so ``a/../../x``, an absolute path elsewhere, and a symlink inside ``root`` that
    points out of it all count as outside, while ``a/../b.png`` and a symlink to another file
    inside ``root`` do not. ``root`` itself is resolved too, so a manifest folder reached through
    a symlink is no obstacle.

    Args:
        root: The manifest's folder.
        path: An image or mask path, absolute or relative to ``root``.

    Returns:
        The resolved path when it lies outside ``root`` (for the message), else None. A path
        that cannot be resolved (a symlink loop) is returned as given: containment cannot be
        shown, so it counts as outside (:class:`Containment` names the loop instead).
    """
    try:
        target = (root / path).resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
        return root / path
    return None if target.is_relative_to(root.resolve()) else target


class _LoopError(Exception):
    """Resolving met a symlink loop."""


def _kind(mode: int) -> str | None:
    """What a non-regular file is (``"a directory"``, ``"FIFO"``, ...); None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "special file")


def _not_regular(path: Path, kind: str) -> str:
    if kind == "a directory":
        return f"{path} is a directory"
    return f"{path} is not a regular file ({kind})"


def _access_problem(path: Path, exc: OSError, what: str = "file") -> str:
    """The message of a failed ``stat``/``open`` of ``path``."""
    if exc.errno == errno.ENOENT:
        return f"{what} not found: {path}"
    if exc.errno == errno.ENOTDIR:
        return f"{what} not found: {path} (a folder on the way is a file)"
    if exc.errno == errno.ELOOP:
        return f"{path} leads into a symlink loop"
    return f"cannot access {path}: {exc.strerror or exc}"


class Containment:
    """Checks and reads the files of one manifest, whose folder is ``root``.

    Resolving follows every component of a path, which for 20,000 rows of deep paths costs
    seconds; most rows share their folders, so :meth:`problem` resolves each folder once and
    looks at the file name itself per row (followed when it is a symlink). That cache is meant
    for one pass over a manifest: :meth:`read` resolves afresh, so a folder swapped for a
    symlink later is still caught.

    Args:
        root: The manifest's folder (resolved here).
        allow_outside_paths: Accept paths outside ``root`` and multiply-linked files.
    """

    def __init__(self, root: Path, *, allow_outside_paths: bool = False) -> None:
        self.root = root.resolve()
        self.allow_outside_paths = allow_outside_paths
        self._folders: dict[Path, Path] = {}
        self._paths: dict[str, Path] = {}
        self._identities: dict[str, tuple[int, int]] = {}

    def path(self, cell: str) -> Path:
        """:func:`resolve_cell` of ``cell`` under :attr:`root`, remembered per cell."""
        path = self._paths.get(cell)
        if path is None:
            path = self._paths[cell] = resolve_cell(self.root, cell)
        return path

    # --- where a path leads -------------------------------------------------------------------

    def _where(self, path: Path, *, cached: bool) -> Path:
        """The resolved ``path`` (absolute, normalised); raises :class:`_LoopError` on a loop."""
        try:
            if not cached or not path.is_absolute() or ".." in path.parts:
                target = path.resolve()
            else:
                folder = self._folders.get(path.parent)
                if folder is None:
                    folder = self._folders[path.parent] = path.parent.resolve()
                target = folder / path.name
                if target.is_symlink():
                    target = target.resolve()
        except RuntimeError:  # a symlink loop (Python < 3.13)
            raise _LoopError from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _LoopError from None
            raise
        return target

    def problem(self, cell: str, *, cached: bool = True) -> str | None:
        """Why the file of ``cell`` must not be read (checked from metadata only), or None.

        In order: a control character in the path, a path that leads outside the folder (the
        file is then not even tested for existence), a symlink loop, a missing file, something
        that is not a regular file, a file with several hard links.

        Args:
            cell: The manifest cell (a path relative to :attr:`root`, or absolute).
            cached: Reuse folders resolved for earlier cells (one pass over a manifest);
                False resolves every component afresh.
        """
        if has_control_character(cell):
            return f"path {cell!r} contains a control character; rename the file"
        path = self.path(cell)
        try:
            if not self.allow_outside_paths:
                target = self._where(path, cached=cached)
                if not target.is_relative_to(self.root):
                    return self._outside(cell, path, target)
            info = os.stat(path)
        except _LoopError:
            return self._loop(cell, path)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return self._loop(cell, path)
            return _access_problem(path, exc)
        except ValueError as exc:  # a path the platform cannot name
            return f"path {cell!r} is not a valid file name ({exc})"
        self._identities[cell] = (info.st_dev, info.st_ino)
        return self._stat_problem(path, info)

    def identity(self, cell: str) -> tuple[int, int] | None:
        """``(device, inode)`` of the file of ``cell`` (symlinks followed), None if unknown.

        Known from :meth:`problem` when it found the file; looked up otherwise.
        """
        known = self._identities.get(cell)
        if known is not None:
            return known
        try:
            info = os.stat(self.path(cell))
        except (OSError, ValueError):
            return None
        return info.st_dev, info.st_ino

    def _stat_problem(self, path: Path, info: os.stat_result) -> str | None:
        kind = _kind(info.st_mode)
        if kind is not None:
            return _not_regular(path, kind)
        if info.st_nlink > 1 and not self.allow_outside_paths:
            return (
                f"{path} has {info.st_nlink} hard links: another name of the same file may lie "
                "outside the manifest's folder; copy the file to break the link (cp FILE "
                "FILE.tmp && mv FILE.tmp FILE), or pass --allow-outside-paths (dataset option "
                "allow_outside_paths: true) if you trust this manifest"
            )
        return None

    def _outside(self, cell: str, path: Path, target: Path) -> str:
        via = "through a symlink " if path.is_relative_to(self.root) else ""
        return (
            f"path {cell!r} leads {via}outside the manifest's folder {self.root} (to {target}); "
            f"move the file into {self.root} and give its path relative to the manifest, "
            "or pass --allow-outside-paths (dataset option allow_outside_paths: true) "
            "if you trust this manifest"
        )

    @staticmethod
    def _loop(cell: str, path: Path) -> str:
        return f"path {cell!r} is a symlink loop (at {path})"

    # --- reading ------------------------------------------------------------------------------

    def read(self, cell: str) -> bytes:
        """The bytes of the file of ``cell``, checked on the open descriptor it is read from.

        Raises:
            FileRefusedError: A rule of the module docstring is broken, or the file cannot be
                read; the message names the file.
        """
        # Metadata first: a FIFO or an outside file is not even opened.
        problem = self.problem(cell, cached=False)
        if problem is not None:
            raise FileRefusedError(problem)
        path = self.path(cell)
        try:
            handle = os.open(path, _OPEN_FLAGS)
        except OSError as exc:
            raise FileRefusedError(_access_problem(path, exc)) from None
        try:
            info = os.fstat(handle)
            problem = self._stat_problem(path, info)
            if problem is None and not self.allow_outside_paths:
                problem = self._same_file(cell, path, info)
            if problem is not None:
                raise FileRefusedError(problem)
            return _read_all(handle)
        except OSError as exc:
            raise FileRefusedError(f"cannot read {path}: {exc.strerror or exc}") from None
        finally:
            os.close(handle)

    def _same_file(self, cell: str, path: Path, opened: os.stat_result) -> str | None:
        """Whether the open file is the one ``path`` leads to inside the folder, after the open."""
        try:
            target = self._where(path, cached=False)
            if not target.is_relative_to(self.root):
                return self._outside(cell, path, target)
            now = os.stat(target)
        except _LoopError:
            return self._loop(cell, path)
        except OSError as exc:
            return _access_problem(path, exc)
        if (now.st_dev, now.st_ino) != (opened.st_dev, opened.st_ino):
            return f"{path} changed while it was opened (replaced or relinked); run again"
        return None


def _read_all(handle: int) -> bytes:
    """Every byte left in the open file ``handle``, read in 1 MiB pieces."""
    chunks = []
    while chunk := os.read(handle, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def read_plain_file(path: Path, what: str = "file") -> bytes:
    """The bytes of a file the user named (the manifest itself): a regular file, read once.

    Args:
        path: The file.
        what: What to call it in messages (``manifest not found: ...``).

    Raises:
        FileRefusedError: Missing, a directory, a FIFO or another special file, or unreadable.
    """
    try:
        kind = _kind(os.stat(path).st_mode)
        if kind is not None:
            raise FileRefusedError(f"{what} {_not_regular(path, kind)}")
        handle = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise FileRefusedError(_access_problem(path, exc, what)) from None
    except ValueError as exc:
        raise FileRefusedError(f"{path!s:.200}: not a valid file name ({exc})") from None
    try:
        kind = _kind(os.fstat(handle).st_mode)
        if kind is not None:
            raise FileRefusedError(f"{what} {_not_regular(path, kind)}")
        return _read_all(handle)
    except OSError as exc:
        raise FileRefusedError(f"cannot read {path}: {exc.strerror or exc}") from None
    finally:
        os.close(handle)
