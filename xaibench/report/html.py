"""HTML primitives for the self-contained report: escaping, tables, figures and the page itself.

The report is one file that a person can mail, attach to a paper's supplement or open years
later without a network, so everything lives inside it: CSS inline, images as ``data:`` URIs,
no JavaScript at all (collapsible parts use ``<details>``). A Content-Security-Policy meta tag
forbids anything else, so a reference to an outside resource that slipped in shows up as a
browser console error instead of a silent request.

Everything that comes from a results file (backbone names, plugin versions, error messages) is
untrusted text: every function here escapes what it is given, except ``body`` HTML that other
functions of this module produced. Output is a pure function of the input (no clock, no random
ids), so two reports of the same runs are byte-identical and can be diffed or committed.
"""

from __future__ import annotations

import base64
import html
import math
import numbers
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from xaibench.errors import XaibenchError

__all__ = [
    "BADGE_COLUMNS",
    "Section",
    "badge_cell",
    "badge_class",
    "callout",
    "details",
    "escape",
    "figure",
    "format_cell",
    "grid",
    "heading",
    "image_data_uri",
    "key_value_table",
    "note",
    "page",
    "paragraph",
    "preformatted",
    "slug",
    "table_html",
]

#: Text cells that read as numbers (``0.648 [0.568, 0.729]``, ``<0.001``, an en dash for a
#: missing value) are right-aligned like numeric cells.
_NUMERIC_TEXT = re.compile(r"^(?:[-\u2212<]?\d[\d.,eE+-]*(?: \[.*\])?|\u2013)$")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: Forbids every outside resource and every script: only inline CSS and ``data:`` images load.
CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

_CSS = """
:root { --ink: #1d2330; --muted: #5b6474; --line: #d9dde4; --accent: #1f5fa8;
  --warn-bg: #fff4d6; --warn-line: #e0a800; --bad: #a4262c; --good: #1e7b34; --paper: #ffffff; }
* { box-sizing: border-box; }
html { font-size: 15px; }
body { margin: 0; color: var(--ink); background: var(--paper);
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  line-height: 1.5; }
.layout { display: grid; grid-template-columns: 15rem minmax(0, 1fr); }
nav.toc { position: sticky; top: 0; align-self: start; max-height: 100vh; overflow-y: auto;
  padding: 1.25rem 1rem; border-right: 1px solid var(--line); background: #f6f7f9;
  font-size: 0.9rem; }
nav.toc h2 { font-size: 0.8rem; text-transform: uppercase; letter-spacing: 0.06em;
  color: var(--muted); margin: 0 0 0.5rem; }
nav.toc ol { margin: 0; padding-left: 1.2rem; }
nav.toc li { margin: 0.2rem 0; }
nav.toc a { color: var(--ink); text-decoration: none; }
nav.toc a:hover { color: var(--accent); text-decoration: underline; }
main { padding: 1.5rem 2.5rem 4rem; max-width: 88rem; }
header.title h1 { margin: 0 0 0.25rem; font-size: 1.8rem; }
header.title p { margin: 0; color: var(--muted); }
section { margin-top: 2.5rem; }
h2 { font-size: 1.35rem; border-bottom: 2px solid var(--line); padding-bottom: 0.25rem; }
h3 { font-size: 1.1rem; margin-top: 1.5rem; }
h4 { font-size: 1rem; margin: 1rem 0 0.4rem; }
p.note { color: var(--muted); font-style: italic; }
p.legend { border-left: 3px solid var(--line); padding-left: 0.6rem; font-size: 0.9rem; }
.callout { border-left: 4px solid var(--warn-line); background: var(--warn-bg);
  padding: 0.6rem 1rem; margin: 1rem 0; }
.callout strong { color: #6b4d00; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.88rem; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: 0.25rem 0; }
th, td { border-bottom: 1px solid var(--line); padding: 0.3rem 0.6rem; vertical-align: top; }
th { background: #eef1f5; text-align: left; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tbody tr:nth-child(even) { background: #fafbfc; }
table.kv th { background: transparent; color: var(--muted); font-weight: 500; }
.badge { display: inline-block; padding: 0 0.45rem; border-radius: 0.6rem; font-size: 0.8rem;
  white-space: nowrap; border: 1px solid var(--line); }
td.b-pass .badge { color: var(--good); border-color: #9fd3ad; background: #eef8f0; }
td.b-fail .badge { color: var(--bad); border-color: #e6a9ac; background: #fcefef; }
td.b-na .badge { color: var(--muted); background: #f2f3f5; }
td.b-control .badge { color: #4b3b8f; border-color: #c5bbe8; background: #f4f1fc; }
td.b-random .badge { color: #6b4d00; border-color: var(--warn-line); background: var(--warn-bg); }
figure { margin: 1rem 0 1.5rem; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(18rem, 1fr));
  gap: 0.5rem 1.5rem; align-items: start; }
.grid.wide { grid-template-columns: repeat(auto-fill, minmax(28rem, 1fr)); }
.grid > figure { margin: 0.25rem 0 1rem; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line);
  image-rendering: auto; }
figure.gallery img { image-rendering: pixelated; }
figcaption { font-size: 0.88rem; color: var(--muted); margin-top: 0.3rem; }
pre { background: #f6f7f9; border: 1px solid var(--line); padding: 0.75rem; overflow-x: auto;
  font-size: 0.82rem; line-height: 1.35; }
code { font-size: 0.9em; }
details { margin: 0.5rem 0 1rem; }
details > summary { cursor: pointer; color: var(--accent); }
@media (max-width: 60rem) {
  .layout { display: block; }
  nav.toc { position: static; max-height: none; border-right: 0;
    border-bottom: 1px solid var(--line); }
  main { padding: 1rem; }
}
@media print {
  .layout { display: block; }
  nav.toc { position: static; border: 0; background: transparent; }
  main { max-width: none; padding: 0; }
  section { break-before: auto; }
  figure, table, .callout { break-inside: avoid; }
  .scroll { overflow: visible; }
  a { color: inherit; text-decoration: none; }
}
"""


