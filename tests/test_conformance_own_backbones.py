"""The conformance kit runs a plugin's methods and strategies on the plugin's own backbones,
and the built-in CAM methods and strategies on every tiny backbone, so a backbone whose CAM
layer or last block is wrong is caught before a run."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
from torch import nn

from xaibench.hookspecs import hookimpl
from xaibench.models.base import BackboneAdapter, BackboneFactory, Classifier, InputSpec
from xaibench.models.weights import ResolvedWeights
from xaibench.plugins import get_plugin_manager
from xaibench.saliency.base import SaliencyMethod, check_maps
from xaibench.strategies.base import Strategy
from xaibench.testing import conformance_checks
from xaibench.testing.checks._support import reference_keys


class TinyCNN(BackboneAdapter):
    """Two convolutions, plus an auxiliary head (like Inception's) the logits do not use."""

    def __init__(self, fault: str) -> None:
        super().__init__(InputSpec(size=16), 8, "cnn", random_init=True)
        self.fault = fault
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.block = nn.Conv2d(8, 8, 3, padding=1)
        self.aux = nn.Conv2d(8, 8, 1)
        self.spare = nn.Conv2d(8, 8, 1)  # never called

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block(torch.relu(self.stem(x)))
        self.aux_out = self.aux(h.detach())  # a side output, as an auxiliary classifier's
        return h.mean(dim=(2, 3))

    def cam_layer(self) -> nn.Module:
        return self.aux if self.fault == "cam_layer" else self.block

    def activation_to_grid(self, activation: torch.Tensor) -> torch.Tensor:
        return activation

    def last_block_modules(self) -> list[nn.Module]:
        return [self.spare] if self.fault == "last_block" else [self.block]

    def lora_target_modules(self) -> list[str]:
        return ["block"]


class TinyFactory(BackboneFactory):
    fault: str = "none"
    img_size: int = 16

    def locate_weights(self, name: str) -> ResolvedWeights:
        return ResolvedWeights("random")

    def build(self, weights: ResolvedWeights) -> BackboneAdapter:
        return TinyCNN(self.fault).eval()


class NeedsPath(TinyFactory):
    path: str  # required: the kit cannot build it


class Recorder(SaliencyMethod):
    """Gradient magnitude; records the adapter classes it explained."""

    seen: ClassVar[list[str]] = []

    def explain(self, model: Classifier, images: torch.Tensor, targets: torch.Tensor):
        Recorder.seen.append(type(model.backbone).__name__)
        x = images.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(model(x).gather(1, targets.view(-1, 1)).sum(), x)
        return check_maps(grad.abs()[:, 0], images, "recorder")


class RecordingStrategy(Strategy):
    """Head only; records the adapter classes it prepared."""

    seen: ClassVar[list[str]] = []

    def prepare(self, backbone, num_classes):
        RecordingStrategy.seen.append(type(backbone).__name__)
        backbone.requires_grad_(False)
        return Classifier(backbone, num_classes)

    def fit(self, model, train, val, settings, context):
        from xaibench.strategies.linear_probe import LinearProbe

        return LinearProbe().fit(model, train, val, settings, context)


class Mine:
    @hookimpl
    def register_backbones(self, register):
        register("mine_net.random", TinyFactory)
        register("mine_bad_cam.random", TinyFactory, options={"fault": "cam_layer"})
        register("mine_bad_block.random", TinyFactory, options={"fault": "last_block"})
        register("mine_needs_path_tiny", NeedsPath)  # left out of the references

    @hookimpl
    def register_saliency_methods(self, register):
        register("mine_recorder", Recorder)

    @hookimpl
    def register_strategies(self, register):
        register("mine_strategy", RecordingStrategy)


@pytest.fixture
def pm():
    manager = get_plugin_manager(entry_points=False)
    manager.register(Mine(), name="mine")
    return manager


def _check(pm, name: str, check: str):
    (found,) = [c for c in conformance_checks([name], plugin_manager=pm) if c.check == check]
    return found


def test_a_plugins_method_is_checked_on_its_own_backbones(pm):
    check = _check(pm, "mine_recorder", "output_shape")
    keys = reference_keys(check._subject)
    assert keys[:2] == ["cnn", "vit"]
    assert set(keys[2:]) == {"mine_net.random", "mine_bad_cam.random", "mine_bad_block.random"}
    Recorder.seen.clear()
    check.run()
    assert Recorder.seen.count("TinyCNN") == 3
    assert len(Recorder.seen) == 5  # and on the two built-in references


def test_a_plugins_strategy_is_checked_on_its_own_backbones(pm):
    RecordingStrategy.seen.clear()
    _check(pm, "mine_strategy", "prepare").run()
    assert RecordingStrategy.seen.count("TinyCNN") == 3


def test_built_in_methods_keep_to_the_two_references(pm):
    assert reference_keys(_check(pm, "gradcam", "output_shape")._subject) == ["cnn", "vit"]


def test_a_sound_plugin_backbone_passes_the_contract_checks(pm):
    for check in conformance_checks(["mine_net.random"], plugin_manager=pm):
        if check.check != "attention_maps":
            check.run()


def test_a_cam_layer_off_the_logits_path_is_caught(pm):
    _check(pm, "mine_bad_cam.random", "cam_grid").run()  # called, and a grid: looks fine
    with pytest.raises(AssertionError, match=r"'gradcam' fails on it.*cam_layer"):
        _check(pm, "mine_bad_cam.random", "saliency").run()


def test_a_last_block_the_forward_pass_never_uses_is_caught(pm):
    _check(pm, "mine_bad_block.random", "modules").run()  # its parameters are the adapter's
    with pytest.raises(AssertionError, match="'last_block' would train only the head"):
        _check(pm, "mine_bad_block.random", "strategies").run()


def test_the_example_plugins_densenet_is_a_reference_for_its_method():
    pytest.importorskip("xaibench_example")
    checks = conformance_checks(["example_method"], load_plugins="example")
    assert "example_densenet_tiny.random" in reference_keys(checks[0]._subject)
