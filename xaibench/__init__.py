"""xaibench: benchmark how well vision models classify medical images *and* where they look.

Importing this package does no work: plugins are loaded by
:func:`xaibench.plugins.get_plugin_manager`, and heavy modules (torch, timm, captum) are imported
only when a component is used.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
