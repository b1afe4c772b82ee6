"""The ``quantus:`` bridge (issue 22 item 1): every name against the installed Quantus, each
family equal to a direct Quantus call on the same inputs, seeded and restoring NumPy's global
state, the floors, and one metric end to end through a run."""

from __future__ import annotations

import copy
import importlib
import inspect
import random
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

quantus = pytest.importorskip("quantus")

from quantus.helpers.enums import ScoreDirection  # noqa: E402

from xaibench.bridges import quantus as qb  # noqa: E402
from xaibench.bridges import quantus_explainer as qe  # noqa: E402
from xaibench.bridges.extras import BRIDGE_BY_PREFIX, Bridge  # noqa: E402
from xaibench.bridges.quantus_names import LEFT_OUT, NAMES  # noqa: E402
from xaibench.data.phantom import PhantomDataset  # noqa: E402
from xaibench.errors import XaibenchError  # noqa: E402
from xaibench.metrics.base import ExplainerMetric, MapMetric, SaliencyRegionMetric  # noqa: E402
from xaibench.models.base import Classifier  # noqa: E402
from xaibench.models.timm_backbone import TimmBackbone  # noqa: E402
from xaibench.plugins import collect_components, get_plugin_manager  # noqa: E402
from xaibench.saliency.gradient import VanillaGradient  # noqa: E402

FIXED = {"disable_warnings": True, "display_progressbar": False, "return_aggregate": False}


