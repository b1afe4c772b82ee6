"""Issue 16, items 15 and 11 (the run's side).

15: one failing saliency method, perturbation or metric fails only its own records; the cell's
    performance and every other method's results stand.
11: a region that is annotated but empty is skipped with a reason (like an unannotated one)
    instead of an ``ok`` Δ of zero; a region covering (almost) the whole image is flagged in
    ``details``.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from cli_runs import TINY_PHANTOM_RUN
from PIL import Image

from xaibench.config import resolve_config
from xaibench.engine.benchmark import run_benchmark
from xaibench.hookspecs import hookimpl
from xaibench.perturbations.base import Perturbation
from xaibench.plugins import collect_components, get_plugin_manager
from xaibench.saliency.base import SaliencyMethod


class Exploding(SaliencyMethod):
    """Raises on the first batch."""

    def explain(self, model: Any, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom in explain")


class Exiting(SaliencyMethod):
    """Calls sys.exit, as a careless plugin might."""

    def explain(self, model: Any, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        sys.exit(3)


class BrokenFill(Perturbation):
    """Raises whenever it is applied."""

    def apply(
        self, images: torch.Tensor, mask: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        raise ValueError("boom in apply")


class _Plugin:
    @hookimpl
    def register_saliency_methods(self, register: Any) -> None:
        register("exploding", Exploding, summary="raises")
        register("exiting", Exiting, summary="sys.exit")

    @hookimpl
    def register_perturbations(self, register: Any) -> None:
        register("broken_fill", BrokenFill, summary="raises")


@pytest.fixture
def hostile_components():
    pm = get_plugin_manager(entry_points=False)
    pm.register(_Plugin(), name="hostile")
    return collect_components(pm)


def _by(records: list[dict[str, Any]], **where: Any) -> list[dict[str, Any]]:
    return [r for r in records if all(r.get(k) == v for k, v in where.items())]


def test_one_failing_method_or_perturbation_fails_only_its_records(
    hostile_components, tmp_path: Path
):
    config = resolve_config(
        TINY_PHANTOM_RUN,
        {
            "saliency": ["saliency", "exploding", "exiting"],
            "perturbations": ["zero", "broken_fill"],
            "metrics": ["auc", "delta_region", "iou_region", "pointing_game"],
            "gallery_images": 1,
            "sanity": {"images": 2, "steps": 2},
            "explain_regions": ["bone"],
            "perturb_regions": ["bone"],
            "complement_regions": [],
        },
    )
    outcome = run_benchmark(config, hostile_components, tmp_path / "run")
    records = outcome.document["records"]
    assert [c["status"] for c in outcome.document["cells"]] == ["ok"]  # the cell stands
    assert _by(records, metric="auc")[0]["status"] == "ok"
    for method, error in (
        ("exploding", "RuntimeError: boom in explain"),
        ("exiting", "SystemExit: 3"),
    ):
        failed = _by(records, saliency=method, category="explanation")
        assert {r["metric"] for r in failed} == {"iou_region", "pointing_game"}
        assert all(r["status"] == "failed" and r["reason"] == error for r in failed), failed
        sanity = _by(records, saliency=method, category="sanity")
        assert {r["status"] for r in sanity} == {"failed"}
    assert {r["status"] for r in _by(records, saliency="saliency")} == {"ok"}
    broken = _by(records, metric="delta_region", perturbation="broken_fill")
    assert [(r["status"], r["reason"]) for r in broken] == [("failed", "ValueError: boom in apply")]
    assert _by(records, metric="delta_region", perturbation="zero")[0]["status"] == "ok"
    gallery = (tmp_path / "run" / "gallery" / "index.json").read_text()
    assert '"saliency"' in gallery  # the working method's gallery is written
    assert "exploding" not in gallery
    assert outcome.partly_failed  # the CLI exits 1 and names them


# --- item 11 ---------------------------------------------------------------------------------


def _manifest(folder: Path) -> Path:
    """36 images 32x32 (24 train, 6 val, 6 test), three classes; bone covers every pixel,
    spine is empty on one test image, ribs are annotated but empty everywhere."""
    rng = np.random.default_rng(0)
    t_scores = [0.5, -1.8, -3.0]
    rows = []
    full = np.full((32, 32), 255, np.uint8)
    none = np.zeros((32, 32), np.uint8)
    stripe = none.copy()
    stripe[:, 12:20] = 255
    (folder / "m").mkdir(parents=True)
    Image.fromarray(full).save(folder / "m" / "full.png")
    Image.fromarray(none).save(folder / "m" / "none.png")
    Image.fromarray(stripe).save(folder / "m" / "stripe.png")
    for i in range(36):
        split = "train" if i < 24 else "val" if i < 30 else "test"
        image = (rng.random((32, 32)) * 255).astype(np.uint8)
        image[:, 12:20] = 40 + 70 * (i % 3)  # the class lives in the spine stripe
        Image.fromarray(image).save(folder / f"{i}.png")
        rows.append(
            {
                "image": f"{i}.png", "patient_id": f"P{i}", "t_score": t_scores[i % 3],
                "split": split, "mask_bone": "m/full.png",
                "mask_spine": "m/none.png" if i == 35 else "m/stripe.png",
                "mask_ribs": "m/none.png",
            }
        )  # fmt: skip
    path = folder / "manifest.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_empty_regions_are_skipped_and_full_ones_flagged(components, tmp_path: Path):
    config = resolve_config(
        TINY_PHANTOM_RUN,
        {
            "dataset": {
                "name": "manifest",
                "options": {"path": str(_manifest(tmp_path)), "image_size": 32},
            },
            "saliency": ["saliency"],
            "perturbations": ["zero"],
            "metrics": ["auc", "delta_region", "iou_region"],
            "explain_regions": ["bone", "spine", "ribs"],
            "perturb_regions": ["bone", "spine", "ribs"],
            "complement_regions": ["bone"],
            "sanity": {"images": 0},
        },
    )
    outcome = run_benchmark(config, components, tmp_path / "run")
    records = outcome.document["records"]
    ribs = _by(records, metric="delta_region", region="ribs")
    assert [r["status"] for r in ribs] == ["skipped"]
    assert "empty on 6 of 6 test images" in ribs[0]["reason"]
    spine = _by(records, metric="delta_region", region="spine")
    assert [r["status"] for r in spine] == ["skipped"]
    assert "empty on 1 of 6 test images" in spine[0]["reason"]
    iou_ribs = _by(records, metric="iou_region", region="ribs")
    assert [r["status"] for r in iou_ribs] == ["skipped"]
    assert "empty on every test image" in iou_ribs[0]["reason"]
    assert _by(records, metric="iou_region", region="spine")[0]["status"] == "ok"
    bone = _by(records, metric="delta_region", region="bone")[0]
    assert bone["status"] == "ok"
    assert bone["details"]["near_full_region"]["images"] == 6
    assert "whole image" in bone["details"]["near_full_region"]["warning"]
    outside = _by(records, metric="delta_region", region="outside_bone")[0]
    assert "almost nothing" in outside["details"]["near_full_region"]["warning"]
    skipped = outcome.document["dataset"]["skipped_regions"]
    assert set(skipped["perturb_regions"]) == {"spine", "ribs"}
