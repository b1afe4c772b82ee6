"""Assemble the HTML report of one or more runs: ``xaibench report RUN_DIR``.

The report is the document a reader opens first, so it leads with what was run and what that
can mean (a random-initialisation warning when the weights were random), then the headline
leaderboard (a few columns that fit 1400 px) and both full leaderboards, then the evidence
behind them: ROC curves, the performance-explanation trade-off, paired comparisons, per-class
performance and calibration, strata, saliency galleries to look at, the sanity checks and the
cross-cell analyses, and finally the provenance needed to reproduce it. It is a pure function of
the run directories (no model code runs), one HTML file with every figure embedded, and
byte-identical when rebuilt from the same files.

Every part is optional: a run without galleries, calibration tables or strata gets a short note
where they would be. Files that a run *names* but that are broken (a gallery PNG missing or
unreadable) are an error naming the file rather than a page with a broken image.

The sections are built in the modules named for them (:mod:`~xaibench.report.summary_sections`,
:mod:`~xaibench.report.performance_sections`, :mod:`~xaibench.report.gallery_section`,
:mod:`~xaibench.report.analysis_sections`) from a :class:`~xaibench.report.context._Context`;
this module puts them in order and holds the public API.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from xaibench.errors import XaibenchError
from xaibench.leaderboard import Leaderboards, build_leaderboards
from xaibench.paths import write_whole
from xaibench.report.analysis_sections import _cross_cell, _provenance, _sanity
from xaibench.report.context import _Context
from xaibench.report.gallery_section import _galleries
from xaibench.report.gallery_section import _gallery_caption as _gallery_caption  # tests
from xaibench.report.html import Section, page
from xaibench.report.performance_sections import _comparisons, _per_class, _roc, _strata, _tradeoff
from xaibench.report.run_files import RunFiles, load_run
from xaibench.report.summary_sections import (
    _evidence,
    _explainability,
    _headline_board,
    _performance,
    _reference,
    _summary,
)

__all__ = ["REPORT_FILE", "build_report", "render_report", "write_report"]

#: File name used when ``out`` is a directory.
REPORT_FILE = "report.html"


_SECTIONS: tuple[Callable[[_Context], Section], ...] = (
    _summary,
    _headline_board,
    _performance,
    _explainability,
    _reference,
    _evidence,
    _roc,
    _tradeoff,
    _comparisons,
    _per_class,
    _strata,
    _galleries,
    _sanity,
    _cross_cell,
    _provenance,
)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def render_report(
    runs: Sequence[RunFiles],
    *,
    leaderboards: Leaderboards | None = None,
    base: Path | None = None,
) -> str:
    """The report of already loaded runs, as one HTML document.

    Args:
        runs: One or more compatible runs (same task, test set and metric definitions).
        leaderboards: Leaderboards already built from ``runs`` (saves rebuilding the paired
            tests); built with the default settings when ``None``.
        base: Folder the report will live in; run paths are shown relative to it (only the
            folder name when ``None``), so a report does not reveal home directories.

    Raises:
        XaibenchError: The runs are not compatible, or a gallery image is missing or broken.
    """
    if not runs:
        raise XaibenchError("no run directories given")
    boards = leaderboards if leaderboards is not None else build_leaderboards(runs)
    ctx = _Context(runs=runs, boards=boards, base=base)
    sections = [build(ctx) for build in _SECTIONS]
    task = ctx.task
    dataset = (runs[0].document.get("dataset") or {}).get("name", "unknown dataset")
    subtitle = (
        f"{task.get('positive_class')} vs rest on {dataset}; {len(ctx.cells)} cell(s) from "
        f"{len(runs)} run(s); results of {runs[0].document.get('created', 'unknown date')}"
    )
    return page(f"xaibench report: {task.get('name')}", sections, subtitle=subtitle)


def build_report(run_dirs: Sequence[Path], *, base: Path | None = None) -> str:
    """Load run directories and return their report (see :func:`render_report`)."""
    runs = [load_run(Path(d)) for d in run_dirs]
    return render_report(runs, base=base)


def write_report(
    run_dirs: Sequence[Path], out: Path, *, leaderboards: Leaderboards | None = None
) -> Path:
    """Write the HTML report of one or more runs and return its path.

    Args:
        run_dirs: Run directories (or their ``results.json``) to report on together.
        out: The HTML file to write, or an existing directory to write ``report.html`` into.
        leaderboards: Prebuilt leaderboards of these runs (see :func:`render_report`).

    Raises:
        XaibenchError: A run cannot be read, the runs are not compatible, or a gallery image is
            missing or broken. Nothing is written then.
    """
    out = Path(out)
    target = out / REPORT_FILE if out.is_dir() else out
    runs = [load_run(Path(d)) for d in run_dirs]
    text = render_report(runs, leaderboards=leaderboards, base=target.parent)
    write_whole(target, text)  # a failure (a full disk) leaves no temporary file, one line
    return target