def _direct(name, **call):
    """Quantus itself, called the documented way (its warnings on empty regions ignored)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric = getattr(quantus, name)(**call.pop("init", {}), **FIXED)
        return np.asarray(metric(channel_first=True, **call), dtype=np.float64)


def resolve_target(target: str) -> type:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _quantus_metric_classes() -> set[str]:
    from quantus.metrics.base import Metric

    return {
        name
        for name, obj in vars(quantus).items()
        if inspect.isclass(obj) and issubclass(obj, Metric) and obj is not Metric
    }


def test_names_cover_every_installed_quantus_metric():
    """A Quantus upgrade that adds or drops a metric fails here, not silently."""
    bridged = {entry.name for entry in NAMES}
    assert not bridged & set(LEFT_OUT)
    assert bridged | set(LEFT_OUT) == _quantus_metric_classes()
    kinds = {SaliencyRegionMetric: 0, MapMetric: 0, ExplainerMetric: 0}
    for entry in NAMES:
        cls = resolve_target(entry.target)
        assert cls.quantus_name == entry.name
        direction = getattr(quantus, entry.name).score_direction
        assert cls.higher_is_better is (direction == ScoreDirection.HIGHER), entry.name
        kinds[next(k for k in kinds if issubclass(cls, k))] += 1
    assert kinds == {SaliencyRegionMetric: 6, MapMetric: 3, ExplainerMetric: 25}


def test_registered_and_listed_when_installed():
    metrics = collect_components(get_plugin_manager()).metrics
    names = set(metrics.names())
    assert {f"quantus:{entry.name}" for entry in NAMES} <= names
    metric = metrics.create("quantus:RelevanceRankAccuracy")
    assert metric.bridged == "RelevanceRankAccuracy"


def test_a_missing_quantus_names_its_extra(monkeypatch):
    monkeypatch.setattr(Bridge, "installed", lambda self: False)
    metrics = collect_components(get_plugin_manager()).metrics
    assert not [n for n in metrics.names() if n.startswith("quantus:")]
    with pytest.raises(XaibenchError) as err:
        metrics.create("quantus:PointingGame")
    message = str(err.value)
    assert "\n" not in message
    assert BRIDGE_BY_PREFIX["quantus"].install_hint() in message


def test_an_unknown_option_names_the_valid_ones():
    metrics = collect_components(get_plugin_manager()).metrics
    with pytest.raises(XaibenchError) as err:
        metrics.create("quantus:TopKIntersection", {"init_kwargs": {"kk": 10}})
    message = str(err.value)
    assert "\n" not in message
    assert "'kk'" in message
    assert "concept_influence" in message
    with pytest.raises(XaibenchError, match="xaibench sets it"):
        metrics.create("quantus:Sparseness", {"init_kwargs": {"return_aggregate": True}})


# --- each family equals Quantus on the same inputs ---------------------------------------


@pytest.fixture(scope="module")
def maps_and_masks():
    gen = torch.Generator().manual_seed(0)
    maps = torch.rand(6, 32, 32, generator=gen) - 0.3
    masks = torch.zeros(6, 32, 32, dtype=torch.bool)
    for i in range(5):  # the last region is empty
        masks[i, 4 * i : 4 * i + 10, 3 : 3 + 5 * (i + 1)] = True
    return maps, masks


@pytest.mark.parametrize("name", list(qb.REGION_METRICS))
def test_region_metrics_equal_quantus(name, maps_and_masks):
    maps, masks = maps_and_masks
    init = {"k": 50} if name == "TopKIntersection" else {}
    metric = getattr(qb, f"Quantus{name}")(bridged=name, init_kwargs=init)
    got = metric.per_sample(maps, masks).numpy()
    a = maps.numpy()[:, None]
    want = _direct(
        name, init=init, model=None, x_batch=np.zeros_like(a), y_batch=np.zeros(6, dtype=int),
        a_batch=a, s_batch=masks.numpy()[:, None],
    )  # fmt: skip
    np.testing.assert_array_equal(got[:5], want[:5])
    assert np.isnan(got[5])  # an empty region has no score (Quantus's pointing game: a hit)


def test_all_regions_in_one_call_equal_one_call_per_region(maps_and_masks):
    maps, masks = maps_and_masks
    regions = {"a": masks, "b": masks.flip(0), "c": ~masks}
    for name in qb.REGION_METRICS:
        init = {"k": 50} if name == "TopKIntersection" else {}
        metric = getattr(qb, f"Quantus{name}")(bridged=name, init_kwargs=init)
        together = metric.per_sample_regions(maps, regions)
        for region, mask in regions.items():
            single = metric.per_sample(maps, mask)
            np.testing.assert_array_equal(together[region].numpy(), single.numpy(), err_msg=name)


@pytest.mark.parametrize("name", list(qb.MAP_METRICS))
def test_map_metrics_equal_quantus_and_restore_numpy(name, maps_and_masks):
    maps, _ = maps_and_masks
    metric = getattr(qb, f"Quantus{name}")(bridged=name)
    got = metric.per_sample(maps).numpy()
    a = maps.numpy()[:, None]
    want = _direct(
        name, model=None, x_batch=np.zeros_like(a), y_batch=np.zeros(6, dtype=int), a_batch=a
    )
    np.testing.assert_array_equal(got, want)


@pytest.fixture(scope="module")
def tiny_cnn():
    torch.manual_seed(0)
    backbone = TimmBackbone(arch="test_resnet", img_size=32, random_init=True).create_adapter()
    model = Classifier(backbone, 3).eval()
    gen = torch.Generator().manual_seed(1)
    images = 0.3 + 0.4 * torch.rand(2, 1, 32, 32, generator=gen)  # noise stays in [0, 1]
    targets = torch.tensor([0, 2])
    method = VanillaGradient()
    return model, method, images, targets, method.explain(model, images, targets).detach()


# one per family: faithfulness, robustness (explains again), randomisation, axiomatic
FAMILIES = {
    "FaithfulnessCorrelation": {"nr_runs": 2, "subset_size": 16},
    "MaxSensitivity": {"nr_samples": 2, "lower_bound": 0.05},
    "RandomLogit": {"num_classes": 3},
    "Completeness": {},
}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_explainer_metrics_equal_quantus(name, tiny_cnn):
    _equal_to_quantus(name, FAMILIES[name], *tiny_cnn)


def test_non_sensitivity_equals_quantus_on_a_small_image():
    """NonSensitivity calls the model once per pixel: one 16 px image (the every-metric test
    leaves it out for its cost)."""
    torch.manual_seed(0)
    backbone = TimmBackbone(arch="test_resnet", img_size=16, random_init=True).create_adapter()
    model = Classifier(backbone, 3).eval()
    images = 0.3 + 0.4 * torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([2])
    method = VanillaGradient()
    maps = method.explain(model, images, targets).detach()
    _equal_to_quantus("NonSensitivity", {}, model, method, images, targets, maps)


def _equal_to_quantus(name, init, model, method, images, targets, maps):
    metric = getattr(qe, f"Quantus{name}")(bridged=name, init_kwargs=init)
    before = np.random.get_state()[1].copy()
    values, floor = metric.per_sample(
        model, method, images, targets, maps, torch.Generator().manual_seed(5)
    )
    assert np.array_equal(np.random.get_state()[1], before)  # NumPy's global state restored
    seed = qb.draw_seed(torch.Generator().manual_seed(5))  # the bridge's first draw

    def explain(model, inputs, targets, **_):
        x = torch.as_tensor(inputs, dtype=torch.float32)
        return method.explain(model, x, torch.as_tensor(targets).reshape(-1)).numpy()

    np.random.seed(seed)
    random.seed(seed)
    torch.manual_seed(seed)
    want = _direct(
        name, init=init, model=copy.deepcopy(model), x_batch=images.numpy(),
        y_batch=targets.numpy(), a_batch=maps.numpy()[:, None], explain_func=explain,
        explain_func_kwargs={}, device="cpu",
    )  # fmt: skip
    np.testing.assert_allclose(values.numpy(), want, rtol=1e-6, atol=1e-9)
    assert floor.shape == values.shape
    assert floor.dtype == torch.float64
    if name == "MaxSensitivity":  # seeded noise: two calls give the same values and floor
        again = metric.per_sample(
            model, method, images, targets, maps, torch.Generator().manual_seed(5)
        )
        assert torch.equal(again[0], values)
        assert torch.equal(again[1], floor)


# --- floors on the phantom: maps on the planted region beat them ---------------------------


@pytest.fixture(scope="module")
def bone():
    data = PhantomDataset(n_images=6, image_size=32, seed=3)
    _, labels = data.generate(range(6))
    return torch.from_numpy(np.stack([data.masks_of(label)["bone"] for label in labels]))


def test_maps_on_the_planted_region_beat_chance_and_floor(bone):
    gen = torch.Generator().manual_seed(0)
    planted = bone.float() + 0.05 * torch.rand(bone.shape, generator=gen)
    for name in qb.REGION_METRICS:
        init = {"k": 100} if name == "TopKIntersection" else {}
        metric = getattr(qb, f"Quantus{name}")(bridged=name, init_kwargs=init)
        values = metric.per_sample(planted, bone)
        chance = metric.chance(planted, bone, torch.Generator().manual_seed(1))
        assert chance is not None
        assert bool((values > chance.values).all()), name
    concentrated = bone.float() * (1 + 0.05 * torch.rand(bone.shape, generator=gen))
    for name in qb.MAP_METRICS:  # a map on the region alone is simpler than noise
        metric = getattr(qb, f"Quantus{name}")(bridged=name)
        values = metric.per_sample(concentrated)
        floor = metric.floor(concentrated, torch.Generator().manual_seed(1))
        better = values > floor if metric.higher_is_better else values < floor
        assert bool(better.all()), name


# --- end to end through a run --------------------------------------------------------------


def test_a_quantus_metric_through_a_run_equals_quantus(tmp_path, monkeypatch):
    """The run's per-image values of quantus:RelevanceRankAccuracy equal Quantus's own call on
    the maps the saliency method gives on the run's trained model."""
    from xaibench.config import resolve_config
    from xaibench.engine.benchmark import run_benchmark
    from xaibench.explain_stage import ExplainStage

    seen = {}
    original = ExplainStage._explain_method

    def spy(self, model, base, sname, method, *args, **kwargs):
        test = self.data.splits["test"]
        seen.update(
            model=copy.deepcopy(model), method=method, test=test, task=self.data.task,
            masks={r: torch.as_tensor(np.asarray(self._mask(test, r)[:]))
                   for r in self._regions("explain_regions")},
        )  # fmt: skip
        return original(self, model, base, sname, method, *args, **kwargs)

    monkeypatch.setattr(ExplainStage, "_explain_method", spy)
    components = collect_components(get_plugin_manager())
    config = resolve_config(
        components.tasks.create("osteoporosis").defaults(),
        {
            "dataset": {
                "name": "phantom",
                "options": {"n_images": 30, "image_size": 32, "class_shares": [0.4, 0.3, 0.3]},
            },
            "backbones": [{"name": "test_resnet.random", "options": {"img_size": 32}}],
            "strategies": ["full"],
            "saliency": ["saliency"],
            "train": {"epochs": 1, "batch_size": 16},
            "perturbations": ["zero"],
            "max_explain_images": 6,
            "gallery_images": 0,
            "analysis": {"bootstrap": 100},
            "cache": False,
        },
        {"metrics": ["auc", "quantus:RelevanceRankAccuracy"], "sanity": {"images": 0}},
    )
    doc = run_benchmark(config, components, tmp_path / "run").document
    records = [r for r in doc["records"] if r["metric"] == "quantus:RelevanceRankAccuracy"]
    assert records
    assert all(r["status"] == "ok" for r in records), records
    assert all(r["details"]["chance_method"] == "area fraction" for r in records)
    frame = pd.read_csv(tmp_path / "run" / "explanations.csv")
    frame = frame[frame.metric == "quantus:RelevanceRankAccuracy"]
    test, n = seen["test"], 6
    images = torch.as_tensor(np.asarray(test.images[:n]))
    targets = torch.full((n,), seen["task"].positive_index, dtype=torch.long)
    maps = seen["method"].explain(seen["model"].eval(), images, targets).detach().float()
    a = maps.numpy()[:, None]
    assert len(frame) == n * frame.region.nunique() > 0
    for region, rows in frame.groupby("region"):
        mask = seen["masks"][region][:n].numpy()[:, None]
        want = _direct(
            "RelevanceRankAccuracy", model=None, x_batch=np.zeros_like(a),
            y_batch=targets.numpy(), a_batch=a, s_batch=mask,
        )  # fmt: skip
        want[~mask.reshape(n, -1).any(1)] = np.nan
        assert np.isfinite(want).sum() >= 3
        got = rows.set_index("sample_id").value.reindex(list(test.sample_ids[:n]))
        np.testing.assert_allclose(got.to_numpy(dtype=float), want, rtol=1e-12, equal_nan=True)


