"""Known-answer trust badges of saliency methods: the decision rule, its file, its attachment.

``xaibench calibrate`` (:mod:`xaibench.calibrate`) trains each architecture x strategy on the
phantom twice: once with the class signal planted in the task's primary region (bone), once in
a marker outside it (the phantom's ``shortcut`` box). In each training the *planted* region is
where the signal is and the *decoy* is the other one. This module holds what follows from the
two runs' records and per-image explanation scores, as pure functions (no model runs here):

* :func:`learned_signal`: did a cell's model learn the planted signal at all? Its AUC's lower
  95% bound must exceed 0.5, and Δ on the planted region must exclude 0 for at least one
  perturbation (the specific Δ of contract C2 when recorded, else the raw Δ). A training in
  which some seed's model did not learn is ``inconclusive``: a method is never badged on a
  model that learned nothing.
* :func:`assess_training`: per saliency method x localisation metric, the chance-normalised
  score (contract C1: ``(value - chance) / (best - chance)`` on the means over images) on the
  planted and on the decoy region, and their difference, with paired image-bootstrap CIs.
  Seeds are combined per image (the mean over seeds of each image's value and chance: the
  test images are the same in every seed), then images are resampled, the same draw for both
  regions (``scipy.stats.bootstrap``, ``paired=True``, percentile intervals). The training
  *identifies* the planted region when the difference's CI lies above 0 and the planted
  region's normalised score's CI lies above 0 (it beats chance); else it *misses* it.
* :func:`decide`: ``trusted`` when both trainings identify their planted region, ``not
  trusted`` when a training in which the model learned the signal misses it, ``untested``
  otherwise (a training inconclusive, a metric without a chance level, nothing calibrated).

:func:`method_badges` condenses the per-metric badges of a method to the badge of C5 (per
backbone architecture, strategy and saliency method): ``trusted`` when it is trusted under at
least one localisation metric (the metrics are named with it), ``not trusted`` when it was
tested and trusted under none, ``untested`` when no metric was conclusive.
:func:`trust_rows` attaches them to a run's cells (``results.json``'s top-level ``trust``).
The file format is :func:`read_calibration` / :data:`CALIBRATION_VERSION`
(``docs/calibration.md``).
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xaibench.errors import XaibenchError
from xaibench.paths import read_json

#: Version of the ``calibration.json`` format; readers accept the versions in
#: :data:`READABLE_CALIBRATIONS`.
CALIBRATION_VERSION = "1.0"
READABLE_CALIBRATIONS = ("1.0",)

TRUSTED = "trusted"
NOT_TRUSTED = "not trusted"
UNTESTED = "untested"
BADGES = (TRUSTED, NOT_TRUSTED, UNTESTED)

#: Outcomes of one training for one method x metric.
IDENTIFIED = "identified"
MISSED = "missed"
INCONCLUSIVE = "inconclusive"
OUTCOMES = (IDENTIFIED, MISSED, INCONCLUSIVE)

#: The two trainings a method must pass: signal in the primary region, signal in the marker.
TRAINING_NAMES = ("primary", "marker")

CellKey = tuple[str, str]  # (backbone architecture, strategy)


def architecture(backbone: str) -> str:
    """The architecture of a backbone name: the part before its ``.weights_tag``.

    ``vit_small_patch14_dinov2.lvd142m`` -> ``vit_small_patch14_dinov2``,
    ``timm:resnet18.a1_in1k`` -> ``timm:resnet18``. A model named by a hub or folder path
    (a ``/`` in its last ``:`` part, e.g. ``open_clip:hf-hub:org/repo``) has no weights tag:
    the whole name is its architecture.
    """
    prefix, sep, model = backbone.rpartition(":")
    if "/" in model:
        return backbone
    return prefix + sep + model.partition(".")[0]


@dataclass(frozen=True)
class Training:
    """One calibration training: its records and per-image explanation scores.

    Attributes:
        name: ``primary`` (signal in the task's primary region) or ``marker``.
        planted: The region that carries the class signal.
        decoy: The region that carries none.
        records: The run's records (``results.json``).
        explanations: The run's per-image explanation scores (``explanations.csv``), with the
            ``chance`` column of contract C1.
    """

    name: str
    planted: str
    decoy: str
    records: Sequence[dict[str, Any]]
    explanations: pd.DataFrame


def _interval(low: Any, high: Any) -> list[float] | None:
    if low is None or high is None:
        return None
    return [float(low), float(high)]


def learned_signal(
    records: Iterable[dict[str, Any]], backbone: str, strategy: str, seed: int, planted: str
) -> tuple[bool, str, dict[str, Any]]:
    """Whether the model of one cell learned the signal planted in ``planted``.

    Learned means: the AUC's lower 95% bound is above 0.5, and for at least one perturbation
    the lower bound of Δ on ``planted`` is above 0 (the specific Δ, ``details.specific_ci``,
    when recorded, else the raw Δ's ``ci_low``).

    Returns:
        ``(learned, reason, numbers)``: ``reason`` says what failed (empty when learned);
        ``numbers`` holds ``auc`` and ``auc_ci``, and per perturbation Δ and its CI.
    """
    auc: dict[str, Any] | None = None
    deltas: dict[str, dict[str, Any]] = {}
    for rec in records:
        if (rec["backbone"], rec["strategy"], rec["seed"]) != (backbone, strategy, seed):
            continue
        if rec.get("status") != "ok" or rec.get("value") is None:
            continue
        if rec["metric"] == "auc" and rec.get("category") == "performance":
            auc = rec
        elif rec["metric"] == "delta_region" and rec.get("region") == planted:
            details = rec.get("details") or {}
            specific = details.get("specific")
            if specific is not None and details.get("specific_ci") is not None:
                low, high = details["specific_ci"]
                deltas[rec["perturbation"]] = {
                    "kind": "specific", "value": specific, "ci": _interval(low, high),
                }  # fmt: skip
            else:
                deltas[rec["perturbation"]] = {
                    "kind": "raw",
                    "value": rec["value"],
                    "ci": _interval(rec.get("ci_low"), rec.get("ci_high")),
                }
    numbers: dict[str, Any] = {
        "auc": auc["value"] if auc else None,
        "auc_ci": _interval(auc.get("ci_low"), auc.get("ci_high")) if auc else None,
        "delta": deltas,
    }
    if auc is None:
        return False, "no AUC recorded", numbers
    if numbers["auc_ci"] is None or numbers["auc_ci"][0] <= 0.5:
        return False, f"AUC {auc['value']:.3f} does not exclude chance (0.5)", numbers
    if not deltas:
        return False, f"no Δ on {planted} recorded (give a perturbation)", numbers
    if not any(d["ci"] is not None and d["ci"][0] > 0 for d in deltas.values()):
        shown = ", ".join(f"{d['kind']} Δ {p} {d['value']:.3f}" for p, d in deltas.items())
        return False, f"Δ on {planted} does not exclude 0 ({shown})", numbers
    return True, "", numbers


def _normalised(value: np.ndarray, chance: np.ndarray, best: float, axis: int) -> np.ndarray:
    """``(mean value - mean chance) / (best - mean chance)`` (C1's normalised score)."""
    v, c = value.mean(axis=axis), chance.mean(axis=axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray((v - c) / (best - c))


def _statistic(
    best: float, vp: np.ndarray, cp: np.ndarray, vd: np.ndarray, cd: np.ndarray, axis: int = -1
) -> np.ndarray:
    """Normalised score on the planted region, on the decoy, and their difference."""
    planted = _normalised(vp, cp, best, axis)
    decoy = _normalised(vd, cd, best, axis)
    return np.stack([planted, decoy, planted - decoy])


def _per_image(
    frame: pd.DataFrame, regions: tuple[str, str], seeds: Sequence[int]
) -> tuple[pd.DataFrame, str]:
    """Per test image: the mean over ``seeds`` of value and chance on each region.

    Only images with a defined value and chance on both regions in every seed are kept.
    """
    frame = frame[frame["region"].isin(regions) & frame["seed"].isin(seeds)]
    wide = frame.pivot_table(
        index="sample_id", columns=["seed", "region"], values=["value", "chance"], aggfunc="first"
    )
    wanted = pd.MultiIndex.from_tuples(
        [(q, s, r) for q in ("value", "chance") for s in seeds for r in regions]
    )
    wide = wide.reindex(columns=wanted).dropna()
    dropped = frame["sample_id"].nunique() - len(wide)
    note = f"{dropped} image(s) without a defined value on both regions left out" if dropped else ""
    out = pd.DataFrame(index=wide.index)
    for q in ("value", "chance"):
        for r in regions:
            out[f"{q} {r}"] = wide.loc[:, [(q, s, r) for s in seeds]].mean(axis=1)
    return out, note


def _seed_records(
    records: Iterable[dict[str, Any]], key: tuple[str, str, str, str], region: str
) -> list[dict[str, Any]]:
    """The C1 numbers of the records of one backbone, strategy, saliency, metric and region."""
    rows = []
    for rec in records:
        if (rec["backbone"], rec["strategy"], rec.get("saliency"), rec["metric"]) != key:
            continue
        if rec.get("region") != region or rec.get("status") != "ok":
            continue
        details = rec.get("details") or {}
        rows.append(
            {
                "seed": rec["seed"],
                "value": rec.get("value"),
                "chance": details.get("chance"),
                "normalised": details.get("normalised"),
                "normalised_ci": details.get("normalised_ci"),
                "p_chance": details.get("p_chance"),
            }
        )
    return sorted(rows, key=lambda r: r["seed"])


def _localisation_keys(training: Training) -> list[tuple[str, str, str, str]]:
    """(backbone, strategy, saliency, metric) of the region metrics on the planted region."""
    keys = []
    for rec in training.records:
        if (
            rec.get("category") == "explanation"
            and rec.get("saliency")
            and rec.get("region") == training.planted
        ):
            key = (rec["backbone"], rec["strategy"], rec["saliency"], rec["metric"])
            if key not in keys:
                keys.append(key)
    return keys


def _best(records: Iterable[dict[str, Any]], key: tuple[str, str, str, str]) -> float | None:
    for rec in records:
        if (rec["backbone"], rec["strategy"], rec.get("saliency"), rec["metric"]) == key:
            best = (rec.get("details") or {}).get("best")
            if best is not None:
                return float(best)
    return None


def assess_training(
    training: Training, *, level: float = 0.95, resamples: int = 1000, seed: int = 0
) -> dict[tuple[str, str, str, str], dict[str, Any]]:
    """Per backbone, strategy, saliency and metric: does the score find the planted region?

    Args:
        training: The training's records and per-image scores.
        level: Confidence level of the intervals.
        resamples: Bootstrap resamples.
        seed: Seed of the bootstrap generator.

    Returns:
        Per key, a dict with ``outcome`` (``identified``, ``missed``, ``inconclusive``),
        ``reason``, ``seeds``, ``images``, ``planted`` / ``decoy`` (normalised score and CI,
        combined over seeds), ``difference`` (planted minus decoy, with CI), ``per_seed``
        (the C1 numbers of each seed's records on both regions) and ``learned`` (per seed:
        AUC and Δ on the planted region).
    """
    from scipy import stats

    out: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    frame = training.explanations
    has_chance = "chance" in frame.columns
    if has_chance:
        frame = frame.assign(
            value=pd.to_numeric(frame["value"], errors="coerce"),
            chance=pd.to_numeric(frame["chance"], errors="coerce"),
        )
    seeds_of: dict[tuple[str, str], list[int]] = {}
    for rec in training.records:
        if rec.get("category") == "performance":
            seeds_of.setdefault((rec["backbone"], rec["strategy"]), [])
            if rec["seed"] not in seeds_of[(rec["backbone"], rec["strategy"])]:
                seeds_of[(rec["backbone"], rec["strategy"])].append(rec["seed"])
    for key in _localisation_keys(training):
        backbone, strategy, saliency, metric = key
        seeds = sorted(
            seeds_of.get((backbone, strategy), [])
            or {r["seed"] for r in training.records if r["backbone"] == backbone}
        )
        result: dict[str, Any] = {
            "outcome": INCONCLUSIVE, "reason": "", "seeds": seeds, "images": 0,
            "planted": None, "decoy": None, "difference": None,
            "per_seed": {
                "planted": _seed_records(training.records, key, training.planted),
                "decoy": _seed_records(training.records, key, training.decoy),
            },
            "learned": {},
        }  # fmt: skip
        out[key] = result
        failures = []
        for s in seeds:
            ok, why, numbers = learned_signal(
                training.records, backbone, strategy, s, training.planted
            )
            result["learned"][str(s)] = {"learned": ok, **numbers}
            if not ok:
                failures.append(f"seed {s}: {why}")
        if failures:
            result["reason"] = (
                "the model did not learn the planted signal (" + "; ".join(failures) + ")"
            )
            continue
        best = _best(training.records, key)
        if best is None or not has_chance:
            result["reason"] = f"{metric} has no chance level recorded (no normalised score)"
            continue
        chosen = frame[
            (frame["backbone"] == backbone)
            & (frame["strategy"] == strategy)
            & (frame["saliency"] == saliency)
            & (frame["metric"] == metric)
        ]
        images, note = _per_image(chosen, (training.planted, training.decoy), seeds)
        result["images"] = len(images)
        if len(images) < 2:
            result["reason"] = f"fewer than 2 images with scores on both regions ({note or 0})"
            continue
        columns = [
            images[f"{q} {r}"].to_numpy(dtype=float)
            for r in (training.planted, training.decoy)
            for q in ("value", "chance")
        ]
        point = _statistic(best, *columns)
        if not np.all(np.isfinite(point)):
            result["reason"] = f"the chance level of {metric} equals its best value"
            continue
        boot = stats.bootstrap(
            tuple(columns),
            functools.partial(_statistic, best),
            paired=True,
            vectorized=True,
            method="percentile",
            n_resamples=resamples,
            confidence_level=level,
            rng=np.random.default_rng(seed),
        )
        low, high = boot.confidence_interval
        names = ("planted", "decoy", "difference")
        for i, name in enumerate(names):
            result[name] = {
                "normalised" if name != "difference" else "value": float(point[i]),
                "ci": [_finite(low[i]), _finite(high[i])],
            }
        identified = low[2] > 0 and low[0] > 0
        result["outcome"] = IDENTIFIED if identified else MISSED
        if identified:
            result["reason"] = note
        elif not low[0] > 0:
            result["reason"] = f"the score on {training.planted} does not beat chance"
        else:
            result["reason"] = (
                f"the score on {training.planted} does not beat the score on {training.decoy}"
            )
    return out


def _finite(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def decide(outcomes: Mapping[str, dict[str, Any] | None]) -> tuple[str, str]:
    """The badge of one method x metric from its trainings' outcomes (None: not run).

    Returns:
        ``(badge, reason)``: ``trusted`` when every training identified its planted region,
        ``not trusted`` when a conclusive training missed it, else ``untested``.
    """
    missed = [n for n, o in outcomes.items() if o is not None and o["outcome"] == MISSED]
    if missed:
        reasons = "; ".join(f"{n}: {outcomes[n]['reason']}" for n in missed)  # type: ignore[index]
        return NOT_TRUSTED, reasons
    pending = [n for n, o in outcomes.items() if o is None or o["outcome"] != IDENTIFIED]
    if pending:
        reasons = "; ".join(
            f"{n}: " + ("not calibrated" if outcomes[n] is None else outcomes[n]["reason"])  # type: ignore[index]
            for n in pending
        )
        return UNTESTED, reasons
    return TRUSTED, "every training: the planted region beats the decoy and chance"


def calibration_entries(
    trainings: Sequence[Training], *, level: float = 0.95, resamples: int = 1000, seed: int = 0
) -> list[dict[str, Any]]:
    """One entry per (architecture, strategy, saliency, metric) seen in any training.

    Both trainings of :data:`TRAINING_NAMES` are needed for ``trusted``: one not given is
    ``not calibrated``.

    Raises:
        XaibenchError: Two backbones of one training share an architecture (the badges are
            per architecture, so each may be calibrated once).
    """
    assessed = {
        t.name: assess_training(t, level=level, resamples=resamples, seed=seed) for t in trainings
    }
    for t in trainings:
        backbones = sorted({str(r["backbone"]) for r in t.records})
        seen: dict[str, str] = {}
        for b in backbones:
            if architecture(b) in seen:
                raise XaibenchError(
                    f"backbones {seen[architecture(b)]!r} and {b!r} share the architecture "
                    f"{architecture(b)!r}; calibrate one backbone per architecture"
                )
            seen[architecture(b)] = b
    keys: list[tuple[str, str, str, str]] = []
    for results in assessed.values():
        keys.extend(k for k in results if k not in keys)
    entries = []
    for backbone, strategy, saliency, metric in keys:
        per_training = {
            name: assessed[name].get((backbone, strategy, saliency, metric))
            if name in assessed
            else None
            for name in dict.fromkeys([*TRAINING_NAMES, *assessed])
        }
        badge, reason = decide(per_training)
        entries.append(
            {
                "architecture": architecture(backbone),
                "backbone": backbone,
                "strategy": strategy,
                "saliency": saliency,
                "metric": metric,
                "badge": badge,
                "reason": reason,
                "trainings": per_training,
            }
        )
    return entries


def method_badges(entries: Iterable[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Per (architecture, strategy, saliency): the C5 badge and the metrics behind it.

    ``trusted`` when trusted under at least one metric, ``not trusted`` when some metric was
    conclusive and none trusted it, else ``untested``.

    Returns:
        Per key: ``badge``, ``metrics`` (metric -> its badge).
    """
    grouped: dict[tuple[str, str, str], dict[str, str]] = {}
    for e in entries:
        key = (e["architecture"], e["strategy"], e["saliency"])
        grouped.setdefault(key, {})[e["metric"]] = e["badge"]
    out = {}
    for key, metrics in grouped.items():
        values = set(metrics.values())
        badge = TRUSTED if TRUSTED in values else NOT_TRUSTED if NOT_TRUSTED in values else UNTESTED
        out[key] = {"badge": badge, "metrics": metrics}
    return out


# --------------------------------------------------------------------------------------------
# The calibration file
# --------------------------------------------------------------------------------------------


def _text(value: Any) -> bool:
    return isinstance(value, str)


#: Fields of an entry (one method x metric) and of a method badge, and their checks.
_ENTRY = {
    "architecture": _text, "strategy": _text, "saliency": _text, "metric": _text,
    "badge": lambda v: v in BADGES, "reason": _text,
}  # fmt: skip
_METHOD = {
    "architecture": _text, "strategy": _text, "saliency": _text,
    "badge": lambda v: v in BADGES,
    "metrics": lambda v: isinstance(v, dict) and all(b in BADGES for b in v.values()),
}  # fmt: skip


def check_calibration(document: Any, file: Path | str) -> None:
    """Check the shape of a parsed ``calibration.json``.

    Raises:
        XaibenchError: One line naming ``file`` and what is wrong: not an object, an unknown
            ``calibration_version``, ``entries`` or ``methods`` missing or not lists of
            objects, a field missing or of the wrong type, a badge not one of ``trusted``,
            ``not trusted``, ``untested``.
    """
    if not isinstance(document, dict):
        raise XaibenchError(f"{file}: not a calibration file (not a JSON object)")
    version = document.get("calibration_version")
    if version not in READABLE_CALIBRATIONS:
        raise XaibenchError(
            f"{file}: calibration_version {version!r:.40} is not one this xaibench reads "
            f"({', '.join(READABLE_CALIBRATIONS)})"
        )
    for section, spec in (("entries", _ENTRY), ("methods", _METHOD)):
        rows = document.get(section)
        if not isinstance(rows, list):
            raise XaibenchError(f"{file}: {section!r} must be a list")
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise XaibenchError(f"{file}: {section} {i} is not an object")
            for name, check in spec.items():
                if name not in row:
                    raise XaibenchError(f"{file}: {section} {i} has no {name!r}")
                if not check(row[name]):
                    raise XaibenchError(
                        f"{file}: {section} {i}: {name!r} is not valid ({row[name]!r:.40}; "
                        f"badges are {', '.join(BADGES)})"
                        if name in ("badge", "metrics")
                        else f"{file}: {section} {i}: {name!r} must be a string"
                    )


@dataclass(frozen=True)
class Calibration:
    """A calibration file as read: its document, where it came from and its digest."""

    path: Path
    document: dict[str, Any]
    sha256: str

    @property
    def source(self) -> str:
        """``<file name> sha256:<first 12 hex digits>``: which calibration a badge came from."""
        return f"{self.path.name} sha256:{self.sha256[:12]}"

    def badges(self) -> dict[tuple[str, str, str], dict[str, Any]]:
        """Per (architecture, strategy, saliency): ``badge`` and ``metrics``."""
        return {
            (m["architecture"], m["strategy"], m["saliency"]): {
                "badge": m["badge"],
                "metrics": dict(m["metrics"]),
            }
            for m in self.document["methods"]
        }


def read_calibration(path: Path) -> Calibration:
    """Read and check ``calibration.json`` (a file, or a folder holding one).

    Raises:
        XaibenchError: The file is missing, unreadable, not JSON or not a calibration file
            (one line naming it).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "calibration.json"
    if not path.is_file():
        raise XaibenchError(f"{path}: no calibration file there")
    document = read_json(path)
    check_calibration(document, path)
    return Calibration(path, document, hashlib.sha256(path.read_bytes()).hexdigest())


def trust_rows(
    calibration: Calibration,
    cells: Iterable[tuple[str, str, int]],
    saliency: Iterable[str],
) -> list[dict[str, Any]]:
    """The ``trust`` list of a run: one row per cell x saliency method.

    A cell matches a calibration by its backbone's architecture (:func:`architecture`), its
    strategy and the method; whatever is not in the calibration is ``untested``.
    """
    badges = calibration.badges()
    methods = list(dict.fromkeys(saliency))
    rows = []
    for backbone, strategy, seed in cells:
        for method in methods:
            found = badges.get((architecture(backbone), strategy, method))
            rows.append(
                {
                    "backbone": backbone,
                    "strategy": strategy,
                    "seed": seed,
                    "saliency": method,
                    "badge": found["badge"] if found else UNTESTED,
                    "metrics": found["metrics"] if found else {},
                    "source": calibration.source,
                }
            )
    return rows
