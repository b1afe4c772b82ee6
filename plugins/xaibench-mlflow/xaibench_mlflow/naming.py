"""What the ``mlflow`` observer names and writes: params, metric names, and redaction.

Pure functions (no MLflow import), so the rules are tested without a server:

* :func:`flatten_params`: a nested mapping as MLflow params (``train.lr``, ``backbones.0.name``);
  values as text, absolute paths reduced to their last component, long values truncated.
* :func:`metric_names`: one metric name per record from its qualifiers, unique per cell
  (including the ``.ci_low`` / ``.ci_high`` names), in MLflow's allowed characters.
* :func:`redact_uri` and :func:`scrub_text`: a tracking URI's credentials never reach a message,
  a tag or a param.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PureWindowsPath
from typing import Any
from urllib.parse import urlsplit, urlunsplit

#: MLflow's limits (``mlflow.utils.validation``): keys, param values, tag values, batches.
MAX_KEY_LENGTH = 250
MAX_PARAM_LENGTH = 6000
MAX_TAG_LENGTH = 8000
PARAMS_PER_BATCH = 100
METRICS_PER_BATCH = 1000

#: Suffixes of the confidence-interval metrics of a record's metric.
CI_SUFFIXES = (".ci_low", ".ci_high")

#: Record fields that are not qualifiers of the value (the cell's identity, the value and its
#: bookkeeping); every other str or int field (``saliency``, ``perturbation``, ``region``,
#: ``class``, a plugin's own) names which value of the metric the record holds.
NOT_QUALIFIERS = frozenset(
    {
        "task", "dataset", "backbone", "strategy", "seed", "random_init", "metric", "category",
        "higher_is_better", "value", "ci_low", "ci_high", "n", "status", "reason", "details",
    }
)  # fmt: skip

#: Qualifiers in this order first, the others after them by name.
QUALIFIER_ORDER = ("saliency", "perturbation", "region", "class")

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")
_WINDOWS_ABSOLUTE = re.compile(r"^(?:[A-Za-z]:[\\/]|\\\\)")


def _part(text: Any) -> str:
    """One segment of a name: MLflow's characters only (no spaces or colons), never a path step."""
    cleaned = _UNSAFE.sub("_", str(text)).strip("_") or "_"
    return "_" if cleaned in (".", "..") else cleaned


def key_of(parts: Sequence[Any]) -> str:
    """A param key from its path, within MLflow's key length (a long one ends in a digest)."""
    key = ".".join(_part(p) for p in parts)
    if len(key) > MAX_KEY_LENGTH:
        digest = hashlib.sha256(key.encode()).hexdigest()[:8]
        key = f"{key[: MAX_KEY_LENGTH - 9]}_{digest}"
    return key


def is_absolute_path(text: str) -> bool:
    """Whether ``text`` is an absolute path (POSIX, Windows, ``~`` or ``file:``)."""
    return text.startswith(("/", "~", "file:")) or bool(_WINDOWS_ABSOLUTE.match(text))


