"""``xaibench --verbose`` and :func:`xaibench.verbosity.is_verbose`."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest

from xaibench.cli import main
from xaibench.verbosity import LOGGER, VERBOSE_ENV, is_verbose, set_verbose


@pytest.fixture(autouse=True)
def _restore(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts quiet; the logger and the environment are put back afterwards."""
    monkeypatch.setenv(VERBOSE_ENV, "0")  # recorded, so whatever a test sets is undone
    monkeypatch.delenv(VERBOSE_ENV)
    logger = logging.getLogger(LOGGER)
    level, handlers = logger.level, list(logger.handlers)
    logger.setLevel(logging.NOTSET)
    yield
    logger.setLevel(level)
    logger.handlers[:] = handlers


def _cli(*args: str) -> int:
    with pytest.raises(SystemExit) as done:
        main(list(args))
    return int(done.value.code or 0)


def test_quiet_by_default():
    assert _cli("ls", "executors") == 0
    assert not is_verbose()


@pytest.mark.parametrize("flag", ["--verbose", "-v"])
def test_the_flag_makes_this_process_and_its_children_verbose(flag, capsys):
    assert _cli(flag, "ls", "executors") == 0
    assert is_verbose()
    assert os.environ[VERBOSE_ENV] == "1"  # worker processes inherit it
    logging.getLogger(f"{LOGGER}.test").info("a message")
    assert "INFO xaibench.test: a message" in capsys.readouterr().err


def test_the_flag_belongs_before_the_command(capsys):
    assert _cli("ls", "executors", "--verbose") == 2
    assert "--verbose" in capsys.readouterr().err
    assert not is_verbose()


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("yes", True), ("0", False)])
def test_the_environment_variable(value, expected, monkeypatch):
    monkeypatch.setenv(VERBOSE_ENV, value)
    assert is_verbose() is expected


def test_a_logger_at_info_is_verbose_too():
    logging.getLogger(LOGGER).setLevel(logging.INFO)
    assert is_verbose()
    logging.getLogger(LOGGER).setLevel(logging.WARNING)
    assert not is_verbose()


def test_set_verbose_adds_one_handler():
    set_verbose()
    set_verbose()
    assert len(logging.getLogger(LOGGER).handlers) == 1
