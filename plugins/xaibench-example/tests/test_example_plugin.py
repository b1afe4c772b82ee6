"""Tests of the example plugin: known answers for each component, then the conformance kit.

Copy this file with the package: the known-answer tests check what *your* components compute,
the conformance tests check that they honour xaibench's contracts (shapes, determinism, no hooks
left behind, the declared metric direction).
"""

import json

import pytest
import torch
import yaml

from xaibench.models.base import Classifier
from xaibench.models.timm_backbone import TimmBackbone
from xaibench.plugins import collect_components, get_plugin_manager
from xaibench.testing import conformance_checks

OURS = [
    "example_method",
    "example_median",
    "example_top_hit",
    "example_densenet121",
    "example_densenet_tiny.random",
]


@pytest.fixture(scope="module")
def components():
    return collect_components(get_plugin_manager(load_plugins="example"))


def test_registered_through_the_entry_point(components):
    for registry, name in (
        (components.saliency, "example_method"),
        (components.perturbations, "example_median"),
        (components.metrics, "example_top_hit"),
        (components.backbones, "example_densenet_tiny.random"),
    ):
        entry = registry.get(name)
        assert entry.provider.distribution == "xaibench-example"
        assert entry.provider.version == "0.1.0"


def test_method_is_gradient_times_input(components):
    torch.manual_seed(0)
    backbone = TimmBackbone(arch="test_resnet", img_size=32, random_init=True).create_adapter()
    model = Classifier(backbone, 3).eval()
    images = torch.rand(2, 1, 32, 32)
    targets = torch.tensor([0, 2])
    maps = components.saliency.create("example_method").explain(model, images, targets)
    x = images.clone().requires_grad_(True)
    model(x).gather(1, targets.view(-1, 1)).sum().backward()
    torch.testing.assert_close(maps, (x.grad * images).abs()[:, 0])


def test_median_fill_by_hand(components):
    images = torch.tensor([[[[0.1, 0.9], [0.3, 0.7]]], [[[0.2, 0.4], [0.6, 0.8]]]])
    masks = torch.tensor([[[True, False], [False, False]], [[False, False], [False, False]]])
    out = components.perturbations.create("example_median").apply(
        images, masks, torch.Generator().manual_seed(0)
    )
    # image 0: outside values 0.9, 0.3, 0.7 -> median 0.7; image 1: empty mask, unchanged
    expected = images.clone()
    expected[0, 0, 0, 0] = 0.7
    torch.testing.assert_close(out, expected)


def test_top_fraction_hit_by_hand(components):
    maps = torch.tensor(
        [
            [[4.0, 3.0], [2.0, 1.0]],  # top half = {4, 3}: one of two inside
            [[1.0, 1.0], [1.0, 1.0]],  # constant: all tie at the cut, chance = region share 1/4
            [[1.0, 2.0], [3.0, 4.0]],  # empty region: undefined
        ]
    )
    masks = torch.tensor(
        [
            [[True, False], [False, False]],
            [[False, True], [False, False]],
            [[False, False], [False, False]],
        ]
    )
    metric = components.metrics.create("example_top_hit", {"fraction": 0.5})
    values = metric.per_sample(maps, masks)
    assert values[:2].tolist() == [0.5, 0.25]
    assert torch.isnan(values[2])


def test_densenet_features_are_torchvision_densenet(components):
    """The adapter's features of raw images = torchvision's DenseNet (no classifier) on them,
    preprocessed by hand: resized, repeated to RGB, ImageNet mean and std."""
    from torchvision.models import DenseNet

    torch.manual_seed(0)
    adapter = components.backbones.create("example_densenet_tiny.random").create_adapter()
    reference = DenseNet(growth_rate=8, block_config=(2, 2), num_init_features=16, bn_size=2)
    reference.features.load_state_dict(adapter.features.state_dict())
    reference.classifier = torch.nn.Identity()
    images = torch.rand(2, 1, 40, 40)
    x = torch.nn.functional.interpolate(images, size=(64, 64), mode="bilinear").repeat(1, 3, 1, 1)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(adapter(images), reference.eval()((x - mean) / std))


def test_densenet_loads_a_torchvision_checkpoint(components, tmp_path):
    """A checkpoint with torchvision's old key names (``norm.1``) loads, weights and all."""
    torch.manual_seed(1)
    source = components.backbones.create("example_densenet_tiny.random").create_adapter()
    state = {
        f"features.{k}".replace(".norm1.", ".norm.1.").replace(".conv2.", ".conv.2."): v
        for k, v in source.features.state_dict().items()
    }
    state["classifier.weight"] = torch.zeros(1000, 32)  # ImageNet head: dropped
    state["classifier.bias"] = torch.zeros(1000)
    assert any(".norm.1." in k for k in state)
    torch.save(state, tmp_path / "densenet.pth")
    options = {"random_init": False, "weights": str(tmp_path / "densenet.pth")}
    loaded = components.backbones.create("example_densenet_tiny.random", options).create_adapter()
    assert not loaded.random_init
    images = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), source(images))


def test_densenet_without_weights_says_where_it_looked(components):
    from xaibench.models.weights import MissingWeightsError

    with pytest.raises(MissingWeightsError, match="pass torchvision's checkpoint"):
        components.backbones.create("example_densenet121").locate_weights("example_densenet121")


def test_a_tiny_run_on_the_densenet(tmp_path, monkeypatch):
    """``xaibench run`` end to end on the plugin's backbone, with its method and a built-in.

    (In this process, as ``xaibench run osteoporosis --config tiny.yaml`` from a shell; the
    conformance kit already ran every built-in strategy and the CAM methods on the backbone.)
    """
    from xaibench.cli import main

    config = {
        "dataset": {"name": "phantom", "options": {"n_images": 60, "image_size": 32}},
        "backbones": [{"name": "example_densenet_tiny.random", "options": {"img_size": 32}}],
        "strategies": ["linear_probe"],
        "saliency": ["gradcam", "example_method"],
        "perturbations": ["example_median"],
        "metrics": ["auc", "iou_region", "example_top_hit", "delta_region"],
        "explain_regions": ["bone"],
        "perturb_regions": ["bone"],
        "complement_regions": [],
        "max_explain_images": 8,
        "train": {"epochs": 1, "batch_size": 16},
        "sanity": {"images": 2},
    }
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    monkeypatch.setenv("XAIBENCH_LOAD_PLUGINS", "example")
    args = ["run", "osteoporosis", "--config", str(tmp_path / "tiny.yaml"), "--out", str(out)]
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 0
    records = json.loads((out / "results.json").read_text())["records"]
    done = {(r["strategy"], r["metric"]) for r in records if r["status"] == "ok"}
    assert {("linear_probe", "auc"), ("linear_probe", "example_top_hit")} <= done
    assert {r["backbone"] for r in records} == {"example_densenet_tiny.random"}
    # the plugin metric's leaderboard column: <name>_<region> (<method>), docs/plugins/hooks.md
    header = (out / "leaderboard_explainability.csv").read_text().splitlines()[0].split(",")
    assert "example_top_hit_bone (gradcam)" in header
    assert "example_top_hit_bone (example_method)" in header


@pytest.mark.parametrize(
    "check", conformance_checks(OURS, load_plugins="example"), ids=lambda c: c.id
)
def test_conformance(check):
    """Every contract check of the kit, on each component this package registers."""
    check.run()
