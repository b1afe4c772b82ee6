"""Opportunistic osteoporosis screening from chest radiographs (Kim et al., 2025)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from xaibench.data.values import T_SCORE_LIMIT, parse_label, t_score_problem
from xaibench.data.who import WHO_CLASSES, who_class
from xaibench.errors import XaibenchError
from xaibench.tasks.base import Task

if TYPE_CHECKING:
    import pandas as pd


#: The study's three adaptation strategies, in its order.
STUDY_STRATEGIES = ("linear_probe", "last_block", "lora")

#: Tiny, randomly initialised members of the study's four families (OpenCLIP, DINOv2,
#: CheXagent's SigLIP encoder, RAD-DINO), in the study's order.
QUICK_BACKBONES = (
    "openclip_tiny.random",
    "dinov2_tiny.random",
    "chexagent_siglip_tiny.random",
    "rad_dino_tiny.random",
)


def _missing(value: object) -> bool:
    """Whether a table cell is empty: NaN, None or blank text."""
    if value is None:
        return True
    if isinstance(value, float | np.floating):
        return bool(np.isnan(value))
    return not str(value).strip()


def _plain(value: object) -> object:
    """A numpy scalar as the Python value it holds, so messages read ``nan``, not ``np.float64``."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value


class Osteoporosis(Task):
    """Three WHO classes from the T-score; osteoporosis-vs-rest is the headline; bone is the region.

    The default grid is the ``quick`` grid: the study's design (four architecture families x
    ``linear_probe``, ``last_block`` and ``lora``, 12 cells) at tiny, randomly initialised sizes, on
    1,000 phantom images at 128 px, so it runs in about two minutes on two CPU cores with no
    download (``docs/performance.md``).
    The phantom's class shares are enriched (45/30/25 instead of the study's 57/38/5) so the
    200-image test split holds about 50 osteoporosis cases and the AUC is stable enough to mean
    something. ``--grid paper`` is the study's own grid and needs the encoders' real weights.
    """

    display_name = "Osteoporosis screening"
    citation = "Kim et al., Osteoporosis International 2025, doi:10.1007/s00198-025-07727-3"

    class_names = WHO_CLASSES
    positive_class = "osteoporosis"
    regions_of_interest = ("bone", "spine", "ribs", "clavicles")
    #: Columns that define the label: never strata of the results.
    label_columns: ClassVar[tuple[str, ...]] = ("t_score", "label")

    def labels(self, table: pd.DataFrame) -> np.ndarray:
        """WHO class from the ``t_score`` column, else from the ``label`` column.

        A row's T-score wins when it has one; otherwise its ``label`` — a class name (any
        case) or its index 0/1/2 — gives the class. A dataset may have either column or both
        (a manifest can mix rows with a T-score and rows with only a label). The dataset does
        not check these columns (a manifest knows no class); this does, before any training.

        Raises:
            XaibenchError: Neither column exists; a T-score is not a plain finite number or
                lies beyond +-10; a label names no class; a row's label disagrees with its
                T-score; or a row has neither. The message names the rows (1-based) and values.
        """
        has_t, has_label = "t_score" in table.columns, "label" in table.columns
        if not (has_t or has_label):
            raise XaibenchError(
                "the osteoporosis task needs a 't_score' or a 'label' column in the dataset"
            )
        n = len(table)
        labels = np.full(n, -1, dtype=np.int64)
        problems: list[tuple[int, str]] = []
        t_class = np.full(n, -1, dtype=np.int64)
        if has_t:
            for i, cell in enumerate(table["t_score"]):
                value, problem = t_score_problem(cell)
                if problem is not None:
                    problems.append((i + 1, f"(t_score): {problem}"))
                elif value is not None:
                    t_class[i] = int(who_class(value))
        if has_label:
            for i, cell in enumerate(table["label"]):
                text = "" if _missing(cell) else str(_plain(cell)).strip()
                if not text:
                    continue
                index = parse_label(text, self.class_names)
                if index is None:
                    problems.append((i + 1, f"(label): unknown label {text!r}"))
                elif t_class[i] >= 0 and index != t_class[i]:
                    t_value = _plain(table["t_score"].iat[i])
                    problems.append(
                        (
                            i + 1,
                            f"(label): label {text!r} disagrees with t_score {t_value} "
                            f"({self.class_names[t_class[i]]}); give one or make them agree",
                        )
                    )
                else:
                    labels[i] = index
        labels = np.where(t_class >= 0, t_class, labels)
        flagged = {row for row, _ in problems}
        columns = " / ".join(c for c in ("t_score", "label") if c in table.columns)
        for k in np.flatnonzero(labels < 0).tolist():
            if k + 1 not in flagged:
                problems.append((k + 1, f"({columns}): no class: the row needs one"))
        if problems:
            problems.sort(key=lambda p: p[0])
            shown = "; ".join(f"row {row} {text}" for row, text in problems[:10])
            more = f"; ... and {len(problems) - 10} more" if len(problems) > 10 else ""
            raise XaibenchError(
                f"{len(problems)} T-score or label problem(s) (rows are 1-based CSV data rows): "
                f"{shown}{more}. A T-score must be a plain finite number "
                f"within +-{T_SCORE_LIMIT:g}; a label one of {', '.join(self.class_names)} or "
                f"0-{len(self.class_names) - 1}"
            )
        return labels

    def defaults(self) -> dict[str, Any]:
        """The default run: the ``quick`` 12-cell grid described in the class docstring."""
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
            "backbones": list(QUICK_BACKBONES),
            "strategies": list(STUDY_STRATEGIES),
            "seeds": [0],
            "saliency": ["gradcam", "saliency"],
            # The four baselines whose Δ rankings are compared (Kendall tau in the results).
            "perturbations": ["mean", "zero", "blur", "inpaint"],
            "metrics": [
                "auc",
                "accuracy",
                "sensitivity",
                "specificity",
                "ppv",
                "npv",
                "macro_auc",
                "delta_region",
                "iou_region",
                "pointing_game",
                "relevance_mass",
            ],
            "explain_regions": list(self.regions_of_interest),
            # Δ per bone group, and the complement test: bone kept, everything else perturbed.
            "perturb_regions": list(self.regions_of_interest),
            "complement_regions": ["bone"],
            "train": {"epochs": 12, "batch_size": 32, "lr": 2e-3, "weight_decay": 0.01},
        }

    def grids(self) -> dict[str, dict[str, Any]]:
        """``quick``: the study's 12-cell design on tiny random models; ``paper``: the study's.

        ``paper`` needs the four encoders' real weights (local files or the Hugging Face cache)
        and, realistically, a GPU and your own data (``--data``); on the phantom it uses the
        study's class shares.
        """
        return {
            "quick": {
                "backbones": list(QUICK_BACKBONES),
                "strategies": list(STUDY_STRATEGIES),
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
                "strategies": list(STUDY_STRATEGIES),
                "train": {"epochs": 20, "batch_size": 32, "lr": 1e-4, "patience": 5},
            },
        }
