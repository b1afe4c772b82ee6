"""Schema 1.5 leaderboards: normalised localisation, specific Δ, off-target cost, evidence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_runs15 import write_fake_run_15
from sklearn.metrics import roc_auc_score
from statsmodels.stats.multitest import multipletests

from xaibench.evidence import evidence_agreement, evidence_label
from xaibench.leaderboard import (
    ABOVE_CHANCE_TEST,
    CHANCE_MARK,
    RAW_DELTA_TEST,
    RAW_SCORE_TEST,
    SPECIFIC_DELTA_TEST,
    build_leaderboards,
    check_leaderboard_files,
    display_frame,
    write_leaderboard_files,
)
from xaibench.report.run_files import load_run

P_CHANCE = {"strong": 0.001, "twin": 0.03, "weak": 0.04}
NIOU, SDELTA = "nIoU_bone (gradcam)", "sΔ_bone (mean)"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("lb15") / "run"
    return write_fake_run_15(
        path,
        {"strong": 3.0, "twin": 2.9, "weak": 0.3},
        n=300,
        iou={"strong": 0.3, "twin": 0.3, "weak": 0.6},
        p_chance=P_CHANCE,
    )


@pytest.fixture(scope="module")
def boards(run):
    return build_leaderboards([load_run(run)], resamples=200, seed=0)


def _records(run: Path) -> list[dict]:
    return json.loads((run / "results.json").read_text())["records"]


def _by_backbone(frame: pd.DataFrame, column: str) -> dict[str, object]:
    return dict(zip(frame["backbone"], frame[column], strict=True))


def test_headline_columns_are_normalised_and_specific(run, boards):
    expl = boards.explainability
    assert "IoU_bone (gradcam)" not in expl  # the raw value stays in results.json
    assert "Δ_bone (mean)" not in expl
    records = _records(run)
    for rec in records:
        if rec["metric"] == "iou_region":
            row = expl[expl["backbone"] == rec["backbone"]].iloc[0]
            assert row[NIOU] == pytest.approx(rec["details"]["normalised"])
            assert [row[f"{NIOU} low"], row[f"{NIOU} high"]] == pytest.approx(
                rec["details"]["normalised_ci"]
            )
        if rec["metric"] == "delta_region":
            column = f"sΔ_bone ({rec['perturbation']})"
            row = expl[expl["backbone"] == rec["backbone"]].iloc[0]
            assert row[column] == pytest.approx(rec["details"]["specific"])
            assert row[f"{column} high"] == pytest.approx(rec["details"]["specific_ci"][1])
            cost = row[f"off-target ({rec['perturbation']})"]
            assert cost == pytest.approx(abs(rec["details"]["control_delta"]))


def test_the_low_cost_perturbation_ranks_and_the_costly_one_is_named(boards):
    headline = boards.meta["headline"]
    assert headline["perturbation"] == "mean"
    assert headline["costly"] == ["zero"]  # zero hurts the controls as much as the region
    assert headline["off_target_cost"]["zero"] > 0.05 > headline["off_target_cost"]["mean"]
    assert boards.meta["ranking"]["explainability"] == SDELTA
    columns = list(boards.explainability.columns)
    assert columns.index(SDELTA) < columns.index("sΔ_bone (zero)")
    values = boards.explainability[SDELTA].tolist()
    assert values == sorted(values, reverse=True)
    assert boards.explainability.iloc[-1]["backbone"] == "weak"


def test_not_beating_chance_is_holm_adjusted_over_the_table_and_marked_everywhere(
    run, boards, tmp_path
):
    expl = boards.explainability
    adjusted = multipletests(list(P_CHANCE.values()), method="holm")[1]
    expected = dict(zip(P_CHANCE, adjusted, strict=True))
    p_col = _by_backbone(expl, f"{NIOU} p chance")
    for backbone, p in expected.items():
        assert p_col[backbone] == pytest.approx(p)
    # 0.03 and 0.04 are below 0.05 each, but not after Holm over the three values
    assert _by_backbone(expl, f"{NIOU} beats chance") == {
        "strong": True,
        "twin": False,
        "weak": False,
    }
    shown = _by_backbone(display_frame(expl), NIOU)
    assert str(shown["twin"]).endswith(f" {CHANCE_MARK}")
    assert not str(shown["strong"]).endswith(CHANCE_MARK)
    out = tmp_path / "board"
    write_leaderboard_files(boards, out)
    md = (out / "leaderboard_explainability.md").read_text()
    headline, _, full = md.partition("<details>")
    assert full.count(CHANCE_MARK) == 2 + 1  # two cells and the legend
    assert headline.count(CHANCE_MARK) == 2 + 1  # the headline view marks the same two
    assert "not shown to beat chance" in md
    assert "headline perturbation mean" in md
    csv = pd.read_csv(out / "leaderboard_explainability.csv")
    assert _by_backbone(csv, f"{NIOU} beats chance") == {
        "strong": True,
        "twin": False,
        "weak": False,
    }
    doc = json.loads((out / "leaderboard.json").read_text())
    rows = {r["backbone"]: r for r in doc["explainability"]}
    assert rows["twin"][f"{NIOU} beats chance"] is False
    assert doc["headline"]["perturbation"] == "mean"
    html = (out / "leaderboard.html").read_text()
    assert html.count(CHANCE_MARK) >= 3


def test_specific_delta_is_compared_with_its_control_predictions(run, boards):
    rows = boards.comparisons[boards.comparisons["column"] == SDELTA]
    assert len(rows) == 3
    assert set(rows["test"]) == {SPECIFIC_DELTA_TEST}
    # the difference, recomputed independently from predictions.csv with scikit-learn
    preds = load_run(run).predictions
    specific = {}
    for backbone, cell in preds.groupby("backbone"):
        cell = cell[cell["split"] == "test"]

        def scores(perturbation, region, cell=cell):
            part = cell[(cell["perturbation"] == perturbation) & (cell["region"] == region)]
            return part.set_index("sample_id").sort_index()

        intact = scores("", "")
        y = (intact["label"] == 2).astype(int)

        def delta(frame, y=y, intact=intact):
            auc = roc_auc_score(y, intact["prob_osteoporosis"])
            return auc - max(roc_auc_score(y, frame["prob_osteoporosis"]), 0.5)

        controls = [delta(scores("mean", f"bone#control{d}")) for d in range(2)]
        specific[backbone] = delta(scores("mean", "bone")) - np.mean(controls)
    for _, r in rows.iterrows():
        assert r["difference"] == pytest.approx(
            specific[r["backbone_a"]] - specific[r["backbone_b"]], abs=1e-12
        )
        assert r["low"] <= r["difference"] <= r["high"]
    weak = rows[(rows["backbone_a"] == "weak") | (rows["backbone_b"] == "weak")]
    assert (weak["p_holm"] < 0.05).all()
    tiers = _by_backbone(boards.explainability, "tier")
    assert tiers["weak"] > tiers["strong"]


def test_normalised_columns_compare_value_minus_chance(run, boards):
    rows = boards.comparisons[boards.comparisons["column"] == NIOU]
    assert set(rows["test"]) == {ABOVE_CHANCE_TEST}
    expl = load_run(run).explanations
    excess = (expl["value"] - expl["chance"]).groupby(expl["backbone"]).mean()
    for _, r in rows.iterrows():
        assert r["difference"] == pytest.approx(
            excess[r["backbone_a"]] - excess[r["backbone_b"]], abs=1e-12
        )


def test_without_controls_or_chance_columns_the_raw_values_are_compared(run, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "results.json").write_bytes((run / "results.json").read_bytes())
    preds = pd.read_csv(run / "predictions.csv", keep_default_na=False)
    preds[~preds["region"].str.contains("#control")].to_csv(bare / "predictions.csv", index=False)
    pd.read_csv(run / "explanations.csv").drop(columns="chance").to_csv(
        bare / "explanations.csv", index=False
    )
    lb = build_leaderboards([load_run(bare)], resamples=50, seed=0)
    tests = dict(zip(lb.comparisons["column"], lb.comparisons["test"], strict=True))
    assert tests[SDELTA] == RAW_DELTA_TEST
    assert tests[NIOU] == RAW_SCORE_TEST


def test_evidence_column_matches_the_evidence_rows(run, boards):
    rows = evidence_agreement(_records(run))
    assert {r["perturbation"] for r in rows} == {"mean"}
    shown = _by_backbone(boards.explainability, "evidence (gradcam)")
    for row in rows:
        assert shown[row["backbone"]] == evidence_label(row)


def test_a_1_5_leaderboard_rebuilds_byte_identically_and_check_catches_a_mark(run, tmp_path):
    out1, out2 = tmp_path / "a", tmp_path / "b"
    for out in (out1, out2):
        write_leaderboard_files(build_leaderboards([load_run(run)], resamples=50), out)
    for name in sorted(p.name for p in out1.iterdir()):
        assert (out1 / name).read_bytes() == (out2 / name).read_bytes(), name
    md = out1 / "leaderboard_explainability.md"
    md.write_text(md.read_text().replace(f" {CHANCE_MARK} |", " |", 1))
    rebuilt = build_leaderboards([load_run(run)], resamples=50)
    assert check_leaderboard_files(rebuilt, out1) == ["leaderboard_explainability.md"]


def test_hostile_method_names_are_inert_in_the_new_columns(run, tmp_path):
    evil = "<img src=x onerror=alert(1)>|x"
    copy = tmp_path / "evil"
    copy.mkdir()
    text = (run / "results.json").read_text().replace('"gradcam"', json.dumps(evil))
    (copy / "results.json").write_text(text)
    (copy / "predictions.csv").write_bytes((run / "predictions.csv").read_bytes())
    expl = pd.read_csv(run / "explanations.csv")
    expl["saliency"] = evil
    expl.to_csv(copy / "explanations.csv", index=False)
    lb = build_leaderboards([load_run(copy)], resamples=20)
    assert f"evidence ({evil})" in lb.explainability
    assert f"nIoU_bone ({evil}) beats chance" in lb.explainability
    out = tmp_path / "board"
    write_leaderboard_files(lb, out)
    for name in ("leaderboard_explainability.md", "leaderboard.html"):
        content = (out / name).read_text()
        assert "<img" not in content, name
    md = (out / "leaderboard_explainability.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| rank"))
    assert header.count(" | ") == len(display_frame(lb.explainability).columns) - 1  # no "|" leak
