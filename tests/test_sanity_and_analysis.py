"""Sanity checks (cascading randomisation, target randomisation) and the cross-cell analyses."""

import numpy as np
import pytest
import torch
from pydantic import PrivateAttr
from scipy.stats import kendalltau, spearmanr

from xaibench.analysis import (
    CellMaps,
    bootstrap_mean_ci,
    explanation_drift,
    perturbation_rank_agreement,
)
from xaibench.leaderboard import explainability_table, sanity_badges
from xaibench.models.base import Classifier
from xaibench.models.timm_backbone import TimmBackbone
from xaibench.saliency.base import SaliencyMethod
from xaibench.saliency.controls import RandomMap
from xaibench.saliency.gradient import VanillaGradient
from xaibench.sanity import (
    SanityResult,
    explain_again,
    parameter_groups,
    randomise,
    run_sanity_checks,
    spearman_per_image,
)


def model(size: int = 64) -> Classifier:
    torch.manual_seed(0)
    backbone = TimmBackbone(arch="test_resnet", img_size=size, random_init=True).create_adapter()
    return Classifier(backbone, 3).eval()


class ImageEcho(SaliencyMethod):
    """A 'method' that ignores the model: the image itself (what edge detectors amount to)."""

    def explain(self, model, images, targets):
        return images[:, 0].clone()


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.integers(0, 4, size=(3, 5, 5)).astype(float))  # many ties
    b = torch.from_numpy(rng.normal(size=(3, 5, 5)))
    ours = spearman_per_image(a, b)
    for i in range(3):
        expected = spearmanr(a[i].flatten(), b[i].flatten()).statistic
        assert ours[i] == pytest.approx(expected, abs=1e-12)
    assert np.isnan(spearman_per_image(torch.ones(1, 4, 4), b[:1, :4, :4])[0])


def test_parameter_groups_cascade_from_the_head():
    net = model()
    groups = parameter_groups(net, torch.rand(1, 1, 64, 64), steps=4)
    assert groups[0] == ["head"]
    assert len(groups) == 4
    flat = [name for group in groups[1:] for name in group]
    assert len(flat) == len(set(flat))
    # the backbone's first layer (the stem convolution) is randomised last
    assert flat[-1] == "backbone.model.conv1.0"
    with_params = {
        f"backbone.{n}"
        for n, m in net.backbone.named_modules()
        if any(True for _ in m.parameters(recurse=False))
    }
    assert set(flat) == with_params


def test_randomise_keeps_scale_and_is_seeded():
    layer = torch.nn.Linear(64, 64)
    original = {k: v.clone() for k, v in layer.state_dict().items()}
    std = float(layer.weight.detach().std())
    randomise(layer, torch.Generator().manual_seed(0))
    first = layer.weight.detach().clone()
    assert float(first.std()) == pytest.approx(std, rel=0.1)
    assert not torch.equal(first, original["weight"])
    layer.load_state_dict(original)
    randomise(layer, torch.Generator().manual_seed(0))
    assert torch.equal(layer.weight, first)
    norm = torch.nn.LayerNorm(16)  # weights of ones: std 0, scale from the mean magnitude
    randomise(norm, torch.Generator().manual_seed(0))
    assert float(norm.weight.detach().std()) > 0.5


