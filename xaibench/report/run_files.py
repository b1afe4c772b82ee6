"""Reading a run directory back: the results document, per-image tables and gallery index.

Leaderboards and the HTML report are pure functions of these files (no model code runs), so
committed results can be re-ranked, compared and published from CI. Every problem with the files
(missing, not JSON, an unknown schema version, a record of the wrong shape, a file or gallery
entry leading outside the run directory) raises :class:`~xaibench.errors.XaibenchError` naming
the file, and the record or entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from xaibench.errors import XaibenchError
from xaibench.escape import csv_frame_back
from xaibench.paths import contained, read_json
from xaibench.run_lock import writer_of

#: Schema versions this code reads (``docs/results-schema.md``).
READABLE_SCHEMAS = ("1.0", "1.1", "1.2", "1.3", "1.4", "1.5")

#: Columns whose empty cells mean "none" (the intact condition), never NaN.
_TEXT_COLUMNS = ("backbone", "strategy", "split", "sample_id", "perturbation", "region", "metric")

GALLERY_INDEX = "gallery/index.json"


@dataclass(frozen=True)
class RunFiles:
    """One run directory, as read from disk.

    Attributes:
        path: The run directory.
        document: The parsed ``results.json``.
        predictions: ``predictions.csv`` (empty frame when the run wrote none); ``perturbation``
            and ``region`` are ``""`` for intact images.
        explanations: ``explanations.csv`` (empty frame when none); ``value`` NaN where undefined.
        galleries: Entries of ``gallery/index.json``, each with ``file`` resolved to an absolute
            ``path`` (empty when the run wrote no galleries).
    """

    path: Path
    document: dict[str, Any]
    predictions: pd.DataFrame
    explanations: pd.DataFrame
    galleries: list[dict[str, Any]] = field(default_factory=list)

    @property
    def records(self) -> list[dict[str, Any]]:
        """The flat metric records."""
        return list(self.document.get("records", []))

    @property
    def task(self) -> dict[str, Any]:
        """``name``, ``class_names``, ``positive_class``, ``regions_of_interest``."""
        return dict(self.document["task"])

    @property
    def analysis(self) -> dict[str, list[dict[str, Any]]]:
        """Cross-cell tables (``explanation_drift``, ``per_class``, ``calibration``, ...)."""
        return dict(self.document.get("analysis") or {})

    def intact_predictions(self) -> pd.DataFrame:
        """Test predictions on unperturbed images."""
        frame = self.predictions
        if frame.empty:
            return frame
        return frame[(frame["perturbation"] == "") & (frame["split"] == "test")]


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.exists():
        return pd.DataFrame()
    try:
        frame = pd.read_csv(
            path,
            dtype=dict.fromkeys(_TEXT_COLUMNS, str),
            keep_default_na=False,
            na_values={"value": [""], "saliency": []},
        )
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise XaibenchError(f"{path}: not a readable results table ({exc})") from None
    for column in _TEXT_COLUMNS:
        if column in frame:
            frame[column] = frame[column].fillna("")
    frame = csv_frame_back(frame, (*_TEXT_COLUMNS, "saliency"))  # undo escape.to_csv
    for column in frame.columns:
        if column.startswith(("prob_", "log_prob_")) or column in ("value", "chance"):
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_Check = tuple[Callable[[Any], bool], str]
_TEXT: _Check = (lambda v: isinstance(v, str), "a string")
_TEXT_OR_NULL: _Check = (lambda v: v is None or isinstance(v, str), "a string or null")
_INTEGER: _Check = (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer")
_NUMBER_OR_NULL: _Check = (lambda v: v is None or _number(v), "a number or null")
_FLAG: _Check = (lambda v: v is None or isinstance(v, bool), "true, false or null")
_OBJECT: _Check = (lambda v: isinstance(v, dict), "an object")
_OBJECT_OR_NULL: _Check = (lambda v: v is None or isinstance(v, dict), "an object or null")
_TEXTS: _Check = (
    lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    "a list of strings",
)
_LIST: _Check = (lambda v: isinstance(v, list), "a list")
_NUMBERS_OR_NULL: _Check = (
    lambda v: v is None or (isinstance(v, list) and all(x is None or _number(x) for x in v)),
    "a list of numbers or null",
)
_INTERVAL: _Check = (
    lambda v: (
        v is None
        or (isinstance(v, list) and len(v) == 2 and all(x is None or _number(x) for x in v))
    ),
    "a [low, high] pair of numbers (or nulls) or null",
)
_PROBABILITY: _Check = (
    lambda v: v is None or (_number(v) and 0 <= v <= 1),
    "a number from 0 to 1 or null",
)
_COUNT: _Check = (lambda v: v is None or (_INTEGER[0](v) and v >= 0), "a whole number or null")
_OBJECTS: _Check = (
    lambda v: isinstance(v, list) and all(isinstance(x, dict) for x in v),
    "a list of objects",
)

#: Per record field: required, and what it must be (``docs/results-schema.md``). Optional
#: fields are checked when present.
_RECORD: dict[str, tuple[bool, _Check]] = {
    "backbone": (True, _TEXT), "strategy": (True, _TEXT), "seed": (True, _INTEGER),
    "metric": (True, _TEXT), "category": (True, _TEXT), "status": (True, _TEXT),
    "value": (True, _NUMBER_OR_NULL), "saliency": (True, _TEXT_OR_NULL),
    "perturbation": (True, _TEXT_OR_NULL), "region": (True, _TEXT_OR_NULL),
    "ci_low": (False, _NUMBER_OR_NULL), "ci_high": (False, _NUMBER_OR_NULL),
    "n": (False, _NUMBER_OR_NULL), "higher_is_better": (False, _FLAG),
    "random_init": (False, _FLAG), "reason": (False, _TEXT_OR_NULL), "details": (False, _OBJECT),
    "task": (False, _TEXT), "dataset": (False, _TEXT),
}  # fmt: skip

#: Fields of a record's ``details`` that readers compute with (1.5: chance levels and normalised
#: scores of region metrics, area-matched controls and specific Δ, run-to-run sanity
#: similarity), checked when present: a malformed one is refused on load rather than breaking a
#: leaderboard later.
_DETAILS: dict[str, tuple[bool, _Check]] = {
    "chance": (False, _NUMBER_OR_NULL), "chance_method": (False, _TEXT_OR_NULL),
    "chance_exact": (False, _FLAG), "best": (False, _NUMBER_OR_NULL),
    "normalised": (False, _NUMBER_OR_NULL), "normalised_ci": (False, _INTERVAL),
    "p_chance": (False, _PROBABILITY),
    "control_delta": (False, _NUMBER_OR_NULL), "control_deltas": (False, _NUMBERS_OR_NULL),
    "control_draws": (False, _COUNT), "control_area_ratio": (False, _NUMBER_OR_NULL),
    "specific": (False, _NUMBER_OR_NULL), "specific_ci": (False, _INTERVAL),
    "specific_p": (False, _PROBABILITY), "specific_reason": (False, _TEXT_OR_NULL),
    "run_to_run": (False, _NUMBER_OR_NULL),
}  # fmt: skip

_CELL: dict[str, tuple[bool, _Check]] = {
    "backbone": (True, _TEXT), "strategy": (True, _TEXT), "seed": (True, _INTEGER),
    "status": (False, _TEXT), "error": (False, _TEXT_OR_NULL), "weights": (False, _OBJECT_OR_NULL),
    "fit": (False, _OBJECT_OR_NULL), "random_init": (False, _FLAG),
}  # fmt: skip

_TASK: dict[str, tuple[bool, _Check]] = {
    "name": (True, _TEXT), "class_names": (True, _TEXTS), "positive_class": (True, _TEXT),
    "regions_of_interest": (False, _TEXTS),
}  # fmt: skip

#: Sections of ``results.json`` and what they must be, when present.
_SECTIONS: dict[str, _Check] = {
    "config": _OBJECT, "dataset": _OBJECT, "environment": _OBJECT, "components": _OBJECT,
    "component_options": _OBJECT, "analysis": _OBJECT, "task": _OBJECT, "records": _LIST,
    "cells": _LIST, "analysis_failures": _OBJECT, "evidence": _OBJECTS, "trust": _LIST,
}  # fmt: skip

#: One row of the ``evidence`` section (1.5; ``xaibench.evidence``): the keys readers use.
_EVIDENCE: dict[str, tuple[bool, _Check]] = {
    "backbone": (True, _TEXT), "strategy": (True, _TEXT), "seed": (True, _INTEGER),
    "saliency": (True, _TEXT), "perturbation": (False, _TEXT_OR_NULL),
    "localisation_metric": (False, _TEXT_OR_NULL), "regions": (False, _OBJECTS),
    "needed_order": (False, _TEXTS), "shown_order": (False, _TEXTS),
    "kendall_tau": (False, _NUMBER_OR_NULL), "kendall_p": (False, _PROBABILITY),
    "top_needed": (False, _TEXT_OR_NULL), "top_shown": (False, _TEXT_OR_NULL),
    "top_match": (False, _FLAG),
    "flagged": (False, _FLAG), "flags": (False, _TEXTS), "reason": (False, _TEXT_OR_NULL),
}  # fmt: skip

_EVIDENCE_REGION: dict[str, tuple[bool, _Check]] = {
    "region": (True, _TEXT), "specific": (False, _NUMBER_OR_NULL),
    "specific_ci": (False, _INTERVAL), "needed": (False, _FLAG),
    "normalised": (False, _NUMBER_OR_NULL), "normalised_ci": (False, _INTERVAL),
    "above_chance": (False, _FLAG), "specific_p_holm": (False, _PROBABILITY),
    "p_chance_holm": (False, _PROBABILITY),
}  # fmt: skip

#: A row of ``trust`` (known-answer badges per cell and saliency method, ``xaibench.trust``).
_TRUST: dict[str, tuple[bool, _Check]] = {
    "backbone": (True, _TEXT), "strategy": (True, _TEXT), "seed": (True, _INTEGER),
    "saliency": (True, _TEXT), "badge": (True, _TEXT), "metrics": (False, _OBJECT),
    "source": (False, _TEXT_OR_NULL),
}  # fmt: skip

#: Deeper than this, a results file is not one xaibench wrote (its own are about 8 deep); the
#: limit keeps every later step (YAML, JSON, copies) far from Python's recursion limit.
MAX_DEPTH = 64


def _depth(value: Any) -> int:
    """How deeply ``value`` nests lists and objects (iteratively: any depth is measured)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((v, level + 1) for v in children)
    return deepest


