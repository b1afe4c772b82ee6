"""Leaderboards as a pure function of results records: no model code runs here.

Two tables, one row per cell (backbone x strategy x seed), and with several seeds one more row
per backbone x strategy aggregated over them (marked by the ``aggregate`` column):

* performance — the positive-vs-rest AUC, accuracy, sensitivity, specificity and macro AUC;
* explainability — Delta_region per perturbation and region, IoU_region and the other region and
  faithfulness metrics per saliency method, and each method's sanity-check badge (and its
  known-answer trust badge, when a calibration is given: ``xaibench.trust``).

Rows are ranked by AUC (performance) and by the first Delta column (explainability). Cells with
randomly initialised weights are marked, because their numbers say nothing about a pretrained model.

The package, by what each module holds:

* :mod:`~xaibench.leaderboard.columns` — column labels, prefixes and suffixes; the ranking column;
* :mod:`~xaibench.leaderboard.tables` — the performance and explainability tables and badges;
* :mod:`~xaibench.leaderboard.per_image` — per-image inputs of the paired tests;
* :mod:`~xaibench.leaderboard.comparisons` — paired comparisons between cells and tiers;
* :mod:`~xaibench.leaderboard.seed_rows` — seed aggregates: a row per backbone x strategy over
  its seeds, with a two-level (seed x image) bootstrap interval;
* :mod:`~xaibench.leaderboard.build` — :class:`Leaderboards` and :func:`build_leaderboards`;
* :mod:`~xaibench.leaderboard.display` — values, p-values and tables as people read them;
* :mod:`~xaibench.leaderboard.headline_view` — the headline view: a row per cell with its AUC,
  specific Δ, normalised localisation and badges (``0.72 ±0.08``), first in the Markdown files;
* :mod:`~xaibench.leaderboard.terminal` — the headline view fitted to the terminal (100 columns),
  or both full tables (``--wide``);
* :mod:`~xaibench.leaderboard.files` — the Markdown, CSV, JSON and HTML files, and their check;
* :mod:`~xaibench.leaderboard.committed` — a committed leaderboard's sources and settings.
"""

from __future__ import annotations

from xaibench.leaderboard.build import (
    Leaderboards,
    build_leaderboards,
    check_compatible,
    headline_meta,
)
from xaibench.leaderboard.columns import (
    AGGREGATE_COLUMN,
    BEATS_CHANCE_SUFFIX,
    CELL_COLUMNS,
    CHANCE_MARK,
    EVIDENCE_PREFIX,
    NORMALISED_PREFIX,
    OFF_TARGET_PREFIX,
    P_CHANCE_SUFFIX,
    P_COLUMN,
    PERFORMANCE_ORDER,
    SPECIFIC_PREFIX,
    ranking_column,
)
from xaibench.leaderboard.committed import MAX_RESAMPLES, committed_settings, sources_of
from xaibench.leaderboard.comparisons import COMPARISON_COLUMNS
from xaibench.leaderboard.display import display_frame, format_p, format_value, to_markdown
from xaibench.leaderboard.files import (
    LEADERBOARD_FILES,
    LEADERBOARD_FORMAT,
    check_leaderboard_files,
    render_files,
    table_notes,
    write_leaderboard_files,
)
from xaibench.leaderboard.per_image import (
    ABOVE_CHANCE_TEST,
    RANKING_COLUMN,
    RAW_DELTA_TEST,
    RAW_SCORE_TEST,
    SPECIFIC_DELTA_TEST,
    _PerImage,
)
from xaibench.leaderboard.tables import (
    explainability_table,
    performance_table,
    sanity_badges,
    trust_badges,
)

__all__ = [
    "ABOVE_CHANCE_TEST",
    "AGGREGATE_COLUMN",
    "BEATS_CHANCE_SUFFIX",
    "CELL_COLUMNS",
    "CHANCE_MARK",
    "COMPARISON_COLUMNS",
    "EVIDENCE_PREFIX",
    "LEADERBOARD_FILES",
    "LEADERBOARD_FORMAT",
    "MAX_RESAMPLES",
    "NORMALISED_PREFIX",
    "OFF_TARGET_PREFIX",
    "PERFORMANCE_ORDER",
    "P_CHANCE_SUFFIX",
    "P_COLUMN",
    "RANKING_COLUMN",
    "RAW_DELTA_TEST",
    "RAW_SCORE_TEST",
    "SPECIFIC_DELTA_TEST",
    "SPECIFIC_PREFIX",
    "Leaderboards",
    "_PerImage",
    "build_leaderboards",
    "check_compatible",
    "check_leaderboard_files",
    "committed_settings",
    "display_frame",
    "explainability_table",
    "format_p",
    "format_value",
    "headline_meta",
    "performance_table",
    "ranking_column",
    "render_files",
    "sanity_badges",
    "sources_of",
    "table_notes",
    "to_markdown",
    "trust_badges",
    "write_leaderboard_files",
]
