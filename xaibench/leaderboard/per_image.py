"""Per-image inputs of the paired tests: predictions and explanation scores per cell.

:class:`_PerImage` indexes each cell's predictions and per-image scores once, aligned on sample
ids, and gives the paired bootstraps of Δ, specific Δ and per-image scores between two cells.
The ``*_TEST`` constants name the test a comparison row used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from xaibench.leaderboard.columns import CELL_COLUMNS
from xaibench.prediction_scores import ranking_scores
from xaibench.stats.bootstrap_comparisons import (
    DeltaReplicates,
    delta_auc_replicates,
    paired_bootstrap_delta_auc,
    paired_delta_from_replicates,
)
from xaibench.stats.comparisons import PairedComparison

if TYPE_CHECKING:
    from xaibench.report.run_files import RunFiles


def _merged(runs: Sequence[RunFiles], attr: str) -> pd.DataFrame:
    frames = [getattr(r, attr) for r in runs if not getattr(r, attr).empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


#: Column of :class:`_PerImage`'s prediction tables holding the scores ranks are taken from.
RANKING_COLUMN = "ranking_score"


class _PerImage:
    """Per-image inputs of the paired tests, indexed once per cell and aligned on sample ids."""

    def __init__(self, runs: Sequence[RunFiles], *, resamples: int, seed: int) -> None:
        task = runs[0].task
        class_names = list(task["class_names"])
        #: The derived column the paired AUC and Δ tests rank by: the positive-vs-rest log-odds
        #: where the files record log-probabilities, else the probability (older files).
        self.positive = RANKING_COLUMN
        self.positive_index = class_names.index(task["positive_class"])
        self.resamples, self.seed = resamples, seed
        preds = _merged(runs, "predictions")
        self._preds: dict[tuple[Any, ...], pd.DataFrame] = {}
        if not preds.empty:
            preds = preds[preds["split"] == "test"]
            keys = [*CELL_COLUMNS, "perturbation", "region"]
            for key, group in preds.groupby(keys, sort=False):
                cell = (key[0], key[1], int(key[2]))
                scores = ranking_scores(group, class_names, self.positive_index)
                group = group.assign(**{RANKING_COLUMN: scores})
                self._preds[(cell, key[3], key[4])] = group.set_index("sample_id").sort_index()
        expl = _merged(runs, "explanations")
        self._expl: dict[tuple[Any, ...], pd.Series] = {}
        self._chance: dict[tuple[Any, ...], pd.Series] = {}
        if not expl.empty:
            keys = [*CELL_COLUMNS, "metric", "saliency", "region"]
            for key, group in expl.groupby(keys, sort=False):
                cell = (key[0], key[1], int(key[2]))
                indexed = group.set_index("sample_id").sort_index()
                self._expl[(cell, *key[3:])] = indexed["value"]
                if "chance" in indexed and indexed["chance"].notna().any():
                    self._chance[(cell, *key[3:])] = indexed["chance"]
        self._replicates: dict[tuple[Any, ...], tuple[tuple[str, ...], DeltaReplicates]] = {}

    def _pred(self, cell: tuple[Any, ...], perturbation: str, region: str) -> pd.DataFrame | None:
        return self._preds.get((cell, perturbation, region))

    def intact(self, a: tuple[Any, ...], b: tuple[Any, ...]) -> pd.DataFrame | None:
        """Labels, positive scores and calls of two cells on their shared test images."""
        pa, pb = self._pred(a, "", ""), self._pred(b, "", "")
        if pa is None or pb is None:
            return None
        b_cols = pb[[self.positive, "called_positive"]].rename(columns=lambda c: f"{c}_b")
        return pa[["label", self.positive, "called_positive"]].join(b_cols, how="inner")

    def _cell_delta(
        self,
        cell: tuple[Any, ...],
        perturbation: str,
        region: str,
        ids: tuple[str, ...] | None = None,
    ) -> tuple[tuple[str, ...], DeltaReplicates] | None:
        """One cell's Δ replicates on its images, or on ``ids`` only (bootstrapped once)."""
        key = (cell, perturbation, region, ids)
        if key not in self._replicates:
            intact, perturbed = self._pred(cell, "", ""), self._pred(cell, perturbation, region)
            if intact is None or perturbed is None:
                return None
            joined = intact[["label", self.positive]].join(
                perturbed[[self.positive]].rename(columns={self.positive: "perturbed"}),
                how="inner",
            )
            if ids is not None:
                joined = joined.loc[list(ids)]
            y = (joined["label"].to_numpy() == self.positive_index).astype(int)
            reps = delta_auc_replicates(
                y,
                joined[self.positive].to_numpy(),
                joined["perturbed"].to_numpy(),
                resamples=self.resamples,
                seed=self.seed,
            )
            self._replicates[key] = (tuple(joined.index), reps)
        return self._replicates[key]

    def _controls(self, cell: tuple[Any, ...], perturbation: str, region: str) -> list[str]:
        """The control regions recorded for a region (``<region>#control<d>``, d = 0, 1, ...)."""
        names: list[str] = []
        while self._pred(cell, perturbation, f"{region}#control{len(names)}") is not None:
            names.append(f"{region}#control{len(names)}")
        return names

    def _cell_specific(
        self,
        cell: tuple[Any, ...],
        perturbation: str,
        region: str,
        ids: tuple[str, ...] | None = None,
    ) -> tuple[tuple[str, ...], DeltaReplicates] | None:
        """One cell's specific-Δ replicates: Δ_region minus the mean Δ of its control draws.

        Every Δ is bootstrapped on the same images in the same order, and the draws depend only
        on the number of images of each class and the seed (:func:`delta_auc_replicates`), so
        replicate ``r`` of the region and of every control resample the same images: their
        difference is the paired, class-stratified bootstrap of specific Δ. None without
        control predictions.
        """
        controls = self._controls(cell, perturbation, region)
        intact = self._pred(cell, "", "")
        if not controls or intact is None:
            return None
        if ids is None:
            shared = set(intact.index)
            for name in [region, *controls]:
                part = self._pred(cell, perturbation, name)
                shared &= set(part.index) if part is not None else set()
            ids = tuple(sorted(shared))
        parts = [self._cell_delta(cell, perturbation, name, ids) for name in [region, *controls]]
        if any(part is None for part in parts):
            return None
        main, *rest = [part[1] for part in parts if part is not None]
        control_delta = float(np.mean([c.delta for c in rest]))
        control_reps = np.mean([c.replicates for c in rest], axis=0)
        return ids, replace(
            main, delta=main.delta - control_delta, replicates=main.replicates - control_reps
        )

    def specific(
        self,
        a: tuple[Any, ...],
        b: tuple[Any, ...],
        perturbation: str,
        region: str,
        level: float,
    ) -> PairedComparison | None:
        """Paired bootstrap of specific Δ_a - specific Δ_b; raw Δ where controls are missing.

        Both cells are bootstrapped on their shared images. Without control predictions
        (``<region>#control<d>`` rows) the raw Δ is compared, and the test says so.
        """
        ra = self._cell_specific(a, perturbation, region)
        rb = self._cell_specific(b, perturbation, region)
        if ra is None or rb is None:
            raw = self.delta(a, b, perturbation, region, level)
            return None if raw is None else replace(raw, test=RAW_DELTA_TEST)
        if ra[0] != rb[0]:
            shared = tuple(sorted(set(ra[0]) & set(rb[0])))
            ra = self._cell_specific(a, perturbation, region, shared)
            rb = self._cell_specific(b, perturbation, region, shared)
            if ra is None or rb is None:
                return None
        result = paired_delta_from_replicates(ra[1], rb[1], level)
        return replace(result, test=SPECIFIC_DELTA_TEST)

    def delta(
        self,
        a: tuple[Any, ...],
        b: tuple[Any, ...],
        perturbation: str,
        region: str,
        level: float,
    ) -> PairedComparison | None:
        """Paired bootstrap of Δ_a - Δ_b (cached per-cell replicates when the images agree)."""
        ra, rb = (
            self._cell_delta(a, perturbation, region),
            self._cell_delta(b, perturbation, region),
        )
        if ra is None or rb is None:
            return None
        if ra[0] == rb[0]:  # the same images in the same order: the draws pair exactly
            return paired_delta_from_replicates(ra[1], rb[1], level)
        parts = [
            self._pred(a, "", ""), self._pred(a, perturbation, region),
            self._pred(b, "", ""), self._pred(b, perturbation, region),
        ]  # fmt: skip
        names = ["intact_a", "perturbed_a", "intact_b", "perturbed_b"]
        joined = parts[0][["label"]]  # type: ignore[index]
        for part, name in zip(parts, names, strict=True):
            joined = joined.join(
                part[[self.positive]].rename(columns={self.positive: name}),  # type: ignore[index]
                how="inner",
            )
        y = (joined["label"].to_numpy() == self.positive_index).astype(int)
        return paired_bootstrap_delta_auc(
            y, *(joined[name].to_numpy() for name in names),
            resamples=self.resamples, level=level, seed=self.seed,
        )  # fmt: skip

    def scores(
        self,
        a: tuple[Any, ...],
        b: tuple[Any, ...],
        metric: str,
        saliency: str,
        region: str,
        *,
        above_chance: bool = False,
    ) -> pd.DataFrame | None:
        """Two cells' per-image scores on their shared images (``a``, ``b``).

        With ``above_chance``, each score minus its image's chance level (explanations.csv
        ``chance``) when both cells recorded it; the frame's ``attrs["above_chance"]`` says
        whether it was subtracted.
        """
        key_a, key_b = (a, metric, saliency, region), (b, metric, saliency, region)
        sa, sb = self._expl.get(key_a), self._expl.get(key_b)
        if sa is None or sb is None:
            return None
        ca, cb = self._chance.get(key_a), self._chance.get(key_b)
        subtract = above_chance and ca is not None and cb is not None
        if subtract:
            sa, sb = sa - ca, sb - cb
        pairs = pd.concat([sa, sb], axis=1, keys=["a", "b"], join="inner")
        pairs.attrs["above_chance"] = subtract
        return pairs


#: ``test`` of comparisons on a normalised column: per-image ``value - chance`` compared
#: (the difference is in the metric's own units, not normalised), or the raw values where a
#: run recorded no per-image chance.
ABOVE_CHANCE_TEST = "paired bootstrap (value - chance)"
RAW_SCORE_TEST = "paired bootstrap (raw value: no per-image chance)"
#: ``test`` of comparisons on a specific-Δ column: with control predictions, or raw Δ without.
SPECIFIC_DELTA_TEST = "paired bootstrap (specific Δ)"
RAW_DELTA_TEST = "paired bootstrap (raw Δ: no control predictions)"
