"""A manifest's sidecar: ``<csv stem>.json`` beside the CSV, and what a run takes from it.

``xaibench data masks`` writes ``DIR/manifest.json`` beside ``DIR/manifest.csv``: which segmenter
made the ``mask_<region>`` files (name, version, options, weights hash) and the quality-control
summary. A run on that manifest copies this record into ``results.json``
(``dataset.mask_provenance``), so every score computed on generated masks says what made them.

Rules, since the sidecar is a file we may not have written ourselves:

* Only a sidecar whose ``format`` is ``xaibench-masks`` is used; any other JSON beside the CSV
  (``data import``'s provenance, a user's own notes) is ignored, and so is a file that is not a
  JSON object or larger than :data:`MAX_SIDECAR_BYTES` (ours are a few kilobytes; a larger one
  is not read at all).
* A ``xaibench-masks`` sidecar must be valid: format version ``1``, ``segmenter`` an object,
  ``regions`` a list of region names, ``qc`` (when present) an object; otherwise the manifest
  refuses to load with one line naming the file, since a run would otherwise record wrong
  provenance.
* Only ``segmenter``, ``regions`` and ``qc`` are taken (re-serialised from the parsed JSON), never
  a path: the sidecar was written without absolute paths and nothing else is copied.
* The sidecar records the SHA-256 of the CSV it describes; a CSV edited since (rows removed, a
  column replaced by hand) still carries the provenance, marked ``"manifest_changed": true``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from xaibench.data.files import FileRefusedError, read_plain_file
from xaibench.errors import XaibenchError

#: The ``format`` of the sidecar ``xaibench data masks`` writes.
MASKS_FORMAT = "xaibench-masks"
#: Its ``format_version``.
MASKS_FORMAT_VERSION = "1"
#: Largest sidecar read; a larger file is ignored unread.
MAX_SIDECAR_BYTES = 1 << 20

_REGION_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def sidecar_path(csv: Path) -> Path:
    """The sidecar of the manifest ``csv``: ``<stem>.json`` in the same folder."""
    return csv.with_suffix(".json")


def read_sidecar_json(path: Path) -> dict[str, Any] | None:
    """``path`` parsed as a JSON object, or None when absent, too large, or not a JSON object."""
    try:
        if not path.is_file() or path.stat().st_size > MAX_SIDECAR_BYTES:
            return None
        raw = read_plain_file(path, what="sidecar")
        payload = json.loads(raw.decode("utf-8"))
    except (OSError, FileRefusedError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    return payload if isinstance(payload, dict) else None


def mask_provenance(csv: Path, csv_sha256: str | None = None) -> dict[str, Any] | None:
    """What made the masks of the manifest ``csv``, from its sidecar; None without one.

    Args:
        csv: The manifest.
        csv_sha256: The hash of the CSV's bytes as read; when the sidecar recorded another
            (the CSV was edited since ``data masks`` wrote it: rows removed, a column
            replaced), the result says so with ``"manifest_changed": true``.

    Returns:
        ``{"segmenter": {...}, "regions": [...], "qc": {...}}`` (``qc`` only when recorded,
        ``manifest_changed`` only when true).

    Raises:
        XaibenchError: The sidecar says it is ``xaibench-masks`` but is not valid; the message
            names the file.
    """
    path = sidecar_path(csv)
    payload = read_sidecar_json(path)
    if payload is None or payload.get("format") != MASKS_FORMAT:
        return None
    problem = _problem(payload)
    if problem is not None:
        raise XaibenchError(
            f"{path}: not a valid {MASKS_FORMAT} sidecar ({problem}); rerun "
            "`xaibench data masks` or remove the file"
        )
    out: dict[str, Any] = {
        "segmenter": payload["segmenter"],
        "regions": list(payload["regions"]),
    }
    if isinstance(payload.get("qc"), dict):
        out["qc"] = payload["qc"]
    recorded = payload.get("manifest_sha256")
    if csv_sha256 is not None and isinstance(recorded, str) and recorded != csv_sha256:
        out["manifest_changed"] = True
    return json.loads(json.dumps(out))  # plain JSON types only, a copy


def _problem(payload: dict[str, Any]) -> str | None:
    """Why ``payload`` is not a valid masks sidecar, or None."""
    if payload.get("format_version") != MASKS_FORMAT_VERSION:
        return f"format_version must be {MASKS_FORMAT_VERSION!r}"
    if not isinstance(payload.get("segmenter"), dict):
        return "'segmenter' must be an object"
    regions = payload.get("regions")
    if not isinstance(regions, list) or not all(
        isinstance(r, str) and _REGION_NAME.match(r) for r in regions
    ):
        return "'regions' must be a list of region names"
    if "qc" in payload and not isinstance(payload["qc"], dict):
        return "'qc' must be an object"
    return None
