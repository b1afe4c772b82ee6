"""Leaderboards from results files: intervals, paired tests, tiers, files and the CI check."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_runs import cli
from fake_runs import write_fake_run
from statsmodels.stats.multitest import multipletests

from xaibench.errors import XaibenchError
from xaibench.leaderboard import (
    build_leaderboards,
    check_leaderboard_files,
    display_frame,
    write_leaderboard_files,
)
from xaibench.report.run_files import load_run
from xaibench.stats.intervals import delong_paired_test


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    # "strong" separates the classes; "twin" is as strong (no significant difference); "weak"
    # is close to chance, significantly worse than the leader.
    write_fake_run(
        root / "a",
        {"strong": 3.0, "twin": 2.9, "weak": 0.1},
        n=300,
        iou={"strong": 0.3, "twin": 0.3, "weak": 0.6},
    )
    return root


def test_auc_tiers_follow_holm_corrected_delong_tests(runs):
    run = load_run(runs / "a")
    lb = build_leaderboards([run])
    perf = lb.performance
    assert list(perf["backbone"]) == ["strong", "twin", "weak"] or list(perf["backbone"]) == [
        "twin",
        "strong",
        "weak",
    ]
    tiers = dict(zip(perf["backbone"], perf["tier"], strict=True))
    assert tiers["strong"] == tiers["twin"] == 1
    assert tiers["weak"] == 2
    # p vs leader, recomputed independently: DeLong on the intact predictions, Holm over the
    # three pairs with statsmodels
    preds = run.intact_predictions()
    scores = {
        b: g.set_index("sample_id")["prob_osteoporosis"] for b, g in preds.groupby("backbone")
    }
    y = (preds.groupby("sample_id")["label"].first() == 2).astype(int)
    order = list(perf["backbone"])
    pairs = [(order[0], order[1]), (order[0], order[2]), (order[1], order[2])]
    raw = [
        delong_paired_test(y, scores[a].loc[y.index], scores[b].loc[y.index])[2] for a, b in pairs
    ]
    adjusted = multipletests(raw, method="holm")[1]
    p_col = dict(zip(perf["backbone"], perf["p vs leader"], strict=True))
    assert p_col[order[1]] == pytest.approx(adjusted[0], abs=1e-9)
    assert p_col[order[2]] == pytest.approx(adjusted[1], abs=1e-9)
    assert np.isnan(p_col[order[0]])
    # the comparisons table holds all three pairs with the same Holm values
    auc_rows = lb.comparisons[lb.comparisons["column"] == "AUC"]
    assert len(auc_rows) == 3
    assert sorted(auc_rows["p_holm"]) == pytest.approx(sorted(adjusted), abs=1e-9)
    assert set(auc_rows["test"]) == {"delong"}


def test_values_carry_their_intervals_in_every_format(runs):
    lb = build_leaderboards([load_run(runs / "a")])
    perf = lb.performance
    row = perf.iloc[0]
    assert row["AUC low"] < row["AUC"] < row["AUC high"]
    shown = display_frame(perf).iloc[0]["AUC"]
    assert shown == f"{row['AUC']:.3f} [{row['AUC low']:.3f}, {row['AUC high']:.3f}]"
    expl = lb.explainability
    assert expl.loc[0, "sanity (gradcam)"] in {"pass", "fail (target)"}
    assert set(expl["weights"]) == {"random init"}


def test_explainability_ranking_uses_the_paired_delta_bootstrap(runs):
    lb = build_leaderboards([load_run(runs / "a")])
    assert lb.meta["ranking"]["explainability"] == "Δ_bone (zero)"
    delta = lb.comparisons[lb.comparisons["column"] == "Δ_bone (zero)"]
    assert set(delta["test"]) == {"paired bootstrap"}
    iou = lb.comparisons[lb.comparisons["column"] == "IoU_bone (gradcam)"]
    assert len(iou) == 3
    weak = iou[(iou["backbone_a"] == "weak") | (iou["backbone_b"] == "weak")]
    assert (weak["p_holm"] < 0.01).all()  # IoU 0.6 vs 0.3 on 300 images: clearly different


def test_rebuild_is_byte_identical_and_check_catches_an_edit(runs, tmp_path):
    run = runs / "a"
    out1, out2 = tmp_path / "lb1", tmp_path / "lb2"
    for out in (out1, out2):
        write_leaderboard_files(build_leaderboards([load_run(run)]), out)
    for name in ("leaderboard_performance.md", "leaderboard_performance.csv",
                 "leaderboard_explainability.md", "leaderboard_explainability.csv",
                 "leaderboard.json", "comparisons.csv", "leaderboard.html"):  # fmt: skip
        assert (out1 / name).read_bytes() == (out2 / name).read_bytes(), name
    assert check_leaderboard_files(build_leaderboards([load_run(run)]), out1) == []
    # a hand-edited value
    md = out1 / "leaderboard_performance.md"
    perf = pd.read_csv(out1 / "leaderboard_performance.csv")
    auc = f"{perf.loc[0, 'AUC']:.3f}"
    md.write_text(md.read_text().replace(auc, "0.999", 1))
    assert check_leaderboard_files(build_leaderboards([load_run(run)]), out1) == [
        "leaderboard_performance.md"
    ]


def test_cli_builds_and_checks_a_leaderboard(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs / "a", run)
    out = tmp_path / "board"
    proc = cli("leaderboard", str(run), "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / "leaderboard.json").read_text())
    assert doc["sources"][0]["path"] == "../run"
    assert doc["ranking"] == {"performance": "AUC", "explainability": "Δ_bone (zero)"}
    # --check DIR alone finds the runs through leaderboard.json
    proc = cli("leaderboard", "--check", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    csv = out / "leaderboard_performance.csv"
    frame = pd.read_csv(csv)
    frame.loc[1, "Accuracy"] = 0.123456
    frame.to_csv(csv, index=False)
    proc = cli("leaderboard", "--check", str(out), cwd=tmp_path)
    assert proc.returncode == 1
    assert "leaderboard_performance.csv" in proc.stderr
    assert "does not match" in proc.stderr


def test_runs_with_different_tasks_are_never_mixed(tmp_path):
    a = write_fake_run(tmp_path / "a", {"x": 1.0})
    b = write_fake_run(tmp_path / "b", {"y": 1.0}, task="cardiomegaly")
    with pytest.raises(XaibenchError, match="differ in task"):
        build_leaderboards([load_run(a), load_run(b)])
    c = write_fake_run(tmp_path / "c", {"z": 1.0}, fingerprint="other-images")
    with pytest.raises(XaibenchError, match="dataset fingerprint"):
        build_leaderboards([load_run(a), load_run(c)])
    proc = cli("leaderboard", str(a), str(b), "--out", str(tmp_path / "lb"), cwd=tmp_path)
    assert proc.returncode == 2
    assert "differ in task" in proc.stderr
    assert not (tmp_path / "lb").exists()


def test_runs_of_the_same_study_are_merged(tmp_path):
    a = write_fake_run(tmp_path / "a", {"x": 2.0})
    b = write_fake_run(tmp_path / "b", {"y": 0.5})
    lb = build_leaderboards([load_run(a), load_run(b)])
    assert list(lb.performance["backbone"]) == ["x", "y"]
    assert len(lb.meta["sources"]) == 2
    with pytest.raises(XaibenchError, match="is in both"):
        build_leaderboards([load_run(a), load_run(a)])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no results.json"),
        ("{not json", "not valid JSON"),
        ('{"schema_version": "9.0"}', "schema version '9.0'"),
        ('{"schema_version": "1.2", "task": {}}', "missing key"),
    ],
)
def test_unreadable_results_name_the_file(tmp_path, content, message):
    run = tmp_path / "run"
    run.mkdir()
    if content is not None:
        (run / "results.json").write_text(content)
    with pytest.raises(XaibenchError, match=message):
        load_run(run)


def test_report_and_leaderboard_name_a_missing_run_and_exit_2(tmp_path):
    for args in (
        ["report", str(tmp_path / "nope")],
        ["leaderboard", str(tmp_path / "nope"), "--out", str(tmp_path / "lb")],
        ["leaderboard", "--check", str(tmp_path / "empty")],
    ):
        (tmp_path / "empty").mkdir(exist_ok=True)
        proc = cli(*args, cwd=tmp_path)
        assert proc.returncode == 2, args
        assert proc.stderr.startswith("xaibench: error:"), proc.stderr
        assert "nope" in proc.stderr or "no leaderboard.json" in proc.stderr
    proc = cli("leaderboard", str(tmp_path / "empty"), cwd=tmp_path)
    assert proc.returncode == 2
    assert "give exactly one of --out DIR and --check DIR" in proc.stderr
