"""Backbone checks, on tiny models only.

Which backbones are built (the size rule): names matching one of :data:`TINY_PATTERNS`
(``*.random``, ``*tiny*``, ``test_*``), the convention for the tiny, randomly initialised models
registered for tests and CPU runs. Building anything else could mean loading gigabytes, so every
other backbone is skipped: with the :class:`~xaibench.models.weights.MissingWeightsError`
message (which names the weights and where they were looked for) when its weights are not
available offline, otherwise with the size rule as the reason. A generic family (``timm``,
``hf``, ``open_clip``) needs a model name and is skipped as needing options. A tiny backbone
whose weights are missing is skipped with the same message.
"""

from __future__ import annotations

import fnmatch
from typing import Any

import torch
from torch import nn

from xaibench.errors import InputRangeError, XaibenchError
from xaibench.models.base import BackboneAdapter, BackboneFactory
from xaibench.models.weights import MissingWeightsError, ResolvedWeights
from xaibench.testing.checks._support import max_abs_diff, random_images
from xaibench.testing.core import Subject

#: Names of the backbones the kit builds (see the module docstring).
TINY_PATTERNS = ("*.random", "*tiny*", "test_*")

BATCH = 2
SEED = 0


def is_tiny(name: str) -> bool:
    """Whether the size rule lets the kit build backbone ``name``."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in TINY_PATTERNS)


def _factory(subject: Subject) -> tuple[BackboneFactory, ResolvedWeights]:
    """The factory and its weights, or a skip saying why the backbone is not built."""
    factory: BackboneFactory = subject.create()
    key = f"backbones:weights:{subject.name}"
    if key not in subject.shared:
        try:
            subject.shared[key] = factory.locate_weights(subject.name)
        except MissingWeightsError as exc:
            subject.shared[key] = f"weights not available offline: {exc}"
    found = subject.shared[key]
    if isinstance(found, str):
        subject.skip(found)
    if not is_tiny(subject.name):
        subject.skip(
            "not built: the kit builds only tiny models, named like "
            f"{', '.join(TINY_PATTERNS)} (its weights are present: {found.describe()['source']})"
        )
    return factory, found


def _build(subject: Subject) -> tuple[BackboneAdapter, ResolvedWeights]:
    factory, weights = _factory(subject)
    torch.manual_seed(SEED)
    adapter = factory.build(weights)
    if not isinstance(adapter, BackboneAdapter):
        subject.fail(f"build() returned {type(adapter).__name__}, expected a BackboneAdapter")
    return adapter, weights


def _raw_images(adapter: BackboneAdapter, seed: int = 31) -> torch.Tensor:
    lo, hi = adapter.input_spec.raw_range
    return lo + (hi - lo) * random_images(BATCH, seed=seed)


def build(subject: Subject) -> None:
    """The adapter comes out in eval mode with a sane architecture, size and input spec.

    Eval mode everywhere (dropout off) is what makes features repeatable; ``random_init`` must
    match the weights actually used, because it marks every result.
    """
    adapter, weights = _build(subject)
    training = [name or "<adapter>" for name, m in adapter.named_modules() if m.training]
    if training:
        subject.fail(f"build() left module(s) in training mode: {', '.join(training[:5])}")
    if adapter.architecture not in ("cnn", "vit"):
        subject.fail(f"architecture is {adapter.architecture!r}, expected 'cnn' or 'vit'")
    if not isinstance(adapter.feature_dim, int) or adapter.feature_dim < 1:
        subject.fail(f"feature_dim is {adapter.feature_dim!r}, expected a positive int")
    spec = adapter.input_spec
    if spec.size < 1 or spec.channels < 1:
        subject.fail(f"input_spec has size {spec.size} and channels {spec.channels}")
    if not len(spec.mean) == len(spec.std) == spec.channels or min(spec.std) <= 0:
        subject.fail(
            f"input_spec mean {spec.mean} and std {spec.std} must have one positive std per "
            f"channel ({spec.channels})"
        )
    if not spec.raw_range[0] < spec.raw_range[1]:
        subject.fail(f"input_spec.raw_range {spec.raw_range} is empty")
    if adapter.random_init != weights.random_init:
        subject.fail(
            f"adapter.random_init is {adapter.random_init} but its weights are "
            f"{weights.source!r}; random_init marks every result and must be truthful"
        )


def features(subject: Subject) -> None:
    """Raw images ``[B, 1, H, W]`` give finite floating features ``[B, feature_dim]``."""
    adapter, _ = _build(subject)
    with torch.no_grad():
        out = adapter(_raw_images(adapter))
    expected = (BATCH, adapter.feature_dim)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        subject.fail(f"forward() returned {shape} for {BATCH} images, expected {expected}")
    if not out.is_floating_point() or not torch.isfinite(out).all():
        subject.fail(f"forward() returned non-finite or non-float features ({out.dtype})")


def deterministic_build(subject: Subject) -> None:
    """Two builds after the same torch seed have equal weights and give equal features.

    Random initialisation draws from torch's global generator, which the runner seeds per
    cell; a build that draws elsewhere makes a cell's numbers unrepeatable.
    """
    runs = []
    for _ in range(2):
        adapter, _ = _build(subject)
        with torch.no_grad():
            feats = adapter(_raw_images(adapter))
        runs.append((adapter.state_dict(), feats))
    (state_a, feats_a), (state_b, feats_b) = runs
    if state_a.keys() != state_b.keys():
        subject.fail("two builds have different state_dict keys")
    differ = [k for k in state_a if not torch.equal(state_a[k], state_b[k])]
    if differ:
        subject.fail(
            f"two builds after torch.manual_seed({SEED}) differ in {len(differ)} tensor(s), "
            f"e.g. {', '.join(differ[:3])}"
        )
    if not torch.equal(feats_a, feats_b):
        subject.fail(
            "two identical builds give different features "
            f"(max |difference| {max_abs_diff(feats_a, feats_b):.3g})"
        )


def raw_range(subject: Subject) -> None:
    """Images outside ``input_spec.raw_range`` (0-255, negative) or NaN raise InputRangeError.

    An adapter fed 0-255 or already-normalised images still returns confident numbers; only an
    error stops the wrong numbers reaching a results file.
    """
    adapter, _ = _build(subject)
    lo, hi = adapter.input_spec.raw_range
    good = _raw_images(adapter)
    span = hi - lo
    cases = {
        "scaled to 0-255": lo + (good - lo) * 255.0 / span + 1.0,
        "below the range": good - 0.5 * span,
        "containing NaN": good.clone().index_fill_(2, torch.tensor([0]), float("nan")),
    }
    for what, images in cases.items():
        try:
            with torch.no_grad():
                adapter(images)
        except InputRangeError:
            continue
        subject.fail(
            f"forward() accepted images {what} (raw_range {adapter.input_spec.raw_range}); "
            "call check_raw() in preprocessing so they raise InputRangeError"
        )


def _cam_grid(subject: Subject, adapter: BackboneAdapter) -> torch.Tensor:
    captured: list[Any] = []
    layer = adapter.cam_layer()
    if not isinstance(layer, nn.Module) or not any(layer is m for m in adapter.modules()):
        subject.fail("cam_layer() must return a submodule of the adapter")
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        with torch.no_grad():
            adapter(_raw_images(adapter))
    finally:
        handle.remove()
    if not captured:
        subject.fail("cam_layer() is not called in the forward pass")
    grid = adapter.activation_to_grid(captured[-1])
    size = adapter.input_spec.size
    if not isinstance(grid, torch.Tensor) or grid.ndim != 4:
        shape = tuple(grid.shape) if isinstance(grid, torch.Tensor) else type(grid).__name__
        subject.fail(f"activation_to_grid() returned {shape}, expected [B, C, h, w]")
    b, c, h, w = grid.shape
    if b != BATCH or c < 1 or not (1 <= h <= size and 1 <= w <= size):
        subject.fail(
            f"activation_to_grid() returned {tuple(grid.shape)} for {BATCH} images of "
            f"{size} px; expected [{BATCH}, C >= 1, h, w] with 1 <= h, w <= {size}"
        )
    return grid


def cam_grid(subject: Subject) -> None:
    """``activation_to_grid`` makes the CAM layer's output ``[B, C, h, w]`` within the input."""
    adapter, _ = _build(subject)
    _cam_grid(subject, adapter)


