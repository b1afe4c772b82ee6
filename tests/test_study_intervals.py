"""`ci: wald_all` reproduces the intervals printed in Kim et al. 2025, Table 2 (211 osteoporosis
and 3,952 other test images), and shows how much too narrow they are."""

import csv
from pathlib import Path

import pytest

from xaibench.stats.intervals import delong_auc_ci, study_wald_ci, wilson_ci

TABLE = Path(__file__).parent / "data" / "kim2025_table2.csv"
POSITIVES, NEGATIVES = 211, 3952
N_ALL = POSITIVES + NEGATIVES


def rows() -> list[dict[str, str]]:
    with TABLE.open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("row", rows(), ids=lambda r: f"{r['backbone']}-{r['strategy']}")
def test_wald_all_reproduces_every_printed_interval(row):
    # Rates: the counts they imply (sensitivity x 211 positives, ...), then Wald with n = 4163.
    for rate, n_own in (("sensitivity", POSITIVES), ("specificity", NEGATIVES)):
        successes = round(float(row[f"{rate}_pct"]) / 100 * n_own)
        p = successes / n_own
        low, high = study_wald_ci(p, N_ALL)
        assert 100 * low == pytest.approx(float(row[f"{rate}_ci_low"]), abs=0.02), rate
        assert 100 * high == pytest.approx(float(row[f"{rate}_ci_high"]), abs=0.02), rate
        # the interval over the rate's own denominator is what xaibench reports by default
        correct = wilson_ci(successes, n_own)
        if rate == "sensitivity":
            assert (correct[1] - correct[0]) > 3 * (high - low)
    accuracy = float(row["accuracy_pct"]) / 100
    low, high = study_wald_ci(accuracy, N_ALL)
    assert 100 * low == pytest.approx(float(row["accuracy_ci_low"]), abs=0.02)
    assert 100 * high == pytest.approx(float(row["accuracy_ci_high"]), abs=0.02)
    # AUC: the same Wald form; printed to two decimals
    auc = float(row["auc"])
    low, high = study_wald_ci(auc, N_ALL)
    assert round(low, 2) == pytest.approx(float(row["auc_ci_low"]), abs=0.011)
    assert round(high, 2) == pytest.approx(float(row["auc_ci_high"]), abs=0.011)


def test_a_delong_interval_for_the_study_counts_is_about_three_times_wider():
    """Scores with the study's best AUC (0.93) and class counts: DeLong vs the printed width."""
    import numpy as np
    from scipy.stats import norm

    rng = np.random.default_rng(0)
    shift = np.sqrt(2) * norm.ppf(0.93)  # binormal, equal variances: AUC = Phi(shift / sqrt 2)
    scores = np.concatenate([rng.normal(shift, 1, POSITIVES), rng.normal(0, 1, NEGATIVES)])
    labels = np.concatenate([np.ones(POSITIVES, bool), np.zeros(NEGATIVES, bool)])
    auc, low, high = delong_auc_ci(labels, scores)
    printed_low, printed_high = study_wald_ci(auc, N_ALL)
    assert 2.0 < (high - low) / (printed_high - printed_low) < 4.5


def test_wald_all_in_a_run(components, tmp_path):
    from xaibench.config import resolve_config
    from xaibench.engine.benchmark import run_benchmark

    config = resolve_config(
        components.tasks.create("osteoporosis").defaults(),
        {
            "dataset": {"options": {"n_images": 80, "image_size": 32}},
            "backbones": [{"name": "test_resnet.random", "options": {"img_size": 32}}],
            "strategies": ["linear_probe"],
            "saliency": [],
            "metrics": ["auc", "sensitivity"],
            "sanity": {"images": 0},
            "ci": "wald_all",
        },
    )
    doc = run_benchmark(config, components, tmp_path / "run").document
    n_all = doc["dataset"]["splits"]["test"]["images"]
    checked = set()
    for rec in doc["records"]:
        if rec["metric"] in ("auc", "sensitivity") and rec["value"] is not None:
            # every interval over all test images, sensitivity's included (the study's error)
            assert (rec["ci_low"], rec["ci_high"]) == study_wald_ci(rec["value"], n_all)
            assert rec["details"]["ci_method"] == "wald_all"
            checked.add(rec["metric"])
    assert checked == {"auc", "sensitivity"}
