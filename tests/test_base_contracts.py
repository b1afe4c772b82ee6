"""Base classes say which method a plugin left out, naming the plugin's class.

A method a subclass must implement raises ``NotImplementedError("<Subclass> must implement
<method>()")`` instead of returning ``None``, which downstream would turn into a confusing error
far away (or, for a backbone adapter, a silently wrong model: ``nn.Module`` is no ``ABC``, so
its ``abstractmethod`` markers are not enforced when an adapter is built).
"""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from xaibench.data.base import Dataset
from xaibench.data.importers.base import Importer
from xaibench.executors.base import Executor
from xaibench.metrics.base import (
    ExplainerMetric,
    FaithfulnessMetric,
    MapMetric,
    PerformanceMetric,
    PerturbationMetric,
    SaliencyRegionMetric,
)
from xaibench.models.base import BackboneAdapter, BackboneFactory, InputSpec
from xaibench.perturbations.base import Perturbation
from xaibench.saliency.base import SaliencyMethod
from xaibench.segmenters.base import Segmenter
from xaibench.strategies.base import Strategy
from xaibench.tasks.base import Task

COMPONENT_BASES = [
    BackboneFactory,
    Strategy,
    SaliencyMethod,
    Perturbation,
    PerformanceMetric,
    SaliencyRegionMetric,
    PerturbationMetric,
    FaithfulnessMetric,
    MapMetric,
    ExplainerMetric,
    Task,
    Dataset,
    Executor,
    Segmenter,
    Importer,
]


def _deferring_subclass(base: type) -> type:
    """A subclass whose every abstract method just calls the base's (``super()``)."""

    def defer(name: str):
        def method(self, *args, **kwargs):
            return getattr(super(sub, self), name)(*args, **kwargs)

        return method

    namespace = {name: defer(name) for name in base.__abstractmethods__}
    sub = type(f"My{base.__name__}", (base,), namespace)
    return sub


@pytest.mark.parametrize("base", COMPONENT_BASES, ids=lambda b: b.__name__)
def test_every_required_method_names_the_class_that_lacks_it(base):
    assert base.__abstractmethods__, base
    sub = _deferring_subclass(base)
    instance = sub.model_construct()
    for name in sorted(base.__abstractmethods__):
        method = getattr(instance, name)
        # the base method's positional parameters (after self), filled with None
        args = [None] * (getattr(base, name).__code__.co_argcount - 1)
        expected = rf"^My{base.__name__} must implement {re.escape(name)}\(\)$"
        with pytest.raises(NotImplementedError, match=expected):
            method(*args)


@pytest.mark.parametrize("base", [SaliencyMethod, Strategy, Perturbation], ids=lambda b: b.__name__)
def test_a_component_missing_a_method_cannot_be_built(base):
    """pydantic's metaclass is an ABCMeta: the missing method is named at construction."""
    incomplete = type(f"Half{base.__name__}", (base,), {})
    with pytest.raises(TypeError, match=f"Half{base.__name__}"):
        incomplete()


class HalfDenseNetAdapter(BackboneAdapter):
    """Implements only the features: what a first draft of an adapter might look like."""

    def __init__(self) -> None:
        super().__init__(InputSpec(size=8), 4, "cnn", random_init=True)
        self.conv = nn.Conv2d(3, 4, 3)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3))


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("cam_layer", ()),
        ("activation_to_grid", (torch.zeros(1, 4, 2, 2),)),
        ("last_block_modules", ()),
        ("lora_target_modules", ()),
    ],
)
def test_an_adapter_missing_a_method_names_itself_when_called(name, args):
    adapter = HalfDenseNetAdapter()  # builds: nn.Module does not enforce abstract methods
    assert adapter(torch.rand(2, 1, 8, 8)).shape == (2, 4)
    with pytest.raises(NotImplementedError, match=rf"^HalfDenseNetAdapter must implement {name}"):
        getattr(adapter, name)(*args)


def test_an_adapter_without_features_fails_on_its_first_forward():
    class NoFeatures(BackboneAdapter):
        pass

    adapter = NoFeatures(InputSpec(size=8), 4, "cnn", random_init=True)
    with pytest.raises(NotImplementedError, match=re.escape("NoFeatures must implement forward_")):
        adapter(torch.rand(1, 1, 8, 8))


def test_the_conformance_kit_reports_the_missing_method():
    from xaibench.hookspecs import hookimpl
    from xaibench.plugins import get_plugin_manager
    from xaibench.testing import conformance_checks

    class HalfFactory(BackboneFactory):
        def locate_weights(self, name):
            from xaibench.models.weights import ResolvedWeights

            return ResolvedWeights("random")

        def build(self, weights):
            return HalfDenseNetAdapter().eval()

    class Plugin:
        @hookimpl
        def register_backbones(self, register):
            register("half_densenet.random", HalfFactory)

    pm = get_plugin_manager(entry_points=False)
    pm.register(Plugin(), name="half")
    checks = conformance_checks(["half_densenet.random"], plugin_manager=pm, kinds=["backbones"])
    (check,) = [c for c in checks if c.check == "cam_grid"]
    with pytest.raises(AssertionError, match="HalfDenseNetAdapter must implement cam_layer"):
        check.run()
