"""Compare two run directories file by file: are the results of a refactoring unchanged?

Usage::

    python benchmarks/compare_runs.py RUN_BEFORE RUN_AFTER

Every file of either run is compared: CSV, PNG, ``.npz`` and YAML byte for byte; JSON files and the
leaderboards' Markdown after dropping the values that differ between any two runs of the same code
(wall-clock times, durations, the git commit, and the results.json hash that quotes them). Prints
one line per file that differs or exists in one run only, then a tally; exits 1 when anything
differs, else 0. Used for issue 20 item 4 (results unchanged byte for byte across the move to
``xaibench.engine``, the split of ``metrics/functional.py`` and the duplicate removal).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

#: JSON keys whose values change from run to run of the same code.
VOLATILE = frozenset(
    {"created", "finished", "started", "seconds", "git_commit", "run_dir", "results_sha256"}
)
#: The same in the leaderboards' Markdown source line (``commit <hex>, results sha256 <hex>``).
_MD_VOLATILE = re.compile(r"(, commit [0-9a-f]+)|( results sha256 [0-9a-f]+)")


def _strip(value: Any) -> Any:
    """``value`` without the :data:`VOLATILE` keys, at any depth."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _same(a: Path, b: Path) -> bool:
    if a.suffix == ".json":
        return _strip(json.loads(a.read_text())) == _strip(json.loads(b.read_text()))
    if a.suffix == ".md":
        return _MD_VOLATILE.sub("", a.read_text()) == _MD_VOLATILE.sub("", b.read_text())
    return a.read_bytes() == b.read_bytes()


def compare(before: Path, after: Path) -> list[str]:
    """One line per file that differs or exists in one run only."""
    names_a = {p.relative_to(before) for p in before.rglob("*") if p.is_file()}
    names_b = {p.relative_to(after) for p in after.rglob("*") if p.is_file()}
    problems = [f"only in {before}: {n}" for n in sorted(names_a - names_b)]
    problems += [f"only in {after}: {n}" for n in sorted(names_b - names_a)]
    shared = sorted(names_a & names_b)
    problems += [f"differs: {n}" for n in shared if not _same(before / n, after / n)]
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python benchmarks/compare_runs.py RUN_BEFORE RUN_AFTER", file=sys.stderr)
        return 2
    before, after = Path(argv[0]), Path(argv[1])
    problems = compare(before, after)
    for line in problems:
        print(line)
    files = sum(1 for p in before.rglob("*") if p.is_file())
    csvs = sum(1 for p in before.rglob("*.csv"))
    print(f"{files} files ({csvs} CSV) compared; {len(problems)} differ or are missing")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
