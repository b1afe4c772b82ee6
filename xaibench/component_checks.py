"""Component checks of a configuration that does not validate as a whole.

``xaibench validate`` lists every problem of a file in one pass. When the schema rejects
part of the file (an unknown key, ``epochs: -1``), there is no :class:`~xaibench.config.RunConfig`
to check, yet the component references that *are* well-formed still name registered
components and options each component accepts, or not. :func:`entry_problems` checks each of
them on its own, from the merged layers, and names each problem by its key path
(``saliency[0]``, ``backbones[1]``, ``dataset``) as the checks of a valid configuration do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from xaibench.config import ComponentRef, deep_merge
from xaibench.errors import XaibenchError

#: (registry, configuration key, whether the key holds a list), in the order a run checks them.
COMPONENT_KEYS: tuple[tuple[str, str, bool], ...] = (
    ("backbones", "backbones", True),
    ("strategies", "strategies", True),
    ("saliency", "saliency", True),
    ("perturbations", "perturbations", True),
    ("metrics", "metrics", True),
    ("datasets", "dataset", False),
    ("executors", "executor", False),
)


def merged_layers(layers: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The layers merged as :func:`xaibench.config.resolve_config` merges them (later wins)."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = deep_merge(merged, layer)
    return merged


def well_formed_refs(merged: Mapping[str, Any]) -> list[tuple[str, str, ComponentRef]]:
    """``(registry, key path, reference)`` for each component entry the schema accepts.

    Entries the schema rejects (a number where a name belongs, an unknown key in an entry) are
    left out: their schema problem is reported already.
    """
    out = []
    for kind, key, listed in COMPONENT_KEYS:
        if key not in merged:
            continue
        value = merged[key]
        if listed:
            if not isinstance(value, list):
                continue
            entries = [(f"{key}[{i}]", v) for i, v in enumerate(value)]
        else:
            entries = [(key, value)]
        for where, raw in entries:
            try:
                out.append((kind, where, ComponentRef.model_validate(raw)))
            except ValidationError:
                continue
    return out


def entry_problems(layers: Sequence[Mapping[str, Any]], components: Any) -> list[str]:
    """The problems of each well-formed component entry of ``layers``: name, then options.

    An unknown name answers with did-you-mean from the registry; a known one is built with its
    options (a backbone's weights are only located), as for a valid configuration.

    Args:
        layers: The configuration layers (task defaults, grid, files, overrides).
        components: The registries.

    Returns:
        One line per problem, each starting with its key path.
    """
    from xaibench.engine.grid import create_backbone
    from xaibench.models.weights import MissingWeightsError

    problems = []
    for kind, where, ref in well_formed_refs(merged_layers(layers)):
        registry = components[kind]
        try:
            registry.get(ref.name)
        except XaibenchError as exc:
            problems.append(f"{where}: {exc}")
            continue
        try:
            if kind == "backbones":
                create_backbone(components, ref).locate_weights(ref.key)
            else:
                registry.create(ref.name, ref.options)
        except (MissingWeightsError, XaibenchError) as exc:
            problems.append(f"{where}: {exc}")
    return problems
