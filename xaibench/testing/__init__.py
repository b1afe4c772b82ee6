"""The conformance kit: contract checks for every registered component, built-in or third-party.

A plugin author's components go through the same checks as the built-ins, so a saliency method
that leaves a hook on the model, a perturbation that touches pixels outside its mask or a metric
with the wrong ``higher_is_better`` is caught by ``pytest --xaibench-conformance`` before it
silently skews a leaderboard (the idea of captum's ``captum/testing`` and datasette's pytest
plugin). Use it from Python::

    from xaibench.testing import check_component, conformance_checks

    check_component("my_method")  # every check of one component; one AssertionError for all

    @pytest.mark.parametrize("check", conformance_checks(["my_*"]), ids=lambda c: c.id)
    def test_conformance(check):
        check.run()

Importing this package imports neither torch nor any component: pytest loads the kit's plugin
(:mod:`xaibench.testing.pytest_plugin`) in every session of an environment where xaibench is
installed, and listing the checks must stay cheap. The checks import what they need when they
run. ``docs/plugins/testing.md`` lists every check.
"""

from __future__ import annotations

from xaibench.testing.core import (
    CHECKS,
    Check,
    CheckSpec,
    ConformanceSkip,
    check_component,
    conformance_checks,
)

__all__ = [
    "CHECKS",
    "Check",
    "CheckSpec",
    "ConformanceSkip",
    "check_component",
    "conformance_checks",
]
