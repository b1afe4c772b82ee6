"""Map-only and explainer metrics, written as a new plugin author would, through the runner.

A toy Gini sparseness (:class:`~xaibench.metrics.base.MapMetric`) and a toy re-explanation
stability score (:class:`~xaibench.metrics.base.ExplainerMetric`) are registered by a plugin
object's ``register_metrics`` hook and run through ``run_benchmark`` with several explain
regions: one record per method (region empty), values equal to a hand computation on the maps,
floors with known answers, failures isolated, the cell's model left as it was.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from xaibench.config import resolve_config
from xaibench.data.phantom import PhantomDataset
from xaibench.engine.benchmark import run_benchmark
from xaibench.engine.grid import build_cells
from xaibench.engine.runner import CellRunner, prepare_data
from xaibench.hookspecs import hookimpl
from xaibench.metrics.base import ExplainerMetric, MapMetric
from xaibench.plugins import collect_components
from xaibench.progress import NullProgress
from xaibench.testing.checks._support import model_state


def gini(maps: torch.Tensor) -> torch.Tensor:
    """Gini index of each map's absolute values (Hurley & Rickard), float64, by the sorted form."""
    x = maps.flatten(1).double().abs().sort(dim=1).values
    n = x.shape[1]
    k = torch.arange(1, n + 1, dtype=torch.float64)
    return ((2 * k - n - 1) * x).sum(1) / (n * x.sum(1))


#: Every batch of maps the toy Gini scored, in order (the test recomputes it by hand from them).
SEEN: list[torch.Tensor] = []


class ToyGini(MapMetric):
    """Sparseness of a map: 0 for a flat map, near 1 for a single pixel."""

    higher_is_better = True

    def per_sample(self, maps: torch.Tensor) -> torch.Tensor:
        SEEN.append(maps.clone())
        return gini(maps)


def gini_by_hand(x: np.ndarray) -> float:
    """Half the mean absolute difference over all pixel pairs, divided by the mean."""
    x = np.abs(x.ravel().astype(np.float64))
    return float(np.abs(x[:, None] - x[None, :]).sum() / (2 * x.size * x.sum()))


class ToyStability(ExplainerMetric):
    """Largest absolute change of a map when the same images are explained again (0 = stable).

    Floor: the same change against the map with its pixels shuffled (no information left).
    """

    higher_is_better = False

    def per_sample(self, model, method, images, targets, maps, generator):
        again = method.explain(model, images, targets).cpu()
        values = (again - maps).flatten(1).abs().amax(1).double()
        flat = maps.flatten(1)
        order = torch.argsort(torch.rand(flat.shape, generator=generator), dim=1)
        shuffled = torch.gather(flat, 1, order)
        return values, (shuffled - flat).abs().amax(1).double()


class RandomisedCopy(ExplainerMetric):
    """Explains a randomised deep copy, as a randomisation test should: the cell's model is safe."""

    def per_sample(self, model, method, images, targets, maps, generator):
        clone = copy.deepcopy(model)
        with torch.no_grad():
            for p in clone.parameters():
                p.copy_(torch.randn(p.shape, generator=generator))
        again = method.explain(clone, images, targets).cpu()
        value = (again - maps).flatten(1).abs().mean(1).double()
        return value, torch.zeros_like(value)


class Vandal(ExplainerMetric):
    """Randomises the cell's own model in place and leaves a hook and train mode behind."""

    def per_sample(self, model, method, images, targets, maps, generator):
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(-1.5)
        model.register_forward_hook(lambda *a: None)
        model.train()
        return torch.zeros(len(images)), torch.zeros(len(images))


class Broken(MapMetric):
    def per_sample(self, maps):
        raise RuntimeError("boom")


class WrongShape(MapMetric):
    def per_sample(self, maps):
        return torch.zeros(len(maps), 2)


class GradientOnly(ExplainerMetric):
    """Applies to the plain gradient only: every other method is skipped with the reason."""

    def supports(self, model, method):
        return None if type(method).__name__ == "VanillaGradient" else "needs the plain gradient"

    def per_sample(self, model, method, images, targets, maps, generator):
        return torch.ones(len(images)), torch.zeros(len(images))


