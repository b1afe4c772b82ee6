"""Saliency-method checks, on the two reference backbones (a tiny CNN and a tiny ViT).

A plugin that also registers tiny backbones gets its methods checked on those too
(:func:`~xaibench.testing.checks._support.reference_keys`).

The contract (``xaibench.saliency.base``): ``explain(model, images [B,1,H,W], targets [B])``
returns maps ``[B, H, W]`` on the raw image grid, deterministic for a torch seed (the runner
seeds torch's global generator per cell), and leaves the model exactly as it found it, even
when it raises. ``architectures`` and ``supports()`` tell the runner which backbones to skip.
"""

from __future__ import annotations

import torch

from xaibench.models.base import Classifier
from xaibench.saliency.base import SaliencyMethod
from xaibench.testing.checks._support import (
    REFERENCE_BACKBONES,
    describe_reference,
    max_abs_diff,
    model_state,
    random_images,
    reference_keys,
    reference_model,
    state_diff,
)
from xaibench.testing.core import Subject

#: Three images with three different targets: a method that explains one class for all, or
#: mixes images of the batch up, shows.
TARGETS = (0, 2, 1)
SEED = 1234


class InjectedError(RuntimeError):
    """Raised by the check's own hook on the classifier head, to interrupt a method."""


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(len(TARGETS), seed=11), torch.tensor(TARGETS)


def _method(subject: Subject) -> SaliencyMethod:
    method: SaliencyMethod = subject.create()
    return method


def _supported_models(subject: Subject, method: SaliencyMethod) -> list[tuple[str, Classifier]]:
    """Reference models the method accepts; skips the check when it accepts neither."""
    models, refused = [], []
    for arch in reference_keys(subject):
        model = reference_model(subject.registries(), arch)
        reason = method.supports(model)
        if reason is None:
            models.append((arch, model))
        else:
            refused.append(f"{arch}: {reason}")
    if not models:
        subject.skip(f"supports() refuses every reference backbone ({'; '.join(refused)})")
    return models


def _check_maps(subject: Subject, arch: str, maps: object, images: torch.Tensor) -> torch.Tensor:
    where = f"on {describe_reference(arch)}"
    if not isinstance(maps, torch.Tensor):
        subject.fail(f"explain() returned {type(maps).__name__} {where}, expected a tensor")
    expected = (images.shape[0], images.shape[-2], images.shape[-1])
    if tuple(maps.shape) != expected:
        subject.fail(
            f"explain() returned maps of shape {tuple(maps.shape)} {where}, expected {expected} "
            "([B, H, W] on the raw image grid, not the network's input grid)"
        )
    if not maps.is_floating_point():
        subject.fail(f"explain() returned {maps.dtype} maps {where}, expected floating point")
    if maps.requires_grad:
        subject.fail(
            f"explain() returned maps that require grad {where}: detach them, or every map "
            "keeps its autograd graph (and the model's activations) alive"
        )
    if maps.device != images.device:
        subject.fail(f"explain() returned maps on {maps.device} for images on {images.device}")
    if not torch.isfinite(maps).all():
        bad = int((~torch.isfinite(maps)).sum())
        subject.fail(f"explain() returned {bad} non-finite value(s) {where}")
    return maps


def output_shape(subject: Subject) -> None:
    """Maps are detached, finite, floating ``[B, H, W]`` tensors on the raw image grid.

    The reference backbones take 64-pixel input and the images are 32 pixels, so a method that
    returns maps on the network's grid fails here.
    """
    method = _method(subject)
    images, targets = _inputs()
    for arch, model in _supported_models(subject, method):
        torch.manual_seed(SEED)
        _check_maps(subject, arch, method.explain(model, images.clone(), targets), images)


