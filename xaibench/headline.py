"""Which explanation scores a table leads with: a pure function of results records.

Raw Δ conflates "the model needs these pixels" with "the model breaks on any large edit", and raw
localisation scores are dominated by region size (a random map wins IoU on a large region).
Schema 1.5 records carry the reference points (``docs/results-schema.md``): a region metric's
``details.normalised`` (chance-corrected) and a Δ record's ``details.specific`` (Δ minus the Δ of
area-matched control regions) and ``details.control_delta`` (the perturbation's off-target
cost). This module picks, over a set of records (one run, or the runs of one leaderboard):

* the **headline perturbation**: the one with the lowest mean absolute off-target cost, so the
  headline specific Δ comes from the perturbation that disturbs the model least by itself;
* perturbations whose off-target cost exceeds :data:`OFF_TARGET_THRESHOLD` (their specific Δ is
  the difference of two large numbers: read it with care);
* the **headline localisation metric** of the evidence-agreement check (``xaibench.evidence``).

Records of older schemas have none of these fields: every function then answers ``None`` or
an empty mapping, and callers fall back to the raw values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

#: Mean absolute control Δ (AUC lost when area-matched regions elsewhere are perturbed) above
#: which a perturbation counts as costly off target: 0.05 AUC is about the width of a typical
#: Δ confidence interval on a few hundred test images, so a larger cost is no longer noise.
OFF_TARGET_THRESHOLD = 0.05

#: Preference order of the localisation metric the evidence check ranks regions by:
#: relevance mass first (threshold-free, its chance level is exact: the region's area
#: fraction), then the others the project ships. Any other metric with a normalised score
#: comes after these, in record order.
LOCALISATION_PREFERENCE = (
    "relevance_mass",
    "iou_region",
    "relevance_rank",
    "pointing_game",
    "pixel_auc",
)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_delta_with_control(record: Mapping[str, Any]) -> bool:
    """A finished Δ record on a region (not a complement) that carries its control Δ."""
    details = record.get("details") or {}
    return (
        record.get("metric") == "delta_region"
        and record.get("status") == "ok"
        and bool(record.get("perturbation"))
        and "complement_of" not in details
        and _number(details.get("control_delta"))
    )


def has_specific(record: Mapping[str, Any]) -> bool:
    """A Δ record of schema 1.5 that has a ``specific`` entry (its value may be null)."""
    return record.get("metric") == "delta_region" and "specific" in (record.get("details") or {})


def has_normalised(record: Mapping[str, Any]) -> bool:
    """A region-metric record of schema 1.5 whose metric has a normalised score.

    Its ``details`` hold ``normalised`` (the value may be null: chance undefined on these
    images) and the metric declares a ``best`` value; a metric that declares none (``best``
    null) has no normalised score, and its raw value stays the headline.
    """
    details = record.get("details") or {}
    return (
        record.get("category") == "explanation"
        and bool(record.get("saliency"))
        and bool(record.get("region"))
        and "normalised" in details
        and not ("best" in details and details["best"] is None)
    )


def off_target_costs(records: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Per perturbation: the mean absolute ``control_delta`` over its finished Δ records.

    The mean is over every cell and region the records hold, in the order perturbations first
    appear; perturbations without control records are left out.
    """
    sums: dict[str, list[float]] = {}
    for rec in records:
        if is_delta_with_control(rec):
            cost = abs(float(rec["details"]["control_delta"]))
            sums.setdefault(str(rec["perturbation"]), []).append(cost)
    return {name: sum(v) / len(v) for name, v in sums.items()}


def headline_perturbation(records: Iterable[Mapping[str, Any]]) -> str | None:
    """The perturbation with the lowest mean off-target cost (first of equals), or None."""
    costs = off_target_costs(records)
    if not costs:
        return None
    return min(costs, key=lambda name: costs[name])  # min keeps the first of equal costs


def costly_perturbations(
    costs: Mapping[str, float], threshold: float = OFF_TARGET_THRESHOLD
) -> list[str]:
    """Perturbations whose mean off-target cost exceeds ``threshold``, in order."""
    return [name for name, cost in costs.items() if cost > threshold]


def headline_localisation_metric(records: Iterable[Mapping[str, Any]]) -> str | None:
    """The region metric the evidence check ranks regions by, or None.

    The first of :data:`LOCALISATION_PREFERENCE` that has normalised scores in ``records``,
    else the first other metric that has them.
    """
    metrics = list(dict.fromkeys(str(r["metric"]) for r in records if has_normalised(r)))
    for name in LOCALISATION_PREFERENCE:
        if name in metrics:
            return name
    return metrics[0] if metrics else None
