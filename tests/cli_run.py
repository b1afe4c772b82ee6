"""Run the ``xaibench`` command line in-process, for tests."""

from __future__ import annotations

import pytest

from xaibench.cli import main


def xaibench_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Run ``xaibench ARGS``: its exit status and its output (stdout and stderr)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(list(args))
    captured = capsys.readouterr()
    return int(done.value.code or 0), captured.out + captured.err