def _check_fields(item: Any, spec: dict[str, tuple[bool, _Check]], where: str) -> None:
    if not isinstance(item, dict):
        raise XaibenchError(f"{where} is not an object")
    for key, (required, (check, expected)) in spec.items():
        if key not in item:
            if required:
                raise XaibenchError(f"{where} has no {key!r}")
        elif not check(item[key]):
            raise XaibenchError(f"{where}: {key!r} must be {expected}, not {item[key]!r:.40}")


#: Columns of the analysis tables that hold numbers (or null); the figures and tables of the
#: report compute with them (``docs/results-schema.md``, ``analysis``).
_ANALYSIS_NUMBERS = frozenset(
    {
        "seed", "n", "cells", "index", "count", "n_positive", "n_negative",
        "tp", "fn", "tn", "fp", "spearman", "kendall_tau", "p_value", "ece",
        "bin_low", "bin_high", "mean_confidence", "observed", "mean", "low", "high",
        *(f"{m}{end}" for m in ("auc", "sensitivity", "specificity", "accuracy", "ci")
          for end in ("", "_low", "_high")),
    }
)  # fmt: skip


def _analysis_row_problem(row: dict[str, Any]) -> str | None:
    """Why an analysis row cannot be read, or None when it can.

    A number column must hold a number or null; any other column a single value.
    """
    for key, value in row.items():
        if key in _ANALYSIS_NUMBERS:
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if value is not None and not number:
                return f"{key!r:.40} must be a number or null, not {value!r:.40}"
        elif value is not None and not isinstance(value, str | int | float | bool):
            return f"{key!r:.40} must be a single value, not {type(value).__name__}"
    return None