class KindsPlugin:
    @hookimpl
    def register_metrics(self, register):
        register("toy_gini", ToyGini, summary="Gini sparseness of the map")
        register("toy_stability", ToyStability, summary="max change when explained again")
        register("toy_randomised_copy", RandomisedCopy)
        register("toy_vandal", Vandal)
        register("toy_broken", Broken)
        register("toy_wrong_shape", WrongShape)
        register("toy_gradient_only", GradientOnly)


TINY = {
    "dataset": {
        "name": "phantom",
        "options": {"n_images": 48, "image_size": 32, "class_shares": [0.4, 0.3, 0.3]},
    },
    "backbones": [{"name": "test_resnet.random", "options": {"img_size": 32}}],
    "strategies": ["linear_probe"],
    "saliency": ["saliency", "input_x_gradient"],
    "perturbations": [],
    "explain_regions": ["bone", "heart", "shortcut"],
    "train": {"epochs": 1, "batch_size": 16, "eval_batch_size": 4},
    "max_explain_images": 6,
    "sanity": {"images": 0},
    "gallery_images": 0,
    "chance": {"draws": 2},
}


@pytest.fixture
def kinds(pm):
    pm.register(KindsPlugin(), name="kinds_test")
    return collect_components(pm)


def config(components, **overrides):
    return resolve_config(components.tasks.create("osteoporosis").defaults(), TINY, overrides)


def by_key(records):
    return {(r["metric"], r["saliency"], r["region"]): r for r in records}


