"""What a committed leaderboard records: the run directories it names and its settings.

``leaderboard.json`` arrives in pull requests, so its ``sources`` and settings are checked
before use (relative paths to run directories; settings of the right type and range).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xaibench.component import MAX_SEED
from xaibench.errors import XaibenchError
from xaibench.paths import contained, read_json, relative_name


def _committed(out_dir: Path) -> tuple[Path, dict[str, Any]]:
    """``leaderboard.json`` of ``out_dir`` and its parsed content (an object)."""
    file = Path(out_dir) / "leaderboard.json"
    if not file.is_file():
        raise XaibenchError(f"{out_dir}: no leaderboard.json; name the run directories to check")
    document = read_json(contained(out_dir, file.name, source=out_dir, what="leaderboard file"))
    if not isinstance(document, dict):
        raise XaibenchError(f"{file}: not a leaderboard file (not a JSON object)")
    return file, document


def sources_of(out_dir: Path) -> list[Path]:
    """The run directories a committed leaderboard was built from (from ``leaderboard.json``).

    ``sources`` name run directories relative to ``out_dir`` (``../runs/a``, or ``.`` for a
    run's own leaderboard), as :func:`write_leaderboard_files` writes them. They may lead out
    of ``out_dir`` (a leaderboard sits beside its runs) and are only read, but each must be a
    relative path to a directory that holds a ``results.json``: an absolute path, or one to
    anything else, is refused.

    Raises:
        XaibenchError: ``leaderboard.json`` is missing or unreadable, or a source is not a
            relative path to a run directory (the message names the file and the source).
    """
    file, document = _committed(out_dir)
    sources = document.get("sources")
    if not isinstance(sources, list) or not all(isinstance(s, dict) for s in sources):
        raise XaibenchError(f"{file}: not a leaderboard file ('sources' is not a list of objects)")
    paths = []
    for i, src in enumerate(sources):
        name = relative_name(src.get("path"), source=file, what=f"source {i}", base=out_dir)
        path = Path(out_dir) / name
        if not (path / "results.json").is_file():
            raise XaibenchError(
                f"{file}: source {i} {name!r} is not a run directory (no results.json there)"
            )
        paths.append(path)
    return paths


#: Settings a committed leaderboard may carry, and what each must be.
#: Most bootstrap resamples a leaderboard may ask for (the analysis setting's bound too).
MAX_RESAMPLES = 100_000

_SETTINGS = {
    "alpha": (lambda v: isinstance(v, float | int) and not isinstance(v, bool) and 0 < v < 1,
              "a number between 0 and 1"),
    "resamples": (lambda v: isinstance(v, int) and not isinstance(v, bool)
                  and 1 <= v <= MAX_RESAMPLES, f"a whole number from 1 to {MAX_RESAMPLES:,}"),
    "seed": (lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_SEED,
             f"a whole number from 0 to {MAX_SEED:,}"),
}  # fmt: skip


def committed_settings(out_dir: Path) -> dict[str, Any]:
    """``alpha``, ``resamples`` and ``seed`` a committed leaderboard was built with (may be {}).

    Raises:
        XaibenchError: ``leaderboard.json`` is unreadable, or a setting is of the wrong type.
    """
    if not (Path(out_dir) / "leaderboard.json").is_file():
        return {}
    file, document = _committed(out_dir)
    for key, (check, expected) in _SETTINGS.items():
        if key in document and not check(document[key]):
            raise XaibenchError(f"{file}: {key!r} must be {expected}, not {document[key]!r:.40}")
    return {k: document[k] for k in _SETTINGS if k in document}
