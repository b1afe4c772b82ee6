"""The names the ``quantus:`` bridge registers (static: listing imports nothing heavy)."""

from __future__ import annotations

from xaibench.bridges.extras import BridgedName

#: Filled in by the bridge's implementation.
NAMES: tuple[BridgedName, ...] = ()