def scrub_paths(value: Any) -> Any:
    """``value`` with every absolute path reduced to its last component (may name the user)."""
    if isinstance(value, str):
        if not is_absolute_path(value):
            return value
        text = value.removeprefix("file://").removeprefix("file:")
        windows = bool(_WINDOWS_ABSOLUTE.match(text))
        return (PureWindowsPath(text) if windows else Path(text)).name or "_"
    if isinstance(value, Path):
        return value.name
    if isinstance(value, Mapping):
        return {k: scrub_paths(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_paths(v) for v in value]
    return value


def render(value: Any) -> str:
    """A param or tag value as text: strings as they are, everything else as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str, allow_nan=True)


def flatten_params(config: Mapping[str, Any], max_length: int = MAX_PARAM_LENGTH) -> dict[str, str]:
    """``config`` as MLflow params: nested keys joined with dots, values as text.

    Mappings nest (``train.lr``); a list of mappings nests by position (``backbones.0.name``);
    other lists and empty mappings are one value in JSON (``["auc", "accuracy"]``, ``{}``);
    ``None`` is ``null``. Absolute paths are reduced to their last component, and values are
    cut to ``max_length`` characters (MLflow's limit).
    """
    out: dict[str, str] = {}

    def walk(value: Any, path: list[Any]) -> None:
        if isinstance(value, Mapping) and value:
            for k, v in value.items():
                walk(v, [*path, k])
        elif (
            isinstance(value, list | tuple) and value and all(isinstance(v, Mapping) for v in value)
        ):
            for i, v in enumerate(value):
                walk(v, [*path, i])
        else:
            out[key_of(path)] = render(value)[:max_length]

    walk(scrub_paths(dict(config)), [])
    return out


def qualifiers(record: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The record's qualifiers as ``(field, value)``, in naming order (None ones left out)."""
    found = {
        k: str(v)
        for k, v in record.items()
        if k not in NOT_QUALIFIERS
        and v is not None
        and isinstance(v, str | int)
        and not isinstance(v, bool)
    }
    order = [k for k in QUALIFIER_ORDER if k in found] + sorted(
        k for k in found if k not in QUALIFIER_ORDER
    )
    return [(k, found[k]) for k in order]


def is_logged(record: Mapping[str, Any]) -> bool:
    """Whether the record becomes a metric: status ``ok`` and a finite value."""
    value = record.get("value")
    return (
        record.get("status") == "ok"
        and isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _short(name: str) -> str:
    """A metric name within MLflow's key length, room left for the CI suffixes."""
    room = MAX_KEY_LENGTH - max(len(s) for s in CI_SUFFIXES)
    if len(name) <= room:
        return name
    return f"{name[: room - 9]}_{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def _clashes(names: Mapping[int, str], reserved: set[str]) -> set[int]:
    """The indices whose name, or one of its CI names, another index or ``reserved`` also uses."""
    users: dict[str, set[int]] = defaultdict(set)
    for i, name in names.items():
        for full in (name, *(name + s for s in CI_SUFFIXES)):
            users[full].add(i)
    return {i for full, ids in users.items() if len(ids) > 1 or full in reserved for i in ids}


def metric_names(
    records: Sequence[Mapping[str, Any]], reserved: Iterable[str] = ()
) -> dict[int, str]:
    """The metric name of each record, by index, unique with its CI names.

    The name is the metric and the values of its qualifiers, joined with ``/``
    (``auc``, ``delta_region/zero/bone``, ``iou_region/gradcam/bone``), each segment in MLflow's
    characters. Records whose names clash (the same values under different qualifiers, values
    equal once cleaned, or a name in ``reserved``) are named with their fields instead
    (``m/saliency-x/region-y``); clashes left then get a digest of the record's qualifiers, and
    exact duplicates their position (``/2``). The result is checked to be unique.

    Raises:
        ValueError: Names still clash (not expected; a bug).
    """
    taken = set(reserved)
    quals = {i: qualifiers(r) for i, r in enumerate(records)}
    names = {
        i: "/".join([_part(records[i].get("metric")), *(_part(v) for _, v in q)])
        for i, q in quals.items()
    }
    names = {i: _short(n) for i, n in names.items()}
    for i in sorted(_clashes(names, taken)):
        keyed = [f"{_part(k)}-{_part(v)}" for k, v in quals[i]]
        names[i] = _short("/".join([_part(records[i].get("metric")), *keyed]))
    for i in sorted(_clashes(names, taken)):
        raw = json.dumps([records[i].get("metric"), quals[i]], sort_keys=True)
        digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
        names[i] = _short(f"{names[i]}/{digest}")
    seen: dict[str, int] = {}
    for i in sorted(_clashes(names, taken)):
        seen[names[i]] = seen.get(names[i], 0) + 1
        if seen[names[i]] > 1:
            names[i] = _short(f"{names[i]}/{seen[names[i]]}")
    if _clashes(names, taken):
        raise ValueError(f"metric names still clash: {sorted(names.values())}")
    return names


def redact_uri(uri: str) -> str:
    """``uri`` without its credentials (``https://***@host/``), for messages."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<tracking URI>"
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


def scrub_text(text: str, uri: str, run_dir: Path | None = None) -> str:
    """One line of ``text`` with the URI's credentials and the user's folders taken out.

    The URI (and its password, if it has one of at least 4 characters) becomes the redacted
    URI; the run folder becomes its name; the home folder ``~``.
    """
    line = " ".join(str(text).split())
    if uri:
        line = line.replace(uri, redact_uri(uri))
        try:
            parts = urlsplit(uri)
            secret = parts.password
            userinfo = parts.netloc.rpartition("@")[0]
        except ValueError:
            secret, userinfo = None, ""
        if userinfo:
            line = line.replace(userinfo + "@", "***@")
        if secret and len(secret) >= 4:
            line = line.replace(secret, "***")
    if run_dir is not None and str(run_dir) not in ("", "/", "."):
        line = line.replace(str(run_dir), run_dir.name)
    home = str(Path.home())
    if home not in ("", "/"):
        line = line.replace(home, "~")
    return line
