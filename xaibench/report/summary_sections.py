"""Report sections that open it: the summary, the headline and both full leaderboards, evidence."""

from __future__ import annotations

import pandas as pd

from xaibench.leaderboard import (
    EVIDENCE_PREFIX,
    OFF_TARGET_PREFIX,
    P_COLUMN,
    display_frame,
    table_notes,
)
from xaibench.leaderboard.headline_view import headline_frame, headline_view
from xaibench.report.context import (
    _CELL,
    _cell_name,
    _Context,
    _missing,
    _sort_cells,
    _with_interval,
)
from xaibench.report.html import (
    Section,
    callout,
    details,
    escape,
    heading,
    note,
    paragraph,
    table_html,
)
from xaibench.report.reference import evidence_section, reference_section


def _summary(ctx: _Context) -> Section:
    task = ctx.task
    doc = ctx.runs[0].document
    dataset = doc.get("dataset") or {}
    classes = ", ".join(str(c) for c in task.get("class_names") or [])
    regions = ", ".join(str(r) for r in task.get("regions_of_interest") or []) or "none"
    parts = [
        paragraph(
            f"Task {task.get('name')}: {task.get('positive_class')} vs rest "
            f"(classes: {classes}); regions of interest: {regions}. "
            f"Dataset {dataset.get('name', 'unknown')}"
            + (
                f" (fingerprint {str(dataset['fingerprint'])[:16]})"
                if dataset.get("fingerprint")
                else ""
            )
            + f"; {len(ctx.runs)} run(s), {len(ctx.cells)} cell(s)."
        )
    ]
    random_cells = [c for c in ctx.cells if c.get("random_init")]
    if random_cells:
        parts.append(
            callout(
                "Random initialisation.",
                f"{len(random_cells)} of {len(ctx.cells)} cells ran with randomly initialised "
                "backbone weights. Their numbers show that the pipeline works; they say "
                "nothing about how a pretrained foundation model would do.",
            )
        )
    failed = [c for c in ctx.cells if c.get("status") != "ok"]
    if failed:
        parts.append(
            callout(
                "Failed cells.",
                f"{len(failed)} cell(s) failed and have no numbers: "
                + "; ".join(
                    f"{_cell_name(c)}: {c.get('error') or 'no error recorded'}" for c in failed
                ),
            )
        )
    parts.append(_headline(ctx))
    cells = pd.DataFrame(
        [
            {
                "backbone": c.get("backbone"),
                "strategy": c.get("strategy"),
                "seed": c.get("seed"),
                "status": c.get("status"),
                "weights": "random init" if c.get("random_init") else "pretrained",
                "seconds": c.get("seconds"),
                "epochs run": (c.get("fit") or {}).get("epochs_run"),
                "best epoch": (c.get("fit") or {}).get("best_epoch"),
                "trainable parameters": (c.get("fit") or {}).get("trainable_parameters"),
                "threshold": (c.get("fit") or {}).get("threshold"),
            }
            for c in ctx.cells
        ]
    )
    if not cells.empty:
        parts.append(heading(3, "Cells"))
        parts.append(table_html(_sort_cells(cells), digits=3))
    splits = dataset.get("splits") or {}
    if splits:
        parts.append(heading(3, "Images per split"))
        split_frame = pd.DataFrame([{"split": name, **counts} for name, counts in splits.items()])
        parts.append(table_html(split_frame))
    return Section("Summary", "".join(parts), "summary")


def _headline(ctx: _Context) -> str:
    """The few sentences a reader wants before any table: who leads, and how clearly."""
    lines: list[str] = []
    for name, board in (
        ("performance", ctx.boards.performance),
        ("explainability", ctx.boards.explainability),
    ):
        column = (ctx.boards.meta.get("ranking") or {}).get(name)
        if board.empty or not column or column not in board:
            continue
        top = board.iloc[0]
        if _missing(top[column]):
            continue
        value = _with_interval(top[column], top.get(f"{column} low"), top.get(f"{column} high"))
        tier_one = int((board["tier"] == 1).sum()) if "tier" in board else 1
        cells = int((~board["aggregate"]).sum()) if "aggregate" in board else len(board)
        lines.append(
            f"{name.capitalize()} leader by {column}: {_cell_name(top)}, {value}; "
            f"{tier_one} of {cells} cells share tier 1 (not distinguishable from it by "
            "a Holm-corrected paired test)."
        )
    if not lines:
        return note("No leaderboard values to summarise.")
    return "<ul>" + "".join(f"<li>{escape(line)}</li>" for line in lines) + "</ul>"


def _leaderboard_intro(ctx: _Context, name: str) -> str:
    meta = ctx.boards.meta
    level = round(float(meta.get("level", 0.95)) * 100)
    column = (meta.get("ranking") or {}).get(name) or "its first column"
    return paragraph(
        f"Ranked by {column}; values with {level}% confidence intervals. Cells in one tier are "
        f"not significantly different from the tier's best cell (paired tests on the same test "
        f"images, Holm-adjusted p >= {meta.get('alpha', 0.05)}); '{P_COLUMN}' is the adjusted "
        "p-value of the comparison with the leader."
    )