#: The metrics of the module's run: a region metric next to the toy map and explainer metrics.
METRICS = ["auc", "iou_region", "toy_gini", "toy_stability"]
#: Metrics added in the isolation test: a randomisation on a deep copy, and faulty ones.
FAULTY = ["toy_randomised_copy", "toy_vandal", "toy_broken", "toy_wrong_shape", "toy_gradient_only"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One run with the toy metrics next to a region metric, its explanations, and a resume."""
    from xaibench.plugins import get_plugin_manager

    pm = get_plugin_manager(entry_points=False)
    pm.register(KindsPlugin(), name="kinds_test")
    components = collect_components(pm)
    cfg = config(components, metrics=METRICS)
    out = tmp_path_factory.mktemp("kinds") / "run"
    SEEN.clear()
    doc = run_benchmark(cfg, components, out).document
    seen = SEEN[0::2]  # per batch: the maps, then the floor's noise maps
    maps = {"saliency": torch.cat(seen[:2]), "input_x_gradient": torch.cat(seen[2:4])}
    explanations = pd.read_csv(out / "explanations.csv", keep_default_na=False)
    resumed = run_benchmark(cfg, components, out).document  # every cell from its checkpoint
    return doc, explanations, resumed, maps, out


def test_a_map_metric_is_computed_once_per_method_with_region_empty(run):
    doc, explanations, _, maps, _ = run
    gini_records = [r for r in doc["records"] if r["metric"] == "toy_gini"]
    assert sorted(r["saliency"] for r in gini_records) == ["input_x_gradient", "saliency"]
    assert all(r["region"] is None and r["status"] == "ok" for r in gini_records)
    # the region metric still runs once per region
    iou = [r for r in doc["records"] if r["metric"] == "iou_region"]
    assert {r["region"] for r in iou} == {"bone", "heart", "shortcut"}
    for r in gini_records:
        rows = explanations[
            (explanations["metric"] == "toy_gini") & (explanations["saliency"] == r["saliency"])
        ]
        assert list(rows["region"]) == [""] * 6  # one row per explained image, no region
        values = rows["value"].astype(float).to_numpy()
        assert np.isfinite(values).all()
        by_hand = [gini_by_hand(m.numpy()) for m in maps[r["saliency"]]]
        np.testing.assert_allclose(values, by_hand, rtol=1e-9)
        assert r["value"] == pytest.approx(values.mean(), abs=1e-12)
        assert r["n"] == 6
        assert r["details"]["explained_images"] == 6
        assert r["ci_low"] <= r["value"] <= r["ci_high"]
        # floor: Gini of i.i.d. uniform noise, (1/3)(1 - 1/n) in expectation for n pixels
        assert r["details"]["random_floor"] == pytest.approx(1 / 3 * (1 - 1 / 1024), abs=0.01)


def test_an_explainer_metric_runs_end_to_end_with_its_floor(run):
    doc, explanations, _, _, _ = run
    stability = [r for r in doc["records"] if r["metric"] == "toy_stability"]
    assert sorted(r["saliency"] for r in stability) == ["input_x_gradient", "saliency"]
    for r in stability:
        assert r["status"] == "ok"
        assert r["region"] is None
        assert r["value"] == pytest.approx(0.0, abs=1e-6)  # deterministic methods
        assert r["details"]["random_floor"] > 1e-3  # a shuffled map differs
    rows = explanations[explanations["metric"] == "toy_stability"]
    assert len(rows) == 12
    assert set(rows["region"]) == {""}


def test_leaderboard_report_and_export_show_the_new_kinds(run, tmp_path):
    from xaibench.export import run_tables
    from xaibench.leaderboard import explainability_table
    from xaibench.report.build import build_report

    doc = run[0]
    table = explainability_table(doc["records"])
    for metric in ("toy_gini", "toy_stability"):
        for method in ("saliency", "input_x_gradient"):
            record = by_key(doc["records"])[(metric, method, None)]
            assert table[f"{metric} ({method})"].iloc[0] == pytest.approx(record["value"])
    html = build_report([run[4]])
    assert "toy_gini (saliency)" in html
    _, tables = run_tables(run[4])
    rows = tables["explanations"][tables["explanations"]["metric"] == "toy_gini"]
    assert len(rows) == 12
    assert rows["value"].notna().all()


def test_resume_from_checkpoints_keeps_the_new_kinds_records(run):
    doc, _, resumed, _, _ = run
    keys = ("toy_gini", "toy_stability")
    first = {k: r for k, r in by_key(doc["records"]).items() if k[0] in keys}
    again = {k: r for k, r in by_key(resumed["records"]).items() if k[0] in keys}
    assert len(first) == 4
    assert first == again


def test_failures_isolated_empty_region_and_the_model_left_as_it_was(kinds, run):
    """Faulty metrics fail or skip alone; an empty region changes no map metric; the same
    numbers as the run's, computed again (determinism) with the faulty metrics beside them."""
    doc = run[0]
    cfg = config(kinds, metrics=[*METRICS, *FAULTY])
    data = prepare_data(cfg, kinds, NullProgress())
    test = data.splits["test"]
    test.regions["heart"] = torch.zeros(test.images.shape[0], 32, 32, dtype=torch.bool)  # empty
    result = CellRunner(cfg, kinds, data)(build_cells(cfg)[0])
    assert result.status == "ok", result.error
    faults = by_key(result.records)
    for method in ("saliency", "input_x_gradient"):
        vandal = faults[("toy_vandal", method, None)]
        assert vandal["status"] == "failed"
        assert "changed the cell's model in place" in vandal["reason"]
        assert faults[("toy_broken", method, None)]["reason"] == "RuntimeError: boom"
        assert "expected (4,)" in faults[("toy_wrong_shape", method, None)]["reason"]
        # the empty region: the region metric is undefined there, the map metric unaffected
        assert faults[("iou_region", method, "heart")]["status"] == "skipped"
        assert faults[("toy_gini", method, None)]["status"] == "ok"
        # a randomisation on a deep copy: the guard saw no change to the cell's model
        assert faults[("toy_randomised_copy", method, None)]["status"] == "ok"
    only = faults[("toy_gradient_only", "input_x_gradient", None)]
    assert (only["status"], only["reason"]) == ("skipped", "needs the plain gradient")
    assert faults[("toy_gradient_only", "saliency", None)]["value"] == 1.0
    # Every other score equals the run's: the vandal's in-place changes (weights, a hook, train
    # mode) were undone before the next batch, and the deep copy never touched the model.
    ours = {k: r for k, r in faults.items() if k[0] in METRICS and k[2] != "heart"}
    theirs = {k: r for k, r in by_key(doc["records"]).items() if k[2] != "heart"}
    assert ours.keys() == theirs.keys()
    for key, record in ours.items():
        assert record["value"] == theirs[key]["value"], key
        assert record["details"] == theirs[key]["details"], key


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.Flatten(),
        torch.nn.LazyLinear(3),
    )
    model(torch.rand(2, 1, 8, 8))
    model[0].requires_grad_(False)  # frozen, as a linear probe leaves a backbone
    return model.eval()


