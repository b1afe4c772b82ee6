"""Files named by other files, read and written safely: run folders, checkpoints, leaderboards.

A run folder is often someone else's (sent by a colleague, checked out from a repository) and
its files name other files: a checkpoint's ``cell.json`` and ``gallery/index.json`` name gallery
PNGs, ``leaderboard.json`` names run folders. Every such name goes through :func:`contained`,
which refuses a name that is not a plain relative path or that leads out of the folder it
belongs in, also through a symlink (the path is resolved before it is checked). JSON read from
those folders goes through :func:`read_json`, which turns every way a file can be unreadable
(not UTF-8, not JSON, nested deeper than Python's recursion limit) into one line naming it.

Files xaibench writes into a run folder go through :func:`write_whole`: written under a
temporary name in the namespace :data:`TEMPORARY_PREFIX` (no output file, label or checkpoint
name starts with it) and renamed, so a file is whole or absent; a failed write (a full disk)
removes its temporary file and raises one line naming the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from xaibench.errors import WriteFailedError, XaibenchError

#: Temporary files and folders written by xaibench start with this (``.xaibench-tmp-<pid>-...``).
TEMPORARY_PREFIX = ".xaibench-tmp-"

#: Temporary names of earlier xaibench versions (``.<name>.<pid>.tmp``, ``.<name>.tmp``); never
#: counted as content of a run folder, never deleted (they may be someone else's).
_LEGACY_TEMPORARY = re.compile(r"\..+\.tmp")


def is_temporary(name: str) -> bool:
    """Whether ``name`` is a temporary file name xaibench writes or once wrote."""
    return name.startswith(TEMPORARY_PREFIX) or _LEGACY_TEMPORARY.fullmatch(name) is not None


def temporary_path(path: Path, tag: str = "") -> Path:
    """The temporary name for writing ``path``, unique to this process (and ``tag``)."""
    return path.parent / f"{TEMPORARY_PREFIX}{os.getpid()}{tag}-{path.name}"


def relative_name(name: Any, *, source: Path | str, what: str, base: Path) -> str:
    """``name``, checked to be a relative path (to ``base``, named in the error).

    Raises:
        XaibenchError: ``name`` is not a non-empty string, holds a NUL, or is absolute (also a
            Windows drive or UNC path).
    """
    if not isinstance(name, str) or not name or "\x00" in name:
        raise XaibenchError(f"{source}: {what} {name!r:.80} is not a path")
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).anchor:
        raise XaibenchError(
            f"{source}: {what} {name!r} is an absolute path; only paths "
            f"relative to {base} are allowed"
        )
    return name


def contained(
    root: Path, name: Any, *, source: Path | str, what: str = "entry", under: str = ""
) -> Path:
    """``root / under / name``, checked to lie inside ``root / under`` with symlinks followed.

    Args:
        root: The folder the user named (a run folder); it may itself be a symlink.
        name: A relative path as read from ``source`` (any JSON value: it is checked).
        source: The file ``name`` was read from, named in the error.
        what: What ``name`` is (``gallery entry``, ``source``), named in the error.
        under: A subfolder of ``root`` that ``name`` is relative to (``gallery``); it must be
            a real folder inside ``root``, not a symlink leading elsewhere (it need not exist).

    Returns:
        The resolved path (symlinks followed).

    Raises:
        XaibenchError: ``name`` is not a non-empty string, holds a NUL, is absolute (also a
            Windows drive or UNC path), or leads outside ``root / under`` (``..``, or a
            symlink), or ``under`` does.
    """
    relative_name(name, source=source, what=what, base=Path(root) / under)
    try:
        top = Path(root).resolve()
        base = (top / under).resolve() if under else top
        target = (base / name).resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop (RuntimeError before Python 3.13)
        raise XaibenchError(f"{source}: {what} {name!r} cannot be resolved ({exc})") from None
    if under and base != top.joinpath(under):
        raise XaibenchError(f"{Path(root) / under}: leads outside {root} (a symlink)")
    if target != base and base not in target.parents:
        raise XaibenchError(f"{source}: {what} {name!r} leads outside {Path(root) / under}")
    return target


def read_json(path: Path) -> Any:
    """Parse the JSON file ``path``.

    Raises:
        XaibenchError: The file cannot be read, is not UTF-8, is not JSON, or is nested too
            deeply for Python to parse (the message names it).
    """
    try:
        text = path.read_bytes().decode("utf-8")
        return json.loads(text)
    except UnicodeDecodeError as exc:
        raise XaibenchError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise XaibenchError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise XaibenchError(f"{path}: nested too deeply to be read") from None
    except OSError as exc:
        raise XaibenchError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def write_whole(path: Path, content: str | bytes) -> None:
    """Write ``path`` so that it holds its old or its new content, never part of either.

    Raises:
        WriteFailedError: The file cannot be written (a full disk, a read-only folder);
            nothing is left behind then, and the message names the file (exit status 1).
    """
    data = content.encode("utf-8") if isinstance(content, str) else content
    tmp = temporary_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise WriteFailedError(f"{path}: cannot be written ({exc.strerror or exc})") from None
