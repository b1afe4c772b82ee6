"""Bridges to other attribution and evaluation libraries, by name and without user code.

``captum:<Name>``, ``gradcam:<Name>``, ``zennit:<Composite>`` (saliency methods) and
``quantus:<Metric>`` (metrics) are registered by :mod:`xaibench.default_plugins.bridges` when
the library is installed; :mod:`xaibench.bridges.extras` says which extra installs each one.
"""