def escape(value: Any) -> str:
    """Text for HTML, quotes included, so it is safe in element content and attribute values.

    Results files are written by plugins and users; a backbone called ``<script>...`` must
    show as text, never run.
    """
    return html.escape("" if value is None else str(value), quote=True)


def slug(text: str) -> str:
    """An anchor id made of ``[a-z0-9-]`` only, so it needs no escaping in ``href="#..."``."""
    cleaned = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return cleaned or "section"


def format_cell(value: Any, digits: int = 3) -> str:
    """A cell as text: floats to ``digits`` decimals, missing values as an en dash.

    Integers stay integers (a seed or a count of 8 must not read 8.000); booleans as yes/no.
    """
    if value is None:
        return "–"  # noqa: RUF001 (en dash: a missing value, not a minus)
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        number = float(value)
        if math.isnan(number):
            return "–"  # noqa: RUF001 (en dash: a missing value, not a minus)
        if math.isinf(number):
            return "∞" if number > 0 else "−∞"  # noqa: RUF001 (a minus sign, on purpose)
        return f"{number:.{digits}f}"
    try:
        if pd.isna(value):
            return "–"  # noqa: RUF001 (en dash: a missing value, not a minus)
    except (TypeError, ValueError):
        pass
    return str(value)


def badge_class(value: Any) -> str | None:
    """CSS class for a sanity badge or weights label, so pass/fail stand out at a glance."""
    text = str(value)
    if text == "pass":
        return "b-pass"
    if text.startswith("fail"):
        return "b-fail"
    if text.startswith("n/a"):
        return "b-na"
    if text.startswith("control"):  # "control (fail: model)": a control, whatever its outcome
        return "b-control"
    if text == "random init":
        return "b-random"
    return None


#: Columns whose values are drawn as badges by default.
BADGE_COLUMNS = ("weights", "badge", "status")


def badge_cell(column: str, value: Any) -> str | None:
    """Default ``cell_class`` of :func:`table_html`: badges in weights, status, sanity columns."""
    if column in BADGE_COLUMNS or column.startswith("sanity"):
        return badge_class(value)
    return None


def table_html(
    frame: pd.DataFrame,
    caption: str | None = None,
    classes: Sequence[str] = ("data",),
    *,
    digits: int = 3,
    cell_class: Callable[[str, Any], str | None] | None = badge_cell,
    index: bool = False,
) -> str:
    """Render a data frame as an escaped HTML table inside a horizontally scrolling wrapper.

    Args:
        frame: The table; column names and every cell are escaped.
        caption: Optional caption (escaped).
        classes: CSS classes of the ``<table>`` element.
        digits: Decimals for floating-point cells.
        cell_class: Maps ``(column, value)`` to a CSS class for the cell; a cell with a class
            is drawn as a badge (sanity results, random-init marks); the default,
            :func:`badge_cell`, does so in weights, status and sanity columns. ``None`` for
            plain cells.
        index: Whether to render the frame's index as the first column.

    Returns:
        The HTML fragment.
    """
    if index:
        frame = frame.reset_index()
    class_attr = " ".join(escape(c) for c in classes)
    parts = [f'<div class="scroll"><table class="{class_attr}">']
    if caption:
        parts.append(f"<caption>{escape(caption)}</caption>")
    parts.append("<thead><tr>")
    parts.extend(f'<th scope="col">{escape(column)}</th>' for column in frame.columns)
    parts.append("</tr></thead><tbody>")
    columns = [str(c) for c in frame.columns]
    for row in frame.itertuples(index=False, name=None):
        parts.append("<tr>")
        for column, value in zip(columns, row, strict=True):
            text = escape(format_cell(value, digits))
            css = cell_class(column, value) if cell_class is not None else None
            numeric = (
                isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)
            ) or (isinstance(value, str) and _NUMERIC_TEXT.match(value) is not None)
            if css:
                parts.append(f'<td class="{escape(css)}"><span class="badge">{text}</span></td>')
            elif numeric:
                parts.append(f'<td class="num">{text}</td>')
            else:
                parts.append(f"<td>{text}</td>")
        parts.append("</tr>")
    parts.append("</tbody></table></div>")
    return "".join(parts)


