"""Report sections of schema 1.5: every score beside its reference point, and evidence agreement.

* **Chance and controls**: per localisation record, the raw value beside its chance level and
  the normalised score (with the one-sided p-value that it beats chance); per Δ record, the raw
  Δ beside the Δ of area-matched control regions (the perturbation's off-target cost) and the
  specific Δ. The leaderboards show only the corrected numbers; the raw ones are here.
* **Evidence agreement**: per cell and saliency method, the regions ranked by what the model
  needs (specific Δ) and by what its maps show (normalised localisation), Kendall's tau, whether
  the top regions match, and every flag (``xaibench.evidence``).

Both are pure functions of records; everything they show is escaped by the HTML helpers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from xaibench.evidence import evidence_agreement
from xaibench.headline import (
    costly_perturbations,
    has_normalised,
    has_specific,
    headline_perturbation,
    off_target_costs,
)
from xaibench.report.html import (
    Section,
    details,
    format_cell,
    heading,
    note,
    paragraph,
    table_html,
)

_CELL = ("backbone", "strategy", "seed")


def _ci_text(value: Any, ci: Any) -> str:
    text = format_cell(value)
    if value is None or not (isinstance(ci, list | tuple) and len(ci) == 2):
        return text
    if any(v is None for v in ci):
        return text
    return f"{text} [{float(ci[0]):.3f}, {float(ci[1]):.3f}]"


def _raw_text(rec: Mapping[str, Any]) -> str:
    ok = rec.get("status") == "ok"
    return _ci_text(rec.get("value") if ok else None, [rec.get("ci_low"), rec.get("ci_high")])


def _key(rec: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(str(rec.get(c)) for c in _CELL)


def localisation_table(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Per localisation record with a chance level: raw value, chance, normalised, p."""
    rows = []
    for rec in records:
        if not has_normalised(rec):
            continue
        d = rec.get("details") or {}
        ok = rec.get("status") == "ok"
        rows.append(
            {
                **{c: rec.get(c) for c in _CELL},
                "metric": rec.get("metric"),
                "saliency": rec.get("saliency"),
                "region": rec.get("region"),
                "value": _raw_text(rec),
                "chance": d.get("chance") if ok else None,
                "chance method": d.get("chance_method"),
                "exact": d.get("chance_exact"),
                "normalised": _ci_text(d.get("normalised") if ok else None, d.get("normalised_ci")),
                "p vs chance (unadjusted)": d.get("p_chance") if ok else None,
            }
        )
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    keys = [*_CELL, "metric", "saliency", "region"]
    return frame.sort_values(keys, kind="stable", key=lambda s: s.astype(str)).reset_index(
        drop=True
    )


