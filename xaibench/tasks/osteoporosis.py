"""Opportunistic osteoporosis screening from chest radiographs (Kim et al., 2025)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from xaibench.data.who import WHO_CLASSES, who_class
from xaibench.errors import XaibenchError
from xaibench.tasks.base import Task

if TYPE_CHECKING:
    import pandas as pd


class Osteoporosis(Task):
    """Three WHO classes from the T-score; osteoporosis-vs-rest is the headline; bone is the region.

    The default grid is the quick CPU grid: two tiny, randomly initialised timm models (a ViT and a
    ResNet) x ``linear_probe`` and ``full`` on 1,000 phantom images at 128 px. The phantom's class
    shares are enriched (45/30/25 instead of the study's 57/38/5) so the 200-image test split holds
    about 50 osteoporosis cases and the AUC is stable enough to mean something in a 10-minute run.
    """

    display_name = "Osteoporosis screening"
    citation = "Kim et al., Osteoporosis International 2025, doi:10.1007/s00198-025-07727-3"

    class_names = WHO_CLASSES
    positive_class = "osteoporosis"
    regions_of_interest = ("bone", "spine", "ribs", "clavicles")

    def labels(self, table: pd.DataFrame) -> np.ndarray:
        """WHO class from the ``t_score`` column."""
        if "t_score" not in table.columns:
            raise XaibenchError("the osteoporosis task needs a 't_score' column in the dataset")
        return who_class(table["t_score"].to_numpy())

    def defaults(self) -> dict[str, Any]:
        """The quick default grid (4 cells) described in the class docstring."""
        return {
            "task": "osteoporosis",
            "dataset": {
                "name": "phantom",
                "options": {
                    "n_images": 1000,
                    "image_size": 128,
                    "class_shares": [0.45, 0.30, 0.25],
                },
            },
            "backbones": ["test_vit.random", "test_resnet.random"],
            "strategies": ["linear_probe", "full"],
            "seeds": [0],
            "saliency": ["gradcam", "saliency"],
            "perturbations": ["mean", "zero"],
            "metrics": [
                "auc",
                "accuracy",
                "sensitivity",
                "specificity",
                "macro_auc",
                "delta_region",
                "iou_region",
            ],
            "explain_regions": list(self.regions_of_interest),
            "perturb_regions": ["bone"],
            "train": {"epochs": 12, "batch_size": 32, "lr": 2e-3, "weight_decay": 0.01},
        }

    def grids(self) -> dict[str, dict[str, Any]]:
        """``quick``: the study's 12-cell design on tiny random models; ``paper``: the study's.

        ``paper`` needs the four encoders' real weights (local files or the Hugging Face cache)
        and, realistically, a GPU and your own data (``--data``); on the phantom it uses the
        study's class shares.
        """
        study_strategies = ["linear_probe", "last_block", "lora"]
        return {
            "quick": {
                "backbones": [
                    "openclip_tiny.random",
                    "dinov2_tiny.random",
                    "chexagent_siglip_tiny.random",
                    "rad_dino_tiny.random",
                ],
                "strategies": study_strategies,
            },
            "paper": {
                "dataset": {
                    "name": "phantom",
                    "options": {
                        "n_images": 5000,
                        "image_size": 256,
                        "class_shares": [0.572, 0.377, 0.051],
                    },
                },
                "backbones": [
                    "openclip_vit_b16",
                    "vit_base_patch14_dinov2.lvd142m",
                    "chexagent_siglip",
                    "rad_dino",
                ],
                "strategies": study_strategies,
                "train": {"epochs": 20, "batch_size": 32, "lr": 1e-4, "patience": 5},
            },
        }