def test_a_model_independent_method_fails_and_gradients_change():
    net = model()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    images = torch.rand(4, 1, 64, 64)
    targets = torch.full((4,), 2)
    echo = run_sanity_checks(
        net, ImageEcho(), images, targets, 3, steps=3, threshold=0.5,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    # The image does not depend on the weights or the class: similarity 1 everywhere.
    assert echo.model_similarity == pytest.approx(1.0)
    assert echo.target_similarity == pytest.approx(1.0)
    assert echo.model_passed is False
    assert echo.target_passed is False
    assert echo.cascade[0][0] == "head"
    grad = run_sanity_checks(
        net, VanillaGradient(), images, targets, 3, steps=3, threshold=0.5,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert grad.model_similarity is not None
    assert grad.model_similarity < 0.5
    assert grad.model_passed is True
    # the cell's own model is untouched
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


class SeededNoise(SaliencyMethod):
    """Noise from the method's own seeded generator, advancing call by call (not torch's global)."""

    _gen: torch.Generator = PrivateAttr(default_factory=lambda: torch.Generator().manual_seed(0))

    def explain(self, model, images, targets):
        b, h, w = images.shape[0], images.shape[-2], images.shape[-1]
        return torch.rand(b, h, w, generator=self._gen)


def check(net, method, images, targets):
    return run_sanity_checks(
        net, method, images, targets, 3, steps=3, threshold=0.5,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip


def test_the_pass_rule_is_relative_to_run_to_run():
    deterministic = SanityResult(threshold=0.5, run_to_run=1.0)
    # run to run 1: exactly the threshold rule (strict), in floating point too
    assert deterministic.passes(0.4999999) is True
    assert deterministic.passes(0.5) is False
    assert SanityResult(threshold=0.3, run_to_run=1.0).passes(0.3) is False
    assert SanityResult(threshold=0.3, run_to_run=1.0).passes(0.2999999) is True
    # run to run 0.8: the similarity must fall below 0.5 - 0.2 = 0.3
    noisy = SanityResult(threshold=0.5, run_to_run=0.8)
    assert noisy.passes(0.25) is True
    assert noisy.passes(0.31) is False
    # pure noise: nothing can be 0.5 below a run-to-run similarity of 0
    assert SanityResult(threshold=0.5, run_to_run=0.0).passes(-0.4) is False
    assert SanityResult(threshold=0.5, run_to_run=None).passes(0.1) is None
    assert deterministic.passes(None) is None


@pytest.mark.parametrize("method", [RandomMap(), SeededNoise()], ids=["random", "seeded_noise"])
def test_maps_that_ignore_the_model_fail_both_checks(method):
    net = model()
    images = torch.rand(4, 1, 64, 64)
    targets = torch.full((4,), 2)
    torch.manual_seed(0)
    result = check(net, method, images, targets)
    # noise: every similarity is near 0, so the similarity alone (the old rule) would pass
    assert result.model_similarity is not None
    assert abs(result.model_similarity) < 0.1
    assert result.target_similarity is not None
    assert abs(result.target_similarity) < 0.1
    assert result.run_to_run is not None
    assert abs(result.run_to_run) < 0.1
    assert result.model_passed is False
    assert result.target_passed is False


def test_the_repeat_draws_new_noise_and_leaves_the_global_state_alone():
    net = model()
    images = torch.rand(2, 1, 16, 16)
    targets = torch.zeros(2, dtype=torch.long)
    torch.manual_seed(3)
    state = torch.get_rng_state()
    first = RandomMap().explain(net, images, targets)
    torch.set_rng_state(state)
    again = explain_again(net, RandomMap(), images, targets, seed=99)
    assert not torch.equal(first, again)  # reseeded: new noise, not the draw the state held
    assert torch.equal(torch.get_rng_state(), state)  # and the global state is restored
    assert torch.equal(explain_again(net, RandomMap(), images, targets, seed=99), again)


def trained_model() -> Classifier:
    """The tiny model fitted for a few steps to a planted answer (a bright square = class 1)."""
    net = model(32).train()
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(12, 1, 32, 32, generator=gen) * 0.2
    labels = torch.arange(12) % 3
    images[labels == 1, :, 10:18, 10:18] += 0.8
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(6):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(net(images), labels).backward()
        optimiser.step()
    return net.eval()


@pytest.mark.parametrize("trained", [False, True], ids=["untrained", "trained"])
def test_a_deterministic_method_keeps_the_threshold_verdict(trained):
    net = trained_model() if trained else model(32)
    images = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    targets = torch.full((4,), 1)
    result = check(net, VanillaGradient(), images, targets)
    assert result.run_to_run == 1.0  # deterministic: its two runs are the same maps
    assert result.model_similarity is not None
    assert result.target_similarity is not None
    assert result.model_passed is (result.model_similarity < 0.5)
    assert result.target_passed is (result.target_similarity < 0.5)
    assert result.model_passed is True


def test_bootstrap_ci_brackets_the_mean_and_is_seeded():
    values = np.random.default_rng(0).normal(0.5, 0.1, size=200)
    low, high = bootstrap_mean_ci(values, resamples=500, seed=1)
    assert low < values.mean() < high
    assert high - low == pytest.approx(2 * 1.96 * 0.1 / np.sqrt(200), rel=0.25)
    assert bootstrap_mean_ci(values, resamples=500, seed=1) == (low, high)
    assert bootstrap_mean_ci(np.array([0.3]), resamples=10, seed=0) == (None, None)


def test_explanation_drift_pairs_strategies_on_common_images():
    rng = np.random.default_rng(0)
    base = rng.random((6, 4, 4))
    ids = tuple(f"s{i}" for i in range(6))
    maps = {
        ("vit", "linear_probe", 0): {"gradcam": CellMaps(ids, base)},
        ("vit", "lora", 0): {"gradcam": CellMaps(ids, 2 * base + 1)},  # same ranking
        ("vit", "full", 0): {"gradcam": CellMaps(ids[::-1], -base[::-1])},  # reversed ranking
    }
    rows = {(r["strategy_a"], r["strategy_b"]): r for r in explanation_drift(maps, resamples=50)}
    assert set(rows) == {("full", "linear_probe"), ("full", "lora"), ("linear_probe", "lora")}
    assert rows[("linear_probe", "lora")]["spearman"] == pytest.approx(1.0)
    # sample ids are matched, not positions: the reversed order still pairs image with image
    assert rows[("full", "linear_probe")]["spearman"] == pytest.approx(-1.0)
    assert rows[("full", "lora")]["n"] == 6


def record(cell, perturbation, value, region="bone"):
    backbone, strategy = cell
    return {
        "backbone": backbone, "strategy": strategy, "seed": 0, "metric": "delta_region",
        "category": "explanation", "perturbation": perturbation, "region": region,
        "saliency": None, "value": value, "status": "ok", "random_init": True,
    }  # fmt: skip


def test_rank_agreement_is_kendall_tau_between_perturbations():
    cells = [("a", "lp"), ("b", "lp"), ("c", "lp"), ("d", "lp")]
    zero = [0.4, 0.3, 0.2, 0.1]
    mean = [0.1, 0.3, 0.2, 0.4]
    records = [record(c, "zero", v) for c, v in zip(cells, zero, strict=True)]
    records += [record(c, "mean", v) for c, v in zip(cells, mean, strict=True)]
    (row,) = perturbation_rank_agreement(records)
    assert (row["perturbation_a"], row["perturbation_b"]) == ("mean", "zero")
    assert row["kendall_tau"] == pytest.approx(kendalltau(mean, zero).statistic)
    assert row["cells"] == 4
    # fewer than three shared cells: no tau
    (row,) = perturbation_rank_agreement(records[:2] + records[4:6])
    assert row["kendall_tau"] is None


def test_sanity_badges_in_the_explainability_table():
    def sanity(method, metric, passed, control=False):
        return {
            "backbone": "a", "strategy": "lp", "seed": 0, "metric": metric,
            "category": "sanity", "saliency": method, "perturbation": None, "region": None,
            "value": 0.1, "status": "ok", "random_init": True,
            "details": {"passed": passed, "control": control},
        }  # fmt: skip

    records = [
        record(("a", "lp"), "zero", 0.3),
        sanity("gradcam", "sanity_model_randomisation", True),
        sanity("gradcam", "sanity_target_randomisation", True),
        sanity("saliency", "sanity_model_randomisation", True),
        sanity("saliency", "sanity_target_randomisation", False),
        sanity("edge", "sanity_model_randomisation", False, control=True),
        sanity("random", "sanity_model_randomisation", False, control=True),
        sanity("random", "sanity_target_randomisation", False, control=True),
        sanity("center", "sanity_model_randomisation", True, control=True),
        sanity("center", "sanity_target_randomisation", None, control=True),
    ]
    badges = sanity_badges(records)
    assert badges[("a", "lp", 0)] == {
        "gradcam": "pass", "saliency": "fail (target)", "edge": "control (fail: model)",
        "random": "control (fail: model, target)", "center": "control (n/a: target)",
    }  # fmt: skip
    table = explainability_table(records)
    assert table.loc[0, "sanity (gradcam)"] == "pass"
    assert table.loc[0, "sanity (saliency)"] == "fail (target)"
    assert table.loc[0, "sanity (edge)"] == "control (fail: model)"
    assert "Δ_bone (zero)" in table.columns


def test_performance_explanation_correlation_is_spearman_over_cells():
    from xaibench.analysis import performance_explanation_correlation

    aucs = [0.9, 0.8, 0.7, 0.6, 0.55]
    deltas = [0.1, 0.3, 0.2, 0.5, 0.4]
    records = []
    for i, (auc, delta) in enumerate(zip(aucs, deltas, strict=True)):
        cell = (f"b{i}", "lp")
        records.append(
            {**record(cell, None, auc, region=None), "metric": "auc", "category": "performance"}
        )
        records.append(record(cell, "zero", delta))
    records.append(record(("b0", "lp"), "mean", 0.3))  # only one cell: no row
    (row,) = performance_explanation_correlation(records, resamples=200)
    assert (row["metric"], row["perturbation"], row["region"]) == ("delta_region", "zero", "bone")
    assert row["spearman"] == pytest.approx(spearmanr(aucs, deltas).statistic)
    assert row["cells"] == 5
    assert row["ci_low"] <= row["spearman"] <= row["ci_high"]
    again = performance_explanation_correlation(records, resamples=200)
    assert again == [row]
    (unbooted,) = performance_explanation_correlation(records, resamples=0)
    assert unbooted["spearman"] == row["spearman"]
    assert unbooted["ci_low"] is None
    assert unbooted["ci_high"] is None


def test_the_sanity_panel_draws_the_pass_line_of_maps_that_vary_run_to_run():
    from xaibench.report.diagnostic_figures import _pass_line, sanity_png

    def model_record(run_to_run):
        return {"details": {"run_to_run": run_to_run, "threshold": 0.5}}

    assert _pass_line(model_record(0.8), 0.5) == pytest.approx(0.3)
    assert _pass_line(model_record(1.0), 0.5) is None  # deterministic: the threshold itself
    assert _pass_line(model_record(None), 0.5) is None  # older runs: no run_to_run
    assert _pass_line({"details": {}}, 0.5) is None
    records = [
        {
            "backbone": "a", "strategy": "lp", "seed": 0, "category": "sanity",
            "saliency": "random", "metric": metric, "value": 0.01, "status": "ok",
            "details": {
                "passed": False, "threshold": 0.5, "run_to_run": 0.02, "control": True,
                "cascade": [{"from": "head", "spearman": 0.01}],
            },
        }
        for metric in ("sanity_model_randomisation", "sanity_target_randomisation")
    ]  # fmt: skip
    assert sanity_png(records).startswith(b"\x89PNG")
