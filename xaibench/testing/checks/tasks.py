"""Task checks: declarations, the default configuration and grids, and the default dataset.

The default dataset is built with :data:`~xaibench.testing.checks.datasets.TINY_OVERRIDES`
where it has those options (a few images instead of a thousand); a dataset that needs files or
options the task does not give is skipped with the reason.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xaibench.config import ComponentRef, RunConfig, deep_merge, resolve_config
from xaibench.data.base import Dataset
from xaibench.errors import XaibenchError
from xaibench.tasks.base import Task
from xaibench.testing.checks.datasets import build_dataset
from xaibench.testing.core import Subject

_LISTS = ("backbones", "strategies", "saliency", "perturbations", "metrics")


def _task(subject: Subject) -> Task:
    task: Task = subject.create()
    return task


def _config(subject: Subject, layer: dict[str, Any], what: str) -> RunConfig:
    try:
        return resolve_config(layer)
    except XaibenchError as exc:
        subject.fail(f"{what} is not a valid run configuration: {exc}")


def _unregistered(subject: Subject, config: RunConfig) -> list[str]:
    components = subject.registries()
    refs: list[tuple[str, ComponentRef]] = [
        ("datasets", config.dataset),
        ("executors", config.executor),
    ]
    refs += [(key, ref) for key in _LISTS for ref in getattr(config, key)]
    missing = [f"{key} {ref.name!r}" for key, ref in refs if ref.name not in components[key]]
    if config.task not in components.tasks:
        missing.append(f"task {config.task!r}")
    return missing


def _check_config(subject: Subject, layer: dict[str, Any], what: str) -> RunConfig:
    config = _config(subject, layer, what)
    missing = _unregistered(subject, config)
    if missing:
        subject.fail(f"{what} names component(s) no plugin registers: {', '.join(missing)}")
    return config


def classes(subject: Subject) -> None:
    """Class names non-empty, unique strings; the positive class and regions among them."""
    task = _task(subject)
    names = task.class_names
    if len(names) < 2 or not all(isinstance(n, str) and n for n in names):
        subject.fail(f"class_names must be at least two non-empty strings, got {names!r}")
    if len(set(names)) != len(names):
        subject.fail(f"class_names has duplicates: {names!r}")
    if task.positive_class not in names:
        subject.fail(f"positive_class {task.positive_class!r} is not one of {names!r}")
    rois = task.regions_of_interest
    if not rois or not all(isinstance(r, str) and r for r in rois) or len(set(rois)) != len(rois):
        subject.fail(
            f"regions_of_interest must be unique non-empty names (the first is the primary "
            f"region explanations are scored against), got {rois!r}"
        )


def defaults(subject: Subject) -> None:
    """``defaults()`` resolves to a valid RunConfig whose every component is registered."""
    _check_config(subject, _task(subject).defaults(), "defaults()")


def grids(subject: Subject) -> None:
    """Every named grid, layered over ``defaults()``, is valid and names registered components."""
    task = _task(subject)
    base = task.defaults()
    for name, layer in task.grids().items():
        _check_config(subject, deep_merge(base, layer), f"grid {name!r} over defaults()")


def _default_dataset(subject: Subject) -> Dataset:
    config = _config(subject, _task(subject).defaults(), "defaults()")
    components = subject.registries()
    if config.dataset.name not in components.datasets:
        subject.fail(f"default dataset {config.dataset.name!r} is not registered")
    return build_dataset(subject, config.dataset.name, dict(config.dataset.options))


def dataset_regions(subject: Subject) -> None:
    """The default dataset carries every region the task and its default config name."""
    task = _task(subject)
    config = _config(subject, task.defaults(), "defaults()")
    dataset = _default_dataset(subject)
    available = set(dataset.region_names) | set(dataset.region_groups)
    wanted = {
        "regions_of_interest": task.regions_of_interest,
        "explain_regions": config.explain_regions,
        "perturb_regions": config.perturb_regions,
        "complement_regions": config.complement_regions,
    }
    for what, regions in wanted.items():
        missing = [r for r in regions if r not in available]
        if missing:
            subject.fail(
                f"{what} {missing} are not regions of the default dataset "
                f"{config.dataset.name!r} (it has {sorted(available)})"
            )


def labels(subject: Subject) -> None:
    """``labels(table)`` of the default dataset: a class index per row, or -1 if excluded."""
    task = _task(subject)
    table = _default_dataset(subject).table()
    out = task.labels(table)
    values = np.asarray(out)
    if values.shape != (len(table),):
        subject.fail(f"labels() returned shape {values.shape} for a table of {len(table)} rows")
    if not np.issubdtype(values.dtype, np.integer):
        subject.fail(f"labels() returned {values.dtype}, expected integer class indices")
    # -1: a row the task's policy excludes (an uncertain finding); it must say why.
    bad = values[(values < -1) | (values >= len(task.class_names))]
    if bad.size:
        subject.fail(
            f"labels() returned {bad.size} index(es) outside -1..{len(task.class_names) - 1}, "
            f"e.g. {bad[:5].tolist()}"
        )
    excluded = int((values == -1).sum())
    if excluded:
        counts = task.excluded_counts(table)
        if sum(counts.values()) != excluded:
            subject.fail(
                f"labels() excluded {excluded} row(s) (-1) but excluded_counts() accounts for "
                f"{sum(counts.values())}: {counts}"
            )
