"""Evidence agreement (issue 17 item 3) and the headline choices it rests on: known answers."""

from __future__ import annotations

from typing import Any

import pytest
from scipy.stats import kendalltau
from statsmodels.stats.multitest import multipletests

from xaibench.evidence import evidence_agreement, evidence_label
from xaibench.headline import (
    costly_perturbations,
    headline_localisation_metric,
    headline_perturbation,
    off_target_costs,
)

CELL = ("resnet", "full", 0)


def _base(metric: str, **fields: Any) -> dict[str, Any]:
    return {
        "backbone": CELL[0], "strategy": CELL[1], "seed": CELL[2], "metric": metric,
        "category": "explanation", "status": "ok", "saliency": None, "perturbation": None,
        "region": None, "value": 0.0, **fields,
    }  # fmt: skip


def delta(region: str, specific: float, ci: tuple[float, float], *, perturbation: str = "mean",
          control: float = 0.01, p: float | None = None) -> dict[str, Any]:  # fmt: skip
    details = {"control_delta": control, "specific": specific, "specific_ci": list(ci)}
    if p is not None:
        details["specific_p"] = p
    return _base(
        "delta_region", perturbation=perturbation, region=region, value=specific + control,
        details=details,
    )  # fmt: skip


def local(region: str, normalised: float, ci: tuple[float, float], *,
          saliency: str = "gradcam", metric: str = "relevance_mass",
          p: float | None = None) -> dict[str, Any]:  # fmt: skip
    details = {"chance": 0.3, "best": 1.0, "normalised": normalised, "normalised_ci": list(ci)}
    if p is not None:
        details["p_chance"] = p
    return _base(metric, saliency=saliency, region=region, value=0.5, details=details)


def test_maps_on_bone_while_the_model_needs_only_the_marker_are_flagged():
    # the marker model of the issue: perturbation says marker (bone covers 0), the maps say bone
    records = [
        delta("bone", 0.01, (-0.03, 0.05)),
        delta("marker", 0.40, (0.30, 0.50)),
        delta("lungs", 0.00, (-0.02, 0.02)),
        local("bone", 0.45, (0.35, 0.55)),
        local("marker", 0.02, (-0.05, 0.08)),
        local("lungs", 0.10, (0.02, 0.18)),
    ]
    (row,) = evidence_agreement(records)
    assert row["perturbation"] == "mean"
    assert row["localisation_metric"] == "relevance_mass"
    assert row["top_needed"] == "marker"
    assert row["top_shown"] == "bone"
    assert row["top_match"] is False
    assert row["needed_order"] == ["marker", "bone", "lungs"]
    assert row["shown_order"] == ["bone", "lungs", "marker"]
    expected = kendalltau([0.01, 0.40, 0.00], [0.45, 0.02, 0.10]).statistic
    assert row["kendall_tau"] == pytest.approx(expected)
    assert row["kendall_tau"] < 0
    assert row["flagged"] is True
    assert len(row["flags"]) == 2
    assert row["flags"][0].startswith("maps point at bone")
    assert "is not shown to need" in row["flags"][0]
    assert row["flags"][1].startswith("the model needs marker")
    assert evidence_label(row).startswith("flagged")


def test_consistent_evidence_has_tau_one_and_no_flag():
    records = [
        delta("bone", 0.30, (0.20, 0.40)),
        delta("spine", 0.10, (0.05, 0.15)),
        delta("marker", 0.00, (-0.02, 0.02)),
        local("bone", 0.50, (0.40, 0.60)),
        local("spine", 0.20, (0.10, 0.30)),
        local("marker", 0.01, (-0.03, 0.05)),
    ]
    (row,) = evidence_agreement(records)
    assert row["kendall_tau"] == pytest.approx(1.0)
    assert row["top_match"] is True
    assert row["flagged"] is False
    assert row["flags"] == []
    assert row["reason"] is None
    assert evidence_label(row) == "agrees (τ 1.00)"


def test_a_needed_region_the_maps_miss_is_flagged_even_when_tops_agree():
    records = [
        delta("bone", 0.30, (0.20, 0.40)),
        delta("marker", 0.05, (0.01, 0.09)),  # needed, a little
        local("bone", 0.50, (0.40, 0.60)),
        local("marker", -0.01, (-0.04, 0.02)),  # not above chance
    ]
    (row,) = evidence_agreement(records)
    assert row["top_match"] is True
    assert row["kendall_tau"] is None
    assert "needs 3 or more" in row["reason"]
    assert row["flagged"] is True
    assert row["flags"] == [row["flags"][0]]
    assert "needs marker" in row["flags"][0]


def test_undecided_intervals_raise_no_flag():
    # the top map region's localisation CI covers 0: not "pointing at" it, whatever Δ says
    records = [
        delta("bone", 0.0, (-0.05, 0.05)),
        local("bone", 0.05, (-0.02, 0.12)),
    ]
    (row,) = evidence_agreement(records)
    assert row["flagged"] is False
    assert row["top_match"] is None
    assert evidence_label(row) == "n/a"


def test_each_saliency_method_gets_its_row_and_older_records_none():
    records = [
        delta("bone", 0.3, (0.2, 0.4)),
        local("bone", 0.4, (0.3, 0.5), saliency="gradcam"),
        local("bone", 0.0, (-0.1, 0.1), saliency="random"),
    ]
    rows = evidence_agreement(records)
    assert [r["saliency"] for r in rows] == ["gradcam", "random"]
    assert rows[1]["flagged"] is True  # bone is needed; the random map shows nothing there
    old = [{**r, "details": {}} for r in records]
    assert evidence_agreement(old) == []


