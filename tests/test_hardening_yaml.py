"""Issue 16, item 8 (configuration files and the last line of defence): a hostile or broken
YAML file, or an error of the operating system, is one line naming the file, never a traceback."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from cli_runs import cli

from xaibench.config import load_config_file
from xaibench.errors import XaibenchError

LAUGHS = "\n".join(
    ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]" for i in range(8)]
)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested"),
        (b"a: " + b"{b: " * 3000 + b"1" + b"}" * 3000, "nested"),
        (
            b"task: osteoporosis\nlabel: \xff\xfe caf\xe9\n",
            "not UTF-8 text (byte 0xff at offset 26)",
        ),
        (LAUGHS.encode(), "more than 100,000 values"),
        (b"x: " + b"y" * 1_000_001, "larger than 1,000,000 bytes"),
        (b"!!python/object/apply:os.system [echo hi]", "not valid YAML"),
    ],
)
def test_hostile_config_files_are_one_line_errors(tmp_path: Path, content: bytes, message: str):
    path = tmp_path / "evil.yaml"
    path.write_bytes(content)
    with pytest.raises(XaibenchError) as info:
        load_config_file(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_a_bom_and_shallow_aliases_are_fine(tmp_path: Path):
    path = tmp_path / "ok.yaml"
    path.write_bytes(b"\xef\xbb\xbftask: osteoporosis\nbase: &b {epochs: 2}\ntrain: *b\n")
    assert load_config_file(path)["train"] == {"epochs": 2}


@pytest.mark.parametrize("command", ["run", "validate"])
def test_deep_and_non_utf8_configs_through_the_cli(tmp_path: Path, command: str):
    for name, content in (("deep.yaml", b"[" * 100_000), ("latin1.yaml", b"task: \xe9\n")):
        (tmp_path / name).write_bytes(content)
        args = ["run", "osteoporosis", "--config", name] if command == "run" else ["validate", name]
        proc = cli(*args, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        assert name in proc.stderr
        assert len(proc.stderr.strip().splitlines()) <= 2, proc.stderr


def test_an_os_error_anywhere_is_one_line_naming_the_file(monkeypatch, capsys):
    """The last line of defence in main(): a full disk is the system's error, not our bug."""
    from xaibench import cli

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/runs/a/results.json")

    monkeypatch.setattr(cli, "describe_plugins", full_disk)
    with pytest.raises(SystemExit) as info:
        cli.main(["plugins"])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err == "xaibench: error: /runs/a/results.json: No space left on device\n"