def deterministic(subject: Subject) -> None:
    """Two calls after the same ``torch.manual_seed`` return equal maps.

    Only torch's global generator is reseeded, as the runner's per-cell seed is what makes a
    run repeatable: a method drawing from NumPy's or Python's global generator without seeding
    it from torch fails here.
    """
    method = _method(subject)
    images, targets = _inputs()
    for arch, model in _supported_models(subject, method):
        runs = []
        for _ in range(2):
            torch.manual_seed(SEED)
            maps = method.explain(model, images.clone(), targets)
            runs.append(_check_maps(subject, arch, maps, images))
        if not torch.equal(runs[0], runs[1]):
            subject.fail(
                f"two calls after torch.manual_seed({SEED}) differ on {describe_reference(arch)} "
                f"(max |difference| {max_abs_diff(runs[0], runs[1]):.3g}); draw randomness "
                "only from torch's global generator, which the runner seeds per cell"
            )


def no_hooks_left(subject: Subject) -> None:
    """After ``explain``: the same hooks, ``requires_grad`` flags, grads and modes as before."""
    method = _method(subject)
    images, targets = _inputs()
    for arch, model in _supported_models(subject, method):
        before = model_state(model)
        torch.manual_seed(SEED)
        method.explain(model, images.clone(), targets)
        diff = state_diff(before, model_state(model))
        if diff:
            subject.fail(
                f"explain() left {describe_reference(arch)} changed: {'; '.join(diff)} (remove "
                "hooks and restore flags in a finally block)"
            )


def no_hooks_left_on_error(subject: Subject) -> None:
    """As :func:`no_hooks_left` when the model raises mid-explain.

    The check hooks the classifier head (the last module of every forward pass) with a hook
    that raises, lets the method run into it, removes its own hook, and compares the rest. A
    method that never calls the model (a control) simply runs through.
    """
    method = _method(subject)
    images, targets = _inputs()
    for arch, model in _supported_models(subject, method):
        before = model_state(model)

        def boom(*_args: object) -> None:
            raise InjectedError("raised by the conformance check's hook on the classifier head")

        handle = model.head.register_forward_hook(boom)
        try:
            torch.manual_seed(SEED)
            method.explain(model, images.clone(), targets)
        except InjectedError:
            pass
        except Exception as exc:
            if not isinstance(exc.__cause__ or exc.__context__, InjectedError):
                raise
        finally:
            handle.remove()
        diff = state_diff(before, model_state(model))
        if diff:
            subject.fail(
                f"explain() left {describe_reference(arch)} changed after the model raised "
                f"mid-explain: {'; '.join(diff)} (remove hooks and restore flags in a "
                "finally block)"
            )


def capabilities(subject: Subject) -> None:
    """Declared architectures run; for an undeclared one ``supports()`` gives a reason.

    The runner asks ``supports(model)`` before explaining and records its reason as a skip, so
    a method that cannot handle an architecture must say so there rather than crash the cell.
    A declared architecture whose reference model ``supports()`` still refuses is accepted (a
    method may need more than the architecture, e.g. a class token), but must give a reason.
    """
    cls = subject.component_class()
    declared = getattr(cls, "architectures", None)
    if not isinstance(declared, (set, frozenset)) or not declared:
        subject.fail(f"architectures must be a non-empty frozenset of strings, got {declared!r}")
    if not all(isinstance(a, str) for a in declared):
        subject.fail(f"architectures must hold strings, got {sorted(map(repr, declared))}")
    method = _method(subject)
    images, targets = _inputs()
    for key in reference_keys(subject):
        model = reference_model(subject.registries(), key)
        arch = model.backbone.architecture
        reason = method.supports(model)
        if reason is not None and (not isinstance(reason, str) or not reason.strip()):
            subject.fail(
                f"supports() returned {reason!r} for {describe_reference(key)}; expected None "
                "or a reason"
            )
        if arch in declared:
            if reason is None:
                torch.manual_seed(SEED)
                _check_maps(subject, key, method.explain(model, images.clone(), targets), images)
        elif reason is None:
            subject.fail(
                f"declares architectures {sorted(declared)} but supports() returns None for a "
                f"{arch} ({REFERENCE_BACKBONES.get(key, key)}); the runner would call explain() on "
                "backbones it does not handle"
            )
