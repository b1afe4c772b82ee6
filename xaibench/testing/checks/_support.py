"""What several kinds of check share: reference models, seeding, a snapshot of a model's state."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from xaibench.errors import XaibenchError
from xaibench.models.base import Classifier
from xaibench.plugins import Components
from xaibench.registry import Provider

#: The reference backbones every saliency method and strategy is tried on: built-in, tiny,
#: randomly initialised, one per architecture kind (``BackboneAdapter.architecture``).
REFERENCE_BACKBONES: dict[str, str] = {"cnn": "test_resnet.random", "vit": "test_vit.random"}

#: Input side of the reference backbones: different from :data:`IMAGE_SIZE`, so a method that
#: returns maps on the network's grid instead of the raw image grid is caught.
REFERENCE_INPUT_SIZE = 64

#: Side of the raw test images, small so every check runs in well under a second.
IMAGE_SIZE = 32

#: Classes of the reference classifiers (the osteoporosis task has three).
NUM_CLASSES = 3


def seed_all(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators, as the runner does per cell."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _same_plugin(a: Provider, b: Provider) -> bool:
    if a.builtin or b.builtin:
        return False
    if "unknown" in (a.distribution, b.distribution):  # registered on a manager directly (tests)
        return a.plugin == b.plugin
    return a.distribution == b.distribution


def reference_keys(subject: Any) -> list[str]:
    """What a saliency method or strategy is tried on: ``"cnn"``, ``"vit"``, own backbones.

    The two built-in references (:data:`REFERENCE_BACKBONES`), then every tiny backbone (by the
    size rule of :mod:`xaibench.testing.checks.backbones`) that the component's own plugin
    registers, by name: a plugin that ships a backbone with its methods or strategies gets them
    checked on it too.

    Args:
        subject: The :class:`~xaibench.testing.core.Subject` under test.
    """
    from xaibench.testing.checks.backbones import is_tiny

    keys = list(REFERENCE_BACKBONES)
    entry = subject.entry
    if entry is None:
        return keys
    components = subject.registries()
    keys += [
        other.name
        for other in components.backbones.entries()
        if is_tiny(other.name)
        and _same_plugin(other.provider, entry.provider)
        and _buildable(components, other.name)
    ]
    return keys


def _buildable(components: Components, name: str) -> bool:
    """Whether backbone ``name`` builds with its registered options and has its weights here.

    One that needs options or weights the kit does not have is left out (its own backbone
    checks say why), rather than failing every check of the plugin's methods.
    """
    try:
        components.backbones.create(name).locate_weights(name)
    except XaibenchError:
        return False
    return True


def describe_reference(key: str) -> str:
    """How messages name a reference: ``the reference cnn (test_resnet.random)``."""
    if key in REFERENCE_BACKBONES:
        return f"the reference {key} ({REFERENCE_BACKBONES[key]})"
    return f"the plugin's own backbone {key!r}"


def reference_backbone(components: Components, arch: str, *, seed: int = 0) -> Any:
    """A fresh, seeded reference adapter: ``arch`` is a key of :func:`reference_keys`.

    ``"cnn"`` and ``"vit"`` are the built-in references; any other key is a backbone name, built
    with its registered options (and :data:`REFERENCE_INPUT_SIZE` where it has ``img_size``).
    """
    name = REFERENCE_BACKBONES.get(arch, arch)
    options = {}
    if arch in REFERENCE_BACKBONES or "img_size" in getattr(
        components.backbones.get(name).load(), "model_fields", {}
    ):
        options["img_size"] = REFERENCE_INPUT_SIZE
    torch.manual_seed(seed)
    factory = components.backbones.create(name, options)
    return factory.create_adapter(name)


def reference_model(components: Components, arch: str, *, seed: int = 0) -> Classifier:
    """A reference classifier in eval mode, backbone frozen as a linear probe leaves it.

    Frozen parameters are the common case in the runner (two of the study's three strategies
    freeze most of the backbone), and they are where a method that switches ``requires_grad`` on
    to get its gradients and forgets to switch it off shows.
    """
    backbone = reference_backbone(components, arch, seed=seed)
    torch.manual_seed(seed + 1)
    model = Classifier(backbone, NUM_CLASSES)
    model.backbone.requires_grad_(False)
    return model.eval()


def random_images(n: int, seed: int, size: int = IMAGE_SIZE) -> torch.Tensor:
    """``[n, 1, size, size]`` raw images in [0, 1) from their own generator."""
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


_MODULE_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_pre_hooks_with_kwargs",
    "_state_dict_hooks",
    "_load_state_dict_pre_hooks",
)
_GLOBAL_HOOK_DICTS = (
    "_global_forward_hooks",
    "_global_forward_pre_hooks",
    "_global_backward_hooks",
    "_global_backward_pre_hooks",
    "_global_module_registration_hooks",
    "_global_parameter_registration_hooks",
    "_global_buffer_registration_hooks",
)


def model_state(model: nn.Module) -> dict[str, object]:
    """Everything a saliency method may touch and must give back, keyed for a readable diff.

    Module hooks of every kind on every submodule, torch's global module hooks, tensor hooks on
    parameters, ``requires_grad`` and ``.grad`` of every parameter, and each module's training
    flag.
    """
    state: dict[str, object] = {}
    for mod_name, module in model.named_modules():
        where = mod_name or "<model>"
        for attr in _MODULE_HOOK_DICTS:
            hooks = getattr(module, attr, None)
            if hooks:
                state[f"{where}.{attr}"] = len(hooks)
        state[f"{where}.training"] = module.training
    for p_name, param in model.named_parameters():
        state[f"{p_name}.requires_grad"] = param.requires_grad
        state[f"{p_name}.grad"] = "set" if param.grad is not None else None
        for attr in ("_backward_hooks", "_post_accumulate_grad_hooks"):
            hooks = getattr(param, attr, None)
            if hooks:
                state[f"{p_name}.{attr}"] = len(hooks)
    glob = nn.modules.module
    for attr in _GLOBAL_HOOK_DICTS:
        hooks = getattr(glob, attr, None)
        if hooks:
            state[f"torch.nn.modules.module.{attr}"] = len(hooks)
    return state


def state_diff(before: dict[str, object], after: dict[str, object], limit: int = 6) -> list[str]:
    """Human-readable differences between two :func:`model_state` snapshots.

    Changes of the same attribute in the same way (``requires_grad: False -> True``) are
    grouped, so a method that unfreezes a whole model reads as one line, not hundreds.
    """
    groups: dict[tuple[str, object, object], list[str]] = {}
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old != new:
            where, _, attr = key.rpartition(".")
            groups.setdefault((attr, old, new), []).append(where)
    out = []
    for (attr, old, new), places in groups.items():
        shown = ", ".join(places[:3]) + (f", ... ({len(places)} in all)" if len(places) > 3 else "")
        out.append(f"{attr}: {old!r} -> {new!r} on {shown}")
    if len(out) > limit:
        out = [*out[:limit], f"... and {len(out) - limit} more kinds of change"]
    return out


@contextmanager
def isolated() -> Iterator[None]:
    """Run a check single-threaded and leave the global generators as they were.

    The checks seed Python's, NumPy's and torch's global generators on purpose; restoring them
    keeps a test session's other tests from depending on whether the conformance items ran
    first. One torch thread is plenty for tiny models, and it keeps the checks fast on a shared
    machine: with several busy processes on two cores, multi-threaded kernels on tiny tensors
    were measured 10-100 times slower than single-threaded ones.
    """
    py_state = random.getstate()
    np_state = np.random.get_state()
    torch_state = torch.get_rng_state()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute difference, NaN-aware (NaN where exactly one side is NaN)."""
    return float((a.double() - b.double()).abs().nan_to_num(nan=float("inf")).max())
