"""Hand-made run directories of results schema 1.5: chance levels, normalised scores, controls.

:func:`write_fake_run_15` writes a :func:`fake_runs.write_fake_run` directory and adds what
schema 1.5 runs record (``docs/results-schema.md``): per-image ``chance`` in explanations.csv and
``chance``/``normalised``/``normalised_ci``/``p_chance`` in the IoU records; a second
perturbation ``mean``; control prediction rows (``bone#control<d>``) and ``control_delta``/
``specific``/``specific_ci``/``specific_p`` in the Δ records. The numbers are computed from the
per-image tables (scikit-learn AUCs, a seeded bootstrap), so the files agree with each other as
a run's do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from fake_runs import CLASSES, _probs, write_fake_run
from scipy.stats import ttest_1samp
from sklearn.metrics import roc_auc_score

from xaibench.stats.bootstrap_comparisons import delta_auc_replicates

#: Perturbation -> (strength factor of the perturbed region's probabilities, of the controls').
#: ``zero`` hurts everywhere (large off-target cost); ``mean`` hurts the region only.
PERTURBATIONS = {"zero": (1 / 3, 1 / 3), "mean": (1 / 3, 0.95)}
DRAWS = 2


def _delta(y: np.ndarray, intact: np.ndarray, perturbed: np.ndarray) -> float:
    return float(roc_auc_score(y, intact) - max(roc_auc_score(y, perturbed), 0.5))


def write_fake_run_15(
    path: Path,
    cells: dict[str, float],
    *,
    n: int = 120,
    seed: int = 0,
    iou: dict[str, float] | None = None,
    p_chance: dict[str, float] | None = None,
    resamples: int = 200,
) -> Path:
    """A schema 1.5 run directory (see the module docstring).

    Args:
        path: The run directory to create.
        cells: Backbone name -> class signal strength (as :func:`fake_runs.write_fake_run`).
        n: Test images.
        seed: Seed of the fake data.
        iou: Backbone name -> mean per-image IoU with bone (default 0.3); chance is about 0.2.
        p_chance: Backbone name -> the ``p_chance`` to record (default: a one-sided t-test of
            the per-image ``value - chance``).
        resamples: Bootstrap resamples of the recorded specific-Δ intervals.
    """
    write_fake_run(path, cells, n=n, seed=seed, iou=iou)
    rng = np.random.default_rng(seed + 1000)
    doc = json.loads((path / "results.json").read_text())
    preds = pd.read_csv(path / "predictions.csv", keep_default_na=False)
    expl = pd.read_csv(path / "explanations.csv")
    expl["chance"] = rng.uniform(0.15, 0.25, size=len(expl))
    doc["schema_version"] = "1.5"
    doc["config"]["perturbations"] = [{"name": p, "options": {}} for p in PERTURBATIONS]
    doc["config"]["controls"] = {"draws": DRAWS}
    records: list[dict[str, Any]] = []
    new_rows = []
    for rec in doc["records"]:
        b = rec["backbone"]
        if rec["metric"] == "iou_region":
            part = expl[expl["backbone"] == b]
            excess = (part["value"] - part["chance"]).to_numpy()
            chance = float(part["chance"].mean())
            normalised = float(excess.mean()) / (1 - chance)
            reps = rng.choice(excess, size=(resamples, len(excess))).mean(axis=1) / (1 - chance)
            p = (p_chance or {}).get(b)
            if p is None:
                p = float(ttest_1samp(excess, 0.0, alternative="greater").pvalue)
            rec["details"] = {
                "chance": chance, "chance_method": "area fraction", "chance_exact": True,
                "best": 1.0, "normalised": normalised,
                "normalised_ci": [float(np.quantile(reps, 0.025)),
                                  float(np.quantile(reps, 0.975))],
                "p_chance": p,
            }  # fmt: skip
            records.append(rec)
            continue
        if rec["metric"] != "delta_region":
            records.append(rec)
            continue
        cell_preds = preds[preds["backbone"] == b]
        intact = cell_preds[cell_preds["perturbation"] == ""].set_index("sample_id").sort_index()
        labels = intact["label"].to_numpy()
        y = (labels == 2).astype(int)
        strength = cells[b]
        for name, (region_factor, control_factor) in PERTURBATIONS.items():
            if name == "zero":
                region = cell_preds[cell_preds["perturbation"] == "zero"]
                region = region.set_index("sample_id").sort_index()
                region_scores = region["prob_osteoporosis"].to_numpy()
            else:
                region_scores = _probs(labels, strength * region_factor, rng)[:, 2]
                new_rows.append(_rows(intact, b, name, "bone", region_scores, labels, rng))
            controls = []
            for d in range(DRAWS):
                scores = _probs(labels, strength * control_factor, rng)[:, 2]
                new_rows.append(_rows(intact, b, name, f"bone#control{d}", scores, labels, rng))
                controls.append(scores)
            raw = _delta(y, intact["prob_osteoporosis"].to_numpy(), region_scores)
            control_deltas = [
                _delta(y, intact["prob_osteoporosis"].to_numpy(), c) for c in controls
            ]
            reg_reps = delta_auc_replicates(
                y, intact["prob_osteoporosis"], region_scores, resamples=resamples, seed=0
            ).replicates
            ctl_reps = np.mean(
                [
                    delta_auc_replicates(
                        y, intact["prob_osteoporosis"], c, resamples=resamples, seed=0
                    ).replicates
                    for c in controls
                ],
                axis=0,
            )
            specific_reps = reg_reps - ctl_reps
            control_delta = float(np.mean(control_deltas))
            records.append(
                {
                    **rec,
                    "perturbation": name,
                    "value": raw,
                    "ci_low": raw - 0.1,
                    "ci_high": raw + 0.1,
                    "details": {
                        "auc_intact": float(roc_auc_score(y, intact["prob_osteoporosis"])),
                        "control_delta": control_delta,
                        "control_deltas": control_deltas,
                        "control_draws": DRAWS,
                        "control_area_ratio": 1.0,
                        "specific": raw - control_delta,
                        "specific_ci": [float(np.quantile(specific_reps, 0.025)),
                                        float(np.quantile(specific_reps, 0.975))],
                        "specific_p": float(np.mean(specific_reps <= 0)),
                    },
                }
            )  # fmt: skip
    doc["records"] = records
    (path / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    pd.concat([preds, *new_rows], ignore_index=True).to_csv(path / "predictions.csv", index=False)
    expl.to_csv(path / "explanations.csv", index=False)
    return path


def _rows(
    intact: pd.DataFrame,
    backbone: str,
    perturbation: str,
    region: str,
    positive: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Prediction rows of one perturbed condition with ``positive`` as the positive probability."""
    frame = intact.reset_index()[
        ["backbone", "strategy", "seed", "split", "sample_id", "label"]
    ].copy()
    frame["perturbation"] = perturbation
    frame["region"] = region
    rest = rng.dirichlet([1.0, 1.0], size=len(labels)) * (1 - positive)[:, None]
    frame[f"prob_{CLASSES[0]}"] = rest[:, 0]
    frame[f"prob_{CLASSES[1]}"] = rest[:, 1]
    frame[f"prob_{CLASSES[2]}"] = positive
    frame["called_positive"] = positive >= 0.4
    assert (frame["backbone"] == backbone).all()
    return frame
