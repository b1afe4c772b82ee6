"""Parsing a manifest's CSV bytes strictly: every oddity is a finding with its row, never a guess.

The parse matches pandas' reading of a well-formed file (comma-separated, ``"`` quotes doubled
inside quoted fields, spaces after a comma skipped, blank lines skipped, an Excel byte-order mark
ignored, empty header cells named ``Unnamed: <k>``), and differs where pandas would guess:

* **Encoding.** UTF-8 only. Undecodable bytes (a Latin-1 or Windows-1252 export) are reported
  per row and column instead of failing the whole file; UTF-16 (Excel's "Unicode text") is named.
* **Field counts.** A row with more values than the header has columns is reported (an unquoted
  comma in a value, most often): its values may have shifted by a column, which empty trailing
  values do not disprove. pandas would turn the leading values into an index and shift every
  column, or fail the whole file. Missing values at the end of a row are empty cells.
* **Quotes.** A quote left open swallows the rest of the file in a lenient parser; here it is an
  error naming the row where parsing stopped.
* **Duplicate column names** are kept as written so they can be reported (pandas renames the
  second ``image`` to ``image.1``, which would then pass as metadata).

Findings are ``(row, column, message)`` tuples (row 1-based, None for the header) so this module
needs nothing from :mod:`xaibench.data.check`, which turns them into problems.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field

#: A finding: 1-based data row (None: the header or the whole file), column, message.
Finding = tuple[int | None, str | None, str]

#: Byte-order marks of UTF-16 and UTF-32 text.
_WIDE_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")


@dataclass
class CsvText:
    """A manifest's CSV, parsed.

    Attributes:
        header: Column names as written (stripped of nothing), ``Unnamed: <k>`` for empty ones.
        rows: One list of strings per data row, each exactly as long as ``header``.
        findings: What is wrong, with rows; ``fatal`` says whether ``rows`` is usable.
        fatal: True when the file cannot be read as a table at all (``rows`` is then empty).
    """

    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    fatal: bool = False


def _undecodable(text: str) -> str | None:
    """The first byte that was not UTF-8 (decoded with ``surrogateescape``), as ``0xe9``."""
    for ch in text:
        if 0xDC80 <= ord(ch) <= 0xDCFF:
            return f"0x{ord(ch) - 0xDC00:02x}"
    return None


def _clean(text: str) -> str:
    """``text`` with every undecodable byte replaced by U+FFFD."""
    return "".join("\ufffd" if 0xDC80 <= ord(ch) <= 0xDCFF else ch for ch in text)


def parse_csv(raw: bytes) -> CsvText:
    """Parse a manifest's bytes (see the module docstring for the rules).

    Args:
        raw: The whole file.

    Returns:
        The header, the rows and the findings.
    """
    out = CsvText()
    if raw.startswith(_WIDE_BOMS):
        wide = "UTF-32" if raw.startswith(b"\x00\x00") or raw[2:4] == b"\x00\x00" else "UTF-16"
        out.findings.append((None, None, f"the manifest is {wide} text; save it as UTF-8 "
                             "(CSV UTF-8 in Excel)"))  # fmt: skip
        out.fatal = True
        return out
    text = raw.decode("utf-8-sig", errors="surrogateescape")
    consumed: list[str] = []  # the lines of the record being read

    def lines() -> Iterator[str]:
        for line in io.StringIO(text, newline=""):
            consumed.append(line)
            yield line

    reader = csv.reader(lines(), skipinitialspace=True, strict=True)
    records: list[list[str]] = []
    try:
        for record in reader:
            blank = not "".join(consumed).strip()
            consumed.clear()
            if blank:  # a blank or all-space line, as pandas skips them (not a quoted "")
                continue
            records.append(record)
    except csv.Error as exc:
        row = len(records) if records else None  # records[0] is the header
        out.findings.append(
            (
                row,
                None,
                f"cannot read line {reader.line_num} of the CSV ({exc}); check its quotes: a "
                'quoted value must end with " and a " inside one is written ""',
            )
        )
        out.fatal = True
        return out
    if not records:
        out.findings.append((None, None, "the manifest is empty (no header, no rows)"))
        out.fatal = True
        return out
    header = [name if name.strip() else f"Unnamed: {k}" for k, name in enumerate(records[0])]
    bad_names = [name for name in header if _undecodable(name)]
    if bad_names:
        for name in bad_names:
            out.findings.append(
                (
                    None,
                    ascii(_clean(name)),
                    f"column name is not UTF-8 text (byte {_undecodable(name)}); "
                    "save the manifest as UTF-8 (CSV UTF-8 in Excel)",
                )
            )
        out.fatal = True
        return out
    out.header = header
    width = len(header)
    for n, record in enumerate(records[1:], start=1):
        if len(record) > width:
            out.findings.append(
                (
                    n,
                    None,
                    f"{len(record)} values but the header has {width} columns (an unquoted "
                    "comma in a value, or a trailing comma?); quote values that contain commas",
                )
            )
            record = record[:width]
        elif len(record) < width:
            record = record + [""] * (width - len(record))
        for column, value in zip(header, record, strict=True):
            byte = _undecodable(value)
            if byte is not None:
                out.findings.append(
                    (
                        n,
                        column.strip().lower(),
                        f"not UTF-8 text (byte {byte}); save the manifest as UTF-8 "
                        "(CSV UTF-8 in Excel)",
                    )
                )
        out.rows.append([_clean(value) for value in record])
    return out
