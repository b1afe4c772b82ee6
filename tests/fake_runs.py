"""Hand-made run directories for tests of everything built from results files.

A real run takes tens of seconds; leaderboards, checks and reports only read files, so these
tests write the files themselves, with records computed from the per-image tables by the same
interval functions a run uses (so the files are consistent, as a run's are).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from xaibench.stats.intervals import bootstrap_mean_ci, delong_auc_ci, wilson_ci

CLASSES = ("normal", "osteopenia", "osteoporosis")


def _probs(labels: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    logits = rng.normal(size=(len(labels), 3))
    logits[np.arange(len(labels)), labels] += strength
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _record(cell: tuple[str, str, int], metric: str, category: str, **fields: Any) -> dict:
    return {
        "task": "osteoporosis",
        "dataset": "phantom",
        "backbone": cell[0],
        "strategy": cell[1],
        "seed": cell[2],
        "random_init": True,
        "metric": metric,
        "category": category,
        "higher_is_better": True,
        "saliency": None,
        "perturbation": None,
        "region": None,
        "value": None,
        "ci_low": None,
        "ci_high": None,
        "n": None,
        "status": "ok",
        "reason": None,
        "details": {},
        **fields,
    }


def write_fake_run(
    path: Path,
    cells: dict[str, float],
    *,
    n: int = 120,
    seed: int = 0,
    task: str = "osteoporosis",
    iou: dict[str, float] | None = None,
    fingerprint: str = "fake-fingerprint",
) -> Path:
    """Write a run directory with one ``linear_probe`` cell per backbone in ``cells``.

    Args:
        path: The run directory to create.
        cells: Backbone name -> class signal strength of its probabilities (0: chance).
        n: Test images (the same images for every cell).
        seed: Seed of the fake data.
        task: Task name written into the results.
        iou: Backbone name -> mean per-image IoU with bone (default 0.3 each).
        fingerprint: The dataset fingerprint.
    """
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True)
    labels = rng.choice(3, size=n, p=[0.4, 0.3, 0.3])
    labels[:3] = [0, 1, 2]  # every class present
    ids = [f"phantom-{i:05d}" for i in range(n)]
    y = (labels == 2).astype(int)
    records, preds, expl, cell_docs = [], [], [], []
    for b, strength in cells.items():
        cell = (b, "linear_probe", 0)
        probs = _probs(labels, strength, rng)
        perturbed = _probs(labels, strength / 3, rng)
        threshold = 0.4
        for condition, p in (("", probs), ("zero", perturbed)):
            frame = pd.DataFrame(
                {
                    "backbone": b, "strategy": "linear_probe", "seed": 0, "split": "test",
                    "sample_id": ids, "label": labels, "perturbation": condition,
                    "region": "bone" if condition else "",
                }
            )  # fmt: skip
            for i, name in enumerate(CLASSES):
                frame[f"prob_{name}"] = p[:, i]
            frame["called_positive"] = p[:, 2] >= threshold
            preds.append(frame)
        auc, lo, hi = delong_auc_ci(y, probs[:, 2])
        records.append(
            _record(
                cell, "auc", "performance", value=auc, ci_low=lo, ci_high=hi, n=n,
                details={"ci_method": "delong"},
            )
        )  # fmt: skip
        correct = int(((probs[:, 2] >= threshold) == (y == 1)).sum())
        lo, hi = wilson_ci(correct, n)
        records.append(
            _record(cell, "accuracy", "performance", value=correct / n, ci_low=lo, ci_high=hi, n=n)
        )
        delta = auc - max(roc_auc_score(y, perturbed[:, 2]), 0.5)  # the chance floor, as Δ has
        records.append(
            _record(
                cell, "delta_region", "explanation", perturbation="zero", region="bone",
                value=delta, ci_low=delta - 0.1, ci_high=delta + 0.1, n=n,
            )
        )  # fmt: skip
        mean_iou = (iou or {}).get(b, 0.3)
        values = np.clip(rng.normal(mean_iou, 0.1, size=n), 0, 1)
        m = float(values.mean())
        lo, hi = bootstrap_mean_ci(values, resamples=200, seed=0)
        records.append(
            _record(
                cell, "iou_region", "explanation", saliency="gradcam", region="bone",
                value=m, ci_low=lo, ci_high=hi, n=n,
            )
        )  # fmt: skip
        for check, passed in (("model", True), ("target", strength > 0)):
            records.append(
                _record(
                    cell, f"sanity_{check}_randomisation", "sanity", saliency="gradcam",
                    value=0.2, details={"passed": passed, "threshold": 0.5, "control": False},
                )
            )  # fmt: skip
        expl.append(
            pd.DataFrame(
                {
                    "backbone": b, "strategy": "linear_probe", "seed": 0, "sample_id": ids,
                    "label": labels, "metric": "iou_region", "saliency": "gradcam",
                    "region": "bone", "value": values,
                }
            )
        )  # fmt: skip
        cell_docs.append(
            {
                "backbone": b, "strategy": "linear_probe", "seed": 0, "random_init": True,
                "weights": {"sha256": hashlib.sha256(b.encode()).hexdigest()}, "status": "ok",
                "error": None, "traceback": None, "seconds": 1.0, "fit": {},
            }
        )  # fmt: skip
    document = {
        "schema_version": "1.3",
        "created": "2026-01-01T00:00:00+00:00",
        "finished": "2026-01-01T00:01:00+00:00",
        "config": {
            "task": task,
            "metrics": [{"name": "auc", "options": {}}, {"name": "iou_region", "options": {}}],
            "perturbations": [{"name": "zero", "options": {}}],
            "ci": "default",
            "explain_regions": ["bone"],
            "saliency_target": "positive",
            "seeds": [0],
        },
        "config_hash": "0" * 64,
        "task": {
            "name": task,
            "class_names": list(CLASSES),
            "positive_class": "osteoporosis",
            "regions_of_interest": ["bone"],
        },
        "dataset": {
            "name": "phantom",
            "options": {},
            "fingerprint": fingerprint,
            "split_source": "patient_split",
            "skipped_regions": {},
            "splits": {"test": {"images": n}},
        },
        "environment": {
            "xaibench_version": "0.1.0",
            "git_commit": None,
            "seeds": {"cells": [0], "split": 0},
            "libraries": {"torch": "2.14.1"},
        },
        "components": {},
        "cells": cell_docs,
        "records": records,
        "analysis": {},
    }
    (path / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    pd.concat(preds, ignore_index=True).to_csv(path / "predictions.csv", index=False)
    pd.concat(expl, ignore_index=True).to_csv(path / "explanations.csv", index=False)
    return path
