"""Per-cell checkpoints in the run directory: what makes a killed run resumable.

A full study is hours of compute; a run killed at any point (SIGKILL, a lost node, a full disk)
must restart where it stopped and finish with the results an uninterrupted run gives. Each cell's
complete output — records, per-image predictions and explanation scores, galleries, drift maps —
is written, as soon as the cell finishes, to ``RUN_DIR/cells/<key>/``, where ``<key>`` is a hash
of everything the cell's numbers depend on (:func:`cell_key`). The directory is first written
under a temporary name and then renamed, which is atomic: a checkpoint is either whole or absent.

The results files are always assembled from the checkpoints (also in an uninterrupted run), so a
resumed run and an uninterrupted one go through the same bytes and give identical results.
Nothing here is pickled: JSON, CSV, PNG and ``.npz`` without object arrays, so opening a run
directory someone sent you cannot run code.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xaibench import __version__, failpoints
from xaibench.analysis import CellMaps
from xaibench.config import RunConfig
from xaibench.engine.grid import Cell
from xaibench.engine.runner import CellResult
from xaibench.errors import WriteFailedError, XaibenchError
from xaibench.escape import csv_frame_back, to_csv
from xaibench.paths import TEMPORARY_PREFIX, contained, read_json, temporary_path, write_whole
from xaibench.report.gallery import gallery_filename, region_colours, write_gallery

#: Bumped when the checkpoint layout changes; older checkpoints are then recomputed.
CHECKPOINT_FORMAT = 1

CELLS_DIR = "cells"

#: Run-level state written when a run starts: its study hash (for resuming).
RUN_STATE = "run-state.json"

#: Columns read back as text, where an empty cell means "none" (the intact condition).
_TEXT = (
    "backbone", "strategy", "split", "sample_id", "perturbation", "region", "metric", "saliency",
)  # fmt: skip

#: Configuration fields that do not change a cell's numbers (where it runs, how it is shown).
_NOT_NUMBERS = ("backbones", "strategies", "seeds", "executor", "cache", "cache_dir")


def cell_key(config: RunConfig, cell: Cell, data_fingerprint: str, versions: dict[str, Any]) -> str:
    """A hash of everything a cell's results depend on.

    The cell's backbone, strategy (with options) and seed; every other configuration field that
    changes numbers (data, split, training, saliency, perturbations, metrics, regions, sanity,
    analysis, precision, device); the dataset fingerprint; and the versions of xaibench and of
    every component the run uses. Any change makes a new key, so a stale checkpoint is never
    reused.
    """
    settings = config.hashed_settings()
    for name in _NOT_NUMBERS:
        settings.pop(name, None)
    blob = json.dumps(
        {
            "format": CHECKPOINT_FORMAT,
            "xaibench": __version__,
            "cell": {
                "backbone": cell.backbone.model_dump(mode="json"),
                "strategy": cell.strategy.model_dump(mode="json"),
                "seed": cell.seed,
            },
            "settings": settings,
            "data": data_fingerprint,
            "versions": versions,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _dir_name(cell: Cell, key: str) -> str:
    """``<backbone>__<strategy>__seed<n>__<key[:12]>``, sanitised; the key makes it unique.

    Never starts with ``.`` or ``-``: temporary checkpoints live in the ``.xaibench-tmp-``
    namespace, which no label can reach, and a label like ``.tmp-x`` is never taken for one.
    """
    raw = f"{cell.backbone.key}__{cell.strategy.key}__seed{cell.seed}"
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", raw)[:150]
    if not readable[:1].isalnum():
        readable = f"_{readable}"
    return f"{readable}__{key[:12]}"


def _checkpoint_folder(run_dir: Path, cell: Cell, key: str) -> Path:
    """The checkpoint folder of ``cell``, checked to lie inside ``run_dir/cells``.

    Raises:
        XaibenchError: ``cells`` or the checkpoint folder leads outside (a symlink).
    """
    name = _dir_name(cell, key)
    contained(run_dir, name, source=run_dir, what="checkpoint folder", under=CELLS_DIR)
    return run_dir / CELLS_DIR / name


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


@dataclass(frozen=True)
class GalleryFile:
    """A gallery PNG kept with a checkpoint, and its index entry."""

    path: Path
    entry: dict[str, Any]


def save_cell(run_dir: Path, key: str, result: CellResult) -> Path:
    """Write ``result`` as the checkpoint of its cell, atomically; return its directory.

    Raises:
        XaibenchError: The checkpoint cannot be written (a full disk; nothing is left half
            written then), or its folder leads outside the run folder.
    """
    final = _checkpoint_folder(run_dir, result.cell, key)
    tmp = temporary_path(final)
    try:
        _write_checkpoint(tmp, key, result)
        failpoints.hit("checkpoint")  # tests: killed with a checkpoint half made
        if final.is_symlink():
            final.unlink()
        elif final.exists():  # an older checkpoint of the same key: replace it whole
            shutil.rmtree(final)
        tmp.replace(final)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise WriteFailedError(
            f"checkpoint {final} cannot be written ({exc.strerror or exc}); the cells finished "
            "so far are kept: free some space and run the same command again"
        ) from None
    return final


def _write_checkpoint(tmp: Path, key: str, result: CellResult) -> None:
    """Write the checkpoint of ``result`` into the new folder ``tmp``."""
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    galleries = []
    for g in result.galleries:
        name = gallery_filename(
            result.cell.backbone.key,
            result.cell.strategy.key,
            result.cell.seed,
            f"{g.saliency}__{g.kind}",
        )
        write_gallery(tmp / "gallery" / name, g.images, g.maps, g.masks, g.panel_labels())
        colours = region_colours(list(g.masks or {}))
        galleries.append(
            {
                "backbone": result.cell.backbone.key,
                "strategy": result.cell.strategy.key,
                "seed": result.cell.seed,
                "saliency": g.saliency,
                "kind": g.kind,
                "file": name,
                "sample_ids": list(g.sample_ids),
                "scores": [None if s is None or not np.isfinite(s) else s for s in g.scores],
                "score_metric": g.score_metric,
                "region": g.region,
                "outlines": [{"region": r, "colour": colours[r][0]} for r in g.masks or {}],
                "classes": list(g.classes),
                "called": list(g.called),
                "p_positive": [
                    None if p is None or not np.isfinite(p) else p for p in g.positive_probs
                ],
                "positive_class": g.positive_class,
                "perturbation": g.perturbation,
            }
        )
    drift: dict[str, np.ndarray] = {}
    for method, maps in result.drift_maps.items():
        drift[f"{method}::ids"] = np.asarray(maps.sample_ids, dtype=str)
        drift[f"{method}::maps"] = np.asarray(maps.maps)
    if drift:
        np.savez(tmp / "drift.npz", **drift)  # type: ignore[arg-type]
    if result.predictions:
        (tmp / "predictions.csv").write_text(
            to_csv(pd.concat(result.predictions, ignore_index=True))
        )
    if result.explanations:
        (tmp / "explanations.csv").write_text(
            to_csv(pd.concat(result.explanations, ignore_index=True))
        )
    document = {
        "format": CHECKPOINT_FORMAT,
        "key": key,
        "cell": {
            "backbone": result.cell.backbone.model_dump(mode="json"),
            "strategy": result.cell.strategy.model_dump(mode="json"),
            "seed": result.cell.seed,
        },
        "status": result.status,
        "error": result.error,
        "traceback": result.traceback,
        "random_init": result.random_init,
        "weights": result.weights,
        "seconds": result.seconds,
        "fit": result.fit,
        "records": result.records,
        "galleries": galleries,
        "drift_methods": list(result.drift_maps),
    }
    # allow_nan: records may hold NaN inside details; JSON's NaN literal reads back exactly
    (tmp / "cell.json").write_text(json.dumps(document, default=_json_default) + "\n")


def _read_frame(path: Path) -> list[pd.DataFrame]:
    if not path.is_file():
        return []
    frame = pd.read_csv(
        path,
        keep_default_na=False,
        na_values={"value": [""]},
        dtype=dict.fromkeys(_TEXT, str),
    )
    for column in _TEXT:
        if column in frame:
            frame[column] = frame[column].fillna("")
    return [csv_frame_back(frame, _TEXT)]


def _inside(folder: Path, name: str) -> Path:
    """The file ``name`` of a checkpoint folder, refused if it leads out (a planted symlink)."""
    return contained(folder, name, source=folder, what="checkpoint file")


def _read_document(folder: Path, key: str) -> dict[str, Any] | None:
    """The parsed ``cell.json`` of a checkpoint folder; None when absent or of another key."""
    file = _inside(folder, "cell.json")
    if not file.is_file():
        return None
    try:
        document = read_json(file)
    except XaibenchError as exc:
        raise XaibenchError(f"{exc}; delete {folder} to recompute the cell") from None
    if not isinstance(document, dict):
        raise XaibenchError(f"{file}: not a checkpoint; delete {folder} to recompute the cell")
    if document.get("format") != CHECKPOINT_FORMAT or document.get("key") != key:
        return None
    return document


def _objects(value: Any, what: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ValueError(f"{what} is not a list of objects")
    return value


def load_cell(run_dir: Path, cell: Cell, key: str) -> CellResult | None:
    """The checkpointed result of ``cell`` under ``key``, or None when there is none.

    Raises:
        XaibenchError: A checkpoint exists but cannot be read, or its folder leads outside the
            run folder (the message names it; delete the directory to recompute the cell).
    """
    folder = _checkpoint_folder(run_dir, cell, key)
    document = _read_document(folder, key)
    if document is None:
        return None
    try:
        result = CellResult(cell)
        result.status = document["status"]
        result.error = document["error"]
        result.traceback = document["traceback"]
        result.random_init = document["random_init"]
        result.weights = document["weights"]
        result.seconds = document["seconds"]
        result.fit = document["fit"]
        result.records = _objects(document["records"], "records")
        result.predictions = _read_frame(_inside(folder, "predictions.csv"))
        result.explanations = _read_frame(_inside(folder, "explanations.csv"))
        methods = document["drift_methods"]
        if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
            raise ValueError("drift_methods is not a list of names")
        if methods:
            with np.load(_inside(folder, "drift.npz"), allow_pickle=False) as arrays:
                for method in methods:
                    ids = tuple(str(s) for s in arrays[f"{method}::ids"])
                    result.drift_maps[method] = CellMaps(ids, arrays[f"{method}::maps"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise XaibenchError(
            f"checkpoint {folder} is unreadable ({exc}); delete it to recompute the cell"
        ) from None
    return result


def checkpoint_galleries(run_dir: Path, cell: Cell, key: str) -> list[GalleryFile]:
    """The gallery PNGs of a cell's checkpoint, with their index entries.

    Raises:
        XaibenchError: ``cell.json`` is unreadable, or names a gallery file that is not a
            plain name inside the checkpoint's ``gallery`` folder.
    """
    folder = _checkpoint_folder(run_dir, cell, key)
    document = _read_document(folder, key)
    if document is None:
        return []
    file = folder / "cell.json"
    try:
        entries = _objects(document.get("galleries", []), "galleries")
    except ValueError as exc:
        raise XaibenchError(f"{file}: {exc}; delete {folder} to recompute the cell") from None
    return [
        GalleryFile(
            contained(folder, e.get("file"), source=file, what="gallery entry", under="gallery"),
            e,
        )
        for e in entries
    ]


def checkpoint_files(run_dir: Path, cell: Cell, key: str) -> list[Path]:
    """The plain files of a cell's checkpoint (tables, ``cell.json``, gallery PNGs), sorted.

    Empty when the cell has no checkpoint. Links are left out: a checkpoint holds none.
    """
    folder = _checkpoint_folder(run_dir, cell, key)
    if not folder.is_dir() or folder.is_symlink():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def write_run_state(run_dir: Path, config: RunConfig, started: str) -> None:
    """Record, when a run starts, what it is (so that it can be resumed and nothing else)."""
    state = {"study_hash": config.study_hash(), "started": started, "task": config.task}
    write_whole(run_dir / RUN_STATE, json.dumps(state, indent=2) + "\n")


def read_run_state(run_dir: Path) -> dict[str, Any] | None:
    """The state of a run directory, or None when it holds no run.

    Raises:
        XaibenchError: ``run-state.json`` exists but is unreadable (not UTF-8 or JSON).
    """
    file = contained(run_dir, RUN_STATE, source=run_dir, what="run state")
    if not file.is_file():
        return None
    state = read_json(file)
    return state if isinstance(state, dict) else None


def remove_partial(run_dir: Path) -> int:
    """Delete what an unfinished write left behind; count it. Call it holding the run lock.

    That is every entry of xaibench's temporary namespace (``.xaibench-tmp-*``) in the run
    folder, its ``gallery`` and its ``cells`` folder, and the half-made checkpoints of older
    versions (``cells/.tmp-*``; no checkpoint name starts with a dot). Nothing else is touched,
    symlinks are removed rather than followed, and a ``cells`` or ``gallery`` folder that leads
    outside the run folder is refused.

    Raises:
        XaibenchError: ``cells`` or ``gallery`` leads outside ``run_dir``.
    """
    stale: list[Path] = []
    for sub in ("", CELLS_DIR, "gallery"):
        folder = contained(run_dir, ".", source=run_dir, what="folder", under=sub)
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            name = entry.name
            if name.startswith(TEMPORARY_PREFIX) or (sub == CELLS_DIR and name.startswith(".tmp-")):
                stale.append(entry)
    for entry in stale:
        if entry.is_symlink() or not entry.is_dir():
            entry.unlink(missing_ok=True)
        else:
            shutil.rmtree(entry, ignore_errors=True)
    return len(stale)
