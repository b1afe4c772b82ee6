"""The kit's pytest plugin (entry point ``pytest11: xaibench``): ``pytest --xaibench-conformance``.

pytest loads this module in every session of an environment where xaibench is installed, so it
imports nothing heavy (no torch, no component) and does nothing unless asked:

* ``--xaibench-conformance`` adds one test item per contract check of every registered component
  (built-in and third-party, respecting ``XAIBENCH_LOAD_PLUGINS``) to whatever else the session
  collects, even when it collects nothing else, so ``pytest --xaibench-conformance`` in a
  plugin's directory runs its own tests and the checks of every installed component;
* ``--xaibench-component PATTERN`` and ``--xaibench-kind KIND`` (both repeatable) restrict the
  checks, and imply ``--xaibench-conformance``.

The items are added in ``pytest_collection_modifyitems`` before any other plugin's
implementation runs, so ``-k``, ``-m`` and ``--deselect`` select among them like any test; they
carry the marker ``xaibench_conformance`` and their kind, component and check as keywords.

:class:`~xaibench.testing.ConformanceSkip` raised by any test (a plugin's parametrised test that
calls ``check.run()``) becomes a skip.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from typing import TYPE_CHECKING, Any

import pytest

from xaibench.testing.core import Check, ConformanceFailure, ConformanceSkip

if TYPE_CHECKING:
    from _pytest._code.code import ExceptionInfo, TerminalRepr

#: Name of the node the items hang under: their ids read ``xaibench-conformance::<check id>``.
SUITE_NAME = "xaibench-conformance"
MARKER = "xaibench_conformance"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add the kit's options."""
    group = parser.getgroup("xaibench", "xaibench conformance kit")
    group.addoption(
        "--xaibench-conformance",
        action="store_true",
        default=False,
        help="Add a contract-check item for every registered xaibench component "
        "(built-in and installed plugins; XAIBENCH_LOAD_PLUGINS restricts which).",
    )
    group.addoption(
        "--xaibench-component",
        action="append",
        default=[],
        metavar="PATTERN",
        help="Check only components whose name matches this shell-style pattern "
        "(repeatable; implies --xaibench-conformance).",
    )
    group.addoption(
        "--xaibench-kind",
        action="append",
        default=[],
        metavar="KIND",
        help="Check only components of this kind, e.g. saliency, metrics "
        "(repeatable; implies --xaibench-conformance).",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker the items carry (``--strict-markers`` would reject it otherwise)."""
    config.addinivalue_line("markers", f"{MARKER}: a contract check of the xaibench kit")


def _wanted(config: pytest.Config) -> bool:
    return bool(
        config.getoption("xaibench_conformance")
        or config.getoption("xaibench_component")
        or config.getoption("xaibench_kind")
    )


class ConformanceItem(pytest.Item):
    """One contract check of one component, run as a test."""

    def __init__(self, *, check: Check, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.check = check
        self.add_marker(MARKER)
        self.extra_keyword_matches.update({check.kind, check.component, check.check})

    def runtest(self) -> None:
        """Run the check; a :class:`ConformanceSkip` becomes a skip."""
        try:
            self.check.run()
        except ConformanceSkip as exc:
            raise pytest.skip.Exception(exc.reason, _use_item_location=True) from None

    def repr_failure(
        self, excinfo: ExceptionInfo[BaseException], style: Any = None
    ) -> str | TerminalRepr:
        """A broken contract reads as its message; anything else keeps its traceback."""
        if isinstance(excinfo.value, ConformanceFailure) and excinfo.value.__cause__ is None:
            return f"{self.check.summary}\n{excinfo.value}"
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        """Where and what the item is, for reports."""
        return self.path, 0, f"xaibench conformance {self.check.id}"


class ConformanceSuite(pytest.File):
    """The parent node of the conformance items.

    A :class:`pytest.File` at the virtual path ``<rootdir>/xaibench-conformance`` (nothing is
    read from it), because file-system nodes get ids relative to the rootdir: the items' ids
    read ``xaibench-conformance::saliency:gradcam:no_hooks_left``.
    """

    def __init__(self, *, checks: Iterable[Check] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.checks = list(checks)

    def collect(self) -> list[pytest.Item]:
        """One :class:`ConformanceItem` per check."""
        return [
            ConformanceItem.from_parent(self, name=check.id, check=check) for check in self.checks
        ]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Append the conformance items, before keyword and marker selection runs."""
    if not _wanted(config):
        return
    from xaibench.errors import XaibenchError
    from xaibench.testing.core import conformance_checks

    names = config.getoption("xaibench_component") or None
    kinds = config.getoption("xaibench_kind") or None
    try:
        checks = conformance_checks(names, kinds=kinds)
    except XaibenchError as exc:
        raise pytest.UsageError(f"xaibench conformance: {exc}") from None
    path = config.rootpath / SUITE_NAME
    suite = ConformanceSuite.from_parent(session, path=path, checks=checks)
    # Through genitems, as pytest collects a file: the terminal counts the items, and
    # --collect-only lists them.
    items.extend(session.genitems(suite))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    """Turn a :class:`ConformanceSkip` raised by any test into a skip."""
    try:
        return (yield)
    except ConformanceSkip as exc:
        raise pytest.skip.Exception(exc.reason, _use_item_location=True) from None