def check_document(document: Any, file: Path) -> None:
    """Check that a parsed ``results.json`` has the shape every reader relies on.

    Raises:
        XaibenchError: It is not an object, nests too deeply, lacks a required key, has a
            schema version this xaibench cannot read, or a section, cell or record of the
            wrong type (the message names the file and the record's index).
    """
    if not isinstance(document, dict):
        raise XaibenchError(f"{file}: expected a JSON object")
    if _depth(document) > MAX_DEPTH:
        raise XaibenchError(f"{file}: nested too deeply (over {MAX_DEPTH} levels) to be results")
    version = document.get("schema_version")
    if version not in READABLE_SCHEMAS:
        raise XaibenchError(
            f"{file}: schema version {version!r:.40} is not one this xaibench reads "
            f"({', '.join(READABLE_SCHEMAS)})"
        )
    missing = [k for k in ("task", "records", "config", "cells") if k not in document]
    if missing:
        raise XaibenchError(f"{file}: missing key(s) {', '.join(missing)}")
    for key, (check, expected) in _SECTIONS.items():
        if key in document and not check(document[key]):
            raise XaibenchError(f"{file}: {key!r} must be {expected}")
    _check_fields(document["task"], _TASK, f"{file}: task")
    task = document["task"]
    if task["positive_class"] not in task["class_names"]:
        raise XaibenchError(f"{file}: task: positive_class is not one of class_names")
    if not isinstance(document.get("environment", {}).get("libraries", {}), dict):
        raise XaibenchError(f"{file}: environment: 'libraries' must be an object")
    splits = document.get("dataset", {}).get("splits", {})
    if not isinstance(splits, dict) or not all(isinstance(v, dict) for v in splits.values()):
        raise XaibenchError(f"{file}: dataset: 'splits' must be an object of objects")
    for name, rows in document.get("analysis", {}).items():
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise XaibenchError(f"{file}: analysis table {name!r:.40} is not a list of objects")
        for i, row in enumerate(rows):
            problem = _analysis_row_problem(row)
            if problem:
                raise XaibenchError(f"{file}: analysis table {name!r:.40}, row {i}: {problem}")
    for i, cell in enumerate(document["cells"]):
        _check_fields(cell, _CELL, f"{file}: cell {i}")
    for i, record in enumerate(document["records"]):
        _check_fields(record, _RECORD, f"{file}: record {i}")
        if "details" in record:
            _check_fields(record["details"], _DETAILS, f"{file}: record {i}: details")
    for i, cell in enumerate(document["cells"]):
        fit = cell.get("fit") or {}
        if "selection_curve" in fit and not _OBJECTS[0](fit["selection_curve"]):
            raise XaibenchError(
                f"{file}: cell {i}: fit: 'selection_curve' must be a list of objects"
            )
    for i, row in enumerate(document.get("evidence", [])):
        _check_fields(row, _EVIDENCE, f"{file}: evidence row {i}")
        for j, region in enumerate(row.get("regions", [])):
            _check_fields(region, _EVIDENCE_REGION, f"{file}: evidence row {i}, region {j}")
    for i, row in enumerate(document.get("trust", [])):
        _check_fields(row, _TRUST, f"{file}: trust {i}")


