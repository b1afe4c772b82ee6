"""Importer checks: declarations, and an empty folder is a layout error that writes nothing.

An importer cannot be exercised on its collection here (the files are the user's download), so
the kit checks what every importer owes its users whatever the collection: what it declares
for the docs, and that a folder in the wrong layout — an empty one — fails with
:class:`~xaibench.data.importers.base.ImportLayoutError` (one line, naming what is missing)
instead of another exception, a traceback or an empty manifest, without writing into ROOT.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from xaibench.data.importers.base import Importer, ImportLayoutError
from xaibench.progress import NullProgress
from xaibench.testing.core import Subject

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def declarations(subject: Subject) -> None:
    """``download`` says what to fetch; ``regions`` and ``findings`` are snake_case names."""
    cls = subject.component_class()
    if not (isinstance(cls, type) and issubclass(cls, Importer)):
        subject.fail(f"{cls!r} is not an Importer")
    if not cls.download.strip():
        subject.fail("declares no `download` (what to download and how ROOT must look)")
    for what in ("regions", "findings"):
        names = getattr(cls, what)
        if not isinstance(names, tuple):
            subject.fail(f"`{what}` must be a tuple of names, got {type(names).__name__}")
        bad = [n for n in names if not (isinstance(n, str) and _NAME.match(n))]
        if bad:
            subject.fail(f"`{what}` holds names that are not snake_case: {bad}")
        if len(set(names)) != len(names):
            subject.fail(f"`{what}` lists a name twice")


def empty_root_is_a_layout_error(subject: Subject) -> None:
    """An empty ROOT raises ImportLayoutError with a one-line message; ROOT stays empty."""
    importer = subject.create()
    with tempfile.TemporaryDirectory(prefix="xaibench-import-check-") as folder:
        root = Path(folder)
        try:
            imported = importer.read(root, NullProgress())
        except ImportLayoutError as exc:
            message = str(exc)
            if not message.strip() or "\n" in message.strip():
                subject.fail(f"the layout error is not one line: {message!r}")
        except Exception as exc:
            subject.fail(
                f"an empty ROOT raised {type(exc).__name__}: {exc}; raise ImportLayoutError "
                "naming the missing file (source_file / read_table do)"
            )
        else:
            subject.fail(
                f"an empty ROOT gave {len(imported.rows)} rows instead of an ImportLayoutError"
            )
        left = sorted(p.name for p in root.iterdir())
        if left:
            subject.fail(f"read() wrote into ROOT: {left}")
