"""Names and identities for W&B: metric keys from records, run ids from xaibench's keys.

Pure functions without wandb, so they are tested (and documented) on their own.

A record's metric key is ``<category>/<metric>`` followed by the qualifiers it has, in a fixed
order (``saliency``, ``perturbation``, ``region``, ``class``, then any other text qualifier in
alphabetical order), joined by ``/``, e.g. ``explainability/delta_region/zero/bone`` or
``explainability/iou_region/gradcam/spine``. W&B groups keys by their first ``/`` part into
sections of the workspace. A ``/`` inside a qualifier becomes ``_``. Two records that would still
share a key (none in xaibench's own metrics) get ``~2``, ``~3``... in record order. The
confidence interval's bounds are ``<key>.ci_low`` and ``<key>.ci_high``.

Only records with ``status == "ok"`` and a finite value are metrics; the others are counted
(:func:`metric_values` returns how many were left out).
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

#: Qualifiers that name what a record measures, in the order they appear in a key.
QUALIFIERS = ("saliency", "perturbation", "region", "class")

#: Record fields that are not qualifiers: the cell's identity, the value and how it was got.
NOT_QUALIFIERS = frozenset(
    {
        "backbone",
        "category",
        "ci_high",
        "ci_low",
        "dataset",
        "details",
        "higher_is_better",
        "metric",
        "n",
        "random_init",
        "reason",
        "seed",
        "status",
        "strategy",
        "task",
        "value",
    }
)


def _part(value: Any) -> str:
    return str(value).replace("/", "_")


def metric_key(record: Mapping[str, Any]) -> str:
    """The W&B key of one record (before de-duplication; see the module docstring)."""
    parts = [_part(record.get("category") or "metric"), _part(record["metric"])]
    parts += [_part(record[q]) for q in QUALIFIERS if record.get(q) not in (None, "")]
    extra = sorted(
        k
        for k, v in record.items()
        if k not in NOT_QUALIFIERS and k not in QUALIFIERS and isinstance(v, str) and v
    )
    parts += [f"{k}={_part(record[k])}" for k in extra]
    return "/".join(parts)


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def metric_values(records: Iterable[Mapping[str, Any]]) -> tuple[dict[str, float], int]:
    """The W&B metrics of a cell's records, and how many records were left out.

    Returns:
        ``{key: value, key.ci_low: ..., key.ci_high: ...}`` for every record with status ok
        and a finite value (a bound is present when it is finite), and the number of records
        left out (status other than ok, or no finite value).
    """
    out: dict[str, float] = {}
    seen: dict[str, int] = {}
    left_out = 0
    for record in records:
        value = _finite(record.get("value"))
        if record.get("status") != "ok" or value is None:
            left_out += 1
            continue
        key = metric_key(record)
        seen[key] = seen.get(key, 0) + 1
        if seen[key] > 1:
            key = f"{key}~{seen[key]}"
        out[key] = value
        for bound in ("ci_low", "ci_high"):
            limit = _finite(record.get(bound))
            if limit is not None:
                out[f"{key}.{bound}"] = limit
    return out, left_out


def wandb_id(run_id: str, what: str) -> str:
    """A W&B run id (16 hex digits) for ``what`` (a cell's key, or ``study``) in one run.

    The same in every session of a run folder, so a resumed run reuses it.
    """
    return hashlib.sha256(f"xaibench\n{run_id}\n{what}".encode()).hexdigest()[:16]


_NOT_IN_PROJECT = re.compile(r"[/\\#?%:\s]+")


def project_name(task: str) -> str:
    """The default W&B project of a task: ``xaibench-<task>`` (W&B's forbidden characters as -)."""
    return _NOT_IN_PROJECT.sub("-", f"xaibench-{task}")[:128]


def tag(text: str) -> str:
    """A W&B tag (at most 64 characters)."""
    return text if len(text) <= 64 else text[:63] + "~"


_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")


def public(value: Any, run_dir: Path) -> Any:
    """``value`` (JSON-able) with nothing private: no absolute paths, no passwords in URLs.

    An absolute path inside ``run_dir`` becomes relative to it; any other absolute path keeps
    only its last part (``.../model.safetensors``): a folder may hold a user's name. A URL's
    ``user:password@`` becomes ``***@``.
    """
    if isinstance(value, Mapping):
        return {str(k): public(v, run_dir) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [public(v, run_dir) for v in value]
    if isinstance(value, str):
        if "://" in value:
            return _CREDENTIALS.sub("***@", value)
        if os.path.isabs(value) or value.startswith("~"):
            path = Path(value)
            try:
                return path.relative_to(run_dir).as_posix()
            except ValueError:
                return f".../{path.name}"
    return value


def public_text(text: str, run_dir: Path) -> str:
    """A message (a failed cell's error): the run folder as ``.``, the home folder as ``~``."""
    text = text.replace(str(run_dir), ".")
    home = os.path.expanduser("~")
    if home not in ("", "/", "~"):
        text = text.replace(home, "~")
    return _CREDENTIALS.sub("***@", text)
