"""Seed aggregates (issue 21 item 3): the two-level bootstrap and the aggregate leaderboard rows.

The intervals are checked against a two-level bootstrap written here independently: a plain
loop over replicates, scikit-learn's ``roc_auc_score``, the generator protocol of
:mod:`xaibench.stats.seed_bootstrap` (seeds, then positives, then negatives).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from cli_run import xaibench_cli
from fake_runs15 import write_fake_run_15
from sklearn.metrics import roc_auc_score

from xaibench.leaderboard import P_COLUMN, build_leaderboards, render_files
from xaibench.leaderboard import build as build_module
from xaibench.leaderboard.headline_view import headline_view
from xaibench.leaderboard.terminal import print_leaderboards
from xaibench.prediction_scores import ranking_scores
from xaibench.report.run_files import load_run
from xaibench.stats.seed_bootstrap import two_level_auc

RESAMPLES = 200
CLASSES = ["normal", "osteopenia", "osteoporosis"]


def _by_hand(y, per_seed_stat, n_seeds, resamples, seed, level=0.95):
    """Independent two-level bootstrap: seeds with replacement, then stratified images (paired).

    ``per_seed_stat(s, idx)``: seed ``s``'s statistic on the images ``idx``.
    """
    rng = np.random.default_rng(seed)
    seed_draws = rng.integers(0, n_seeds, size=(resamples, n_seeds))
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    pos_draws = rng.integers(0, len(pos), size=(resamples, len(pos)))
    neg_draws = rng.integers(0, len(neg), size=(resamples, len(neg)))
    replicates = []
    for r in range(resamples):
        idx = np.concatenate([pos[pos_draws[r]], neg[neg_draws[r]]])
        replicates.append(np.mean([per_seed_stat(s, idx) for s in seed_draws[r]]))
    alpha = 1 - level
    return tuple(np.quantile(replicates, [alpha / 2, 1 - alpha / 2]))


# ------------------------------------------------------------------------------------------
# The statistic alone: 3 seeds x 20 hand-made images
# ------------------------------------------------------------------------------------------

LABELS = np.array([1, 0, 1, 1, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0, 1, 0, 0, 0], dtype=bool)
SCORES = np.array(
    [
        [.9, .2, .7, .6, .3, .1, .4, .8, .2, .5, .6, .3, .35, .1, .55, .45, .7, .2, .6, .15],
        [.8, .3, .6, .4, .5, .2, .1, .9, .3, .4, .7, .2, .25, .3, .65, .35, .5, .1, .7, .05],
        [.7, .4, .9, .5, .2, .3, .3, .6, .1, .6, .5, .4, .45, .2, .35, .25, .8, .3, .5, .25],
    ]
)  # fmt: skip


def test_two_level_auc_equals_a_hand_written_loop():
    point, low, high = two_level_auc(LABELS, SCORES, resamples=RESAMPLES, seed=7)
    expected = _by_hand(
        LABELS, lambda s, idx: roc_auc_score(LABELS[idx], SCORES[s][idx]), 3, RESAMPLES, 7
    )
    assert (low, high) == expected  # the same draws, the same AUCs: exactly equal
    assert point == pytest.approx(np.mean([roc_auc_score(LABELS, row) for row in SCORES]))
    assert low < point < high


def test_paired_image_draws_are_wider_than_seeds_alone():
    """Image noise counts: the interval is wider than one of the seed means alone (3 values)."""
    _, low, high = two_level_auc(LABELS, SCORES, resamples=RESAMPLES, seed=0)
    per_seed = [roc_auc_score(LABELS, row) for row in SCORES]
    assert high - low > max(per_seed) - min(per_seed)


# ------------------------------------------------------------------------------------------
# Leaderboard rows: a schema 1.5 run with backbone a at seeds 0, 1, 2 and b at seeds 0, 1
# ------------------------------------------------------------------------------------------

SEEDED = {"a#0": 0.9, "a#1": 1.1, "a#2": 0.7, "b#0": 0.4, "b#1": 0.5}


def _split_seeds(path: Path) -> None:
    """``a#1`` -> backbone ``a``, seed 1, in every file (the fake runs know one seed)."""

    def split(item: dict) -> None:
        name, seed = item["backbone"].split("#")
        item["backbone"], item["seed"] = name, int(seed)

    doc = json.loads((path / "results.json").read_text())
    for item in [*doc["records"], *doc["cells"]]:
        split(item)
    doc["config"]["seeds"] = [0, 1, 2]
    (path / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    for name in ("predictions.csv", "explanations.csv"):
        frame = pd.read_csv(path / name, keep_default_na=False)
        parts = frame["backbone"].str.split("#", expand=True)
        frame["backbone"], frame["seed"] = parts[0], parts[1].astype(int)
        frame.to_csv(path / name, index=False)


@pytest.fixture(scope="module")
def seeded_run(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("seeds") / "run"
    write_fake_run_15(path, SEEDED, n=40, resamples=50)
    _split_seeds(path)
    return path


@pytest.fixture(scope="module")
def boards(seeded_run):
    return build_leaderboards([load_run(seeded_run)], resamples=RESAMPLES, seed=3)


def _aggregate(frame: pd.DataFrame, backbone: str) -> pd.Series:
    rows = frame[frame["aggregate"] & (frame["backbone"] == backbone)]
    assert len(rows) == 1
    return rows.iloc[0]


def _per_seed(frame: pd.DataFrame, backbone: str) -> pd.DataFrame:
    return frame[~frame["aggregate"] & (frame["backbone"] == backbone)]


def test_aggregate_rows_are_marked_and_follow_the_per_seed_rows(boards):
    for frame in (boards.performance, boards.explainability):
        assert list(frame.columns[:6]) == [
            "rank", "tier", "backbone", "strategy", "seed", "aggregate",
        ]  # fmt: skip
        assert frame["aggregate"].tolist() == [False] * 5 + [True] * 2
        agg = frame[frame["aggregate"]]
        assert agg["seed"].isna().all()
        assert agg["rank"].isna().all()
        assert agg["tier"].isna().all()
        assert agg[P_COLUMN].isna().all()
        assert frame.loc[~frame["aggregate"], "rank"].tolist() == [1, 2, 3, 4, 5]
    assert boards.performance.loc[boards.performance["aggregate"], "backbone"].tolist() == [
        "a",
        "b",
    ]  # best mean AUC first


def test_aggregate_values_are_the_mean_of_the_per_seed_values(boards):
    columns = ["AUC", "Accuracy", "sΔ_bone (zero)", "sΔ_bone (mean)", "nIoU_bone (gradcam)"]
    for backbone, n in (("a", 3), ("b", 2)):
        for column in columns:
            frame = boards.performance if column in boards.performance else boards.explainability
            values = _per_seed(frame, backbone)[column]
            assert len(values) == n
            assert _aggregate(frame, backbone)[column] == pytest.approx(values.mean(), abs=1e-12)


def _predictions(run: Path) -> pd.DataFrame:
    preds = pd.read_csv(run / "predictions.csv", keep_default_na=False)
    preds["score"] = ranking_scores(preds, CLASSES, 2)
    return preds


def _scores(preds, backbone, seed, perturbation="", region="") -> pd.Series:
    part = preds[
        (preds["backbone"] == backbone)
        & (preds["seed"] == seed)
        & (preds["perturbation"] == perturbation)
        & (preds["region"] == region)
    ]
    return part.set_index("sample_id").sort_index()


def test_aggregate_auc_and_rate_intervals_match_a_hand_computed_bootstrap(seeded_run, boards):
    preds = _predictions(seeded_run)
    frames = [_scores(preds, "a", s) for s in (0, 1, 2)]
    y = frames[0]["label"].to_numpy() == 2
    row = _aggregate(boards.performance, "a")

    def auc(s, idx):
        return roc_auc_score(y[idx], frames[s]["score"].to_numpy()[idx])

    expected = _by_hand(y, auc, 3, RESAMPLES, 3)
    assert (row["AUC low"], row["AUC high"]) == pytest.approx(expected, abs=1e-12)

    def accuracy(s, idx):
        return np.mean(frames[s]["called_positive"].to_numpy()[idx] == y[idx])

    expected = _by_hand(y, accuracy, 3, RESAMPLES, 3)
    assert (row["Accuracy low"], row["Accuracy high"]) == pytest.approx(expected, abs=1e-12)


def test_aggregate_specific_delta_interval_matches_a_hand_computed_bootstrap(seeded_run, boards):
    preds = _predictions(seeded_run)
    y = _scores(preds, "a", 0)["label"].to_numpy() == 2
    regions = ["bone", "bone#control0", "bone#control1"]

    def specific(s, idx):
        intact = _scores(preds, "a", s)["score"].to_numpy()[idx]
        deltas = []
        for region in regions:
            perturbed = _scores(preds, "a", s, "mean", region)["score"].to_numpy()[idx]
            deltas.append(
                roc_auc_score(y[idx], intact) - max(roc_auc_score(y[idx], perturbed), 0.5)
            )
        return deltas[0] - np.mean(deltas[1:])

    row = _aggregate(boards.explainability, "a")
    expected = _by_hand(y, specific, 3, RESAMPLES, 3)
    column = "sΔ_bone (mean)"
    assert (row[f"{column} low"], row[f"{column} high"]) == pytest.approx(expected, abs=1e-12)
    per_seed = [specific(s, np.arange(len(y))) for s in range(3)]
    assert row[column] == pytest.approx(np.mean(per_seed), abs=1e-9)


def test_aggregate_normalised_interval_matches_a_hand_computed_bootstrap(seeded_run, boards):
    expl = pd.read_csv(seeded_run / "explanations.csv")
    parts = [
        expl[(expl["backbone"] == "b") & (expl["seed"] == s)].set_index("sample_id").sort_index()
        for s in (0, 1)
    ]
    n = len(parts[0])
    rng = np.random.default_rng(3)
    seed_draws = rng.integers(0, 2, size=(RESAMPLES, 2))
    image_draws = rng.integers(0, n, size=(RESAMPLES, n))
    replicates = []
    for r in range(RESAMPLES):
        values = []
        for s in seed_draws[r]:
            value = parts[s]["value"].to_numpy()[image_draws[r]].mean()
            chance = parts[s]["chance"].to_numpy()[image_draws[r]].mean()
            values.append((value - chance) / (1.0 - chance))
        replicates.append(np.mean(values))
    row = _aggregate(boards.explainability, "b")
    column = "nIoU_bone (gradcam)"
    expected = tuple(np.quantile(replicates, [0.025, 0.975]))
    assert (row[f"{column} low"], row[f"{column} high"]) == pytest.approx(expected, abs=1e-12)


def test_badges_agree_or_vary_and_chance_verdicts_stay_empty(boards):
    expl = boards.explainability
    row = _aggregate(expl, "a")
    seeds = _per_seed(expl, "a")
    assert row["sanity (gradcam)"] == seeds["sanity (gradcam)"].iloc[0]
    assert row["weights"] == "random init"
    assert pd.isna(row["nIoU_bone (gradcam) p chance"])
    assert row["nIoU_bone (gradcam) beats chance"] is None


def test_files_keep_per_seed_rows_and_mark_the_aggregates(boards, tmp_path):
    files = render_files(boards, tmp_path)
    rows = list(csv.DictReader(io.StringIO(files["leaderboard_performance.csv"].decode())))
    assert [r["aggregate"] for r in rows] == ["False"] * 5 + ["True"] * 2
    assert [r["seed"] for r in rows] == ["0", "1", "2", "1", "0", "", ""]
    assert [r["backbone"] for r in rows] == ["a", "a", "a", "b", "b", "a", "b"]
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4", "5", "", ""]
    markdown = files["leaderboard_performance.md"].decode()
    assert "a × linear_probe, 3 seeds" in markdown  # noqa: RUF001 (multiplication sign)
    assert "all (n=3)" in markdown
    assert "all (n=2)" in markdown
    document = json.loads(files["leaderboard.json"])
    assert [r["aggregate"] for r in document["performance"]] == [False] * 5 + [True] * 2


def test_terminal_headline_shows_the_aggregates_within_100_columns(boards):
    view = headline_view(boards)
    assert [(r.backbone, r.n_seeds, r.tier) for r in view.rows] == [("a", 3, "–"), ("b", 2, "–")]  # noqa: RUF001
    text = _render(boards)
    assert ", 3 seeds" in text
    assert ", 2 seeds" in text
    assert ", seed 0" not in text
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "…" not in text
    wide = _render(boards, wide=True)
    assert "all (n=3)" in wide
    assert wide.count("linear_probe") >= 7


def _render(lb, **options) -> str:
    from rich.console import Console

    buffer = io.StringIO()
    console = Console(file=buffer, width=100, force_terminal=False, color_system=None)
    print_leaderboards(lb, console=console, **options)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------
# One seed: nothing changes
# ------------------------------------------------------------------------------------------


def test_single_seed_files_are_byte_identical_to_a_build_without_aggregates(tmp_path, monkeypatch):
    run = write_fake_run_15(tmp_path / "run", {"a": 0.9, "b": 0.5}, n=40, resamples=50)
    with_feature = render_files(build_leaderboards([load_run(run)], resamples=50), tmp_path)
    monkeypatch.setattr(build_module, "with_seed_aggregates", lambda frame, *a, **k: frame)
    without = render_files(build_leaderboards([load_run(run)], resamples=50), tmp_path)
    assert with_feature == without
    assert b"aggregate" not in with_feature["leaderboard_performance.csv"]
    assert b"seeds" not in with_feature["leaderboard_performance.md"]


# ------------------------------------------------------------------------------------------
# End to end: a tiny real run over two seeds
# ------------------------------------------------------------------------------------------

TINY_TWO_SEEDS = {
    "dataset": {
        "name": "phantom",
        "options": {"n_images": 48, "image_size": 32, "class_shares": [0.4, 0.3, 0.3]},
    },
    "backbones": [{"name": "test_resnet.random", "options": {"img_size": 32}}],
    "strategies": ["linear_probe"],
    "saliency": ["saliency"],
    "perturbations": ["zero"],
    "seeds": [0, 1],
    "train": {"epochs": 1, "batch_size": 16},
    "max_explain_images": 6,
    "gallery_images": 2,
    "sanity": {"images": 2, "steps": 2},
    "analysis": {"bootstrap": 100},
    "cache": False,
}


@pytest.mark.slow
def test_a_two_seed_run_shows_aggregates_in_files_and_terminal(tmp_path, capsys):
    config = tmp_path / "two_seeds.yaml"
    config.write_text(yaml.safe_dump(TINY_TWO_SEEDS))
    out = tmp_path / "run"
    code, printed = xaibench_cli(
        capsys, "run", "osteoporosis", "--config", str(config), "--out", str(out)
    )
    assert code == 0, printed
    for name in ("leaderboard_performance.csv", "leaderboard_explainability.csv"):
        rows = list(csv.DictReader(io.StringIO((out / name).read_text())))
        assert sorted(r["seed"] for r in rows[:2]) == ["0", "1"]
        assert [r["aggregate"] for r in rows] == ["False", "False", "True"]
        assert rows[2]["seed"] == ""
    perf = list(csv.DictReader(io.StringIO((out / "leaderboard_performance.csv").read_text())))
    mean_auc = (float(perf[0]["AUC"]) + float(perf[1]["AUC"])) / 2
    assert float(perf[2]["AUC"]) == pytest.approx(mean_auc, abs=2e-6)
    assert perf[2]["AUC low"] != ""
    assert perf[2]["AUC high"] != ""
    markdown = (out / "leaderboard_performance.md").read_text()
    assert "test_resnet.random × linear_probe, 2 seeds" in markdown  # noqa: RUF001
    assert "| all (n=2) |" in markdown
    assert "linear_probe, 2 seeds" in printed
    assert ", seed 0" not in printed
    assert max(len(line) for line in printed.splitlines()) <= 100