def tier_legend(board: pd.DataFrame) -> str:
    """The legend printed by a leaderboard table: what a tier is, and why it may not follow rank.

    When the board has a cell ranked after another yet in a lower-numbered tier, the first such
    pair is named (issue 21: rank 10 in tier 2, ranks 11-12 in tier 1, unexplained).
    """
    text = (
        "Rank vs tier: the rank orders cells by the point estimate; the tier groups them by "
        "paired tests. Tier 1 is the leader and every cell not significantly different from it; "
        "tier 2 is led by the best cell left, and so on. A cell with a wide interval can be "
        "indistinguishable from a tier's best while a better-ranked cell with a narrow one is "
        "not, so a lower rank can sit in a better (lower-numbered) tier: tier numbers need not "
        "rise with rank. Report the tier, not the rank."
    )
    if "tier" in board:
        ranks = board["rank"] if "rank" in board else pd.Series(range(1, len(board) + 1))
        rows = [
            (int(r), int(t))
            for r, t in zip(ranks, board["tier"], strict=True)
            if not _missing(t) and not _missing(r)
        ]
        worst: tuple[int, int] | None = None  # (rank, tier) of the highest tier seen so far
        for rank, tier in rows:
            if worst is not None and tier < worst[1]:
                text += (
                    f" Here rank {worst[0]} is in tier {worst[1]} and rank {rank} in tier {tier}."
                )
                break
            if worst is None or tier > worst[1]:
                worst = (rank, tier)
    return f'<p class="legend">{escape(text)}</p>'


def _headline_board(ctx: _Context) -> Section:
    """The headline view (as in the terminal and ``leaderboard_*.md``): fits 1400 px.

    A row per cell and saliency method with the AUC, the headline Δ and the localisation of the
    primary region; the full tables follow in their own sections, each scrolling within its box.
    """
    title = "Headline leaderboard"
    if ctx.boards.performance.empty:
        return Section(title, note("No performance records."), "headline")
    view = headline_view(ctx.boards)
    body = [
        paragraph(
            "The few columns to read first, one row per cell and saliency method, best AUC "
            "first. The full performance and explainability tables follow (every metric and "
            "interval; wide ones scroll sideways within their box)."
        ),
        tier_legend(ctx.boards.performance),
        table_html(headline_frame(view), caption="Headline: AUC, Δ and localisation"),
    ]
    body.extend(note(line) for line in view.notes)
    return Section(title, "".join(body), "headline")


def _performance(ctx: _Context) -> Section:
    board = ctx.boards.performance
    if board.empty:
        return Section("Performance leaderboard", note("No performance records."), "performance")
    body = (
        _leaderboard_intro(ctx, "performance")
        + tier_legend(board)
        + table_html(display_frame(board))
    )
    return Section("Performance leaderboard", body, "performance")


def _explainability(ctx: _Context) -> Section:
    board = ctx.boards.explainability
    if board.empty:
        return Section(
            "Explainability leaderboard", note("No explanation records."), "explainability"
        )
    shown = display_frame(board)
    region = ctx.primary_region
    fixed = ["rank", "tier", *_CELL]
    trailing = [
        c
        for c in shown.columns
        if c.startswith(("sanity (", EVIDENCE_PREFIX)) or c in (P_COLUMN, "weights")
    ]
    metric_cols = [c for c in shown.columns if c not in fixed and c not in trailing]
    # The headline table: Δ and IoU on the primary region (what the study reports; specific Δ,
    # off-target cost and normalised IoU in schema 1.5 runs); every other column (regions,
    # complement test, pointing game, ...) is one click away.
    headline = {f"{label}_{region}" for label in ("Δ", "IoU", "sΔ", "nIoU")}
    focus = [
        c
        for c in metric_cols
        if region and (c.split(" (")[0] in headline or c.startswith(OFF_TARGET_PREFIX))
    ]
    if not focus:
        focus = [c for c in metric_cols if region and c.split(" (")[0].endswith(f"_{region}")]
    body = [_leaderboard_intro(ctx, "explainability")]
    body.append(
        paragraph(
            "Δ: AUC lost when the region is perturbed (how much the model's skill depends on "
            "it); IoU, PG (pointing game), RMA (relevance mass): where the saliency maps point. "
            "Sanity: Adebayo et al.'s randomisation checks per saliency method."
        )
    )
    body.extend(paragraph(line) for line in table_notes(board, ctx.boards.meta))
    body.append(tier_legend(board))
    if focus and len(focus) < len(metric_cols):
        cols = [c for c in [*fixed, *focus, *trailing] if c in shown]
        body.append(table_html(shown[cols], caption=f"Δ and IoU on {region}"))
        body.append(details(f"All {len(metric_cols)} explanation columns", table_html(shown)))
    else:
        body.append(table_html(shown))
    return Section("Explainability leaderboard", "".join(body), "explainability")


def _reference(ctx: _Context) -> Section:
    return reference_section(ctx.records, ctx.primary_region)


def _evidence(ctx: _Context) -> Section:
    return evidence_section(ctx.records, float(ctx.boards.meta.get("alpha", 0.05)))
