"""Which library each bridge wraps, the extra that installs it, and the names it registers.

Kept free of heavy imports: ``xaibench ls`` lists bridged names from static tables (one module
per bridge, ``xaibench.bridges.<prefix>_names``, each a tuple :data:`NAMES` of
:class:`BridgedName`) and asks only whether the library is importable, without importing it.
A test checks each table against the installed library.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass

#: The preset option every bridged component receives: the library's own name of the method
#: or metric (``IntegratedGradients``, ``GradCAMPlusPlus``, ``EpsilonPlusFlat``, ``Sparseness``).
BRIDGED_OPTION = "bridged"


@dataclass(frozen=True)
class BridgedName:
    """One name a bridge registers.

    Attributes:
        name: The library's name (the part after ``prefix:``), also the preset
            :data:`BRIDGED_OPTION`.
        target: ``"module:Class"`` of the xaibench component that runs it.
        summary: One line for ``xaibench ls``.
    """

    name: str
    target: str
    summary: str


@dataclass(frozen=True)
class Bridge:
    """One bridged library.

    Attributes:
        prefix: Registry prefix: names are ``f"{prefix}:{name}"``.
        library: Import name, checked with :func:`importlib.util.find_spec`.
        distribution: The PyPI distribution to install.
        extra: xaibench's extra that installs it (``pip install 'xaibench[<extra>]'``).
        kind: The kind key its names register under (``saliency`` or ``metrics``).
        names_module: Module holding the static :data:`NAMES` table.
    """

    prefix: str
    library: str
    distribution: str
    extra: str
    kind: str
    names_module: str

    def installed(self) -> bool:
        """Whether the library can be imported here (found, not imported)."""
        try:
            return importlib.util.find_spec(self.library) is not None
        except (ImportError, ValueError):
            return False

    def names(self) -> tuple[BridgedName, ...]:
        """The bridge's static name table."""
        module = importlib.import_module(self.names_module)
        return tuple(module.NAMES)

    def install_hint(self) -> str:
        """``"pip install 'xaibench[extra]'"``."""
        return f"pip install 'xaibench[{self.extra}]'"


BRIDGES: tuple[Bridge, ...] = (
    Bridge("captum", "captum", "captum", "captum-all", "saliency", "xaibench.bridges.captum_names"),
    Bridge(
        "gradcam",
        "pytorch_grad_cam",
        "grad-cam",
        "grad-cam",
        "saliency",
        "xaibench.bridges.gradcam_names",
    ),
    Bridge("zennit", "zennit", "zennit", "zennit", "saliency", "xaibench.bridges.zennit_names"),
    Bridge("quantus", "quantus", "quantus", "quantus", "metrics", "xaibench.bridges.quantus_names"),
)

BRIDGE_BY_PREFIX: dict[str, Bridge] = {b.prefix: b for b in BRIDGES}


def bridge_of(name: str) -> Bridge | None:
    """The bridge a ``prefix:Name`` component name belongs to, or None."""
    prefix, sep, _ = name.partition(":")
    return BRIDGE_BY_PREFIX.get(prefix) if sep else None


def missing_extra_hint(kind: str, name: str) -> str | None:
    """For an unknown ``name`` of ``kind`` whose bridge's library is missing, how to install it.

    Args:
        kind: A kind key (``saliency``, ``metrics``).
        name: The unknown name, e.g. ``gradcam:EigenCAM``.

    Returns:
        ``"it needs grad-cam, which is not installed: pip install 'xaibench[grad-cam]'"``, or
        None when the name is not a bridged one of this kind or its library is installed.
    """
    bridge = bridge_of(name)
    if bridge is None or bridge.kind != kind or bridge.installed():
        return None
    return f"it needs {bridge.distribution}, which is not installed: {bridge.install_hint()}"
