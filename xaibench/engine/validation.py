"""Check a run configuration without running it (``xaibench validate CONFIG``).

A study file is usually written once and run on a cluster later; a misspelled metric or a LoRA
rank given as a string should be found on the laptop in a second, all at once, not one per
failed submission. Validation therefore collects *every* problem instead of stopping at the
first: unknown keys, unknown component names (with did-you-mean), options each component
rejects, missing backbone weights, an unavailable device, and regions the dataset does not
provide. Nothing is trained, no image is decoded and no weight is loaded: weights are only
located, and the dataset is only constructed (a manifest reads its CSV header and rows).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xaibench.config import RunConfig, load_config_file, resolve_config
from xaibench.errors import InvalidOptionsError, XaibenchError
from xaibench.plugins import Components

#: Configuration keys whose values name dataset regions.
REGION_KEYS = ("explain_regions", "perturb_regions", "complement_regions")


@dataclass
class ValidationReport:
    """What validation found.

    Attributes:
        source: The configuration file.
        config: The resolved configuration (None when it does not validate as a whole).
        problems: Errors that would stop ``xaibench run``, each naming its key or component.
        warnings: Things the run would skip with a recorded reason (a region the dataset lacks).
        components: One row per resolved component: ``kind``, ``key``, ``name``, ``provider``.
    """

    source: str
    config: RunConfig | None = None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    components: list[dict[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether ``xaibench run`` would start."""
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary (the resolved configuration included when it validated)."""
        return {
            "source": self.source,
            "ok": self.ok,
            "problems": self.problems,
            "warnings": self.warnings,
            "components": self.components,
            "cells": self.cells,
            "config": self.config.model_dump(mode="json") if self.config else None,
        }

    @property
    def cells(self) -> int:
        """Cells in the grid (0 when the configuration did not validate)."""
        if self.config is None:
            return 0
        c = self.config
        return len(c.backbones) * len(c.strategies) * len(c.seeds)


def validate_config_file(
    path: Path | Sequence[Path],
    components: Components,
    *,
    task: str | None = None,
    grid: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ValidationReport:
    """Resolve ``path`` the way ``xaibench run`` would and check everything it names.

    Args:
        path: The YAML configuration, or several, merged in order (later wins), as repeated
            ``--config`` options of ``xaibench run`` are.
        components: The registries (the plugins the run would load).
        task: The task, when the file has no ``task`` key (must agree when both are given).
        grid: A named grid preset of the task, applied under the file.
        overrides: A last configuration layer (the run's command-line options).

    Returns:
        The report; ``report.ok`` is False when any problem was found.

    Raises:
        XaibenchError: The file cannot be read or is not a YAML mapping.
    """
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    report = ValidationReport(source=", ".join(str(p) for p in paths))
    file_layers = [load_config_file(Path(p)) for p in paths]
    for p, layer in zip(paths, file_layers, strict=True):
        named = layer.get("task")
        if named is not None and task is not None and named != task:
            report.problems.append(f"task: {str(p)!r} is for task {named!r}, not {task!r}")
            return report
        task = task or named
    if not task:
        report.problems.append("task: missing (add 'task: <name>' to the file, or --task)")
        return report
    if not isinstance(task, str):
        report.problems.append(f"task: must be a task name, got {task!r}")
        return report
    try:
        task_obj = components.tasks.create(task)
    except XaibenchError as exc:
        report.problems.append(f"task: {exc}")
        return report
    layers: list[Mapping[str, Any]] = [task_obj.defaults()]
    if grid is not None:
        presets = task_obj.grids()
        if grid not in presets:
            close = difflib.get_close_matches(grid, list(presets), n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            report.problems.append(
                f"grid: unknown grid {grid!r} for task {task!r}{hint} "
                f"(grids: {', '.join(sorted(presets)) or 'none'})"
            )
            return report
        layers.append(presets[grid])
    layers.extend(file_layers)
    layers.append({"task": task, **(overrides or {})})
    try:
        config = resolve_config(*layers)
    except InvalidOptionsError as exc:
        report.problems.extend(exc.problems or [str(exc)])
        # Unknown top-level keys alone: check the rest too, so one pass finds everything.
        if not exc.problems or not all(": unknown key" in p for p in exc.problems):
            return _with_entry_problems(report, layers, components)
        unknown = {p.split(": unknown key")[0] for p in exc.problems}
        try:
            known = [{k: v for k, v in x.items() if k not in unknown} for x in layers]
            config = resolve_config(*known)
        except InvalidOptionsError:
            return _with_entry_problems(report, layers, components)
        _check_components(config, components, report)
        return report
    report.config = config
    _check_components(config, components, report)
    return report


def _with_entry_problems(
    report: ValidationReport, layers: Sequence[Mapping[str, Any]], components: Components
) -> ValidationReport:
    """``report`` with the problems of each well-formed component entry (schema errors aside)."""
    from xaibench.component_checks import entry_problems

    report.problems.extend(
        p for p in entry_problems(layers, components) if p not in report.problems
    )
    return report


def _check_components(config: RunConfig, components: Components, report: ValidationReport) -> None:
    """Resolve every component of ``config`` and build it with its options, noting problems."""
    from xaibench.device import resolve_device
    from xaibench.engine.grid import create_backbone
    from xaibench.models.weights import MissingWeightsError

    try:
        resolve_device(config.device)
    except XaibenchError as exc:
        report.problems.append(f"device: {exc}")
    # (registry, config key, the references, whether the key holds a list)
    groups: list[tuple[str, str, list[Any], bool]] = [
        ("backbones", "backbones", list(config.backbones), True),
        ("strategies", "strategies", list(config.strategies), True),
        ("saliency", "saliency", list(config.saliency), True),
        ("perturbations", "perturbations", list(config.perturbations), True),
        ("metrics", "metrics", list(config.metrics), True),
        ("datasets", "dataset", [config.dataset], False),
        ("executors", "executor", [config.executor], False),
    ]
    dataset = None
    for kind, key, refs, listed in groups:
        registry = components[kind]
        for i, ref in enumerate(refs):
            where = f"{key}[{i}]" if listed else key
            try:
                entry = registry.get(ref.name)
            except XaibenchError as exc:
                report.problems.append(f"{where}: {exc}")
                continue
            try:
                if kind == "backbones":
                    create_backbone(components, ref).locate_weights(ref.key)
                else:
                    built = registry.create(ref.name, ref.options)
                    if kind == "datasets":
                        dataset = built
            except (MissingWeightsError, XaibenchError) as exc:
                report.problems.append(f"{where}: {exc}")
            report.components.append(
                {
                    "kind": kind,
                    "key": ref.key,
                    "name": ref.name,
                    "provider": f"{entry.provider.distribution} {entry.provider.version}",
                }
            )
    if dataset is not None:
        _check_regions(config, dataset, report)


def _check_regions(config: RunConfig, dataset: Any, report: ValidationReport) -> None:
    """Regions the dataset does not provide: the run skips them, so they are warnings."""
    try:
        available = list(dataset.region_names)
    except XaibenchError as exc:
        report.problems.append(f"dataset: {exc}")
        return
    for key in REGION_KEYS:
        for i, region in enumerate(getattr(config, key)):
            if region in available:
                continue
            close = difflib.get_close_matches(region, available, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            report.warnings.append(
                f"{key}[{i}]: dataset {config.dataset.name!r} has no region {region!r}{hint} "
                f"(it has: {', '.join(available) or 'none'}); the run would skip it"
            )


def is_task_document(path: Path) -> bool:
    """Whether the YAML file at ``path`` is a task file (it has ``labels``), not a config."""
    try:
        data = load_config_file(path)
    except XaibenchError:
        return False
    return "labels" in data


def validate_task_file(path: Path | str, components: Components) -> ValidationReport:
    """Check a task file: its keys, and the defaults and grids of every task it defines.

    Every problem at once: unknown keys (did-you-mean), classes and regions the rules name,
    the defaults as a run configuration (components, options, weights, regions), and each
    grid's keys and component names (a grid's weights may be absent where it is validated).
    A region of interest that a dataset with fixed regions (the phantom) lacks is a problem
    with did-you-mean; another dataset's missing region is a warning, as in a configuration.

    Raises:
        XaibenchError: The file cannot be read.
    """
    from xaibench.tasks.file_task import FileTask
    from xaibench.tasks.spec import TaskFileError, load_spec

    report = ValidationReport(source=str(path))
    try:
        spec, _ = load_spec(str(path))
    except TaskFileError as exc:
        report.problems.extend(exc.items)
        return report
    expansions: list[str | None] = [*spec.expansions] or [None]
    for name, finding in zip(spec.task_names(), expansions, strict=True):
        prefix = f"{name}: " if spec.expansions else ""
        try:
            task = FileTask(file=str(path), finding=finding)
        except XaibenchError as exc:
            report.problems.append(f"{prefix}{exc}")
            continue
        if not spec.defaults:
            report.warnings.append(f"{prefix}defaults: none; run the task with --config FILE")
        else:
            sub = ValidationReport(source=report.source)
            try:
                config = resolve_config(task.defaults())
            except InvalidOptionsError as exc:
                sub.problems.extend(f"defaults: {p}" for p in exc.problems or [str(exc)])
            else:
                report.config = report.config or config
                _check_components(config, components, sub)
                if "path" not in config.dataset.options and config.dataset.name == "manifest":
                    # A task for your own data: the manifest comes with --data at run time.
                    moved = [p for p in sub.problems if p.startswith("dataset: ") and "path" in p]
                    sub.problems = [p for p in sub.problems if p not in moved]
                    if moved:
                        sub.warnings.append(
                            "dataset: a manifest without 'path': give --data MANIFEST to run"
                        )
                _check_task_regions(task, config, components, sub)
                report.components.extend(sub.components)
            report.problems.extend(prefix + p for p in sub.problems)
            report.warnings.extend(prefix + w for w in sub.warnings)
        for grid, layer in task.grids().items():
            try:
                config = resolve_config(task.defaults(), layer)
            except InvalidOptionsError as exc:
                report.problems.extend(
                    f"{prefix}grids.{grid}: {p}" for p in exc.problems or [str(exc)]
                )
                continue
            report.problems.extend(
                f"{prefix}grids.{grid}: {p}" for p in _unknown_names(config, components)
            )
        if len(spec.task_names()) > 3 and report.problems:
            break  # one finding's problems are every finding's
    return report


def _unknown_names(config: RunConfig, components: Components) -> list[str]:
    """Components of ``config`` that are not registered (did-you-mean from the registry)."""
    problems = []
    for kind, key in (
        ("backbones", "backbones"),
        ("strategies", "strategies"),
        ("saliency", "saliency"),
        ("perturbations", "perturbations"),
        ("metrics", "metrics"),
    ):
        for i, ref in enumerate(getattr(config, key)):
            try:
                if kind == "backbones":
                    from xaibench.engine.grid import create_backbone

                    create_backbone(components, ref)
                else:
                    components[kind].get(ref.name)
            except XaibenchError as exc:
                problems.append(f"{key}[{i}]: {exc}")
    try:
        components.datasets.get(config.dataset.name)
    except XaibenchError as exc:
        problems.append(f"dataset: {exc}")
    return problems


def _check_task_regions(
    task: Any, config: RunConfig, components: Components, report: ValidationReport
) -> None:
    """The task's regions against a dataset with fixed regions (the phantom).

    There a missing region is a typo: a problem, with did-you-mean.
    """
    try:
        dataset = components.datasets.create(config.dataset.name, config.dataset.options)
        if not getattr(dataset, "fixed_regions", False):
            return
        available = list(dataset.region_names)
    except XaibenchError:
        return  # reported with the components
    for i, region in enumerate(task.regions_of_interest):
        if region not in available:
            close = difflib.get_close_matches(region, available, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            where = "regions.primary" if i == 0 else f"regions.others[{i - 1}]"
            report.problems.append(
                f"{where}: dataset {config.dataset.name!r} has no region {region!r}{hint} "
                f"(it has: {', '.join(available)})"
            )
