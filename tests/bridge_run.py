"""One tiny ``xaibench run`` shared by the bridge tests, spying on what each bridge computed.

The run trains a linear probe, so its model exists only inside the run: a spy around each
bridged method's ``explain`` keeps a copy of the model, the images, the targets and the maps,
and a spy around ``pixel_auc`` keeps the region masks it scored those maps against. The
tests then call the library directly on the copy and compare with the run's explanations CSV.
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
import yaml

from xaibench.bridges.gradcam import GradCAMBridge
from xaibench.bridges.zennit import ZennitBridge
from xaibench.cli import main
from xaibench.metrics.localisation import PixelAUC

#: Bridged methods the run explains with (one per bridge; both run on the CNN).
METHODS = ("gradcam:GradCAMPlusPlus", "zennit:EpsilonPlusFlat")

RUN: dict[str, Any] = {
    "dataset": {
        "name": "phantom",
        "options": {"n_images": 48, "image_size": 32, "class_shares": [0.4, 0.3, 0.3]},
    },
    "backbones": [{"name": "test_resnet.random", "options": {"img_size": 64}}],  # 2x2 CAM grid
    "strategies": ["linear_probe"],
    "saliency": list(METHODS),
    "perturbations": [],
    "metrics": ["auc", "pixel_auc"],
    "explain_regions": ["bone"],
    "train": {"epochs": 1, "batch_size": 16},
    "max_explain_images": 4,
    "gallery_images": 0,
    "sanity": {"images": 0},
    "analysis": {"bootstrap": 100},
    "cache": False,
}


@dataclass
class Explained:
    """What one bridged method computed inside the run."""

    model: torch.nn.Module
    images: torch.Tensor
    targets: torch.Tensor
    maps: torch.Tensor
    masks: list[torch.Tensor] = field(default_factory=list)


@dataclass
class BridgeRun:
    """The run's explanations CSV and, per method, what it explained."""

    explanations: pd.DataFrame
    explained: dict[str, Explained]


@lru_cache(maxsize=1)
def bridge_run() -> BridgeRun:
    """Run once per session (both bridge test modules share it)."""
    explained: dict[str, Explained] = {}
    mp = pytest.MonkeyPatch()

    def spy(original: Any) -> Any:
        def explain(self: Any, model: Any, images: Any, targets: Any) -> torch.Tensor:
            maps = original(self, model, images, targets)
            explained[self.label] = Explained(
                copy.deepcopy(model), images.clone(), targets.clone(), maps.clone()
            )
            return maps

        return explain

    def mass_spy(self: Any, maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        for record in explained.values():
            if record.maps.shape == maps.shape and torch.equal(record.maps, maps):
                record.masks.append(masks.clone())
        return original_mass(self, maps, masks)

    original_mass = PixelAUC.per_sample
    mp.setattr(GradCAMBridge, "explain", spy(GradCAMBridge.explain))
    mp.setattr(ZennitBridge, "explain", spy(ZennitBridge.explain))
    mp.setattr(PixelAUC, "per_sample", mass_spy)
    try:
        folder = Path(tempfile.mkdtemp(prefix="xaibench-bridge-run-"))
        config = folder / "run.yaml"
        config.write_text(yaml.safe_dump(RUN))
        with pytest.raises(SystemExit) as done:
            main(["run", "osteoporosis", "--config", str(config), "--out", str(folder / "run")])
        assert not done.value.code, f"xaibench run exited with {done.value.code}"
    finally:
        mp.undo()
    return BridgeRun(pd.read_csv(folder / "run" / "explanations.csv"), explained)


def run_values(run: BridgeRun, method: str) -> torch.Tensor:
    """The run's per-image pixel AUC on ``bone`` for ``method``, in explain order."""
    rows = run.explanations
    rows = rows[
        (rows["saliency"] == method) & (rows["metric"] == "pixel_auc") & (rows["region"] == "bone")
    ]
    return torch.tensor(rows["value"].to_numpy(), dtype=torch.float64)