def test_headline_perturbation_has_the_lowest_off_target_cost():
    records = [
        delta("bone", 0.3, (0.2, 0.4), perturbation="zero", control=0.30),
        delta("marker", 0.0, (-0.1, 0.1), perturbation="zero", control=-0.20),
        delta("bone", 0.2, (0.1, 0.3), perturbation="mean", control=0.02),
        delta("marker", 0.0, (-0.1, 0.1), perturbation="mean", control=-0.01),
        delta("bone", 0.2, (0.1, 0.3), perturbation="blur", control=0.015),
        delta("marker", 0.0, (-0.1, 0.1), perturbation="blur", control=0.015),
        # a complement region and a failed record do not count
        {**delta("outside_bone", 0.0, (0, 0), perturbation="blur", control=0.9),
         "details": {"control_delta": 0.9, "complement_of": "bone"}},
        {**delta("bone", 0.0, (0, 0), perturbation="blur", control=0.9), "status": "failed"},
    ]  # fmt: skip
    costs = off_target_costs(records)
    assert costs == pytest.approx({"zero": 0.25, "mean": 0.015, "blur": 0.015})
    assert headline_perturbation(records) == "mean"  # first of equal costs
    assert costly_perturbations(costs) == ["zero"]
    assert headline_perturbation([{**r, "details": {}} for r in records]) is None


def test_headline_localisation_metric_prefers_relevance_mass():
    records = [
        local("bone", 0.1, (0, 0.2), metric="iou_region"),
        local("bone", 0.1, (0, 0.2), metric="relevance_mass"),
    ]
    assert headline_localisation_metric(records) == "relevance_mass"
    assert headline_localisation_metric(records[:1]) == "iou_region"
    assert headline_localisation_metric([]) is None


def test_a_failing_evidence_check_is_recorded_and_the_run_kept(monkeypatch):
    from types import SimpleNamespace

    from xaibench.engine import benchmark
    from xaibench.progress import NullProgress

    def broken(records):
        raise ValueError("boom")

    monkeypatch.setattr(benchmark, "evidence_agreement", broken)
    failures: dict[str, str] = {}
    rows = benchmark._evidence([SimpleNamespace(records=[])], failures, NullProgress())
    assert rows == []
    assert failures == {"evidence": "ValueError: boom"}


def test_a_metric_without_best_keeps_its_raw_value():
    from xaibench.headline import has_normalised

    record = local("bone", 0.2, (0.1, 0.3))
    assert has_normalised(record)
    no_best = {**record, "details": {**record["details"], "best": None, "normalised": None}}
    assert not has_normalised(no_best)
    assert evidence_agreement([delta("bone", 0.3, (0.2, 0.4)), no_best]) == []


def test_above_chance_and_needed_are_holm_adjusted_over_the_table():
    records = [
        delta("bone", 0.00, (-0.02, 0.02), p=0.5),
        delta("spine", 0.20, (0.10, 0.30), p=0.001),
        delta("ribs", 0.10, (0.01, 0.20), p=0.02),
        local("bone", 0.30, (0.01, 0.60), p=0.02),
        local("spine", 0.20, (0.05, 0.35), p=0.001),
        local("ribs", 0.10, (0.02, 0.20), p=0.03),
    ]
    (row,) = evidence_agreement(records)
    regions = {r["region"]: r for r in row["regions"]}
    names = ["bone", "spine", "ribs"]
    chance = multipletests([0.02, 0.001, 0.03], method="holm")[1]
    needed = multipletests([0.5, 0.001, 0.02], method="holm")[1]
    for name, p_chance, p_needed in zip(names, chance, needed, strict=True):
        assert regions[name]["p_chance_holm"] == pytest.approx(p_chance)
        assert regions[name]["specific_p_holm"] == pytest.approx(p_needed)
    verdicts = {r["region"]: (r["needed"], r["above_chance"]) for r in row["regions"]}
    assert verdicts == {"bone": (False, True), "spine": (True, True), "ribs": (True, True)}
    assert row["flagged"] is True  # the maps point at bone, which is not needed
    # at alpha 0.01 only spine is shown, both ways: bone (p 0.04 after Holm) no longer flags
    (strict,) = evidence_agreement(records, alpha=0.01)
    verdicts = {r["region"]: (r["needed"], r["above_chance"]) for r in strict["regions"]}
    assert verdicts == {"bone": (False, False), "spine": (True, True), "ribs": (False, False)}
    assert strict["flagged"] is False


def test_the_families_span_the_table_and_count_a_cell_s_delta_once():
    deltas = [
        delta("bone", 0.00, (-0.02, 0.02), p=0.5),
        delta("spine", 0.20, (0.10, 0.30), p=0.001),
        delta("ribs", 0.10, (0.01, 0.20), p=0.02),
    ]
    maps = [
        local(region, 0.1, (0.01, 0.2), saliency=method, p=p)
        for method, ps in (("gradcam", (0.02, 0.001, 0.03)), ("random", (0.4, 0.01, 0.6)))
        for region, p in zip(("bone", "spine", "ribs"), ps, strict=True)
    ]
    rows = evidence_agreement([*deltas, *maps])
    assert [r["saliency"] for r in rows] == ["gradcam", "random"]
    chance = multipletests([0.02, 0.001, 0.03, 0.4, 0.01, 0.6], method="holm")[1]
    needed = multipletests([0.5, 0.001, 0.02], method="holm")[1]  # once, not per method
    got_chance = [r["p_chance_holm"] for row in rows for r in row["regions"]]
    assert got_chance == pytest.approx(list(chance))
    for row in rows:
        assert [r["specific_p_holm"] for r in row["regions"]] == pytest.approx(list(needed))
