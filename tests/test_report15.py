"""The report of schema 1.5 runs: chance, normalised, control and specific Δ, evidence flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_runs import write_fake_run
from fake_runs15 import write_fake_run_15

from xaibench.leaderboard import build_leaderboards
from xaibench.report.build import render_report
from xaibench.report.html import escape
from xaibench.report.run_files import load_run

EVIL = "w<script>alert(1)</script>"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("report15") / "run"
    # EVIL's maps sit far above chance on bone, which its model barely needs: flagged
    return write_fake_run_15(
        path, {"strong": 3.0, EVIL: 0.3}, n=200, iou={"strong": 0.3, EVIL: 0.6}
    )


@pytest.fixture(scope="module")
def html(run) -> str:
    runs = [load_run(run)]
    return render_report(runs, leaderboards=build_leaderboards(runs, resamples=50))


def test_report_has_the_new_sections(html):
    for title in ("Chance and controls", "Evidence agreement"):
        assert f"<h2>{title}</h2>" in html, title
    assert "Headline perturbation: mean." in html
    assert "Costly (above the threshold): zero." in html


def test_raw_values_stand_beside_chance_normalised_control_and_specific(run, html):
    records = json.loads((run / "results.json").read_text())["records"]
    iou = next(r for r in records if r["metric"] == "iou_region" and r["backbone"] == "strong")
    d = iou["details"]
    raw = f"{iou['value']:.3f} [{iou['ci_low']:.3f}, {iou['ci_high']:.3f}]"
    normalised = f"{d['normalised']:.3f} [{d['normalised_ci'][0]:.3f}, {d['normalised_ci'][1]:.3f}]"
    row = next(r for r in html.split("<tr>") if raw in r)
    assert f"{d['chance']:.3f}" in row
    assert normalised in row
    delta = next(
        r
        for r in records
        if r["metric"] == "delta_region"
        and r["backbone"] == "strong"
        and r["perturbation"] == "mean"
    )
    dd = delta["details"]
    row = next(r for r in html.split("<tr>") if f"{delta['value']:.3f} [" in r and ">mean<" in r)
    assert f"{dd['control_delta']:.3f}" in row
    assert f"{dd['specific']:.3f} [{dd['specific_ci'][0]:.3f}" in row


def test_evidence_flags_are_shown_and_escaped(html):
    assert "<h3>Flags (1 of 2)</h3>" in html
    assert "maps point at bone" in html
    assert "<script>alert" not in html
    assert escape(EVIL) in html
    # the leaderboard carries the verdict per method
    assert "evidence (gradcam)" in html


def test_older_runs_get_notes_instead(tmp_path):
    run = write_fake_run(tmp_path / "old", {"a": 2.0, "b": 1.0})
    runs = [load_run(run)]
    html = render_report(runs, leaderboards=build_leaderboards(runs, resamples=20))
    assert "record no chance levels or control regions" in html
    assert "No evidence agreement" in html


def test_long_reference_tables_lead_with_the_primary_region():
    from xaibench.report.reference import reference_section

    records = [
        {
            "backbone": "b", "strategy": "s", "seed": 0, "metric": "iou_region",
            "category": "explanation", "status": "ok", "saliency": "gradcam",
            "perturbation": None, "region": f"r{i}", "value": 0.5, "ci_low": 0.4, "ci_high": 0.6,
            "details": {"chance": 0.25, "best": 1.0, "normalised": 1 / 3,
                        "normalised_ci": [0.2, 0.4], "p_chance": 0.01},
        }
        for i in range(30)
    ]  # fmt: skip
    body = reference_section(records, primary="r0").body
    assert "Localisation on r0" in body
    assert "All 30 rows (every region)" in body
    assert body.count(">r0<") == 2  # in the focus table and in the full one
    assert body.count(">r7<") == 1
    assert "0.333 [0.200, 0.400]" in body


def test_the_tradeoff_uses_normalised_iou_when_recorded(run, html):
    from xaibench.report import figures

    records = json.loads((run / "results.json").read_text())["records"]
    points = figures.tradeoff_points(records, "bone", normalised=True)
    iou = {r["backbone"]: r for r in records if r["metric"] == "iou_region"}
    assert len(points) == 2
    for point in points:
        details = iou[point.cell.split(" / ")[0]]["details"]
        assert point.score == pytest.approx(details["normalised"])
        assert point.score_low == pytest.approx(details["normalised_ci"][0])
    assert (
        "AUC vs nIoU_bone; Pareto front circled (over cells whose AUC CI lies above 0.5)." in html
    )
    assert "chance-normalised IoU" in html
