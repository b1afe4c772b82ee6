"""The results directory and its versioned schema.

A run directory holds::

    config.yaml              the resolved configuration (replayable with --config)
    environment.json         versions, hardware, seeds, git commit
    results.json             schema_version + provenance + flat records (docs/results-schema.md)
    predictions.csv          per test image: class probabilities, intact and perturbed
    explanations.csv         per test image: explanation scores (IoU per region and method)
    gallery/*.png            best, worst and random test images with each method's maps, per cell
    cells/<cell>__<key>/     per-cell checkpoints (what --resume reads back)
    leaderboard_performance.{md,csv}
    leaderboard_explainability.{md,csv}

Patient ids never leave the dataset: outputs carry only sample ids.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml

from xaibench import __version__, failpoints
from xaibench.config import RunConfig
from xaibench.engine.runner import CellResult, RunData
from xaibench.errors import XaibenchError
from xaibench.escape import to_csv
from xaibench.paths import contained, write_whole
from xaibench.plugins import Components

if TYPE_CHECKING:
    from xaibench.engine.checkpoints import GalleryFile

SCHEMA_VERSION = "1.5"

_LIBRARIES = (
    "torch",
    "torchvision",
    "timm",
    "captum",
    "numpy",
    "scipy",
    "scikit-learn",
    "scikit-image",
    "pandas",
    "pydantic",
    "pluggy",
    "open_clip_torch",
    "peft",
    "quantus",
)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """The commit of the xaibench source tree, when it is a git checkout."""
    source_root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--show-toplevel", "HEAD"],
            cwd=source_root,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.split()
    # Only the checkout xaibench itself lives in: an installed copy inside some other repository
    # (a virtual environment in a project folder) must not report that project's commit.
    if out.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() != source_root:
        return None
    return lines[1]


def cpu_model() -> str | None:
    """The CPU's model name (Linux ``/proc/cpuinfo``, else ``platform.processor()``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def environment(config: RunConfig) -> dict[str, Any]:
    """Versions, hardware, OpenMP settings and seeds, for reproducing a run."""
    import torch

    from xaibench.threads import thread_settings

    return {
        "xaibench_version": __version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "openmp": thread_settings(),
        "device": config.device,
        "precision": config.precision,
        "cpu_model": cpu_model(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_version": torch.version.cuda,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available()
        else [],
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "libraries": {name: _version(name) for name in _LIBRARIES},
        "seeds": {"cells": config.seeds, "split": config.split.seed},
    }


def component_provenance(config: RunConfig, components: Components) -> dict[str, dict[str, Any]]:
    """Which distribution (and version) provided each component the run used."""
    used: dict[str, list[str]] = {
        "tasks": [config.task],
        "datasets": [config.dataset.name],
        "backbones": [r.name for r in config.backbones],
        "strategies": [r.name for r in config.strategies],
        "saliency": [r.name for r in config.saliency],
        "perturbations": [r.name for r in config.perturbations],
        "metrics": [r.name for r in config.metrics],
        "executors": [config.executor.name],
    }
    out: dict[str, dict[str, Any]] = {}
    for kind, names in used.items():
        out[kind] = {}
        for name in names:
            entry = components[kind].get(name)
            cls = entry.load()
            if kind == "tasks":  # a task file's name, citation and version are the instance's
                cls = entry.create()
            out[kind][name] = {
                "plugin": entry.provider.plugin,
                "distribution": entry.provider.distribution,
                "version": entry.provider.version,
                "component_version": getattr(cls, "version", None),
                "display_name": getattr(cls, "display_name", "") or name,
                "citation": getattr(cls, "citation", ""),
            }
    return out


def component_options(config: RunConfig, components: Components) -> dict[str, dict[str, Any]]:
    """Every option of every component the run used, defaults included, by config key.

    The configuration records only the options a user gave; a default that changes between
    versions would otherwise change numbers without a trace in the results.
    """
    from xaibench.engine.grid import create_backbone

    out: dict[str, dict[str, Any]] = {
        "backbones": {r.key: create_backbone(components, r).options() for r in config.backbones}
    }
    for kind, refs in (
        ("strategies", config.strategies),
        ("saliency", config.saliency),
        ("perturbations", config.perturbations),
        ("metrics", config.metrics),
        ("executors", [config.executor]),
    ):
        out[kind] = {r.key: components[kind].create(r.name, r.options).options() for r in refs}
    return out


def _clean(value: Any) -> Any:
    """Make ``value`` strict JSON: NaN/inf become null, numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _task_file(task: Any) -> dict[str, Any]:
    """``{"file": {file, sha256, spec_version}}`` for a user's task file, else {}.

    The file name and hash only, never its folder (a path may hold a user's name). A packaged
    task file (built-in or a plugin's) is identified by its package's version in
    ``components``.
    """
    from xaibench.tasks.file_task import user_task_file

    found = user_task_file(task)
    return {"file": found} if found else {}


def _mask_provenance(dataset: Any) -> dict[str, Any]:
    """``{"mask_provenance": ...}`` when a segmenter made the dataset's masks, else empty."""
    provenance = dataset.mask_provenance
    return {"mask_provenance": provenance} if provenance else {}


def build_document(
    config: RunConfig,
    components: Components,
    data: RunData,
    results: list[CellResult],
    env: dict[str, Any],
    started: datetime,
    analysis: dict[str, list[dict[str, Any]]] | None = None,
    evidence: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The ``results.json`` document; ``analysis`` holds the cross-cell tables.

    ``evidence`` is the evidence-agreement table (:func:`xaibench.evidence.evidence_agreement`
    of every cell's records); computed here when not given.
    """
    records = [rec for r in results for rec in r.records]
    if evidence is None:
        from xaibench.evidence import evidence_agreement

        evidence = evidence_agreement(records)
    return _clean(
        {
            "schema_version": SCHEMA_VERSION,
            "created": started.isoformat(timespec="seconds"),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "config": config.model_dump(mode="json"),
            "config_hash": config.config_hash(),
            "task": {
                "name": config.task,
                "class_names": list(data.task.class_names),
                "positive_class": data.task.positive_class,
                "regions_of_interest": list(data.task.regions_of_interest),
                **_task_file(data.task),
            },
            "dataset": {
                "name": config.dataset.name,
                "options": data.dataset.options(),
                "fingerprint": data.dataset.fingerprint(),
                "split_source": "dataset" if data.split_from_dataset else "patient_split",
                "skipped_regions": data.skipped_regions,
                "splits": data.split_sizes,
                # Only when the task's policy left rows out, so other runs' files are unchanged.
                **({"excluded_rows": data.excluded} if data.excluded else {}),
                # Only for masks a segmenter made (xaibench data masks), likewise.
                **_mask_provenance(data.dataset),
            },
            "environment": env,
            "components": component_provenance(config, components),
            "component_options": component_options(config, components),
            "cells": [
                {
                    "backbone": r.cell.backbone.key,
                    "strategy": r.cell.strategy.key,
                    "seed": r.cell.seed,
                    "random_init": r.random_init,
                    "weights": r.weights,
                    "status": r.status,
                    "error": r.error,
                    "traceback": r.traceback,
                    "seconds": r.seconds,
                    "fit": r.fit,
                }
                for r in results
            ],
            "records": records,
            "analysis": analysis or {},
            "evidence": evidence,
        }
    )


def write_run(
    run_dir: Path,
    document: dict[str, Any],
    results: list[CellResult],
    galleries: list[GalleryFile] | None = None,
) -> None:
    """Write config, environment, results, per-sample tables and galleries into ``run_dir``.

    Every file is written atomically (temporary file, then rename): a run killed while writing
    leaves each file whole, old or new, and the next ``--resume`` rewrites them all.
    ``results.json`` is written last, so its presence means the other files are complete.

    Raises:
        XaibenchError: A file cannot be written (a full disk: the message names it, and no
            temporary file is left), or a gallery entry leads outside ``run_dir/gallery``.
    """
    # Gallery names came from the checkpoints' cell.json: each must stay inside gallery/, and
    # gallery/ inside the run folder (not a symlink someone planted). All are checked before
    # anything is written.
    targets = [
        contained(run_dir, g.entry["file"], source=g.path, what="gallery entry", under="gallery")
        for g in galleries or []
    ]
    write_whole(run_dir / "config.yaml", yaml.safe_dump(document["config"], sort_keys=False))
    write_whole(run_dir / "environment.json", json.dumps(document["environment"], indent=2) + "\n")
    index = []
    for g, target in zip(galleries or [], targets, strict=True):
        try:
            picture = g.path.read_bytes()
        except OSError as exc:
            raise XaibenchError(
                f"{g.path}: gallery image of a checkpoint cannot be read ({exc.strerror or exc})"
            ) from None
        write_whole(target, picture)
        index.append(g.entry)
    if index:
        write_whole(run_dir / "gallery" / "index.json", json.dumps(index, indent=2) + "\n")
    preds = [f for r in results for f in r.predictions]
    expl = [f for r in results for f in r.explanations]
    failpoints.hit("write-run")  # tests: killed between two results files
    # Text cells through to_csv: labels and manifest metadata may start a spreadsheet formula.
    if preds:
        write_whole(run_dir / "predictions.csv", to_csv(pd.concat(preds, ignore_index=True)))
    if expl:
        write_whole(run_dir / "explanations.csv", to_csv(pd.concat(expl, ignore_index=True)))
    for name, rows in document.get("analysis", {}).items():
        if rows:
            write_whole(run_dir / f"{name}.csv", to_csv(pd.DataFrame(rows)))
    write_whole(run_dir / "results.json", json.dumps(document, indent=2, allow_nan=False) + "\n")


def load_records(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Read a results document (file or run directory) and return it with its records.

    Raises:
        XaibenchError: As :func:`xaibench.report.run_files.load_run`.
    """
    from xaibench.report.run_files import load_run

    run = load_run(path)
    return run.document, run.records


def default_run_dir(task: str, root: Path | None = None) -> Path:
    """``./xaibench-runs/<task>-<UTC timestamp>``, made unique if it exists."""
    root = root or Path("xaibench-runs")
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    task = task.replace(":", "-")  # an expanded task, <name>:<finding>
    candidate = root / f"{task}-{stamp}"
    i = 1
    while candidate.exists():
        candidate = root / f"{task}-{stamp}-{i}"
        i += 1
    return candidate
