"""``cardiomegaly``: an enlarged heart on a frontal chest radiograph, by cardiothoracic ratio."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from xaibench.data.check import parse_label
from xaibench.errors import XaibenchError
from xaibench.tasks.base import Task
from xaibench.tasks.osteoporosis import QUICK_BACKBONES, STUDY_STRATEGIES
from xaibench_cardiomegaly.ctr import CLASS_NAMES, CTR_THRESHOLD, ctr_class

if TYPE_CHECKING:
    import pandas as pd

#: Rows named in an error message before "and N more".
MAX_LISTED_ROWS = 10

#: Scored alongside the regions of interest as a control: bone, drawn independently of the
#: heart, that stays clear of the cardiac silhouette and of the widest thoracic diameter.
CONTROL_REGION = "clavicles"

#: The four real encoders of the osteoporosis study's grid, for ``--grid encoders``.
ENCODERS = (
    "openclip_vit_b16",
    "vit_base_patch14_dinov2.lvd142m",
    "chexagent_siglip",
    "rad_dino",
)


def _plain(value: object) -> object:
    """A numpy scalar as the Python value it holds, so messages read ``nan``, not ``np.float64``."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value


class Cardiomegaly(Task):
    """Normal heart vs cardiomegaly (CTR > 0.5); the heart is where the signal lives.

    The default grid mirrors the osteoporosis task's quick grid (the study's four architecture
    families at tiny, randomly initialised sizes x ``linear_probe``, ``last_block`` and ``lora``:
    12 cells) on 1,000 ``cardiac_phantom`` images at 128 px, so it runs in about two minutes on
    two CPU cores with no download. The regions of interest are the heart (primary: Delta_heart,
    IoU_heart) and the lungs, whose lateral borders are the thoracic diameter the ratio is taken
    against; the clavicles are scored as a control region that carries no label information.
    """

    display_name = "Cardiomegaly (cardiothoracic ratio)"
    citation = "Danzer, Am J Med Sci 1919;157:513-521 (the cardiothoracic ratio)"

    class_names = CLASS_NAMES
    positive_class = "cardiomegaly"
    regions_of_interest = ("heart", "lungs")

    def labels(self, table: pd.DataFrame) -> np.ndarray:
        """Class from the ``ctr`` column (CTR > 0.5: cardiomegaly), else from ``label``.

        A row's CTR wins when it is a finite number; otherwise its ``label`` — ``normal`` or
        ``cardiomegaly`` (any case) or the index 0/1 — gives the class. A dataset may have either
        column or both; where a row has both, they must agree.

        Raises:
            XaibenchError: Neither column exists; some rows have neither a valid CTR nor a valid
                label; a CTR is outside (0, 1] (a ratio of two diameters; 52 is probably a
                percentage); or a row's CTR and label disagree. The message names those rows
                (1-based) and their values.
        """
        import pandas as pd

        has_ctr, has_label = "ctr" in table.columns, "label" in table.columns
        if not (has_ctr or has_label):
            raise XaibenchError(
                "the cardiomegaly task needs a 'ctr' or a 'label' column in the dataset"
            )
        n = len(table)
        labels = np.full(n, -1, dtype=np.int64)
        from_label = np.full(n, -1, dtype=np.int64)
        if has_label:
            for i in range(n):
                index = parse_label(table["label"].iat[i], self.class_names)
                if index is not None:
                    from_label[i] = index
        out_of_range = np.zeros(n, dtype=bool)
        if has_ctr:
            ctr = pd.to_numeric(table["ctr"], errors="coerce").to_numpy(dtype=float)
            finite = np.isfinite(ctr)
            out_of_range = finite & ((ctr <= 0) | (ctr > 1))
            usable = finite & ~out_of_range
            labels[usable] = ctr_class(ctr[usable])
        fallback = (labels < 0) & ~out_of_range
        labels[fallback] = from_label[fallback]

        bad = np.flatnonzero((labels < 0) | out_of_range)
        if bad.size:
            raise XaibenchError(
                f"{bad.size} row(s) have no valid CTR or label: {self._rows(table, bad)}. "
                "A CTR must be a finite number in (0, 1] (a ratio: write 0.52, not 52); a label "
                f"one of {', '.join(self.class_names)} or 0-{len(self.class_names) - 1}"
            )
        disagree = np.flatnonzero((from_label >= 0) & (labels != from_label))
        if disagree.size:
            raise XaibenchError(
                f"{disagree.size} row(s) have a CTR and a label that disagree (CTR > "
                f"{CTR_THRESHOLD} is cardiomegaly): {self._rows(table, disagree)}. Give one of "
                "the two or make them agree"
            )
        return labels

    @staticmethod
    def _rows(table: pd.DataFrame, rows: np.ndarray) -> str:
        """``row 3 (ctr=0.7, label='normal'); ...`` for the first rows, 1-based."""
        shown = []
        for i in rows[:MAX_LISTED_ROWS]:
            values = [f"{c}={_plain(table[c].iat[i])!r}" for c in ("ctr", "label") if c in table]
            shown.append(f"row {i + 1} ({', '.join(values)})")
        more = f" and {rows.size - MAX_LISTED_ROWS} more" if rows.size > MAX_LISTED_ROWS else ""
        return "; ".join(shown) + more

    def defaults(self) -> dict[str, Any]:
        """The default run: the ``quick`` 12-cell grid described in the class docstring."""
        return {
            "task": "cardiomegaly",
            "dataset": {
                "name": "cardiac_phantom",
                "options": {
                    "n_images": 1000,
                    "image_size": 128,
                    "cardiomegaly_share": 0.4,
                    "margin": 0.03,
                },
            },
            "backbones": list(QUICK_BACKBONES),
            "strategies": list(STUDY_STRATEGIES),
            "seeds": [0],
            "saliency": ["gradcam", "saliency"],
            "perturbations": ["mean", "zero", "blur", "inpaint"],
            # Two classes: macro one-vs-rest AUC would equal the AUC, so it is left out.
            "metrics": [
                "auc",
                "accuracy",
                "sensitivity",
                "specificity",
                "ppv",
                "npv",
                "delta_region",
                "iou_region",
                "pointing_game",
                "relevance_mass",
            ],
            # The regions of interest, plus a control region that carries no label information
            # and, unlike the spine, ribs and sternum, never crosses the heart's silhouette.
            "explain_regions": [*self.regions_of_interest, CONTROL_REGION],
            "perturb_regions": [*self.regions_of_interest, CONTROL_REGION],
            # No complement test by default: inpainting everything outside the heart costs
            # about 20 s of the quick run's two minutes; add complement_regions: [heart] for it.
            "complement_regions": [],
            "train": {"epochs": 12, "batch_size": 32, "lr": 2e-3, "weight_decay": 0.01},
        }

    def grids(self) -> dict[str, dict[str, Any]]:
        """``quick``: the default 12-cell grid; ``encoders``: the four real encoders.

        ``encoders`` needs the encoders' weights (local files or the Hugging Face cache) and,
        realistically, a GPU; on the phantom it renders 5,000 images at 256 px.
        """
        return {
            "quick": {
                "backbones": list(QUICK_BACKBONES),
                "strategies": list(STUDY_STRATEGIES),
            },
            "encoders": {
                "dataset": {
                    "name": "cardiac_phantom",
                    "options": {"n_images": 5000, "image_size": 256},
                },
                "backbones": list(ENCODERS),
                "strategies": list(STUDY_STRATEGIES),
                "train": {"epochs": 20, "batch_size": 32, "lr": 1e-4, "patience": 5},
            },
        }
