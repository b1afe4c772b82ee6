"""The plugin packages that come with xaibench's source, and the components each provides.

They live in the ``plugins/`` folder of a clone of xaibench and are not published on PyPI, so
installing xaibench (``pip install .``) installs none of them. A name that one of them
provides, asked for without the package, would otherwise only be "unknown";
:class:`~xaibench.errors.UnknownComponentError` looks the name up here and says which package to
install (or, when it is installed but did not load, where to look).

A static table, so the lookup imports nothing and works when the package is absent; a test
(``tests/test_known_plugins.py``) collects each package's registrations in ``plugins/`` and
fails when this table and the packages disagree.
"""

from __future__ import annotations

import difflib
import importlib.metadata

#: Distribution name -> component kind key (:data:`xaibench.kinds.KINDS`) -> names it registers.
KNOWN_PLUGINS: dict[str, dict[str, tuple[str, ...]]] = {
    "xaibench-cardiomegaly": {
        "tasks": ("cardiomegaly",),
        "datasets": ("cardiac_phantom",),
    },
    "xaibench-example": {
        "backbones": ("example_densenet121", "example_densenet_tiny.random"),
        "saliency": ("example_method",),
        "perturbations": ("example_median",),
        "metrics": ("example_top_hit",),
    },
    "xaibench-mlflow": {"observers": ("mlflow",)},
    "xaibench-ray": {"executors": ("ray",)},
    "xaibench-wandb": {"observers": ("wandb",)},
}


def known_providers(kind: str, name: str) -> list[str]:
    """The known plugin packages that register ``name`` as a component of ``kind``.

    Args:
        kind: A kind key (``"tasks"``, ``"executors"``, ...).
        name: The component's name.

    Returns:
        Distribution names, sorted; empty when no known package provides the name.
    """
    return sorted(dist for dist, kinds in KNOWN_PLUGINS.items() if name in kinds.get(kind, ()))


def close_plugin_name(kind: str, name: str) -> str | None:
    """A name of ``kind`` that a known plugin package provides and ``name`` may misspell."""
    names = sorted({n for kinds in KNOWN_PLUGINS.values() for n in kinds.get(kind, ())})
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.75)
    return close[0] if close else None


def _installed(distribution: str) -> bool:
    """Whether ``distribution`` is installed in this environment (its metadata is found)."""
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def plugin_hint(kind: str, name: str) -> str | None:
    """Say which package provides ``name``, for the message of an unknown name.

    Only called for a name that no loaded plugin registered, so an installed plugin wins.

    Args:
        kind: A kind key (``"tasks"``, ``"executors"``, ...).
        name: The unknown name.

    Returns:
        ``"it is provided by the xaibench-ray package (pip install ./plugins/xaibench-ray from a
        clone of xaibench)"``, a note that the package is installed but did not load, or
        ``None`` when no known package provides ``name``.
    """
    providers = known_providers(kind, name)
    if not providers:
        return None
    package = providers[0]
    if _installed(package):
        return (
            f"it is provided by the {package} package, which is installed but did not load "
            "(disabled, broken or left out by XAIBENCH_LOAD_PLUGINS: see `xaibench plugins`)"
        )
    return (
        f"it is provided by the {package} package (pip install ./plugins/{package} from a "
        "clone of xaibench; it is not on PyPI)"
    )
