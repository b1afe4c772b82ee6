"""Reading a run directory back: the results document, per-image tables and gallery index.

Leaderboards and the HTML report are pure functions of these files (no model code runs), so
committed results can be re-ranked, compared and published from CI. Every problem with the files
(missing, not JSON, an unknown schema version) raises :class:`~xaibench.errors.XaibenchError`
naming the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from xaibench.errors import XaibenchError
from xaibench.escape import csv_frame_back

#: Schema versions this code reads (``docs/results-schema.md``).
READABLE_SCHEMAS = ("1.0", "1.1", "1.2", "1.3")

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
        if column.startswith("prob_") or column == "value":
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def load_run(path: Path) -> RunFiles:
    """Read a run directory (or its ``results.json``).

    Raises:
        XaibenchError: The directory or ``results.json`` is missing, is not JSON, lacks the keys
            every results file has, or has a schema version this xaibench cannot read.
    """
    path = Path(path)
    run_dir = path.parent if path.name == "results.json" else path
    file = run_dir / "results.json"
    if not run_dir.is_dir():
        raise XaibenchError(f"{run_dir}: no such run directory")
    if not file.is_file():
        raise XaibenchError(f"{run_dir}: no results.json (is this a run directory?)")
    try:
        document = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise XaibenchError(f"{file}: not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise XaibenchError(f"{file}: expected a JSON object")
    version = document.get("schema_version")
    if version not in READABLE_SCHEMAS:
        raise XaibenchError(
            f"{file}: schema version {version!r} is not one this xaibench reads "
            f"({', '.join(READABLE_SCHEMAS)})"
        )
    missing = [k for k in ("task", "records", "config", "cells") if k not in document]
    if missing:
        raise XaibenchError(f"{file}: missing key(s) {', '.join(missing)}")
    galleries: list[dict[str, Any]] = []
    index = run_dir / GALLERY_INDEX
    if index.is_file():
        try:
            entries = json.loads(index.read_text())
        except json.JSONDecodeError as exc:
            raise XaibenchError(f"{index}: not valid JSON ({exc})") from None
        for entry in entries:
            galleries.append({**entry, "path": run_dir / "gallery" / entry["file"]})
    return RunFiles(
        path=run_dir,
        document=document,
        predictions=_read_csv(run_dir / "predictions.csv"),
        explanations=_read_csv(run_dir / "explanations.csv"),
        galleries=galleries,
    )
