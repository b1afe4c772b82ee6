"""Task files from the user's folders, registered as tasks.

Through ``--include-tasks DIR``, ``XAIBENCH_TASK_PATHS`` and ``xaibench run my_task.yaml``.

Each file is registered as a task (or, for a findings or ``one_vs_rest`` file, one task per
finding) backed by :class:`~xaibench.tasks.file_task.FileTask`. Its provider is
``task-file:<file name>`` with the first 12 hex digits of the file's SHA-256 as its version, so
``xaibench ls tasks`` shows which file a task came from without its folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from xaibench.errors import XaibenchError
from xaibench.registry import Provider, Registry
from xaibench.tasks.spec import load_spec

#: Suffixes of task files.
TASK_FILE_SUFFIXES = (".yaml", ".yml")

FILE_TASK_TARGET = "xaibench.tasks.file_task:FileTask"


def is_task_file(argument: str) -> bool:
    """A task argument that names a file (``*.yaml``/``*.yml``) rather than a registry name."""
    return argument.lower().endswith(TASK_FILE_SUFFIXES)


def task_files(paths: Iterable[str]) -> list[Path]:
    """The task files of ``paths``: each a file, or a folder whose task files are taken (sorted).

    Raises:
        XaibenchError: A path does not exist.
    """
    found: list[Path] = []
    for text in paths:
        path = Path(text).expanduser()
        if path.is_dir():
            found.extend(
                sorted(
                    p
                    for p in path.iterdir()
                    if p.suffix.lower() in TASK_FILE_SUFFIXES and not p.name.startswith(".")
                )
            )
        elif path.is_file():
            found.append(path)
        else:
            raise XaibenchError(f"task file or folder {text!r} does not exist")
    return found


def register_task_files(registry: Registry[Any], paths: Iterable[str]) -> list[str]:
    """Register every task of the task files in ``paths``; returns the names.

    Raises:
        TaskFileError: A file is invalid (every problem listed).
        RegistryCollisionError: A task's name is taken (a built-in or another file).
    """
    names: list[str] = []
    seen: set[Path] = set()
    for path in task_files(paths):
        resolved = path.resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        spec, file = load_spec(str(resolved))
        provider = Provider(f"task-file:{file.name}", "task-file", file.sha256[:12])
        summary = spec.display_name or spec.description.split(". ")[0] or spec.name
        expansions: list[str | None] = [*spec.expansions] or [None]
        for name, finding in zip(spec.task_names(), expansions, strict=True):
            options: dict[str, Any] = {"file": str(resolved)}
            if finding is not None:
                options["finding"] = finding
            registry.add(name, FILE_TASK_TARGET, provider, summary=summary, options=options)
            names.append(name)
    return names


def add_task_paths(paths: Iterable[str]) -> tuple[str, ...]:
    """Add ``paths`` (made absolute) to ``XAIBENCH_TASK_PATHS``; returns the whole list.

    The variable reaches every worker process of a run, which registers the same tasks.
    """
    from xaibench.plugins import TASK_PATHS_ENV

    current = [p for p in os.environ.get(TASK_PATHS_ENV, "").split(os.pathsep) if p.strip()]
    for text in paths:
        absolute = str(Path(text).expanduser().resolve())
        if absolute not in current:
            current.append(absolute)
    os.environ[TASK_PATHS_ENV] = os.pathsep.join(current)
    return tuple(current)
