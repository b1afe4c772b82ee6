import json
from pathlib import Path

import numpy as np
import pytest

from xaibench.config import resolve_config
from xaibench.data.splits import patient_split
from xaibench.data.who import who_class
from xaibench.engine.benchmark import run_benchmark
from xaibench.errors import InvalidOptionsError, XaibenchError
from xaibench.hookspecs import hookimpl
from xaibench.leaderboard import explainability_table, performance_table, to_markdown
from xaibench.models.timm_backbone import TimmBackbone
from xaibench.plugins import collect_components, get_plugin_manager

TINY = {
    "dataset": {
        "name": "phantom",
        "options": {"n_images": 60, "image_size": 32, "class_shares": [0.4, 0.3, 0.3]},
    },
    "backbones": [{"name": "test_resnet.random", "options": {"img_size": 32}}],
    "strategies": ["full"],
    "saliency": ["saliency"],
    "train": {"epochs": 1, "batch_size": 16},
    "max_explain_images": 6,
}


def tiny_config(components, **overrides):
    return resolve_config(components.tasks.create("osteoporosis").defaults(), TINY, overrides)


# --- labels and splits ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("t", "label"),
    [(0.5, 0), (-1.0, 0), (-1.0001, 1), (-2.4999, 1), (-2.5, 2), (-4.0, 2)],
)
def test_who_classes_at_the_boundaries(t, label):
    assert who_class(np.array([t]))[0] == label


def test_missing_t_score_is_an_error():
    with pytest.raises(XaibenchError, match="1 T-score"):
        who_class(np.array([0.0, np.nan]))


def test_patient_split_keeps_patients_together_and_stratifies():
    rng = np.random.default_rng(0)
    patients = np.repeat([f"P{i}" for i in range(300)], rng.integers(1, 4, 300))
    per_patient = {p: rng.integers(0, 3) for p in set(patients)}
    labels = np.array([per_patient[p] for p in patients])
    split = patient_split(patients, labels, (0.7, 0.1, 0.2), seed=3)
    for p in set(patients):
        assert len(set(split[patients == p])) == 1, p
    for label in range(3):
        n = len({p for p in set(patients) if per_patient[p] == label})
        test_patients = set(patients[(split == "test") & (labels == label)])
        assert abs(len(test_patients) - 0.2 * n) <= 1
    assert np.array_equal(split, patient_split(patients, labels, (0.7, 0.1, 0.2), seed=3))
    assert not np.array_equal(split, patient_split(patients, labels, (0.7, 0.1, 0.2), seed=4))


def test_bad_split_fractions_are_rejected():
    with pytest.raises(XaibenchError, match="sum"):
        patient_split(["a", "b"], [0, 1], (0.5, 0.5, 0.5))


# --- leaderboards are a pure function of records --------------------------------------------


def record(backbone, metric, value, *, category, saliency=None, perturbation=None, region=None):
    return {
        "backbone": backbone, "strategy": "full", "seed": 0, "metric": metric,
        "category": category, "saliency": saliency, "perturbation": perturbation,
        "region": region, "value": value, "status": "ok" if value is not None else "skipped",
        "random_init": backbone == "b",
    }  # fmt: skip


def test_leaderboards_rank_and_label_from_records_alone():
    records = [
        record("a", "auc", 0.70, category="performance"),
        record("b", "auc", 0.90, category="performance"),
        record(
            "a", "delta_region", 0.30, category="explanation", perturbation="zero", region="bone"
        ),
        record(
            "b", "delta_region", 0.10, category="explanation", perturbation="zero", region="bone"
        ),
        record("a", "iou_region", 0.2, category="explanation", saliency="gradcam", region="ribs"),
        record("b", "iou_region", None, category="explanation", saliency="gradcam", region="ribs"),
    ]
    perf = performance_table(records)
    assert list(perf["backbone"]) == ["b", "a"]
    assert list(perf["rank"]) == [1, 2]
    assert list(perf["weights"]) == ["random init", "pretrained"]
    expl = explainability_table(records)
    assert list(expl.columns[4:6]) == ["Δ_bone (zero)", "IoU_ribs (gradcam)"]
    assert list(expl["backbone"]) == ["a", "b"]
    assert np.isnan(expl.loc[expl.backbone == "b", "IoU_ribs (gradcam)"].item())
    md = to_markdown(expl)
    assert "| 1 | a | full | 0 | 0.300 | 0.200 | pretrained |" in md
    assert "| 2 | b | full | 0 | 0.100 | – | random init |" in md  # noqa: RUF001


