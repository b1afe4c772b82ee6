"""Control regions of a cell's perturbed regions: their masks, perturbed predictions and details.

:class:`ControlStage` is mixed into :class:`~xaibench.engine.runner.CellRunner`, which provides the
run's configuration, data and the perturbation helpers (``_perturbedbatch_slices``,
``_predict_perturbed``, ``_prediction_frame``, ``_mask``). For each perturbation and perturbed
region the runner asks :meth:`ControlStage._controls_of` for the control draws' predictions and
adds :meth:`ControlStage._specific_details` to the region's ``delta_region`` record (see
:mod:`xaibench.control_regions` and ``docs/explainability.md``, "Specific Δ and off-target cost").
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from xaibench.cell_result import CellResult
from xaibench.config import RunConfig
from xaibench.control_regions import (
    FIELD_REGIONS,
    MIN_AREA_RATIO,
    ControlRows,
    FieldRows,
    UnionRows,
)
from xaibench.data.arrays import MappedRows, Rows, SplitArrays
from xaibench.errors import XaibenchError
from xaibench.explain_stage import ISOLATED, error_text
from xaibench.metrics.base import Predictions
from xaibench.metrics.explanation import specific_delta
from xaibench.models.base import Classifier
from xaibench.perturbations.base import Perturbation
from xaibench.progress import Progress
from xaibench.run_data import RunData

if TYPE_CHECKING:
    import pandas as pd

#: Why a complement (``outside_<region>``) has no specific Δ.
COMPLEMENT_REASON = (
    "no control regions for a complement: it is the rest of the image, so no region of the "
    "same area lies outside it"
)


class ControlStage:
    """Control-region methods of :class:`~xaibench.engine.runner.CellRunner` (a mixin)."""

    config: RunConfig
    data: RunData
    progress: Progress
    _controls: dict[tuple[str, int, int], ControlRows]
    _fields: FieldRows | None

    if TYPE_CHECKING:  # provided by CellRunner

        def _mask(self, split: SplitArrays, region: str) -> Rows: ...
        def _perturbedbatch_slices(
            self,
            pname: str,
            perturbation: Perturbation,
            region: str,
            complement: bool,
            seed: int,
            control: int | None = None,
        ) -> Iterator[torch.Tensor]: ...
        def _predict_perturbed(
            self, model: Classifier, batches: Iterator[torch.Tensor], intact: Predictions
        ) -> Predictions: ...
        def _prediction_frame(
            self,
            base: dict[str, Any],
            split: SplitArrays,
            preds: Predictions,
            perturbation: str | None,
            region: str | None,
        ) -> pd.DataFrame: ...

    def _control_field(self) -> tuple[Rows | None, str]:
        """The field-of-view masks of the test split and the field's name.

        Raises:
            XaibenchError: ``controls.field`` names a region the test split does not have.
        """
        test, setting = self.data.splits["test"], self.config.controls.field
        if setting == "image":
            size = tuple(int(d) for d in test.images.shape[-2:])
            return MappedRows(
                test.images,
                lambda x: torch.ones((x.shape[0], *size), dtype=torch.bool),
                row_shape=size,
                dtype=torch.bool,
            ), "image"
        if setting == "auto":
            named = next((r for r in FIELD_REGIONS if r in test.regions), None)
            if named is None:
                if self._fields is None:
                    self._fields = FieldRows(test.images)
                return self._fields, "image less padding"
            setting = named
        if setting not in test.regions:
            raise XaibenchError(
                f"controls.field: region {setting!r} is not annotated on the test images "
                f"(they have: {', '.join(sorted(test.regions)) or 'none'})"
            )
        return self._mask(test, setting), setting

    def _control_rows(self, region: str, seed: int, draw: int) -> ControlRows:
        """Control masks of ``region``'s draw ``draw`` on the test split (memoised)."""
        key = (region, seed, draw)
        if key not in self._controls:
            test = self.data.splits["test"]
            fields, _ = self._control_field()
            self._controls[key] = ControlRows(
                test.images,
                self._mask(test, region),
                fields,
                test.sample_ids,
                seed=seed,
                region=region,
                draw=draw,
                avoid=self._tested_elsewhere(region),
            )
        return self._controls[key]

    def _tested_elsewhere(self, region: str) -> Rows | None:
        """The union of the other regions under test (``controls.avoid_tested``), or None.

        Every region the run perturbs or explains, less ``region`` itself: controls keep off
        them (:func:`~xaibench.control_regions.keep_off`).
        """
        if not self.config.controls.avoid_tested:
            return None
        test = self.data.splits["test"]
        uses = ("perturb_regions", "explain_regions", "complement_regions")
        others = [
            r
            for r in dict.fromkeys(r for use in uses for r in getattr(self.config, use))
            if r != region and r in test.regions
        ]
        if not others:
            return None
        return UnionRows([self._mask(test, r) for r in others])

    def _control_plan(self, region: str, seed: int) -> tuple[dict[str, Any], str | None]:
        """Control details shared by every perturbation of ``region``, or why there are none."""
        draws = self.config.controls.draws
        if draws == 0:
            return {}, "control regions are off (controls.draws: 0)"
        try:
            _, field = self._control_field()
            summaries = [
                self._control_rows(region, seed, d).summary(self.config.train.eval_batch_size)
                for d in range(draws)
            ]
        except XaibenchError as exc:
            return {}, str(exc)
        except ISOLATED as exc:  # a region whose controls cannot be built loses only them
            self.progress.log(
                f"  [red]failed[/red]: control regions of {region}: {error_text(exc)}"
            )
            return {}, f"building control regions failed: {error_text(exc)}"
        ratio = float(np.mean([s["area_ratio"] for s in summaries]))
        if not np.isfinite(ratio) or ratio < MIN_AREA_RATIO:
            reached = "no" if not np.isfinite(ratio) else f"only {ratio:.0%} of the"
            return {}, (
                f"control regions reach {reached} area of region {region!r} outside it in the "
                f"field of view ({field}): the region covers nearly all of it"
            )
        details = {
            "control_area_ratio": ratio,
            "control_shifted": float(np.mean([s["shifted"] for s in summaries])),
            "control_field": field,
        }
        return details, None

    def _controls_of(
        self,
        model: Classifier,
        base: dict[str, Any],
        intact: Predictions,
        result: CellResult,
        pname: str,
        perturbation: Perturbation,
        region: str,
        plans: dict[str, tuple[dict[str, Any], str | None]],
    ) -> dict[str, Any]:
        """Perturb and predict the control draws of ``region``, as rows of ``predictions.csv``.

        Returns ``{"predictions": [one per draw], **the plan's details}``, or ``{"reason": ...}``
        when there are no controls (off, impossible, or a control draw failed).
        """
        details, reason = plans[region]
        if reason is not None:
            return {"reason": reason}
        test, preds = self.data.splits["test"], []
        for d in range(self.config.controls.draws):
            try:
                batches = self._perturbedbatch_slices(
                    pname, perturbation, region, False, base["seed"], control=d
                )
                preds.append(self._predict_perturbed(model, batches, intact))
            except ISOLATED as exc:  # the region's Δ stands; only its controls are missing
                error = error_text(exc)
                self.progress.log(
                    f"  [red]failed[/red]: perturbation {pname} on control {d} of {region}: {error}"
                )
                return {"reason": f"perturbing control draw {d} failed: {error}"}
            result.predictions.append(
                self._prediction_frame(base, test, preds[-1], pname, f"{region}#control{d}")
            )
        return {"predictions": preds, **details}

    @staticmethod
    def _specific_details(
        control: dict[str, Any], intact: Predictions, perturbed: Predictions
    ) -> dict[str, Any]:
        """The C2 ``details`` of a Δ record: specific Δ and off-target cost, or why not."""
        if "reason" in control:
            return {"specific_reason": control["reason"]}
        extra = {k: v for k, v in control.items() if k != "predictions"}
        return {**specific_delta(intact, perturbed, control["predictions"]), **extra}
