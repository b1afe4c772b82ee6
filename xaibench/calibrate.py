"""``xaibench calibrate TASK``: known-answer calibration of saliency methods on the phantom.

Each backbone x strategy of the configuration is trained twice on the phantom
(``docs/calibration.md``):

* ``primary``: the class signal planted in the task's primary region (bone): the phantom's
  defaults ``bone_signal=True, shortcut=0``; the decoy is the marker box (``shortcut``);
* ``marker``: the signal planted in a lead marker outside the body (``shortcut=1,
  bone_signal=False``); the decoy is the primary region.

Both are ordinary runs (:func:`xaibench.engine.benchmark.run_benchmark`, resumable) in
``<out>/runs/planted_<region>``; every saliency method is scored on both regions by every
localisation metric of the configuration, and Δ on both regions tells whether the model
learned the planted signal. The decision rule is :mod:`xaibench.trust`; this module builds the
two configurations, runs them and writes ``<out>/calibration.json`` and
``<out>/calibration.md``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from xaibench import __version__
from xaibench.config import RunConfig, resolve_config
from xaibench.errors import XaibenchError
from xaibench.escape import markdown_text
from xaibench.paths import is_temporary, write_whole
from xaibench.plugins import Components
from xaibench.progress import NullProgress, Progress
from xaibench.trust import (
    CALIBRATION_VERSION,
    Training,
    calibration_entries,
    check_calibration,
    method_badges,
)

#: The phantom region that holds the marker (the decoy of the primary training).
MARKER_REGION = "shortcut"
#: The region the phantom can plant its class signal in (``bone_signal``).
PHANTOM_SIGNAL_REGION = "bone"
#: Sub-folder of ``--out`` holding the two runs.
RUNS_FOLDER = "runs"
CALIBRATION_FILE = "calibration.json"
SUMMARY_FILE = "calibration.md"

#: Phantom options of the two trainings.
PLANTED_OPTIONS: dict[str, dict[str, Any]] = {
    "primary": {"bone_signal": True, "shortcut": 0.0},
    "marker": {"bone_signal": False, "shortcut": 1.0},
}

#: What ``calibrate`` changes in the task's defaults (before --grid, --config and options):
#: one CNN fully fine-tuned (``test_resnet.random``, ``full``) on a small phantom (400 images
#: at 64 px) for 8 epochs, one in-distribution perturbation, no sanity checks, galleries or
#: drift maps, and the ``random`` control beside the task's methods. The task's own grid
#: (``--grid quick``: tiny random ViTs, linear probe / last block / LoRA) mostly does not
#: learn the phantom's bone signal at this size and budget (AUC 0.43-0.56 for last block and
#: LoRA, 0.52-0.80 for linear probes), so its trainings come out inconclusive.
CALIBRATE_DEFAULTS: dict[str, Any] = {
    "dataset": {"name": "phantom", "options": {"n_images": 400, "image_size": 64}},
    "backbones": [{"name": "test_resnet.random", "options": {"img_size": 64}}],
    "strategies": ["full"],
    "perturbations": ["blur"],
    "sanity": {"images": 0},
    "gallery_images": 0,
    "analysis": {"drift_grid": 0},
    "train": {"epochs": 8},
}


def calibrate_defaults(task_defaults: Mapping[str, Any]) -> dict[str, Any]:
    """:data:`CALIBRATE_DEFAULTS`, plus the ``random`` control beside the task's methods."""
    saliency = list(task_defaults.get("saliency", []))
    if "random" not in saliency:
        saliency.append("random")
    return {**CALIBRATE_DEFAULTS, "saliency": saliency}


