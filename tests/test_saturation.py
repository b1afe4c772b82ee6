"""A confident model's scores keep their order from the logits to the files (issue 17 item 7).

A planted model returns logits whose positive-class margin (20 to 40) is written into each
image, for positives and negatives alike: every float32 softmax probability is exactly 1.0, so
the old path (``torch.softmax(logits.float())``) gave AUC 0.5 and Δ = 0 whatever the order. The
known answer is scikit-learn's ``roc_auc_score`` on the raw margins; the runner's predictions,
its metrics and every reader of ``predictions.csv`` must reproduce it exactly.
"""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from xaibench.data.arrays import SplitArrays
from xaibench.engine.runner import CellRunner, predict_log_probs, predictions_from_log_probs
from xaibench.escape import to_csv
from xaibench.leaderboard import RANKING_COLUMN, _PerImage
from xaibench.metrics.base import Predictions
from xaibench.metrics.explanation import DeltaRegion
from xaibench.metrics.functional import binary_auc, delta_auc
from xaibench.metrics.performance import MacroAUC, PositiveAUC
from xaibench.prediction_scores import class_log_odds, ranking_matrix, ranking_scores
from xaibench.report import figures
from xaibench.report.run_files import _read_csv
from xaibench.stats.classwise import one_vs_rest
from xaibench.stats.stratified_tables import stratified_performance

CLASSES = ("normal", "osteopenia", "osteoporosis")
POSITIVE = 2
N = 60


