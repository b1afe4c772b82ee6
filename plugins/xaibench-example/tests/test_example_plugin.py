"""Tests of the example plugin: known answers for each component, then the conformance kit.

Copy this file with the package: the known-answer tests check what *your* components compute,
the conformance tests check that they honour xaibench's contracts (shapes, determinism, no hooks
left behind, the declared metric direction).
"""

import pytest
import torch

from xaibench.models.base import Classifier
from xaibench.models.timm_backbone import TimmBackbone
from xaibench.plugins import collect_components, get_plugin_manager
from xaibench.testing import conformance_checks

OURS = ["example_method", "example_median", "example_top_hit"]


@pytest.fixture(scope="module")
def components():
    return collect_components(get_plugin_manager(load_plugins="example"))


def test_registered_through_the_entry_point(components):
    for registry, name in (
        (components.saliency, "example_method"),
        (components.perturbations, "example_median"),
        (components.metrics, "example_top_hit"),
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


@pytest.mark.parametrize(
    "check", conformance_checks(OURS, load_plugins="example"), ids=lambda c: c.id
)
def test_conformance(check):
    """Every contract check of the kit, on each component this package registers."""
    check.run()