def attention_maps(subject: Subject) -> None:
    """ViTs: one ``[B, heads, N, N]`` map per layer, rows summing to 1, N matching the grid.

    ``N`` must be the prefix tokens (:attr:`num_prefix_tokens`) plus the CAM grid's patches,
    which is what attention rollout reshapes. CNNs have no attention and are skipped.
    """
    adapter, _ = _build(subject)
    if adapter.architecture != "vit":
        subject.skip(f"a {adapter.architecture} has no attention maps")
    _, _, h, w = _cam_grid(subject, adapter).shape
    try:
        with torch.no_grad():
            maps = adapter.attention_maps(_raw_images(adapter))
    except XaibenchError as exc:
        subject.fail(f"a ViT adapter must provide attention_maps() (attention rollout): {exc}")
    if not isinstance(maps, list) or not maps:
        subject.fail(f"attention_maps() returned {type(maps).__name__}, expected a non-empty list")
    tokens = adapter.num_prefix_tokens + h * w
    for i, layer in enumerate(maps):
        shape = tuple(layer.shape)
        if len(shape) != 4 or shape[0] != BATCH or shape[2:] != (tokens, tokens):
            subject.fail(
                f"attention_maps()[{i}] has shape {shape}, expected [{BATCH}, heads, {tokens}, "
                f"{tokens}] ({adapter.num_prefix_tokens} prefix token(s) + {h}x{w} patches)"
            )
        sums = layer.double().sum(-1)
        if not torch.allclose(sums, torch.ones_like(sums), atol=1e-3):
            subject.fail(
                f"attention_maps()[{i}] rows sum to {float(sums.min()):.4g}.."
                f"{float(sums.max()):.4g}, not 1"
            )


