"""One run at a time in a run folder (issue 16, item 4).

Two runs into one ``--out`` used to interleave: the second deleted the first's half-written
checkpoint, or two configurations mixed their cells. A run now holds an exclusive lock on its
folder from before it looks at the folder until it has written its last file; a second run is
refused at once with the holder's pid. The lock is an ``flock`` on ``RUN_DIR/.xaibench.lock``,
so the kernel releases it however the holder dies.
"""

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fake_runs import write_fake_run

import xaibench.cli
import xaibench.engine.benchmark
from xaibench.config import resolve_config
from xaibench.engine.benchmark import run_benchmark
from xaibench.errors import XaibenchError
from xaibench.report.run_files import load_run

#: Another process that takes the run lock, says so, and holds it until its stdin closes (or,
#: with "kill", SIGKILLs itself while holding it).
HOLDER = """
import os, signal, sys
from pathlib import Path
from xaibench.run_lock import run_lock
with run_lock(Path(sys.argv[1])):
    print("held", flush=True)
    if sys.argv[2] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    sys.stdin.read()
"""

SMALL = {
    "dataset": {"name": "phantom", "options": {"n_images": 60, "image_size": 32}},
    "backbones": [{"name": "test_resnet.random", "options": {"img_size": 32}}],
    "strategies": ["linear_probe"],
    "cache": False,
}


@contextmanager
def held_elsewhere(run_dir: Path, then: str = "wait") -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run_dir), then],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
        proc.wait(timeout=60)


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a run gets as far as preparing its data."""

    def prepare_data(*args, **kwargs):
        raise AssertionError("the run started working")

    monkeypatch.setattr(xaibench.engine.benchmark, "prepare_data", prepare_data)


def test_a_second_run_is_refused_naming_the_holder_before_any_work(components, tmp_path, no_work):
    out = tmp_path / "run"
    config = resolve_config(components.tasks.create("osteoporosis").defaults(), SMALL)
    with held_elsewhere(out) as holder:
        with pytest.raises(XaibenchError, match=rf"in use by .*pid {holder.pid}\b"):
            run_benchmark(config, components, out)
        # another configuration started at the same moment: refused the same way, not mixed in
        other = resolve_config(config.model_dump(mode="json"), {"seeds": [7]})
        with pytest.raises(XaibenchError, match=rf"pid {holder.pid}\b"):
            run_benchmark(other, components, out)
        assert sorted(p.name for p in out.iterdir()) == [".xaibench.lock"]


def test_the_command_line_says_so_in_one_line_with_exit_2(tmp_path, capsys, no_work):
    out = tmp_path / "run"
    with held_elsewhere(out) as holder, pytest.raises(SystemExit) as exit_info:
        xaibench.cli.main(["run", "osteoporosis", "--out", str(out), "--quiet"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("xaibench: error: "), err
    assert f"pid {holder.pid}" in err, err


def test_a_killed_holder_leaves_no_lock_behind(tmp_path):
    from xaibench.run_lock import run_lock

    out = tmp_path / "run"
    with held_elsewhere(out, then="kill") as holder:
        holder.wait(timeout=60)
        assert holder.returncode == -signal.SIGKILL
        with run_lock(out):  # the kernel released the dead process's lock
            assert (out / ".xaibench.lock").read_text().startswith("{")
            assert f'"pid": {os.getpid()}' in (out / ".xaibench.lock").read_text()
    assert not (out / ".xaibench.lock").exists()


def test_the_lock_is_released_and_an_unused_folder_removed_when_a_run_fails(
    components, tmp_path, monkeypatch
):
    from xaibench.run_lock import run_lock

    def prepare_data(*args, **kwargs):
        assert (out / ".xaibench.lock").is_file()  # held while the data is prepared
        raise XaibenchError("bad data")

    monkeypatch.setattr(xaibench.engine.benchmark, "prepare_data", prepare_data)
    config = resolve_config(components.tasks.create("osteoporosis").defaults(), SMALL)
    out = tmp_path / "new" / "run"
    with pytest.raises(XaibenchError, match="bad data"):
        run_benchmark(config, components, out)
    assert not out.exists()  # the folder it made for nothing is gone again
    out.mkdir(parents=True)
    with pytest.raises(XaibenchError, match="bad data"):
        run_benchmark(config, components, out)
    assert out.is_dir()  # a folder the user made stays
    assert not any(out.iterdir())
    with run_lock(out):  # and nobody holds it
        pass


def test_a_lock_in_this_process_is_exclusive_too(tmp_path):
    from xaibench.run_lock import run_lock

    with (
        run_lock(tmp_path / "run"),
        pytest.raises(XaibenchError, match=rf"pid {os.getpid()}\b"),
        run_lock(tmp_path / "run"),
    ):
        pass


def test_report_and_leaderboard_refuse_a_run_being_written(tmp_path, capsys):
    run = write_fake_run(tmp_path / "run", {"a": 2.0})
    with held_elsewhere(run) as holder:
        with pytest.raises(XaibenchError, match=rf"being written .*pid {holder.pid}\b"):
            load_run(run)
        for args in (["report", str(run)], ["leaderboard", str(run), "--out", str(tmp_path / "b")]):
            with pytest.raises(SystemExit) as exit_info:
                xaibench.cli.main(args)
            assert exit_info.value.code == 2
            assert "being written" in capsys.readouterr().err
        assert not (run / "report.html").exists()
    load_run(run)  # finished: readable again