def test_mprt_gives_one_value_per_image_under_each_summary():
    """Quantus's MPRT returns a dict per layer unless told to summarise: the bridge asks for
    the per-image average, or the last layer's where the user skips layers."""
    mprt = qe.QuantusMPRT(bridged="MPRT")
    assert mprt.quantus_options() == {"return_average_correlation": True}
    skip = qe.QuantusMPRT(bridged="MPRT", init_kwargs={"skip_layers": True})
    assert skip.quantus_options() == {"skip_layers": True, "return_last_correlation": True}
    qb.make_metric("MPRT", skip.quantus_options())  # Quantus accepts the combination
    assert qe.QuantusMaxSensitivity(bridged="MaxSensitivity").quantus_options() == {}


def test_a_constant_batch_is_nan_not_a_failure():
    """Quantus refuses a batch of all-zero maps (an untrained CAM); the bridge gives NaN."""
    zeros = torch.zeros(3, 16, 16)
    metric = qb._CLASSES["QuantusSparseness"](bridged="Sparseness")
    assert torch.isnan(metric.per_sample(zeros)).all()
    masks = torch.zeros(3, 16, 16, dtype=torch.bool)
    masks[:, 4:8, 4:8] = True
    region = qb._CLASSES["QuantusPointingGame"](bridged="PointingGame")
    assert torch.isnan(region.per_sample(zeros, masks)).all()