def modules(subject: Subject) -> None:
    """``last_block_modules()`` hold adapter parameters; ``lora_target_modules()`` name modules.

    A module returned by ``last_block_modules()`` need not be registered in the adapter (open_clip's
    bare projection parameter comes wrapped in a throwaway owner), but every parameter it holds
    must be one of the adapter's.

    The ``last_block`` and ``lora`` strategies train exactly these; a stale name would make a
    strategy train nothing but the head without saying so.
    """
    adapter, _ = _build(subject)
    own = {id(p) for p in adapter.parameters()}
    last = adapter.last_block_modules()
    params = [p for m in last for p in m.parameters()]
    if not params:
        subject.fail(
            "last_block_modules() holds no parameter; last-block tuning would train only the head"
        )
    foreign = sum(1 for p in params if id(p) not in own)
    if foreign:
        subject.fail(
            f"last_block_modules() holds {foreign} parameter(s) that are not the adapter's; "
            "training them would not change the model"
        )
    targets = adapter.lora_target_modules()
    if not targets:
        subject.fail("lora_target_modules() is empty; LoRA would adapt nothing")
    names = dict(adapter.named_modules())
    missing = [t for t in targets if t not in names]
    if missing:
        subject.fail(f"lora_target_modules() names modules the adapter lacks: {missing[:5]}")
    weightless = [
        t for t in targets if not isinstance(getattr(names[t], "weight", None), torch.Tensor)
    ]
    if weightless:
        subject.fail(f"lora_target_modules() names modules without a weight: {weightless[:5]}")


#: The built-in saliency methods that call the adapter's CAM and attention contract
#: (``cam_layer``, ``activation_to_grid``, ``attention_maps``, ``num_prefix_tokens``), per
#: architecture: :func:`saliency` runs them on every tiny backbone.
CONTRACT_SALIENCY: dict[str, tuple[str, ...]] = {
    "cnn": ("gradcam",),
    "vit": ("gradcam", "attention_rollout"),
}

