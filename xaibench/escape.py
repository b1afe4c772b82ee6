r"""Escaping text we did not write ourselves before it lands in a Markdown or CSV output file.

Labels from a configuration, values from a manifest's metadata columns, component names and run
folder names all reach the leaderboards and tables; any of them may come from someone else.

* **Markdown** (:func:`markdown_text`, :func:`markdown_code`): a leaderboard ``.md`` file is
  rendered by GitHub, GitLab or a documentation site, which also interpret raw HTML. A cell may
  neither add markup nor break the table: ``<`` that could open a tag, comment or autolink
  (before a letter, ``/``, ``!`` or ``?``) and ``&`` that could start a character reference
  become ``&lt;`` and ``&amp;``; ``]`` before ``(`` (the only way to close a link or image
  inside one line) is escaped, and so are ``\ ` * ~ |``, an underscore not between letters,
  and line breaks (spaces). What cannot make markup is left as it is, so our own cells
  (``0.420 [0.400, 0.440]``, ``<0.001``, ``Δ_bone``) keep their bytes and the raw file stays
  readable.
* **CSV** (:func:`csv_text`, :func:`csv_frame`): a spreadsheet evaluates a cell that starts with
  ``=``, ``+``, ``-``, ``@``, a tab or a carriage return as a formula (OWASP's "CSV injection";
  ``=HYPERLINK(...)`` exfiltrates data when clicked). Such a text cell gets a leading ``'``, which
  spreadsheets show as text; a text that already starts with ``'`` gets one more, so the rule is
  reversible (:func:`csv_text_back`, used by xaibench's own readers of its CSV files). Numbers,
  and text that is a plain number (``-2.5``), are left alone.

Hand-written rather than taken from a library: Python's ``html.escape`` covers HTML only, and no
well-kept package covers GFM table cells and spreadsheet formulas together.
"""

from __future__ import annotations

import math
import re
from typing import Any

import pandas as pd

#: First characters that make a spreadsheet read a cell as a formula (OWASP), plus line feed.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")

#: Markdown punctuation escaped with a backslash wherever it appears.
_MD_ALWAYS = re.compile(r"([\\`*|~])")
#: ``<`` that may open an HTML tag, comment, declaration or autolink; ``&`` of a reference.
_HTML_OPEN = re.compile(r"<(?=[A-Za-z/!?])")
_ENTITY = re.compile(r"&(?=[A-Za-z#])")
#: ``]`` that would close a link or image text.
_LINK_CLOSE = re.compile(r"\](?=\()")
#: An underscore not between two word characters (those never start emphasis in GFM).
_MD_UNDERSCORE = re.compile(r"(?<!\w)_|_(?!\w)")
_LINE_BREAKS = re.compile(r"[\r\n\u2028\u2029\x0b\x0c]+")


def markdown_text(value: object) -> str:
    """``value`` as inert text for a Markdown paragraph or table cell (see the module docs)."""
    text = _LINE_BREAKS.sub(" ", str(value))
    text = _MD_ALWAYS.sub(r"\\\1", text)
    text = _ENTITY.sub("&amp;", text)
    text = _HTML_OPEN.sub("&lt;", text)
    text = _LINK_CLOSE.sub(r"\\]", text)
    return _MD_UNDERSCORE.sub(r"\\_", text)


def markdown_code(value: object) -> str:
    """``value`` as an inline code span whose fence no backtick inside it can close.

    A code span shows its content literally (no HTML, no markup); line breaks become spaces.
    """
    text = _LINE_BREAKS.sub(" ", str(value))
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _is_number(text: str) -> bool:
    try:
        number = float(text)
    except ValueError:
        return False
    return math.isfinite(number) and "_" not in text and text == text.strip()


def csv_text(value: Any) -> Any:
    """A text cell made inert for spreadsheets; anything that is not text is returned as is."""
    if not isinstance(value, str) or not value:
        return value
    if value.startswith("'") or (value.startswith(FORMULA_STARTS) and not _is_number(value)):
        return "'" + value
    return value


def csv_text_back(value: Any) -> Any:
    """The text :func:`csv_text` was given (one leading ``'`` removed)."""
    if isinstance(value, str) and value.startswith("'"):
        return value[1:]
    return value


def _is_text(column: pd.Series) -> bool:
    return bool(
        pd.api.types.is_object_dtype(column.dtype) or pd.api.types.is_string_dtype(column.dtype)
    )


def csv_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every text cell through :func:`csv_text` (column names too)."""
    out = frame.copy()
    for column in out.columns:
        if _is_text(out[column]):
            out[column] = out[column].map(csv_text)
    out.columns = pd.Index([csv_text(str(c)) for c in out.columns])
    return out


def csv_frame_back(frame: pd.DataFrame, columns: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Undo :func:`csv_frame` on a frame read back from one of xaibench's CSV files."""
    frame.columns = pd.Index([csv_text_back(str(c)) for c in frame.columns])
    for column in columns if columns is not None else tuple(frame.columns):
        if column in frame and _is_text(frame[column]):
            frame[column] = frame[column].map(csv_text_back)
    return frame


def to_csv(frame: pd.DataFrame) -> str:
    """``frame`` as CSV text (no index) with every text cell neutralised."""
    return str(csv_frame(frame).to_csv(index=False))
