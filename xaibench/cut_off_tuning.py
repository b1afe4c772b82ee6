"""Binarisation cut-offs tuned on the validation split, as CheXlocalize tunes them.

A region metric with ``threshold: tuned``
(:class:`~xaibench.metrics.chexlocalize.ChexlocalizeMIoU`) binarises test maps with the cut-off
that gave the highest mIoU on the validation split's maps of the same model and saliency
method. :func:`tune_cut_offs` is that step of the explanation stage
(:mod:`xaibench.explain_stage`): it explains the validation images batch by batch, scores every
cut-off of each metric's grid per explain region, and returns the chosen cut-offs with the
curve, which the stage records in each record's details.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from xaibench.data.arrays import Rows
from xaibench.isolation import ISOLATED, error_text
from xaibench.metrics.base import SaliencyRegionMetric
from xaibench.metrics.chexlocalize import ChexlocalizeMIoU, tune_threshold
from xaibench.run_data import batch_slices

__all__ = ["TunedCutOffs", "kept_global_generators", "tune_cut_offs"]


@dataclass(frozen=True)
class TunedCutOffs:
    """What tuning produced for one saliency method in one cell.

    Attributes:
        cut_offs: Metric -> region -> the chosen cut-off.
        details: (metric, region) -> record details: ``tuned_threshold``, ``tuning_split``
            (``val``), ``tuning_images`` (validation images explained) and ``tuning_curve``
            (one ``{"threshold", "miou", "n"}`` per cut-off of the grid).
        errors: Metric -> why it could not be tuned (its records fail with it).
    """

    cut_offs: dict[str, dict[str, float]] = field(default_factory=dict)
    details: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


@contextlib.contextmanager
def kept_global_generators() -> Iterator[None]:
    """Restore Python's, NumPy's and torch's global generators (CPU and CUDA) on exit.

    Saliency methods that draw noise (the ``random`` control, SmoothGrad) read the global
    generators, which the runner seeds per cell: explaining the validation images must not
    change the test maps, so a run's other scores do not depend on whether a metric tunes.
    """
    python_state, numpy_state = random.getstate(), np.random.get_state()
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=cuda):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def tune_cut_offs(
    metrics: Mapping[str, SaliencyRegionMetric],
    explain: Callable[[slice], torch.Tensor],
    masks: Mapping[str, Rows],
    regions: Sequence[str],
    n: int,
    calls: np.ndarray | None,
    batch_size: int,
) -> TunedCutOffs:
    """Tune every metric with ``threshold: tuned`` on the first ``n`` validation images.

    Args:
        metrics: The cell's region metrics (those that do not tune are ignored).
        explain: Maps ``[B, H, W]`` (CPU) of the validation images in a slice; called with the
            global generators restored afterwards (:func:`kept_global_generators`).
        masks: Region -> validation masks on the maps' grid (a region missing here cannot be
            tuned: its metric fails with the reason).
        regions: The explain regions.
        n: Validation images to explain.
        calls: The model's positive call per validation image (None: every image called).
        batch_size: Images per :func:`explain` call.
    """
    tuning = {k: m for k, m in metrics.items() if isinstance(m, ChexlocalizeMIoU) and m.tunes}
    if not tuning:
        return TunedCutOffs()
    missing = [r for r in regions if r not in masks]
    if n == 0 or missing:
        why = "no validation images" if n == 0 else f"no {missing[0]} masks on validation"
        return TunedCutOffs(errors=dict.fromkeys(tuning, f"threshold 'tuned': {why}"))
    ious: dict[tuple[str, str], list[np.ndarray]] = {}
    out = TunedCutOffs()
    with kept_global_generators():
        for s in batch_slices(n, batch_size):
            maps = explain(s)  # a method that raises fails as a whole, as on test
            batch_calls = np.ones(len(maps), dtype=bool) if calls is None else calls[s]
            for name, metric in tuning.items():
                if name in out.errors:
                    continue
                try:
                    for region in regions:
                        value = metric.validation_ious(maps, masks[region][s], batch_calls)
                        ious.setdefault((name, region), []).append(value)
                except ISOLATED as exc:  # a metric that raises fails only its own records
                    out.errors[name] = f"threshold 'tuned': {error_text(exc)}"
    ious = {key: chunks for key, chunks in ious.items() if key[0] not in out.errors}
    for (name, region), chunks in ious.items():
        try:
            cut, curve = tune_threshold(np.concatenate(chunks), tuning[name].tuning_grid)
        except ISOLATED as exc:
            out.errors.setdefault(name, f"{region}: {error_text(exc)}")
            continue
        out.cut_offs.setdefault(name, {})[region] = cut
        out.details[(name, region)] = {
            "tuned_threshold": cut,
            "tuning_split": "val",
            "tuning_images": n,
            "tuning_curve": curve,
        }
    return out