#: The built-in strategies that train backbone modules the adapter names
#: (``last_block_modules``, ``lora_target_modules``) or all of it: :func:`strategies` runs them.
CONTRACT_STRATEGIES: tuple[str, ...] = ("last_block", "lora", "full")


def _skip_reference(subject: Subject) -> None:
    from xaibench.testing.checks._support import REFERENCE_BACKBONES

    if subject.name in REFERENCE_BACKBONES.values():
        subject.skip("a reference backbone: every saliency and strategy check already runs on it")


def saliency(subject: Subject) -> None:
    """The built-in CAM methods (and attention rollout on a ViT) explain a classifier on it.

    ``gradcam`` hooks :meth:`~BackboneAdapter.cam_layer`, needs the target logit's gradient
    with respect to its output and reshapes both with ``activation_to_grid``; attention rollout
    reads ``attention_maps`` and ``num_prefix_tokens``. A CAM layer that is not on the path to
    the logits, or a grid that does not match, fails here, naming the method and the error,
    instead of in the first cell of a run. The reference backbones are skipped: every saliency
    check runs on them.
    """
    from xaibench.models.base import Classifier
    from xaibench.testing.checks._support import NUM_CLASSES

    adapter, _ = _build(subject)
    _skip_reference(subject)
    torch.manual_seed(SEED + 1)
    model = Classifier(adapter, NUM_CLASSES).eval()
    model.backbone.requires_grad_(False)
    images = _raw_images(adapter)
    targets = torch.arange(BATCH) % NUM_CLASSES
    for name in CONTRACT_SALIENCY[adapter.architecture]:
        method = subject.registries().saliency.create(name)
        reason = method.supports(model)
        if reason is not None:
            subject.fail(f"the built-in saliency method {name!r} refuses it: {reason}")
        try:
            torch.manual_seed(SEED)
            maps = method.explain(model, images.clone(), targets)
        except Exception as exc:
            subject.fail(
                f"the built-in saliency method {name!r} fails on it: {type(exc).__name__}: "
                f"{exc} (check cam_layer(): its output must reach the logits; and "
                "activation_to_grid(), attention_maps(), num_prefix_tokens)"
            )
        expected = (BATCH, *images.shape[-2:])
        if tuple(maps.shape) != expected or not torch.isfinite(maps).all():
            subject.fail(
                f"the built-in saliency method {name!r} gives maps {tuple(maps.shape)} on it "
                f"(expected finite {expected})"
            )


def strategies(subject: Subject) -> None:
    """``last_block``, ``lora`` and ``full`` each train part of the backbone, for real.

    Each strategy prepares a fresh build; one backward pass of the logits must give a gradient
    to at least one backbone parameter the strategy made trainable. Modules named by
    ``last_block_modules()`` or ``lora_target_modules()`` that the forward pass never calls would
    leave the strategy training the head alone, silently. The reference backbones are skipped:
    every strategy check runs on them.
    """
    from xaibench.testing.checks._support import NUM_CLASSES

    _factory(subject)
    _skip_reference(subject)
    for name in CONTRACT_STRATEGIES:
        adapter, _ = _build(subject)
        strategy = subject.registries().strategies.create(name)
        try:
            model = strategy.prepare(adapter, NUM_CLASSES)
        except Exception as exc:
            subject.fail(
                f"the built-in strategy {name!r} cannot prepare it: {type(exc).__name__}: {exc}"
            )
        trainable = [p for p in model.backbone.parameters() if p.requires_grad]
        if not trainable:
            subject.fail(f"the built-in strategy {name!r} leaves no backbone parameter trainable")
        with torch.enable_grad():
            model(_raw_images(adapter)).sum().backward()
        if not any(p.grad is not None for p in trainable):
            subject.fail(
                f"the built-in strategy {name!r} would train only the head: none of the "
                f"{len(trainable)} backbone parameter(s) it made trainable gets a gradient "
                "(last_block_modules() / lora_target_modules() name modules the forward pass "
                "does not use)"
            )
