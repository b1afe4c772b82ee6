"""The run configuration of a task, presets, configuration layers and options.

One function for every front end: ``xaibench run`` and ``xaibench calibrate``
(:mod:`xaibench.cli.run_command`) and the Python API (:func:`xaibench.run`) layer a run's
configuration through :func:`resolved_config`, so the same options give the same configuration,
validated the same way. :func:`task_file_paths` is the part of ``--include-tasks`` and a TASK
given as a file that does not depend on click.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from xaibench.errors import XaibenchError


def resolved_config(
    task_obj: Any,
    task: str,
    *,
    config_files: tuple[Path, ...],
    grid: str | None,
    data_path: Path | None,
    backbones: tuple[str, ...],
    strategies: tuple[str, ...],
    saliency: tuple[str, ...],
    perturbations: tuple[str, ...],
    metrics: tuple[str, ...],
    seeds: tuple[int, ...],
    random_init: bool,
    epochs: int | None,
    max_explain_images: int | None,
    executor: str | None,
    device: str | None,
    precision: str | None,
    compile_: bool | None,
    allow_outside_paths: bool,
    image_root: Path | None = None,
    base_layers: Sequence[Callable[[dict[str, Any]], dict[str, Any]]] = (),
    config_layers: Sequence[Mapping[str, Any]] = (),
) -> Any:
    """The run configuration of ``xaibench run``'s options (``calibrate`` and the API share it).

    Layers, later wins: the task's defaults, ``base_layers`` (each computed from the
    defaults: ``calibrate``'s own), ``--grid``, ``--config`` files, ``config_layers``
    (configurations given as mappings: the Python API's ``config={...}``), the options.

    Raises:
        XaibenchError: A config file is for another task, or the grid is unknown.
    """
    from xaibench.config import load_config_file, resolve_config

    file_layers = [load_config_file(path) for path in config_files]
    for path, layer in zip(config_files, file_layers, strict=True):
        if "task" in layer and layer["task"] != task:
            raise XaibenchError(
                f"config file {str(path)!r} is for task {layer['task']!r}, not {task!r}"
            )
    for given in config_layers:
        if "task" in given and given["task"] != task:
            raise XaibenchError(f"config is for task {given['task']!r}, not {task!r}")
    cli_layer: dict[str, Any] = {"task": task}
    for key, values in (
        ("backbones", backbones),
        ("strategies", strategies),
        ("saliency", saliency),
        ("perturbations", perturbations),
        ("metrics", metrics),
        ("seeds", seeds),
    ):
        if values:
            cli_layer[key] = list(values)
    if data_path is not None:
        options: dict[str, Any] = {"path": str(data_path)}
        if allow_outside_paths:
            options["allow_outside_paths"] = True
        if image_root is not None:
            options["image_root"] = str(image_root)
        cli_layer["dataset"] = {"name": "manifest", "options": options}
    elif allow_outside_paths or image_root is not None:
        extra: dict[str, Any] = {}
        if allow_outside_paths:
            extra["allow_outside_paths"] = True
        if image_root is not None:
            extra["image_root"] = str(image_root)
        cli_layer["dataset"] = {"options": extra}
    if epochs is not None:
        cli_layer["train"] = {"epochs": epochs}
    if max_explain_images is not None:
        cli_layer["max_explain_images"] = max_explain_images
    if executor:
        cli_layer["executor"] = executor
    if device:
        cli_layer["device"] = device
    if precision:
        cli_layer["precision"] = precision
    if compile_ is not None:
        cli_layer["compile"] = compile_
    grid_layer: dict[str, Any] = {}
    if grid is not None:
        presets = task_obj.grids()
        if grid not in presets:
            import difflib

            close = difflib.get_close_matches(grid, list(presets), n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise XaibenchError(
                f"unknown grid {grid!r} for task {task!r}{hint} "
                f"(grids: {', '.join(sorted(presets)) or 'none'})"
            )
        grid_layer = presets[grid]
    defaults = task_obj.defaults()
    layers = [layer(defaults) for layer in base_layers]
    config = resolve_config(defaults, *layers, grid_layer, *file_layers, *config_layers, cli_layer)
    if random_init:
        untrained = [
            {**ref.model_dump(), "options": {**ref.options, "random_init": True}}
            for ref in config.backbones
        ]
        config = resolve_config(config.model_dump(), {"backbones": untrained})
    return with_task_file(config, task_obj)


def with_task_file(config: Any, task_obj: Any) -> Any:
    """``config`` with ``task_sha256`` set when the task is a user's task file.

    The hash of the file's bytes is part of the configuration and study hashes (never of
    ``config.yaml``): a run whose task file has changed is another study and does not resume.
    """
    from xaibench.tasks.file_task import user_task_file

    found = user_task_file(task_obj)
    if found is None:
        return config
    return config.model_copy(update={"task_sha256": found["sha256"]})


def task_file_paths(
    task: str | None, include: Sequence[Path | str] = ()
) -> tuple[str | None, list[str]]:
    """The registry name of TASK and the task files to register for it.

    Args:
        task: A registry name, or a task file (``*.yaml``/``*.yml``).
        include: ``--include-tasks`` paths (task files or folders of them).

    Returns:
        ``(name, paths)``: the task's registry name (the file's ``name`` when TASK is a file)
        and the paths to register (empty when there are none).

    Raises:
        XaibenchError: An included path does not exist, TASK's file is invalid (every problem
            listed) or defines several tasks.
    """
    from xaibench.tasks.loading import is_task_file, task_files
    from xaibench.tasks.spec import load_spec

    paths = [str(p) for p in include]
    task_files(paths)  # each exists (named as given)
    name = task
    if task is not None and is_task_file(task):
        spec, file = load_spec(task)
        names = spec.task_names()
        if len(names) > 1:
            raise XaibenchError(
                f"task file {file.name!r} defines {len(names)} tasks ({', '.join(names)}); name "
                f"one with the file included: --include-tasks {task} {names[0]}"
            )
        paths.append(task)
        name = names[0]
    return name, paths