class PlantedLogits(torch.nn.Module):
    """Logits ``[0, 0, m]``, ``m`` the image's first pixel: a margin of ``m`` for class 2."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))  # a model has parameters

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        margin = images[:, 0, 0, 0].float()
        zeros = torch.zeros_like(margin)
        return torch.stack([zeros, zeros, margin], dim=1)


def planted(seed: int, shift: float) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """Labels, float32 margins in [20, 40] (positives higher by ``shift``) and the images."""
    rng = np.random.default_rng(seed)
    labels = np.arange(N) % 3
    margins = rng.uniform(20.0, 40.0 - shift, N) + shift * (labels == POSITIVE)
    margins = margins.astype(np.float32)  # what the images (and the model) carry exactly
    images = torch.from_numpy(margins).view(N, 1, 1, 1).expand(N, 1, 2, 2).contiguous()
    return labels, margins.astype(np.float64), images


@pytest.fixture(scope="module")
def outcome():
    labels, margins, images = planted(0, 6.0)
    _, perturbed_margins, perturbed_images = planted(1, 1.0)  # the perturbation erodes the signal
    model = PlantedLogits()
    intact = predictions_from_log_probs(
        labels, predict_log_probs(model, images, batch_size=7), POSITIVE, threshold=0.5
    )
    perturbed = predictions_from_log_probs(
        labels, predict_log_probs(model, perturbed_images, batch_size=7), POSITIVE, 0.5
    )
    return SimpleNamespace(
        labels=labels,
        margins=margins,
        perturbed_margins=perturbed_margins,
        images=images,
        intact=intact,
        perturbed=perturbed,
        truth=labels == POSITIVE,
    )


def test_the_old_float32_softmax_ties_every_image(outcome):
    """The defect the other tests guard against: float32 probabilities are all exactly 1.0."""
    logits = PlantedLogits()(outcome.images)
    old = torch.softmax(logits.float(), dim=1)[:, POSITIVE].double().numpy()
    assert np.all(old == 1.0)
    assert binary_auc(outcome.truth, old) == 0.5
    known = roc_auc_score(outcome.truth, outcome.margins)
    assert known > 0.7  # the order the ties threw away


def test_recorded_predictions_rank_like_the_logits(outcome):
    known = roc_auc_score(outcome.truth, outcome.margins)
    # probabilities still saturate (float64 too, beyond a margin of ~37) ...
    assert np.sum(outcome.intact.scores == 1.0) > 0
    # ... while the ranking scores are the log-odds: the margin less log 2 (two classes at 0)
    np.testing.assert_allclose(
        outcome.intact.ranking_scores, outcome.margins - np.log(2), atol=1e-9
    )
    assert PositiveAUC().compute(outcome.intact).value == pytest.approx(known, abs=1e-15)
    assert PositiveAUC(ci_method="bootstrap", resamples=200).compute(
        outcome.intact
    ).value == pytest.approx(known, abs=1e-15)
    # macro AUC: classes 0 and 1 have equal logits, so their log-odds tie exactly
    ovr = [
        roc_auc_score(outcome.labels == k, outcome.intact.class_ranking_scores(k)) for k in range(3)
    ]
    assert ovr[POSITIVE] == pytest.approx(known, abs=1e-15)
    assert MacroAUC().compute(outcome.intact).value == pytest.approx(np.mean(ovr), abs=1e-15)


def test_delta_from_the_recorded_predictions_equals_delta_from_the_logits(outcome):
    auc_intact = roc_auc_score(outcome.truth, outcome.margins)
    auc_perturbed = roc_auc_score(outcome.truth, outcome.perturbed_margins)
    assert auc_perturbed > 0.5  # Δ's floor at 0.5 does not hide the comparison
    known = delta_auc(auc_intact, auc_perturbed)
    value = DeltaRegion().compute(outcome.intact, outcome.perturbed).value
    assert value == pytest.approx(known, abs=1e-12)
    assert value < auc_intact - 0.5  # the saturated path gave exactly auc_intact - 0.5 (or 0)


def _frame(outcome, preds: Predictions, perturbation: str = "", region: str = "") -> pd.DataFrame:
    """``predictions.csv`` rows as the runner writes them, read back as the readers do."""
    runner = SimpleNamespace(data=SimpleNamespace(task=SimpleNamespace(class_names=CLASSES)))
    split = SplitArrays(
        name="test",
        images=outcome.images,
        labels=torch.from_numpy(outcome.labels),
        sample_ids=tuple(f"s{i:03d}" for i in range(N)),
        regions={},
    )
    base = {"backbone": "planted", "strategy": "none", "seed": 0}
    return CellRunner._prediction_frame(runner, base, split, preds, perturbation, region)  # type: ignore[arg-type]


def _read_back(frame: pd.DataFrame, tmp_path) -> pd.DataFrame:
    path = tmp_path / "predictions.csv"
    path.write_text(to_csv(frame))
    return _read_csv(path)


def test_predictions_csv_records_log_probs_that_rank_like_the_logits(outcome, tmp_path):
    frame = _read_back(_frame(outcome, outcome.intact), tmp_path)
    assert [f"prob_{c}" for c in CLASSES] + ["called_positive"] == [
        c for c in frame.columns if c.startswith("prob_") or c == "called_positive"
    ]  # the columns readers knew are kept
    assert [c for c in frame.columns if c.startswith("log_prob_")] == [
        f"log_prob_{c}" for c in CLASSES
    ]
    np.testing.assert_array_equal(
        frame[[f"log_prob_{c}" for c in CLASSES]], outcome.intact.log_probs
    )
    known = roc_auc_score(outcome.truth, outcome.margins)
    scores = ranking_scores(frame, CLASSES, POSITIVE)
    assert binary_auc(outcome.truth, scores) == pytest.approx(known, abs=1e-15)
    # per-class tables, strata and ROC curves rank by the same log-odds
    rows = one_vs_rest(
        outcome.labels,
        frame[[f"prob_{c}" for c in CLASSES]].to_numpy(),
        CLASSES,
        ranking=ranking_matrix(frame, CLASSES),
    )
    assert rows[POSITIVE]["auc"] == pytest.approx(known, abs=1e-15)
    site = pd.Series("A", index=frame["sample_id"])
    strata = stratified_performance(frame, CLASSES, CLASSES[POSITIVE], {"site": site})
    (row,) = [r for r in strata if r["variable"] == "site"]
    assert row["auc"] == pytest.approx(known, abs=1e-15)
    (curve,) = figures.roc_curves(frame, CLASSES, CLASSES[POSITIVE])
    assert curve.auc == pytest.approx(known, abs=1e-12)


def test_leaderboard_paired_tests_rank_by_the_recorded_log_odds(outcome, tmp_path):
    frame = pd.concat(
        [
            _frame(outcome, outcome.intact),
            _frame(outcome, outcome.perturbed, "zero", "bone"),
        ],
        ignore_index=True,
    )
    run = SimpleNamespace(
        task={"class_names": list(CLASSES), "positive_class": CLASSES[POSITIVE]},
        predictions=_read_back(frame, tmp_path),
        explanations=pd.DataFrame(),
    )
    data = _PerImage([run], resamples=50, seed=0)  # type: ignore[list-item]
    cell = ("planted", "none", 0)
    intact = data._pred(cell, "", "")
    perturbed = data._pred(cell, "zero", "bone")
    assert intact is not None
    assert perturbed is not None
    known = roc_auc_score(outcome.truth, outcome.margins)
    truth = intact["label"].to_numpy() == POSITIVE
    assert binary_auc(truth, intact[RANKING_COLUMN].to_numpy()) == pytest.approx(known, abs=1e-15)
    known_perturbed = roc_auc_score(outcome.truth, outcome.perturbed_margins)
    assert binary_auc(truth, perturbed[RANKING_COLUMN].to_numpy()) == pytest.approx(
        known_perturbed, abs=1e-15
    )


def test_files_without_log_probs_rank_by_the_probabilities():
    """Results written before the column (schema < 1.5) read as they did."""
    frame = pd.DataFrame({"label": [0, 2, 2], "prob_a": [0.5, 0.1, 0.2], "prob_b": [0.5, 0.9, 0.8]})
    np.testing.assert_array_equal(ranking_scores(frame, ["a", "b"], 1), [0.5, 0.9, 0.8])
    np.testing.assert_array_equal(ranking_matrix(frame, ["a", "b"]), frame[["prob_a", "prob_b"]])
    # rows of an older run merged with a newer one: NaN log-probs mean "not recorded"
    frame["log_prob_a"] = [np.nan, -2.0, -1.0]
    frame["log_prob_b"] = [np.nan, -0.1, -0.4]
    np.testing.assert_array_equal(ranking_scores(frame, ["a", "b"], 1), [0.5, 0.9, 0.8])


def test_class_log_odds_known_answer():
    """log(p / (1 - p)) by hand, and finite where p rounds to 1."""
    probs = np.array([[0.2, 0.3, 0.5], [0.7, 0.2, 0.1]])
    expected = np.log(probs / (1 - probs))
    got = np.stack([class_log_odds(np.log(probs), k) for k in range(3)], axis=1)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    log_probs = torch.log_softmax(torch.tensor([[0.0, 0.0, 45.0]], dtype=torch.float64), 1)
    assert np.exp(log_probs.numpy()[0, 2]) == 1.0
    assert class_log_odds(log_probs.numpy(), 2)[0] == pytest.approx(45.0 - np.log(2), abs=1e-12)