# --- the run ---------------------------------------------------------------------------------


def test_same_config_and_seed_give_identical_results(components, tmp_path: Path):
    # no cache: the second run must train and explain again, not read the first one's work
    config = tiny_config(components, cache=False)
    docs = [run_benchmark(config, components, tmp_path / f"run{i}").document for i in range(2)]
    for doc in docs:
        for key in ("created", "finished"):
            doc.pop(key)
        for cell in doc["cells"]:
            cell.pop("seconds")
    assert json.dumps(docs[0], sort_keys=True) == json.dumps(docs[1], sort_keys=True)
    assert (tmp_path / "run0" / "predictions.csv").read_bytes() == (
        tmp_path / "run1" / "predictions.csv"
    ).read_bytes()


class Exploding(TimmBackbone):
    def build(self, weights):
        raise RuntimeError("weights file is corrupt")


def test_a_failing_cell_is_recorded_and_the_others_finish(tmp_path: Path):
    class Plugin:
        @hookimpl
        def register_backbones(self, register):
            register(
                "exploding.random",
                Exploding,
                options={"arch": "test_resnet", "random_init": True},
            )

    pm = get_plugin_manager(entry_points=False)
    pm.register(Plugin(), name="exploding-plugin")
    components = collect_components(pm)
    config = tiny_config(components, backbones=[TINY["backbones"][0], {"name": "exploding.random"}])
    outcome = run_benchmark(config, components, tmp_path / "run")
    status = {c["backbone"]: c["status"] for c in outcome.document["cells"]}
    assert status == {"test_resnet.random": "ok", "exploding.random": "failed"}
    failed = next(c for c in outcome.document["cells"] if c["status"] == "failed")
    assert "weights file is corrupt" in failed["error"]
    assert "Traceback" in failed["traceback"]
    assert {r["backbone"] for r in outcome.document["records"]} == {"test_resnet.random"}
    assert (tmp_path / "run" / "results.json").is_file()


def test_unknown_region_fails_before_any_work(components, tmp_path: Path):
    config = tiny_config(components, explain_regions=["femur"])
    with pytest.raises(XaibenchError, match="region 'femur' is not provided by dataset 'phantom'"):
        run_benchmark(config, components, tmp_path / "run")


def test_a_split_without_positives_is_a_clear_error(components, tmp_path: Path):
    config = tiny_config(
        components,
        dataset={"options": {"n_images": 40, "class_shares": [0.5, 0.5, 0.0]}},
    )
    with pytest.raises(XaibenchError, match="0 osteoporosis images"):
        run_benchmark(config, components, tmp_path / "run")