@pytest.mark.parametrize(
    "harm",
    [
        "permute_data",  # a permutation keeps every sum: the position-weighted sum shows it
        "train_forward",  # BatchNorm's running statistics move
        "replace_weight",
    ],
)
def test_the_guard_catches_in_place_changes_and_restores_the_weights(harm):
    from xaibench.errors import XaibenchError
    from xaibench.explain_scoring import ModelGuard

    model = tiny_model()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    before = model_state(model)
    guard = ModelGuard(model)

    def vandal():
        if harm == "permute_data":
            w = model[3].weight
            w.data.copy_(w.data.flatten().flip(0).view_as(w))
        elif harm == "train_forward":
            model.train()
            model(torch.rand(2, 1, 8, 8))
        else:
            model[3].weight = torch.nn.Parameter(torch.zeros_like(model[3].weight))

    with pytest.raises(XaibenchError, match="changed the cell's model in place"):
        guard.check(vandal)
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    assert model_state(model) == before


def test_the_guard_removes_hooks_and_restores_modes_flags_and_gradients():
    from xaibench.errors import XaibenchError
    from xaibench.explain_scoring import ModelGuard

    model = tiny_model()
    before = model_state(model)
    guard = ModelGuard(model)

    def polite():  # gradients and modes: restored without complaint
        model[0].requires_grad_(True)
        model.eval()
        model(torch.rand(2, 1, 8, 8)).sum().backward()
        return 2

    assert guard.check(polite) == 2
    assert model_state(model) == before
    model[2].register_forward_hook(lambda *a: None)  # a hook from before: kept
    kept = model_state(model)

    def hooked():
        model[3].register_forward_hook(lambda *a: None)
        torch.nn.modules.module.register_module_forward_hook(lambda *a: None)

    with pytest.raises(XaibenchError, match=r"left 2 hook\(s\)"):
        guard.check(hooked)
    assert model_state(model) == kept


def test_planted_answer_a_map_on_the_planted_region_is_sparser_than_the_floor():
    """Phantom region masks as maps: concentrated on the planted region, Gini beats the floor."""
    phantom = PhantomDataset(n_images=4, image_size=64)
    masks = torch.stack([phantom[i].regions["heart"] for i in range(4)]).float()
    maps = masks + 0.01 * torch.rand(masks.shape, generator=torch.Generator().manual_seed(1))
    metric = ToyGini()
    values = metric.per_sample(maps)
    floor = metric.floor(maps, torch.Generator().manual_seed(0))
    assert (values > floor + 0.3).all(), (values, floor)
    mv = metric.aggregate(values.numpy(), floor.numpy())
    assert mv.details["random_floor"] == pytest.approx(float(floor.mean()))


class Float32Gini(MapMetric):
    def per_sample(self, maps):
        return gini(maps).float()


class ConformancePlugin(KindsPlugin):
    @hookimpl
    def register_metrics(self, register):
        super().register_metrics(register)
        register("toy_float32", Float32Gini)


def test_the_conformance_kit_checks_map_and_explainer_metrics(pm):
    from xaibench.testing import check_component

    pm.register(ConformancePlugin(), name="kinds_conformance")
    check_component("toy_gini", plugin_manager=pm)  # declarations, output, direction
    check_component("toy_stability", plugin_manager=pm)  # direction skipped, output runs
    with pytest.raises(
        AssertionError, match=r"per_sample\(\) returned torch.float32, expected torch.float64"
    ):
        check_component("toy_float32", plugin_manager=pm)
    with pytest.raises(AssertionError, match="changed the cell's model in place"):
        check_component("toy_vandal", plugin_manager=pm)
    with pytest.raises(AssertionError, match=r"returned shape \(3, 2\), expected \(3,\)"):
        check_component("toy_wrong_shape", plugin_manager=pm)