def key_value_table(items: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> str:
    """A two-column table of labels and values (escaped), for summaries and provenance."""
    pairs = items.items() if isinstance(items, Mapping) else items
    rows = "".join(
        f'<tr><th scope="row">{escape(k)}</th><td>{escape(format_cell(v))}</td></tr>'
        for k, v in pairs
    )
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def image_data_uri(png_bytes: bytes) -> str:
    """A ``data:image/png;base64,...`` URI, so images travel inside the HTML file.

    Raises:
        XaibenchError: The bytes are not a PNG (checked by signature; a browser would otherwise
            show a broken-image icon with no hint of which file was bad).
    """
    if not png_bytes.startswith(_PNG_SIGNATURE):
        raise XaibenchError("not a PNG image (missing PNG signature)")
    return "data:image/png;base64," + base64.b64encode(png_bytes).decode("ascii")


def figure(png_bytes: bytes, alt: str, caption: str | None = None, *, css: str = "") -> str:
    """An embedded PNG with alternative text and an optional caption (both escaped)."""
    class_attr = f' class="{escape(css)}"' if css else ""
    parts = [f'<figure{class_attr}><img src="{image_data_uri(png_bytes)}" alt="{escape(alt)}">']
    if caption:
        parts.append(f"<figcaption>{escape(caption)}</figcaption>")
    parts.append("</figure>")
    return "".join(parts)


def grid(items: Sequence[str], *, wide: bool = False) -> str:
    """Fragments side by side, wrapping to the width (galleries, small tables); trusted HTML.

    ``wide`` gives each column more room (small tables, which must not scroll).
    """
    css = "grid wide" if wide else "grid"
    return f'<div class="{css}">' + "".join(items) + "</div>"


def paragraph(text: str) -> str:
    """A paragraph of plain (escaped) text."""
    return f"<p>{escape(text)}</p>"


def note(text: str) -> str:
    """A short, muted note: why a part of the report is missing, or how to read it."""
    return f'<p class="note">{escape(text)}</p>'


def callout(title: str, text: str) -> str:
    """A highlighted warning box (e.g. random-init weights), escaped."""
    return f'<div class="callout"><strong>{escape(title)}</strong> {escape(text)}</div>'


def preformatted(text: str) -> str:
    """Preformatted text (configuration YAML, tracebacks), escaped."""
    return f"<pre>{escape(text)}</pre>"


def details(summary: str, body: str) -> str:
    """A collapsible block (native ``<details>``, no script): ``body`` is trusted HTML."""
    return f"<details><summary>{escape(summary)}</summary>{body}</details>"


def heading(level: int, text: str, anchor: str | None = None) -> str:
    """A heading ``<h2>``..``<h4>`` with an optional id (slugged, so it needs no escaping)."""
    level = min(max(level, 2), 6)
    id_attr = f' id="{slug(anchor)}"' if anchor else ""
    return f"<h{level}{id_attr}>{escape(text)}</h{level}>"


@dataclass(frozen=True)
class Section:
    """One top-level part of the report, listed in the table of contents.

    Attributes:
        title: Heading text (escaped).
        body: The section's HTML, built with this module's functions (trusted, not escaped).
        anchor: The id the table of contents links to; derived from the title when empty.
    """

    title: str
    body: str
    anchor: str = ""

    @property
    def id(self) -> str:
        """The section's anchor id (``[a-z0-9-]``)."""
        return slug(self.anchor or self.title)


def page(title: str, sections: Sequence[Section], subtitle: str | None = None) -> str:
    """One complete HTML document: inline CSS, a sticky table of contents, the sections.

    Args:
        title: Document title and main heading (escaped).
        sections: The parts, in order; their ids must be unique (a duplicate would make two
            table-of-contents entries point at the first).
        subtitle: A line under the title (escaped).

    Raises:
        ValueError: Two sections share an id.
    """
    ids = [s.id for s in sections]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"duplicate section id(s): {', '.join(duplicates)}")
    toc = "".join(f'<li><a href="#{s.id}">{escape(s.title)}</a></li>' for s in sections)
    body = "\n".join(
        f'<section id="{s.id}">\n<h2>{escape(s.title)}</h2>\n{s.body}\n</section>' for s in sections
    )
    sub = f"<p>{escape(subtitle)}</p>" if subtitle else ""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        '<div class="layout">\n'
        f'<nav class="toc" aria-label="Contents"><h2>Contents</h2><ol>{toc}</ol></nav>\n'
        f'<main>\n<header class="title"><h1>{escape(title)}</h1>{sub}</header>\n'
        f"{body}\n</main>\n</div>\n</body>\n</html>\n"
    )