def _gallery_entries(run_dir: Path) -> list[dict[str, Any]]:
    """``gallery/index.json``'s entries, each ``file`` checked to lie inside ``gallery/``."""
    index = run_dir / GALLERY_INDEX
    if not index.is_file():
        return []
    entries = read_json(contained(run_dir, GALLERY_INDEX, source=run_dir, what="gallery index"))
    if not isinstance(entries, list):
        raise XaibenchError(f"{index}: expected a list of gallery entries")
    galleries = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise XaibenchError(f"{index}: gallery entry {i} is not an object")
        for key in ("sample_ids", "scores"):
            if not isinstance(entry.get(key) or [], list):
                raise XaibenchError(f"{index}: gallery entry {i}: {key!r} must be a list or null")
        path = contained(
            run_dir, entry.get("file"), source=index, what="gallery entry", under="gallery"
        )
        galleries.append({**entry, "path": path})
    return galleries


def load_run(path: Path) -> RunFiles:
    """Read a run directory (or its ``results.json``).

    Every file is checked to lie inside the directory (also through symlinks), and so is every
    gallery entry inside ``gallery/``.

    Raises:
        XaibenchError: The directory or ``results.json`` is missing, is not JSON, is not of the
            shape every results file has (:func:`check_document`), or has a schema version
            this xaibench cannot read; a file or gallery entry leads outside the directory; or
            a run is writing the directory right now.
    """
    path = Path(path)
    run_dir = path.parent if path.name == "results.json" else path
    file = run_dir / "results.json"
    if not run_dir.is_dir():
        raise XaibenchError(f"{run_dir}: no such run directory")
    holder = writer_of(run_dir)
    if holder is not None:
        raise XaibenchError(f"{run_dir}: a run is being written there by {holder}; "
                            "wait for it to finish")  # fmt: skip
    if not file.is_file():
        raise XaibenchError(f"{run_dir}: no results.json (is this a run directory?)")
    document = read_json(contained(run_dir, file.name, source=run_dir, what="results file"))
    check_document(document, file)
    tables = {
        name: _read_csv(contained(run_dir, name, source=run_dir, what="results table"))
        for name in ("predictions.csv", "explanations.csv")
    }
    return RunFiles(
        path=run_dir,
        document=document,
        predictions=tables["predictions.csv"],
        explanations=tables["explanations.csv"],
        galleries=_gallery_entries(run_dir),
    )
