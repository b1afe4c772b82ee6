"""What a failing component may raise and still fail only its own records, and how it reads.

Shared by every stage of a cell (:mod:`xaibench.explain_stage`, :mod:`xaibench.control_stage`,
:mod:`xaibench.engine.runner`, :mod:`xaibench.chance_tally`).
"""

from __future__ import annotations

#: What a failing component may raise and still fail only its own records, cell or method:
#: any error, and ``SystemExit`` too (a plugin calling ``sys.exit()`` must not end the run).
ISOLATED = (Exception, SystemExit)


def error_text(exc: BaseException) -> str:
    """``Type: message`` of a component's error, as recorded in ``reason``."""
    return f"{type(exc).__name__}: {exc}"
