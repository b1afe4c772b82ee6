"""Run a component's conformance checks and collect their outcomes, for tests."""

from __future__ import annotations

from collections.abc import Sequence

from xaibench.testing import ConformanceSkip, conformance_checks


def outcomes(pm, name: str, kinds: Sequence[str] | None = None) -> dict[str, str]:
    """Run every check of ``name``: check id -> 'passed', 'skipped: ...' or 'failed: ...'."""
    out = {}
    for check in conformance_checks([name], kinds=kinds, plugin_manager=pm):
        try:
            check.run()
        except ConformanceSkip as exc:
            out[check.check] = f"skipped: {exc}"
        except AssertionError as exc:
            out[check.check] = f"failed: {exc}"
        else:
            out[check.check] = "passed"
    return out
