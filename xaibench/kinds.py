"""The kinds of component, their registration hooks and base classes.

Kept apart from :mod:`xaibench.plugins` so the CLI, docs and tests share one table.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    """One kind of component.

    Attributes:
        key: Plural key used in the CLI (``xaibench ls saliency``) and in results.
        noun: Singular noun for messages.
        hook: Name of the registration hook.
        base: ``"module:Class"`` every registered class must derive from.
    """

    key: str
    noun: str
    hook: str
    base: str


KINDS: tuple[Kind, ...] = (
    Kind("backbones", "backbone", "register_backbones", "xaibench.models.base:BackboneFactory"),
    Kind("strategies", "strategy", "register_strategies", "xaibench.strategies.base:Strategy"),
    Kind(
        "saliency",
        "saliency method",
        "register_saliency_methods",
        "xaibench.saliency.base:SaliencyMethod",
    ),
    Kind(
        "perturbations",
        "perturbation",
        "register_perturbations",
        "xaibench.perturbations.base:Perturbation",
    ),
    Kind("metrics", "metric", "register_metrics", "xaibench.metrics.base:Metric"),
    Kind("tasks", "task", "register_tasks", "xaibench.tasks.base:Task"),
    Kind("datasets", "dataset", "register_datasets", "xaibench.data.base:Dataset"),
    Kind("executors", "executor", "register_executors", "xaibench.executors.base:Executor"),
    Kind("importers", "importer", "register_importers", "xaibench.data.importers.base:Importer"),
    Kind("segmenters", "segmenter", "register_segmenters", "xaibench.segmenters.base:Segmenter"),
    Kind("observers", "observer", "register_observers", "xaibench.observers.base:Observer"),
)

KIND_BY_KEY: dict[str, Kind] = {k.key: k for k in KINDS}

#: Other spellings accepted on the command line.
KIND_ALIASES: dict[str, str] = {
    "backbone": "backbones",
    "models": "backbones",
    "strategy": "strategies",
    "saliency_methods": "saliency",
    "saliency-methods": "saliency",
    "methods": "saliency",
    "perturbation": "perturbations",
    "metric": "metrics",
    "task": "tasks",
    "dataset": "datasets",
    "executor": "executors",
    "importer": "importers",
    "sources": "importers",
    "segmenter": "segmenters",
    "observer": "observers",
    "trackers": "observers",
}
