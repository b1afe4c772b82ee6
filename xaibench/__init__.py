"""xaibench: benchmark how well vision models classify medical images *and* where they look.

Importing this package does no work: plugins are loaded by
:func:`xaibench.plugins.get_plugin_manager`, and heavy modules (torch, timm, captum) are imported
only when a component is used. The public Python API (``docs/python-api.md``) is reached through
this module's attributes and imported on first use (:func:`__getattr__`), so ``import xaibench``
imports no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: The public API: each name's module, imported when the name is first used.
_PUBLIC = {
    "run": "xaibench.api",
    "load": "xaibench.api",
    "explain": "xaibench.api",
    "score": "xaibench.api",
    "Score": "xaibench.api",
    "Run": "xaibench.run_handle",
    "CellsFailedError": "xaibench.run_handle",
    "XaibenchError": "xaibench.errors",
}

__all__ = [
    "CellsFailedError",
    "Run",
    "Score",
    "XaibenchError",
    "__version__",
    "explain",
    "load",
    "run",
    "score",
]

if TYPE_CHECKING:
    from xaibench.api import Score, explain, load, run, score
    from xaibench.errors import XaibenchError
    from xaibench.run_handle import CellsFailedError, Run


def __getattr__(name: str) -> Any:
    """The public API's names, imported on first use (PEP 562)."""
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'xaibench' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
