"""``xaibench export``: a run's results as Parquet or JSON Lines files for other tools.

A run folder's tables are read back the way the leaderboards read them
(:func:`xaibench.report.run_files.load_run`: every file checked to lie inside the folder, the
CSV formula escaping undone), so an export holds the values the run computed, never the
``'``-prefixed text a spreadsheet is shown. Exported, one file per table:

* ``records``: the flat metric records of ``results.json`` (``details`` as JSON text);
* ``cells``: one row per cell (status, error, seconds; ``fit`` and ``weights`` as JSON text);
* ``predictions`` and ``explanations``: the per-image tables (``predictions.csv``,
  ``explanations.csv``);
* every non-empty cross-cell table of ``results.json``'s ``analysis`` (``per_class``,
  ``confusion``, ``calibration``, ``reliability``, ``strata_*``, ...; also written as CSV files
  of the same names), taken from ``results.json``, which holds them unescaped.

Columns are typed by their values: whole numbers ``int64``, other numbers ``float64``, booleans
``bool``, text ``string``; undefined values (``null`` in ``results.json``, an empty cell, NaN)
are nulls (NaN in pandas where the column is a float column). A column with no value at all is a
float column of nulls; one whose values are objects, lists or of mixed kinds holds each value as
JSON text (listed under ``json_columns``).

Every file says where it came from: Parquet files in their key-value metadata (key
``xaibench``), and ``export.json`` beside the tables, for both formats (JSON Lines has no
metadata of its own, and a first metadata line would be a row to pandas and ``datasets``):
the results schema version, the xaibench version that made the run and the one that exported
it, the configuration hash, and per table its file, row count, pandas dtypes and Hugging Face
``datasets`` features. Nothing in an export needs xaibench to be read.

Files are written into the folder the user names (default ``RUN_DIR/export``), each whole or
absent (:func:`xaibench.paths.write_whole`); ``export.json`` last, so its presence means the
export is complete. A folder that already holds files is refused unless ``overwrite`` is given;
then the table files the earlier export's ``export.json`` listed (``<table>.<suffix>`` in the
folder) and this one does not write are removed, and nothing else.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xaibench import __version__
from xaibench.errors import XaibenchError
from xaibench.paths import contained, is_temporary, read_json, write_whole

#: Version of the export's layout (``export.json``, metadata keys); bumped when it changes.
EXPORT_VERSION = 1

#: The formats :func:`export_run` writes, with their file suffix.
FORMATS = {"parquet": ".parquet", "jsonl": ".jsonl"}

#: The sidecar describing an export (both formats).
EXPORT_INDEX = "export.json"

#: Key of the Parquet key-value metadata holding the provenance (JSON).
METADATA_KEY = "xaibench"

#: Default export folder inside the run folder.
DEFAULT_FOLDER = "export"

#: Record fields and their kinds (``docs/results-schema.md``), so a column keeps its type in a run
#: where it is null throughout; fields a record has beyond these are typed by their values.
_RECORD_KINDS = {
    **dict.fromkeys(("task", "dataset", "backbone", "strategy", "metric", "category"), "str"),
    "seed": "int",
    "random_init": "bool",
    "higher_is_better": "bool",
    **dict.fromkeys(("saliency", "perturbation", "region"), "str"),
    **dict.fromkeys(("value", "ci_low", "ci_high"), "float"),
    "n": "int",
    "status": "str",
    "reason": "str",
    "details": "json",
}

_CELL_KINDS = {
    "backbone": "str",
    "strategy": "str",
    "seed": "int",
    "random_init": "bool",
    "status": "str",
    "error": "str",
    "traceback": "str",
    "seconds": "float",
    "weights": "json",
    "fit": "json",
}

#: Columns of the ``analysis`` tables whose type is known where every value is null.
_ANALYSIS_KINDS = {"backbone": "str", "strategy": "str", "seed": "int", "reason": "str"}

#: Table names that become file names: what an ``analysis`` key of someone else's file must be.
_TABLE_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_OWN_TABLES = ("records", "cells", "predictions", "explanations")


def _kind(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return "bool"
    if isinstance(value, int | np.integer):
        return "int"
    if isinstance(value, float | np.floating):
        return "float"
    if isinstance(value, str):
        return "str"
    return "json"


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float | np.floating) and math.isnan(value)


def _column(values: Sequence[Any], kind: str | None = None) -> pd.Series:
    """``values`` as a typed column (see the module docs); ``kind`` forces the type.

    A column of JSON text is marked by its name in the frame's ``attrs["json_columns"]`` by
    :func:`rows_frame`; here by the series' ``attrs["json"]``.
    """
    present = [v for v in values if not _missing(v)]
    if kind is None:
        kinds = {_kind(v) for v in present}
        if kinds <= {"int", "float"}:
            kind = "int" if kinds == {"int"} else "float"  # no value at all: float
        else:
            kind = kinds.pop() if len(kinds) == 1 else "json"
    elif kind != "json" and any(
        _kind(v) != kind and not (kind == "float" and _kind(v) == "int") for v in present
    ):
        kind = "json"  # a forced kind the values do not have: keep them exactly, as JSON
    if kind == "json":
        texts = [None if _missing(v) else json.dumps(v, allow_nan=False) for v in values]
        series = pd.Series(texts, dtype="str")
        series.attrs["json"] = True
        return series
    if kind == "int":
        nullable = len(present) < len(values)
        return pd.Series([None if _missing(v) else int(v) for v in values],
                         dtype="Int64" if nullable else "int64")  # fmt: skip
    if kind == "bool":
        nullable = len(present) < len(values)
        return pd.Series([None if _missing(v) else bool(v) for v in values],
                         dtype="boolean" if nullable else "bool")  # fmt: skip
    if kind == "float":
        return pd.Series([np.nan if _missing(v) else float(v) for v in values], dtype="float64")
    return pd.Series([None if _missing(v) else v for v in values], dtype="str")


def rows_frame(rows: Iterable[dict[str, Any]], kinds: dict[str, str] | None = None) -> pd.DataFrame:
    """Rows of a JSON table as a typed frame: the union of their keys, in order of appearance.

    Args:
        rows: The rows (a missing key is a null).
        kinds: Column kinds to keep even where every value is null (``str``, ``int``,
            ``float``, ``bool``, ``json``).
    """
    rows = list(rows)
    kinds = kinds or {}
    names: list[str] = []
    for row in rows:
        names.extend(k for k in row if k not in names)
    columns = {name: _column([row.get(name) for row in rows], kinds.get(name)) for name in names}
    frame = pd.DataFrame(columns, index=pd.RangeIndex(len(rows)))
    frame.attrs["json_columns"] = [n for n, c in columns.items() if c.attrs.get("json")]
    return frame


def run_tables(run_dir: Path) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
    """Read a run folder's tables, typed, with the values the run computed.

    Returns:
        The run's ``results.json`` document and its tables by name (``records``, ``cells``,
        ``predictions``, ``explanations`` where the run wrote them, and each non-empty
        ``analysis`` table).

    Raises:
        XaibenchError: As :func:`xaibench.report.run_files.load_run`, or an ``analysis``
            table's name is not a plain lower-case name.
    """
    from xaibench.report.run_files import load_run

    run = load_run(run_dir)
    document = run.document
    tables: dict[str, pd.DataFrame] = {"records": rows_frame(run.records, _RECORD_KINDS)}
    tables["cells"] = rows_frame(document.get("cells") or [], _CELL_KINDS)
    for name, frame in (("predictions", run.predictions), ("explanations", run.explanations)):
        if not frame.empty:
            tables[name] = _typed(frame)
    file = run.path / "results.json"
    for name, rows in run.analysis.items():
        if not isinstance(name, str) or not _TABLE_NAME.fullmatch(name) or name in _OWN_TABLES:
            raise XaibenchError(f"{file}: analysis table {name!r:.80} is not a plain table name")
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise XaibenchError(f"{file}: analysis table {name!r} is not a list of objects")
        if rows:
            tables[name] = rows_frame(rows, _ANALYSIS_KINDS)
    return document, tables


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """A per-image table as read from CSV, with the column types of :func:`rows_frame`."""
    out = {}
    for name in frame.columns:
        column = frame[name]
        if pd.api.types.is_bool_dtype(column.dtype):
            out[name] = column.astype("bool")
        elif pd.api.types.is_integer_dtype(column.dtype):
            out[name] = column.astype("int64")
        elif pd.api.types.is_float_dtype(column.dtype):
            out[name] = column.astype("float64")
        else:
            out[name] = _column(column.tolist())
    typed = pd.DataFrame(out, index=pd.RangeIndex(len(frame)))
    typed.attrs["json_columns"] = [n for n, c in out.items() if c.attrs.get("json")]
    return typed


def _json_value(value: Any) -> Any:
    if _missing(value):
        return None
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def to_jsonl(frame: pd.DataFrame) -> bytes:
    """``frame`` as JSON Lines: one object per row, nulls as ``null``, floats exact (``repr``)."""
    columns = [str(c) for c in frame.columns]
    lines = []
    for row in frame.itertuples(index=False, name=None):
        record = {c: _json_value(v) for c, v in zip(columns, row, strict=True)}
        lines.append(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
    return "".join(lines).encode("utf-8")


_ARROW_TYPES = {"int": "int64", "float": "float64", "bool": "bool", "str": "string"}


def _column_kind(dtype: Any) -> str:
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(dtype):
        return "int"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    return "str"


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet  # the submodule, used as pyarrow.parquet
    except ImportError:
        raise XaibenchError(
            "--format parquet needs pyarrow: pip install 'xaibench[export]' (or use --format jsonl)"
        ) from None
    return pyarrow


def to_parquet(frame: pd.DataFrame, metadata: dict[str, Any]) -> bytes:
    """``frame`` as a Parquet file with ``metadata`` (JSON) under the key :data:`METADATA_KEY`.

    Raises:
        XaibenchError: pyarrow is not installed (the message names the extra).
    """
    pa = _pyarrow()
    schema = pa.schema(
        [(str(c), _ARROW_TYPES[_column_kind(frame[c].dtype)]) for c in frame.columns]
    )
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    extra = {METADATA_KEY.encode(): json.dumps(metadata, sort_keys=True).encode()}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **extra})
    sink = io.BytesIO()
    pa.parquet.write_table(table, sink)
    return sink.getvalue()


def provenance(document: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """What every exported file says about its run (no absolute path: the folder's name only)."""
    environment = document.get("environment") or {}
    task = document.get("task") or {}
    return {
        "export_version": EXPORT_VERSION,
        "schema_version": document.get("schema_version"),
        "xaibench_version": environment.get("xaibench_version"),
        "exported_by": __version__,
        "config_hash": document.get("config_hash"),
        "task": task.get("name"),
        "created": document.get("created"),
        "run": Path(run_dir).resolve().name,
    }


def _describe(frame: pd.DataFrame, file: str, json_columns: list[str]) -> dict[str, Any]:
    features = {
        str(c): {"dtype": _ARROW_TYPES[_column_kind(frame[c].dtype)], "_type": "Value"}
        for c in frame.columns
    }
    return {
        "file": file,
        "rows": len(frame),
        "columns": {str(c): str(frame[c].dtype) for c in frame.columns},
        "features": features,
        "json_columns": json_columns,
    }


def export_folder(run_dir: Path, out: Path | None) -> Path:
    """The folder an export of ``run_dir`` goes to: ``out``, or ``run_dir/export``.

    Raises:
        XaibenchError: The default folder leads outside the run folder (a symlink).
    """
    if out is not None:
        return Path(out)
    return contained(Path(run_dir), DEFAULT_FOLDER, source=run_dir, what="export folder")


def _listed_files(out: Path) -> list[Path]:
    """The table files an earlier export in ``out`` listed (each checked to lie inside ``out``).

    Raises:
        XaibenchError: ``export.json`` is not JSON, or names a file outside ``out``.
    """
    index = out / EXPORT_INDEX
    if not index.is_file():
        return []
    described = read_json(contained(out, EXPORT_INDEX, source=out, what="export index"))
    tables = described.get("tables") if isinstance(described, dict) else None
    if not isinstance(tables, dict):
        return []
    files = [
        contained(out, table.get("file"), source=index, what="exported file")
        for table in tables.values()
        if isinstance(table, dict)
    ]
    # Only what an export could have written: <table>.<suffix>, directly in the folder.
    suffixes = tuple(FORMATS.values())
    return [
        f
        for f in files
        if f.parent == out.resolve()
        and f.name.endswith(suffixes)
        and _TABLE_NAME.fullmatch(f.name.rsplit(".", 1)[0])
    ]


def export_run(
    run_dir: Path, fmt: str = "parquet", out: Path | None = None, *, overwrite: bool = False
) -> Path:
    """Export a run folder's tables as ``fmt`` files (see the module docs).

    Args:
        run_dir: The run folder (or its ``results.json``).
        fmt: ``parquet`` or ``jsonl``.
        out: The folder to write into (default ``run_dir/export``); made if missing.
        overwrite: Replace an earlier export (or write into a folder that holds files).

    Returns:
        The export folder.

    Raises:
        XaibenchError: ``run_dir`` is not a readable run folder (one line naming the file), the
            folder holds files and ``overwrite`` is not given, ``fmt`` is unknown, pyarrow is
            missing for Parquet, or a file cannot be written (exit status 1).
    """
    if fmt not in FORMATS:
        raise XaibenchError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if fmt == "parquet":
        _pyarrow()  # before reading anything: the one-line message naming the extra
    run_dir = Path(run_dir)
    if run_dir.name == "results.json":
        run_dir = run_dir.parent
    document, tables = run_tables(run_dir)
    folder = export_folder(run_dir, out)
    if folder.exists() and not folder.is_dir():
        raise XaibenchError(f"{folder}: not a folder (--out)")
    held = [p for p in folder.iterdir() if not is_temporary(p.name)] if folder.is_dir() else []
    if held and not overwrite:
        raise XaibenchError(
            f"{folder}: already holds files (an earlier export?); give --overwrite to replace it"
        )
    earlier = _listed_files(folder) if held else []
    if earlier:
        (folder / EXPORT_INDEX).unlink()  # the index goes first: a mixed folder is never complete
    meta = provenance(document, run_dir)
    suffix = FORMATS[fmt]
    described: dict[str, Any] = {}
    written = set()
    for name, frame in tables.items():
        file = name + suffix
        columns = list(frame.attrs.get("json_columns", []))
        content = to_jsonl(frame) if fmt == "jsonl" else to_parquet(frame, {**meta, "table": name})
        write_whole(folder / file, content)
        written.add((folder / file).resolve())
        described[name] = _describe(frame, file, columns)
    for stale in earlier:
        if stale not in written and stale.is_file():
            stale.unlink()
    index = {**meta, "format": fmt, "tables": described}
    write_whole(folder / EXPORT_INDEX, json.dumps(index, indent=2, allow_nan=False) + "\n")
    return folder