def test_non_empty_run_directory_is_refused(components, tmp_path: Path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text("{}")
    with pytest.raises(XaibenchError, match="not empty"):
        run_benchmark(tiny_config(components), components, tmp_path / "run")
    assert (tmp_path / "run" / "results.json").read_text() == "{}"


def test_config_rejects_duplicate_seeds_and_unknown_keys(components):
    with pytest.raises(InvalidOptionsError, match="seeds"):
        tiny_config(components, seeds=[1, 1])
    with pytest.raises(InvalidOptionsError, match=r"train\.epoch: unknown key"):
        tiny_config(components, train={"epoch": 3})


def test_a_component_listed_twice_needs_distinct_labels(components, tmp_path: Path):
    with pytest.raises(InvalidOptionsError, match=r"'mean' is listed twice"):
        tiny_config(
            components, perturbations=["mean", {"name": "mean", "options": {"over": "image"}}]
        )
    config = tiny_config(
        components,
        perturbations=[
            "mean",
            {"name": "mean", "label": "mean_image", "options": {"over": "image"}},
        ],
        saliency=[],
    )
    records = run_benchmark(config, components, tmp_path / "run").document["records"]
    deltas = {r["perturbation"] for r in records if r["metric"] == "delta_region"}
    assert deltas == {"mean", "mean_image"}


def test_bf16_autocast_runs_on_cpu_and_is_recorded(components, tmp_path: Path):
    config = tiny_config(components, precision="bf16", strategies=["full", "linear_probe"])
    outcome = run_benchmark(config, components, tmp_path / "run")
    assert [c["status"] for c in outcome.document["cells"]] == ["ok", "ok"]
    assert outcome.document["environment"]["precision"] == "bf16"
    aucs = [r["value"] for r in outcome.document["records"] if r["metric"] == "auc"]
    assert all(0.0 <= a <= 1.0 for a in aucs)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error_before_any_work(components, tmp_path: Path):
    with pytest.raises(XaibenchError, match="device 'cuda' was requested but torch finds no CUDA"):
        run_benchmark(tiny_config(components, device="cuda"), components, tmp_path / "run")
    assert not (tmp_path / "run").exists()


#: The saliency methods every registered metric and perturbation is scored with: a CAM, a
#: gradient and a control. Each metric costs seconds per method, so the other methods (the
#: bridged libraries' several dozen among them) run in the next test with one region metric.
METRIC_METHODS = ("gradcam", "saliency", "random")


def test_every_registered_perturbation_and_metric_runs(components, tmp_path: Path):
    """Every metric and perturbation `xaibench ls` lists can be selected and gives a value."""
    perturbations = components.perturbations.names()
    metrics = [m for m in components.metrics.names() if m not in _explainer_metrics(components)]
    config = tiny_config(
        components,
        backbones=[{"name": "test_vit.random", "options": {"img_size": 32}}],
        saliency=list(METRIC_METHODS),
        perturbations=perturbations,
        metrics=[
            {"name": m, "options": dict(components.metrics.get(m).load().smoke_options)}
            for m in metrics
        ],
        perturb_regions=["bone"],
        complement_regions=["bone"],
        max_explain_images=4,
        sanity={"images": 2, "steps": 2},
    )
    doc = run_benchmark(config, components, tmp_path / "run").document
    assert [c["status"] for c in doc["cells"]] == ["ok"]
    records = doc["records"]
    assert {r["metric"] for r in records} >= set(metrics)
    assert {r["saliency"] for r in records if r["saliency"]} == set(METRIC_METHODS)
    assert {r["perturbation"] for r in records if r["perturbation"]} == set(perturbations)
    failed = [r for r in records if r["status"] == "failed"]
    assert not failed, failed[:3]
    for method in METRIC_METHODS:
        scored = [
            r for r in records
            if r["saliency"] == method and r["metric"] == "iou_region" and r["region"] == "bone"
        ]  # fmt: skip
        assert len(scored) == 1, method
        assert scored[0]["status"] == "ok", (method, scored[0]["reason"])
    floors = [r for r in records if r["metric"] in ("deletion_auc", "insertion_auc", "road")]
    assert floors
    assert all(r["details"]["random_floor"] is not None for r in floors if r["status"] == "ok")


def _explainer_metrics(components) -> list[str]:
    """Registered metrics that explain again (robustness, randomisation, Quantus' model-based)."""
    return [
        m
        for m in components.metrics.names()
        if components.metrics.get(m).load().needs == "explainer"
    ]


def test_every_registered_explainer_metric_runs(components, tmp_path: Path):
    """Every metric that explains again, bridged ones included, on one method and two images.

    Each runs with its smoke options (Component.smoke_options): the defaults, sized for real use
    (Quantus' 200 noisy draws per image, every layer randomised in turn), take minutes per method
    even on a tiny model.
    """
    # quantus:NonSensitivity makes one model call per pixel and has no cheap setting (Quantus 0.6
    # fails with features_in_step > 1): 20 s here; tests/test_bridge_quantus.py runs it on one
    # 16 px image.
    names = [m for m in _explainer_metrics(components) if m != "quantus:NonSensitivity"]
    assert "mprt" in names
    refs = [
        {"name": m, "options": dict(components.metrics.get(m).load().smoke_options)} for m in names
    ]
    config = tiny_config(
        components,
        backbones=[{"name": "test_vit.random", "options": {"img_size": 32}}],
        saliency=["saliency"],
        perturbations=["zero"],
        metrics=["auc", *refs],
        perturb_regions=["bone"],
        explain_regions=["bone"],
        max_explain_images=2,
        sanity={"images": 0},
    )
    doc = run_benchmark(config, components, tmp_path / "run").document
    records = [r for r in doc["records"] if r["metric"] in names]
    assert {r["metric"] for r in records} == set(names)
    failed = [(r["metric"], r["reason"]) for r in records if r["status"] != "ok"]
    assert not failed, failed[:5]
    assert all(r["details"]["random_floor"] is not None for r in records)


#: Registered for plugin backbones, skipped with a reason on both reference models: captum's
#: LayerLRP needs an LRP rule for the CAM layer, which no built-in backbone's has.
SKIPPED_HERE = {"captum:LayerLRP"}


def test_every_registered_saliency_method_runs(components, tmp_path: Path):
    """Every saliency method `xaibench ls` lists, bridged ones included, explains on a CNN or a ViT.

    A method may skip an architecture it does not support (CNN-only LRP composites on the ViT,
    attention methods on the CNN) with a reason, never fail, and runs on at least one of the two.
    """
    saliency = components.saliency.names()
    config = tiny_config(
        components,
        backbones=[
            {"name": "test_resnet.random", "options": {"img_size": 32}},
            {"name": "test_vit.random", "options": {"img_size": 32}},
        ],
        saliency=saliency,
        perturbations=["zero"],
        metrics=["auc", "iou_region"],
        perturb_regions=["bone"],
        explain_regions=["bone"],
        max_explain_images=2,
        sanity={"images": 0},
    )
    doc = run_benchmark(config, components, tmp_path / "run").document
    assert [c["status"] for c in doc["cells"]] == ["ok", "ok"]
    records = [r for r in doc["records"] if r["metric"] == "iou_region"]
    assert {r["saliency"] for r in records} == set(saliency)
    failed = [
        (r["saliency"], r["backbone"], r["reason"]) for r in records if r["status"] == "failed"
    ]
    assert not failed, failed[:5]
    for method in saliency:
        scored = [r for r in records if r["saliency"] == method]
        assert len(scored) == 2, method
        if method in SKIPPED_HERE:
            assert all(r["status"] == "skipped" for r in scored), method
        else:
            assert any(r["status"] == "ok" for r in scored), (method, [r["reason"] for r in scored])
        assert all(r["reason"] for r in scored if r["status"] == "skipped"), method


def test_masks_of_another_size_are_resized_and_recorded(components):
    """A dataset whose masks are half the image size: nearest-neighbour resize, on record."""
    import torch.nn.functional as F

    from xaibench.engine.grid import build_cells
    from xaibench.engine.runner import CellRunner, prepare_data
    from xaibench.progress import NullProgress

    config = tiny_config(
        components,
        metrics=["auc", "delta_region", "iou_region"],
        perturbations=["zero"],
        perturb_regions=["bone"],
        explain_regions=["bone"],
        sanity={"images": 0},
    )
    data = prepare_data(config, components, NullProgress())
    for split in data.splits.values():
        full = split.regions["bone"]
        split.regions["bone"] = F.interpolate(full[:, None].float(), scale_factor=0.5)[:, 0] > 0.5
    runner = CellRunner(config, components, data)
    result = runner(build_cells(config)[0])
    assert result.status == "ok", result.error
    bone = [r for r in result.records if r["region"] == "bone"]
    assert {r["metric"] for r in bone} == {"delta_region", "iou_region"}
    assert all(r["details"]["mask_resized"] == "nearest" for r in bone)
    assert all(r["status"] == "ok" for r in bone)


def test_a_dataset_of_another_name_replaces_the_default_instead_of_merging(components):
    from xaibench.config import deep_merge

    task_defaults = components.tasks.create("osteoporosis").defaults()
    merged = deep_merge(task_defaults, {"dataset": {"name": "other", "options": {"path": "x"}}})
    assert merged["dataset"] == {"name": "other", "options": {"path": "x"}}
    # the same dataset merges its options, as before
    merged = deep_merge(task_defaults, {"dataset": {"options": {"seed": 3}}})
    assert merged["dataset"]["options"]["seed"] == 3
    assert (
        merged["dataset"]["options"]["n_images"] == task_defaults["dataset"]["options"]["n_images"]
    )
    assert deep_merge({"train": {"epochs": 3, "lr": 1.0}}, {"train": {"epochs": 5}}) == {
        "train": {"epochs": 5, "lr": 1.0}
    }