@dataclass(frozen=True)
class Plan:
    """The two trainings' configurations and where their runs go."""

    primary_region: str
    configs: dict[str, RunConfig]
    run_dirs: dict[str, Path]

    def regions(self, name: str) -> tuple[str, str]:
        """``(planted, decoy)`` of training ``name``."""
        if name == "primary":
            return self.primary_region, MARKER_REGION
        return MARKER_REGION, self.primary_region

    def config_hash(self) -> str:
        """SHA-256 of both trainings' configuration hashes."""
        blob = json.dumps({n: c.config_hash() for n, c in self.configs.items()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


def plan(config: RunConfig, primary_region: str | None, out_dir: Path) -> Plan:
    """The two trainings of ``config`` (a resolved run configuration of the task).

    The dataset becomes the phantom (its options kept, the planted signal set), both regions
    are explained and perturbed (no complement), and ``auc`` and ``delta_region`` are added to
    the metrics when missing: they tell whether a model learned the planted signal.

    Raises:
        XaibenchError: The task's primary region is not one the phantom can plant a signal in.
    """
    if primary_region != PHANTOM_SIGNAL_REGION:
        raise XaibenchError(
            f"calibrate plants the class signal with the phantom, which can carry it only in "
            f"{PHANTOM_SIGNAL_REGION!r}; task {config.task!r} has primary region "
            f"{primary_region!r}"
        )
    base = config.model_dump(mode="json")
    options = dict(base["dataset"]["options"]) if base["dataset"]["name"] == "phantom" else {}
    metrics = list(base["metrics"])
    names = {m["name"] for m in metrics}
    metrics += [{"name": m} for m in ("auc", "delta_region") if m not in names]
    regions = [primary_region, MARKER_REGION]
    configs = {}
    for name, planted in PLANTED_OPTIONS.items():
        layer = {
            "dataset": {"name": "phantom", "options": {**options, **planted}, "label": None},
            "metrics": metrics,
            "explain_regions": regions,
            "perturb_regions": regions,
            "complement_regions": [],
        }
        configs[name] = resolve_config({**base, **layer})
    run_dirs = {
        name: out_dir
        / RUNS_FOLDER
        / f"planted_{primary_region if name == 'primary' else MARKER_REGION}"
        for name in configs
    }
    return Plan(primary_region, configs, run_dirs)


def check_out_dir(out_dir: Path) -> None:
    """Refuse an ``--out`` that is a file, or a folder holding anything but a calibration.

    Raises:
        XaibenchError: One line naming the folder.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise XaibenchError(f"--out {str(out_dir)!r} is not a folder")
    if not out_dir.is_dir():
        return
    ours = {CALIBRATION_FILE, SUMMARY_FILE, RUNS_FOLDER}
    other = sorted(
        p.name for p in out_dir.iterdir() if p.name not in ours and not is_temporary(p.name)
    )
    if other:
        raise XaibenchError(
            f"--out {str(out_dir)!r} holds files that are not a calibration's "
            f"({', '.join(other[:3])}{', ...' if len(other) > 3 else ''}); choose another folder"
        )
    runs = out_dir / RUNS_FOLDER
    if runs.is_symlink() or (runs.exists() and not runs.is_dir()):
        raise XaibenchError(f"{runs}: not a folder of calibration runs")


@dataclass(frozen=True)
class CalibrationOutcome:
    """What a calibration wrote: its document and whether every cell ran."""

    out_dir: Path
    document: dict[str, Any]
    failed_cells: int


def run_calibration(
    config: RunConfig,
    components: Components,
    out_dir: Path,
    progress: Progress | None = None,
) -> CalibrationOutcome:
    """Train both trainings, decide the badges, write ``calibration.json`` and its summary.

    Raises:
        XaibenchError: As :func:`plan`, :func:`check_out_dir` and
            :func:`xaibench.engine.benchmark.run_benchmark`.
    """
    from xaibench.engine.benchmark import run_benchmark
    from xaibench.report.run_files import load_run

    progress = progress or NullProgress()
    task = components.tasks.create(config.task)
    primary = (list(task.regions_of_interest) or [None])[0]
    check_out_dir(out_dir)
    the_plan = plan(config, primary, out_dir)
    trainings = []
    failed = 0
    for name, run_config in the_plan.configs.items():
        planted, decoy = the_plan.regions(name)
        progress.log(f"calibrate: training {name!r}, signal planted in {planted!r}")
        outcome = run_benchmark(run_config, components, the_plan.run_dirs[name], progress)
        failed += len(outcome.failed)
        run = load_run(the_plan.run_dirs[name])
        trainings.append(Training(name, planted, decoy, run.records, run.explanations))
    resamples = config.analysis.bootstrap or 1000
    document = calibration_document(the_plan, trainings, resamples=resamples, seed=config.seeds[0])
    write_whole(out_dir / CALIBRATION_FILE, json.dumps(document, indent=2, allow_nan=False) + "\n")
    write_whole(out_dir / SUMMARY_FILE, summary_markdown(document))
    return CalibrationOutcome(out_dir, document, failed)


def calibration_document(
    the_plan: Plan, trainings: Sequence[Training], *, resamples: int, seed: int, level: float = 0.95
) -> dict[str, Any]:
    """The ``calibration.json`` document (``docs/calibration.md``)."""
    entries = calibration_entries(trainings, level=level, resamples=resamples, seed=seed)
    methods = [
        {"architecture": a, "strategy": s, "saliency": m, **badge}
        for (a, s, m), badge in method_badges(entries).items()
    ]
    any_config = next(iter(the_plan.configs.values()))
    document = {
        "calibration_version": CALIBRATION_VERSION,
        "xaibench_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "task": any_config.task,
        "seeds": list(any_config.seeds),
        "config_hash": the_plan.config_hash(),
        "rule": {
            "level": level,
            "resamples": resamples,
            "bootstrap_seed": seed,
            "learned": "AUC lower bound > 0.5 and Δ (specific when recorded, else raw) on the "
            "planted region excludes 0 for some perturbation, in every seed",
            "identified": "CI of normalised(planted) - normalised(decoy) > 0 and CI of "
            "normalised(planted) > 0 (paired image bootstrap, per-image means over seeds)",
        },
        "trainings": [
            {
                "name": name,
                "planted": the_plan.regions(name)[0],
                "decoy": the_plan.regions(name)[1],
                "run_dir": f"{RUNS_FOLDER}/{the_plan.run_dirs[name].name}",
                "config_hash": config.config_hash(),
                "dataset_options": dict(config.dataset.options),
            }
            for name, config in the_plan.configs.items()
        ],
        "entries": entries,
        "methods": methods,
    }
    check_calibration(document, "calibration.json")  # what we write, we can read
    return json.loads(json.dumps(document, allow_nan=False))


def _score(part: dict[str, Any] | None, key: str) -> str:
    if not part or part.get(key) is None:
        return "–"  # noqa: RUF001 (en dash: no number)
    number = part.get("normalised", part.get("value"))
    low, high = part.get("ci") or [None, None]
    if low is None or high is None:
        return f"{number:.2f}"
    return f"{number:.2f} [{low:.2f}, {high:.2f}]"


def summary_markdown(document: Mapping[str, Any]) -> str:
    """A short Markdown summary: the badge per method, then each method x metric's numbers.

    Every name from the configuration is escaped (:func:`xaibench.escape.markdown_text`).
    """
    esc = markdown_text
    trainings = [t["name"] for t in document["trainings"]]
    lines = [
        f"# Calibration of saliency methods: task {esc(document['task'])}",
        "",
        f"xaibench {esc(document['xaibench_version'])}, seeds "
        f"{esc(', '.join(str(s) for s in document['seeds']))}, calibration version "
        f"{esc(document['calibration_version'])}. Trainings: "
        + "; ".join(
            f"{esc(t['name'])} (signal in {esc(t['planted'])}, decoy {esc(t['decoy'])})"
            for t in document["trainings"]
        )
        + ".",
        "",
        "## Badges per method",
        "",
        "| architecture | strategy | saliency | badge | trusted under |",
        "|---|---|---|---|---|",
    ]
    for m in document["methods"]:
        trusted = [k for k, b in m["metrics"].items() if b == "trusted"]
        lines.append(
            f"| {esc(m['architecture'])} | {esc(m['strategy'])} | {esc(m['saliency'])} | "
            f"{esc(m['badge'])} | {esc(', '.join(trusted) or '–')} |"  # noqa: RUF001
        )
    head = " | ".join(f"{esc(t)}: planted | {esc(t)}: decoy | {esc(t)}: outcome" for t in trainings)
    lines += [
        "",
        "## Normalised scores (planted vs decoy region, 95% CI)",
        "",
        f"| architecture | strategy | saliency | metric | {head} | badge | reason |",
        "|" + "---|" * (6 + 3 * len(trainings)),
    ]
    for e in document["entries"]:
        cells = []
        for t in trainings:
            part = (e.get("trainings") or {}).get(t)
            cells += [
                esc(_score(part and part.get("planted"), "normalised")),
                esc(_score(part and part.get("decoy"), "normalised")),
                esc(part["outcome"] if part else "not run"),
            ]
        lines.append(
            f"| {esc(e['architecture'])} | {esc(e['strategy'])} | {esc(e['saliency'])} | "
            f"{esc(e['metric'])} | {' | '.join(cells)} | {esc(e['badge'])} | "
            f"{esc(e['reason'])} |"
        )
    return "\n".join(lines) + "\n"
