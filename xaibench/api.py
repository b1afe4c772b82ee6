"""The Python API: run a benchmark, read a run, explain a model, score maps.

Documented in ``docs/python-api.md``, whose examples run as a test.

:func:`run` is ``xaibench run`` for notebooks: the same configuration layers
(:func:`xaibench.run_config.resolved_config`), validation, run folder and progress display, with
:class:`~xaibench.errors.XaibenchError` exceptions where the CLI prints one line and exits.
:func:`explain` and :func:`score` use xaibench's saliency methods and localisation metrics outside
a benchmark (:mod:`xaibench.user_model` wraps a user's own ``nn.Module``). Every option is
validated by the component's own pydantic options: a misspelt one is an error, never ignored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xaibench.errors import XaibenchError
from xaibench.run_handle import CellsFailedError, Run

if TYPE_CHECKING:
    import numpy as np
    import torch

ConfigArg = str | Path | Mapping[str, Any]


def _names(value: str | int | Sequence[Any] | None, option: str) -> tuple[Any, ...]:
    """A repeatable option given as one value or a sequence of them."""
    if value is None:
        return ()
    if isinstance(value, str | int):
        return (value,)
    if isinstance(value, Sequence):
        return tuple(value)
    raise XaibenchError(f"{option}: expected a name or a list of names, not {type(value).__name__}")


def run(
    task: str,
    *,
    config: ConfigArg | Sequence[ConfigArg] | None = None,
    grid: str | None = None,
    data: str | Path | None = None,
    backbones: str | Sequence[str] | None = None,
    strategies: str | Sequence[str] | None = None,
    saliency: str | Sequence[str] | None = None,
    perturbations: str | Sequence[str] | None = None,
    metrics: str | Sequence[str] | None = None,
    seeds: int | Sequence[int] | None = None,
    random_init: bool = False,
    epochs: int | None = None,
    max_explain_images: int | None = None,
    executor: str | None = None,
    device: str | None = None,
    precision: str | None = None,
    compile: bool | None = None,
    out: str | Path | None = None,
    allow_outside_paths: bool = False,
    image_root: str | Path | None = None,
    calibration: str | Path | None = None,
    include_tasks: Sequence[str | Path] = (),
    observers: Any = None,
    tracking_uri: str | None = None,
    progress: bool = True,
    check: bool = True,
) -> Run:
    """Run ``task``'s benchmark grid, as ``xaibench run TASK [options]`` does.

    Each keyword is the CLI option of the same name (``backbones`` is ``--backbone``, repeated;
    ``out`` is ``--out``; ``config`` is ``--config``, and may also be a mapping, or a list of
    files and mappings, later ones winning). Layers, later wins: the task's defaults, ``grid``,
    ``config``, the other keywords. A run folder that holds this configuration's run resumes it.

    Args:
        task: A registered task, or a task file (``--include-tasks`` is ``include_tasks``).
        config: ``--config``: a YAML file, a mapping, or a list of them (later wins).
        grid: ``--grid``: a named grid preset of the task.
        data: ``--data``: a manifest CSV of your own data.
        backbones: ``--backbone``: one name or a list.
        strategies: ``--strategy``: one name or a list.
        saliency: ``--saliency``: one name or a list.
        perturbations: ``--perturbation``: one name or a list.
        metrics: ``--metric``: one name or a list.
        seeds: ``--seed``: one seed or a list (0 to 2^32 - 1).
        random_init: ``--random-init``: untrained weights for every backbone.
        epochs: ``--epochs``: training epochs of gradient strategies (>= 1).
        max_explain_images: ``--max-explain-images``: explain at most N test images.
        executor: ``--executor``: where cells run (default ``local``).
        device: ``--device``: ``cpu``, ``cuda`` or ``auto``.
        precision: ``--precision``: ``fp32`` or ``bf16``.
        compile: ``--compile``/``--no-compile``: ``torch.compile`` the network.
        out: ``--out``: the run directory (default ``xaibench-runs/<task>-<time>``).
        allow_outside_paths: ``--allow-outside-paths``: manifest paths outside its folder.
        image_root: ``--image-root``: the folder manifest paths are relative to.
        calibration: ``--calibration``: ``calibration.json`` of ``xaibench calibrate``.
        include_tasks: ``--include-tasks``: task files or folders of them to register.
        observers: ``--observer``: names, ``{name: options}`` (``--observer-option``), or
            :class:`~xaibench.observers.base.Observer` instances (a notebook's own class).
        tracking_uri: ``--tracking-uri``: for the observers that take one (``mlflow``).
        progress: Show the progress display (the CLI's; ``False`` is ``--quiet``).
        check: Raise :class:`CellsFailedError` when a cell failed (the CLI's exit status 1);
            ``False`` returns the run anyway.

    Returns:
        The finished :class:`Run` (read back from its folder).

    Raises:
        XaibenchError: What the CLI reports with exit status 2: an unknown task, component,
            option or key (did-you-mean), an unusable ``out`` folder, a bad data file.
        CellsFailedError: A cell failed and ``check`` is true (``.run`` holds the run).
    """
    from xaibench.threads import configure_threads

    configure_threads()  # before torch loads, if it has not yet (xaibench.threads)
    from xaibench.config import load_config_file
    from xaibench.engine.results import default_run_dir
    from xaibench.progress import NullProgress, RichProgress
    from xaibench.run_config import resolved_config

    seed_values = _names(seeds, "seeds")
    for seed in seed_values:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= 2**32 - 1:
            raise XaibenchError(f"seeds: {seed!r} is not a seed (0 to 2^32 - 1)")
    for name, value in (("epochs", epochs), ("max_explain_images", max_explain_images)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise XaibenchError(f"{name}: expected a whole number >= 1, not {value!r}")
    if device is not None and device not in ("cpu", "cuda", "auto"):
        raise XaibenchError(f"device: {device!r} is not one of 'cpu', 'cuda', 'auto'")
    if precision is not None and precision not in ("fp32", "bf16"):
        raise XaibenchError(f"precision: {precision!r} is not one of 'fp32', 'bf16'")
    given = () if config is None else config
    layers = [given] if isinstance(given, str | Path | Mapping) else list(given)
    files = tuple(Path(c) for c in layers if isinstance(c, str | Path))
    mappings = [dict(c) for c in layers if isinstance(c, Mapping)]
    if len(files) + len(mappings) != len(layers):
        raise XaibenchError("config: expected files (paths) or mappings")
    if files and mappings:  # both: in their order, the files read as mappings
        mappings = [
            load_config_file(Path(c)) if isinstance(c, str | Path) else dict(c) for c in layers
        ]
        files = ()
    name, components = _components(task, include_tasks)
    task_obj = components.tasks.create(name)
    from xaibench.observers.select import observers_argument

    watchers = observers_argument(components, observers, tracking_uri)
    resolved = resolved_config(
        task_obj,
        name,
        config_files=files,
        grid=grid,
        data_path=None if data is None else Path(data),
        backbones=_names(backbones, "backbones"),
        strategies=_names(strategies, "strategies"),
        saliency=_names(saliency, "saliency"),
        perturbations=_names(perturbations, "perturbations"),
        metrics=_names(metrics, "metrics"),
        seeds=seed_values,
        random_init=random_init,
        epochs=epochs,
        max_explain_images=max_explain_images,
        executor=executor,
        device=device,
        precision=precision,
        compile_=compile,
        allow_outside_paths=allow_outside_paths,
        image_root=None if image_root is None else Path(image_root),
        config_layers=mappings,
    )
    from xaibench.engine.benchmark import run_benchmark
    from xaibench.trust import read_calibration

    trust = read_calibration(Path(calibration)) if calibration is not None else None
    run_dir = Path(out) if out is not None else default_run_dir(resolved.task)
    if progress:
        with RichProgress() as display:
            outcome = run_benchmark(resolved, components, run_dir, display, trust, watchers)
    else:
        outcome = run_benchmark(resolved, components, run_dir, NullProgress(), trust, watchers)
    result = Run.from_dir(outcome.run_dir)
    if check and (outcome.failed or outcome.partly_failed):
        failed = [r.cell.label() for r in outcome.failed]
        what = f"cells failed: {', '.join(failed)}" if failed else "parts of cells failed"
        raise CellsFailedError(f"{run_dir}: {what} (every result was written)", result)
    return result


def _components(task: str | None, include_tasks: Sequence[str | Path]) -> tuple[Any, Any]:
    """The task's registry name and the registries (task files registered as the CLI does)."""
    import dataclasses

    from xaibench.plugins import PluginSelection, collect_components, get_plugin_manager
    from xaibench.run_config import task_file_paths
    from xaibench.tasks.loading import add_task_paths

    name, paths = task_file_paths(task, include_tasks)
    selection = PluginSelection.from_env()
    if paths:
        selection = dataclasses.replace(selection, task_paths=add_task_paths(paths))
    return name, collect_components(get_plugin_manager(selection=selection))


def load(run_dir: str | Path) -> Run:
    """Read a finished run directory (or its ``results.json``): :class:`Run`.

    Raises:
        XaibenchError: It is not a readable run directory (the message names the file).
    """
    return Run.from_dir(run_dir)


def explain(
    model: Any,
    images: torch.Tensor,
    targets: torch.Tensor | Sequence[int] | int,
    *,
    method: str = "gradcam",
    target_layer: Any = None,
    prefix_tokens: int = 0,
    num_classes: int | None = None,
    backbone_options: Mapping[str, Any] | None = None,
    seed: int = 0,
    **options: Any,
) -> torch.Tensor:
    """Saliency maps ``[B, H, W]`` of one model, outside a benchmark.

    Args:
        model: Your own ``torch.nn.Module`` classifier (logits ``[B, classes]`` from images
            ``[B, 1, H, W]``; a model whose first convolution takes 3 channels gets the
            grayscale image repeated), or a registered backbone name (``xaibench ls
            backbones``) with an untrained linear head initialised from ``seed``.
        images: ``[B, 1, H, W]`` float images (for a registered backbone: raw intensities in
            [0, 1]).
        targets: The class to explain per image (``[B]``, a list, or one int for all).
        method: A registered saliency method (``xaibench ls saliency``).
        target_layer: For CAM methods (``gradcam``, ``gradcam_pp``) on your own model: the
            module (or its dotted name) whose output is weighted, ``[B, C, h, w]`` or ViT
            tokens ``[B, N, C]``. Registered backbones know theirs.
        prefix_tokens: Class and register tokens in front of the patch tokens of a ViT
            ``target_layer`` (the patch tokens must form a square grid).
        num_classes: Classes of the untrained head of a registered backbone (default: the
            largest target + 1, at least 2).
        backbone_options: Options of a registered backbone (e.g. ``{"img_size": 32}``).
        seed: Seeds the methods that draw noise (and a registered backbone's head).
        **options: The method's options (e.g. ``n_steps=16``), validated by it.

    Returns:
        Detached float32 maps ``[B, H, W]`` on the model's device.

    Raises:
        XaibenchError: An unknown method or backbone, an option the method or backbone rejects,
            images of the wrong shape or range, or a method the model cannot support (a CAM
            method without ``target_layer``, attention rollout on a model without attention).
    """
    import torch

    from xaibench.user_model import as_classifier

    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 1:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise XaibenchError(f"images: expected a tensor [B, 1, H, W], got {shape}")
    batch = images.shape[0]
    target = torch.as_tensor(targets, dtype=torch.long).reshape(-1)
    if target.numel() == 1 and batch != 1:
        target = target.expand(batch)
    if target.shape != (batch,):
        raise XaibenchError(f"targets: expected {batch} class indices, got {target.numel()}")
    _, components = _components(None, ())
    saliency = components.saliency.create(method, options)
    classifier = as_classifier(
        model,
        components,
        target_layer=target_layer,
        prefix_tokens=prefix_tokens,
        num_classes=num_classes if num_classes is not None else max(2, int(target.max()) + 1),
        backbone_options=backbone_options or {},
        seed=seed,
    )
    reason = saliency.supports(classifier)
    if reason is not None:
        raise XaibenchError(f"saliency method {method!r}: {reason}")
    device = next(iter(classifier.parameters()), torch.empty(0)).device
    was_training = classifier.training
    classifier.eval()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            maps = saliency.explain(classifier, images.to(device), target.to(device))
    finally:
        classifier.train(was_training)
    result: torch.Tensor = maps.detach().float()
    return result


@dataclass(frozen=True)
class Score:
    """A localisation metric over a batch of maps, with its chance level.

    Attributes:
        metric: The metric's registry name.
        values: Per-image scores ``[B]`` (NaN where undefined: an empty region).
        value: Their mean over the images where defined.
        ci: 95% percentile-bootstrap interval of ``value`` (None below 2 images).
        n: Images where the score is defined.
        chance_values: Per-image value of a map with no information about the region (None
            for metrics without one, e.g. the energy ratio).
        chance: Mean of ``chance_values`` over the images both are defined on.
        chance_method: ``"area fraction"``, ``"0.5"`` or ``"shift null"`` (seeded).
        normalised: ``(value - chance) / (best - chance)``: 0 is chance, 1 the metric's best.
        normalised_ci: Its 95% interval (paired image bootstrap).
        p_chance: One-sided p-value that the score is above chance (paired t-test).
    """

    metric: str
    values: np.ndarray
    value: float
    ci: tuple[float, float] | None
    n: int
    chance_values: np.ndarray | None
    chance: float | None
    chance_method: str | None
    normalised: float | None
    normalised_ci: tuple[float, float] | None
    p_chance: float | None


def score(
    maps: torch.Tensor,
    masks: torch.Tensor,
    *,
    metric: str = "pointing_game",
    seed: int = 0,
    **options: Any,
) -> Score:
    """Score saliency maps against region masks with a localisation metric: :class:`Score`.

    Args:
        maps: ``[B, H, W]`` float maps (``xaibench.explain``'s, or captum's / Quantus's with
            the channel dimension reduced).
        masks: ``[B, H, W]`` region masks (bool, or 0/1).
        metric: A saliency-region metric (``iou_region``, ``pointing_game``,
            ``relevance_mass``, ``relevance_rank``, ...; ``xaibench ls metrics``).
        seed: Seeds the shift null of metrics without an exact chance level and the bootstrap.
        **options: The metric's options (e.g. ``ties="any"``), validated by it.

    Raises:
        XaibenchError: An unknown metric or option, a metric that does not score maps against
            regions, or maps and masks of different or wrong shapes, or non-finite maps.
    """
    import numpy as np
    import torch

    from xaibench.metrics.base import SaliencyRegionMetric
    from xaibench.metrics.chance import chance_details

    _, components = _components(None, ())
    scorer = components.metrics.create(metric, options)
    if not isinstance(scorer, SaliencyRegionMetric):
        raise XaibenchError(
            f"metric {metric!r} does not score maps against regions (it needs {scorer.needs}); "
            "xaibench.score takes the saliency-region metrics"
        )
    maps_t = torch.as_tensor(maps).detach().float().cpu()
    masks_t = torch.as_tensor(masks).detach().cpu()
    if maps_t.ndim != 3 or tuple(maps_t.shape) != tuple(masks_t.shape):
        raise XaibenchError(
            f"maps and masks: expected two [B, H, W] tensors of one shape, got "
            f"{tuple(maps_t.shape)} and {tuple(masks_t.shape)}"
        )
    if masks_t.dtype != torch.bool:
        if not bool(((masks_t == 0) | (masks_t == 1)).all()):
            raise XaibenchError("masks: expected bool or 0/1 values")
        masks_t = masks_t.bool()
    if maps_t.numel() and not bool(torch.isfinite(maps_t).all()):
        raise XaibenchError("maps: contain NaN or infinite values")
    values = scorer.per_sample(maps_t, masks_t).double().numpy()
    aggregate = scorer.aggregate(values)
    generator = torch.Generator().manual_seed(seed)
    level = scorer.chance(maps_t, masks_t, generator)
    details: dict[str, Any] = {}
    chance_values = None
    if level is not None:
        chance_values = level.values.double().numpy()
        details = chance_details(
            values, chance_values, best=scorer.best, method=level.method, exact=level.exact,
            hits=scorer.hits, seed=seed,
        )  # fmt: skip
    return Score(
        metric=metric,
        values=np.asarray(values),
        value=float(aggregate.value),
        ci=aggregate.ci,
        n=int(aggregate.n),
        chance_values=chance_values,
        chance=details.get("chance"),
        chance_method=details.get("chance_method"),
        normalised=details.get("normalised"),
        normalised_ci=_pair(details.get("normalised_ci")),
        p_chance=details.get("p_chance"),
    )


def _pair(value: Any) -> tuple[float, float] | None:
    return None if value is None else (float(value[0]), float(value[1]))


__all__ = ["CellsFailedError", "Run", "Score", "explain", "load", "run", "score"]