def delta_table(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Per Δ record with controls: raw Δ, control Δ (off-target cost), specific Δ, p."""
    rows = []
    for rec in records:
        if not has_specific(rec):
            continue
        d = rec.get("details") or {}
        ok = rec.get("status") == "ok"
        rows.append(
            {
                **{c: rec.get(c) for c in _CELL},
                "perturbation": rec.get("perturbation"),
                "region": rec.get("region"),
                "Δ": _raw_text(rec),
                "control Δ (off-target)": d.get("control_delta") if ok else None,
                "control draws": d.get("control_draws"),
                "specific Δ": _ci_text(d.get("specific") if ok else None, d.get("specific_ci")),
                "p specific > 0 (unadjusted)": d.get("specific_p") if ok else None,
            }
        )
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    keys = [*_CELL, "perturbation", "region"]
    return frame.sort_values(keys, kind="stable", key=lambda s: s.astype(str)).reset_index(
        drop=True
    )


def _shown(frame: pd.DataFrame, primary: str | None, what: str) -> str:
    """The rows of the primary region, with every row one click away (long grids)."""
    if primary is None or "region" not in frame or len(frame) <= _INLINE_ROWS:
        return table_html(frame)
    focus = frame[frame["region"] == primary]
    if focus.empty or len(focus) == len(frame):
        return table_html(frame)
    return table_html(focus, caption=f"{what} on {primary}") + details(
        f"All {len(frame)} rows (every region)", table_html(frame)
    )


#: Tables up to this many rows are shown whole; longer ones show the primary region's rows.
_INLINE_ROWS = 24


def reference_section(records: Sequence[Mapping[str, Any]], primary: str | None = None) -> Section:
    """The "Chance and controls" section (a note for runs of schemas before 1.5).

    Long tables show the ``primary`` region's rows, with all rows in a collapsible block.
    """
    title = "Chance and controls"
    local, delta = localisation_table(records), delta_table(records)
    if local.empty and delta.empty:
        return Section(
            title,
            note(
                "These results record no chance levels or control regions (results schema "
                "before 1.5): the leaderboards show raw scores."
            ),
            "reference",
        )
    body = [
        paragraph(
            "Every score beside its reference point. A localisation score means little until "
            "it is compared with what a map carrying no information about the region would get "
            "on the same images (its chance level); normalised = (value - chance) / (best - "
            "chance), 0 at chance. A Δ means little until it is compared with the Δ of "
            "area-matched control regions elsewhere (what any edit of that size costs): "
            "specific Δ = Δ - control Δ. The leaderboards show the normalised and specific "
            "scores; the raw ones are here and in results.json."
        )
    ]
    costs = off_target_costs(records)
    if costs:
        costly = costly_perturbations(costs)
        body.append(
            paragraph(
                "Off-target cost per perturbation (mean absolute control Δ over all cells and "
                "regions): "
                + ", ".join(f"{name} {cost:.3f}" for name, cost in costs.items())
                + f". Headline perturbation: {headline_perturbation(records)}."
                + (f" Costly (above the threshold): {', '.join(costly)}." if costly else "")
            )
        )
    if not local.empty:
        body.append(heading(3, "Localisation: value, chance, normalised"))
        body.append(_shown(local, primary, "Localisation"))
    if not delta.empty:
        body.append(heading(3, "Δ: raw, control, specific"))
        body.append(_shown(delta, primary, "Δ"))
    return Section(title, "".join(body), "reference")


def evidence_table(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The evidence rows as a table for people (orders joined, flags counted)."""
    return pd.DataFrame(
        [
            {
                **{c: row.get(c) for c in _CELL},
                "saliency": row.get("saliency"),
                "perturbation": row.get("perturbation"),
                "localisation": row.get("localisation_metric"),
                "needed (specific Δ, largest first)": " > ".join(row.get("needed_order") or []),
                "shown (normalised, largest first)": " > ".join(row.get("shown_order") or []),
                "Kendall tau": row.get("kendall_tau"),
                "top match": row.get("top_match"),
                "flagged": row.get("flagged"),
            }
            for row in rows
        ]
    )


def evidence_section(records: Sequence[Mapping[str, Any]], alpha: float = 0.05) -> Section:
    """The "Evidence agreement" section: table and flags (a note when there is none)."""
    title = "Evidence agreement"
    rows = evidence_agreement(records, alpha=alpha)
    if not rows:
        return Section(
            title,
            note(
                "No evidence agreement: it needs specific Δ and normalised localisation scores "
                "(results schema 1.5, with control regions and a region metric)."
            ),
            "evidence",
        )
    body = [
        paragraph(
            "Do the maps show what the model needs? Per cell and saliency method, the regions "
            "ranked by specific Δ under the headline perturbation (what perturbation shows the "
            "model needs) and by normalised localisation (what the maps show), Kendall's tau "
            "between the two orders (undefined with fewer than 3 regions), and whether the top "
            "regions match. Flagged: the maps point at a region (largest normalised score, "
            "shown above chance) that the model is not shown to need, or the model needs a "
            "region where the maps show nothing above chance. Shown means: the 95% interval "
            "lies above 0 and the one-sided p-value, Holm-adjusted over the table (one family "
            f"per question), is below {alpha}."
        ),
        table_html(evidence_table(rows)),
    ]
    flagged = [row for row in rows if row.get("flagged")]
    if flagged:
        items = "".join(
            f"<li>{paragraph(_flag_line(row, flag))}</li>"
            for row in flagged
            for flag in row.get("flags") or []
        )
        body.append(heading(3, f"Flags ({len(flagged)} of {len(rows)})"))
        body.append(f"<ul>{items}</ul>")
    else:
        body.append(
            note(
                f"No flags in {len(rows)} cell x method rows: no map points at a region the "
                "model is not shown to need, and no region the model needs is missed."
            )
        )
    return Section(title, "".join(body), "evidence")


def _flag_line(row: Mapping[str, Any], flag: str) -> str:
    cell = " / ".join(str(row.get(c)) for c in ("backbone", "strategy"))
    return f"{cell} / seed {row.get('seed')}, {row.get('saliency')}: {flag}."
