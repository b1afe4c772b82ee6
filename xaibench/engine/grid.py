"""The grid of a run: its cells, and every component resolved before any work starts.

Resolving names, options, weights and the device first means a typo or a missing checkpoint
fails in a second with one message, instead of after an hour of training.
"""

from __future__ import annotations

from dataclasses import dataclass

from xaibench.config import ComponentRef, RunConfig
from xaibench.device import resolve_device
from xaibench.errors import MultipleErrors, XaibenchError
from xaibench.models.base import BackboneFactory
from xaibench.models.weights import MissingWeightsError
from xaibench.plugins import Components


@dataclass(frozen=True)
class Cell:
    """One model to train and score."""

    backbone: ComponentRef
    strategy: ComponentRef
    seed: int

    def label(self) -> str:
        """Short description for progress lines."""
        return f"{self.backbone.key} x {self.strategy.key} (seed {self.seed})"


def create_backbone(components: Components, ref: ComponentRef) -> BackboneFactory:
    """Build a backbone factory; ``family:model`` puts ``model`` into the family's model option.

    Raises:
        XaibenchError: The family takes no model name (it has no ``spec_option``).
    """
    options = dict(ref.options)
    if ref.spec is not None:
        cls = components.backbones.get(ref.name).load()
        option = getattr(cls, "spec_option", None)
        if option is None:
            raise XaibenchError(
                f"backbone {ref.name!r} takes no model name after ':' (in {ref.key!r})"
            )
        options[option] = ref.spec
    return components.backbones.create(ref.name, options)


def build_cells(config: RunConfig) -> list[Cell]:
    """The grid: every backbone x strategy x seed, in config order."""
    return [
        Cell(backbone, strategy, seed)
        for backbone in config.backbones
        for strategy in config.strategies
        for seed in config.seeds
    ]


def check_components(config: RunConfig, components: Components) -> None:
    """Resolve every name in ``config`` before any work starts, so typos fail in a second.

    Raises:
        UnknownComponentError: With did-you-mean suggestions.
        InvalidOptionsError: Options that do not validate.
    """
    resolve_device(config.device)
    components.tasks.get(config.task)
    components.datasets.get(config.dataset.name)
    components.executors.get(config.executor.name)
    for registry, refs in (
        (components.backbones, config.backbones),
        (components.strategies, config.strategies),
        (components.saliency, config.saliency),
        (components.perturbations, config.perturbations),
        (components.metrics, config.metrics),
    ):
        for ref in refs:
            registry.get(ref.name)
    missing = []
    for ref in config.backbones:
        try:
            create_backbone(components, ref).locate_weights(ref.key)
        except MissingWeightsError as exc:
            missing.append(str(exc))
    if missing:
        raise MultipleErrors(f"missing weights for {len(missing)} backbone(s)", missing)
    for registry, refs in (
        (components.strategies, config.strategies),
        (components.saliency, config.saliency),
        (components.perturbations, config.perturbations),
        (components.metrics, config.metrics),
        (components.executors, [config.executor]),
    ):
        for ref in refs:
            registry.create(ref.name, ref.options)
