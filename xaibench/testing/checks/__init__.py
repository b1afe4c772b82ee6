"""The contract checks, one module per kind.

Each check is a function of a :class:`~xaibench.testing.core.Subject`.
These modules import torch; :mod:`xaibench.testing.core` names their functions lazily, so they
are imported only when a check runs.
"""
