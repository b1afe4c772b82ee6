import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import ray
from xaibench_ray.executor import RayExecutor, _private_instance_environment
from xaibench_ray.testing import SquareJob, ToyResult

from xaibench.errors import InvalidOptionsError, XaibenchError
from xaibench.executors.local import LocalExecutor
from xaibench.plugins import collect_components, get_plugin_manager
from xaibench.progress import NullProgress

CELLS = [3, 1, 4, 2]

# --- without Ray running ---------------------------------------------------------------------


def test_registered_through_the_entry_point():
    entry = collect_components(get_plugin_manager(load_plugins="ray")).executors.get("ray")
    assert entry.provider.distribution == "xaibench-ray"
    assert entry.provider.version == "0.1.0"
    executor = entry.create({"address": "auto", "num_gpus_per_cell": 0.5})
    assert isinstance(executor, RayExecutor)
    assert executor.options()["num_gpus_per_cell"] == 0.5


def test_bad_options_are_user_errors():
    entry = collect_components(get_plugin_manager(load_plugins="ray")).executors.get("ray")
    with pytest.raises(InvalidOptionsError, match="max_retry"):
        entry.create({"max_retry": 3})
    with pytest.raises(InvalidOptionsError, match="num_cpus_per_cell"):
        entry.create({"num_cpus_per_cell": -1})


def test_missing_ray_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(XaibenchError, match=r"pip install 'ray>=2.9'"):
        RayExecutor()


@pytest.fixture
def bare_environment(monkeypatch, tmp_path):
    """No Ray token, auth mode or usage-statistics setting; HOME an empty folder."""
    ray_keys = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE", "RAY_USAGE_STATS_ENABLED")
    for key in ray_keys:
        monkeypatch.setenv(key, "x")  # recorded, so the test's changes are undone
        monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_a_private_instance_gets_a_token_through_the_environment(bare_environment):
    _private_instance_environment()
    assert re.fullmatch(r"[0-9a-f]{64}", os.environ["RAY_AUTH_TOKEN"])
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0"
    token = os.environ["RAY_AUTH_TOKEN"]
    _private_instance_environment()  # Ray caches the token: it must not change in a process
    assert os.environ["RAY_AUTH_TOKEN"] == token
    assert list(bare_environment.iterdir()) == []


@pytest.mark.parametrize(
    "setting",
    ["RAY_AUTH_MODE=disabled", "RAY_AUTH_TOKEN_PATH=/some/token", "~/.ray/auth_token"],
)
def test_a_token_or_mode_of_the_user_is_left_to_ray(bare_environment, monkeypatch, setting):
    if setting.startswith("~"):
        (bare_environment / ".ray").mkdir()
        (bare_environment / ".ray" / "auth_token").write_text("mine")
    else:
        key, _, value = setting.partition("=")
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "1")
    _private_instance_environment()
    assert "RAY_AUTH_TOKEN" not in os.environ
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "1"


@pytest.mark.parametrize("verbose", [False, True], ids=["quiet", "verbose"])
def test_an_instance_it_starts_is_shut_down_quiet_and_leaves_home_alone(verbose):
    # A fresh process, as a user's: no Ray token or auth mode in its environment (the conftest
    # sets them for this process), HOME an empty folder. The executor starts its own Ray
    # instance, must shut it down again, write nothing under HOME (Ray would save a token in
    # ~/.ray/auth_token) and keep Ray's INFO/WARNING lines off stderr unless verbose.
    root = Path(tempfile.mkdtemp(prefix="xbray", dir="/tmp"))
    home = root / "home"
    home.mkdir()
    script = textwrap.dedent(
        f"""
        import json, ray
        from xaibench_ray.executor import RayExecutor, _private_instance_environment
        from xaibench_ray.testing import SquareJob
        executor = RayExecutor(num_cpus=1, init_options={{"_temp_dir": {str(root / "r")!r}}})
        results = executor.run([2, 5], SquareJob())
        print(json.dumps({{"values": [r.value for r in results], "up": ray.is_initialized()}}))
        """
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("RAY_AUTH_", "RAY_USAGE_STATS", "XAIBENCH_VERBOSE"))
    }
    env["HOME"] = str(home)
    if verbose:
        env["XAIBENCH_VERBOSE"] = "1"
    try:
        out = subprocess.run(
            [sys.executable, "-c", script],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        assert json.loads(out.stdout.strip().splitlines()[-1]) == {"values": [4, 25], "up": False}
        assert sorted(home.rglob("*")) == []
        ray_lines = re.findall(r"^.*\b(?:INFO|WARNING)\b.*$", out.stderr, re.MULTILINE)
        if verbose:  # Ray's own format: "<time> INFO worker.py:2038 -- Started a local ..."
            assert any(re.search(r"\bINFO \S+\.py:\d+ -- ", line) for line in ray_lines)
        else:
            assert ray_lines == [], out.stderr
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- on a shared Ray instance ----------------------------------------------------------------


def _check_done_calls(job: SquareJob, results: list[ToyResult]) -> None:
    """``done`` ran once per cell, in this (the driver) process, with the returned result."""
    assert sorted(index for index, _, _ in job.done_calls) == list(range(len(results)))
    assert {pid for _, _, pid in job.done_calls} == {os.getpid()}
    for index, result, _ in job.done_calls:
        assert result == results[index]


def test_cells_come_back_in_order_like_local(ray_instance):
    job = SquareJob()
    results = RayExecutor().run(CELLS, job)
    assert results == LocalExecutor().run(CELLS, SquareJob())
    assert [r.value for r in results] == [9, 1, 16, 4]
    _check_done_calls(job, results)
    assert ray.is_initialized()  # an instance it did not start is left running


def test_a_cell_whose_job_raises_is_lost_alone(ray_instance):
    job = SquareJob(fail=(4,))
    results = RayExecutor().run(CELLS, job)
    assert [r.status for r in results] == ["ok", "ok", "lost", "ok"]
    assert "RuntimeError: cell 4 was told to fail" in results[2].error
    _check_done_calls(job, results)


def _kill_when_hanging(pid_file: Path, timeout: float = 60) -> int:
    """Wait for the hanging attempt to write its pid, then SIGKILL that worker."""
    deadline = time.monotonic() + timeout
    while not pid_file.exists():
        assert time.monotonic() < deadline, "the hanging cell never started"
        time.sleep(0.05)
    pid = int(pid_file.read_text())
    os.kill(pid, signal.SIGKILL)
    return pid


def _run_and_kill(executor: RayExecutor, job: SquareJob, cell: int) -> tuple[list[ToyResult], int]:
    with ThreadPoolExecutor(1) as pool:
        killed = pool.submit(_kill_when_hanging, Path(job.hang_dir) / f"{cell}.pid")
        results = executor.run(CELLS, job)
        return results, killed.result()


def test_a_worker_killed_mid_cell_is_retried(ray_instance, tmp_path):
    job = SquareJob(hang=(1,), hang_dir=tmp_path, hang_seconds=60)
    start = time.monotonic()
    results, pid = _run_and_kill(RayExecutor(max_retries=2), job, 1)
    assert pid != os.getpid()
    assert time.monotonic() - start < 50  # the retry returned; nobody waited out the sleep
    assert results == LocalExecutor().run(CELLS, SquareJob())
    _check_done_calls(job, results)


def test_a_worker_killed_beyond_retries_loses_only_its_cell(ray_instance, tmp_path):
    job = SquareJob(hang=(4,), hang_dir=tmp_path, hang_seconds=60)
    results, _ = _run_and_kill(RayExecutor(max_retries=0), job, 4)
    assert [r.status for r in results] == ["ok", "ok", "lost", "ok"]
    assert [r.value for r in results] == [9, 1, None, 4]
    assert results[2].error.startswith("ray: no result after 1 attempt(s): WorkerCrashedError")
    _check_done_calls(job, results)


# --- a whole benchmark -------------------------------------------------------------------------

TINY = {
    "dataset": {
        "name": "phantom",
        "options": {"n_images": 60, "image_size": 32, "class_shares": [0.4, 0.3, 0.3]},
    },
    "backbones": [{"name": "test_resnet.random", "options": {"img_size": 32}}],
    "strategies": ["full", "linear_probe"],
    "saliency": ["saliency"],
    "perturbations": ["mean", "zero", "blur"],
    "explain_regions": ["bone", "spine"],
    "perturb_regions": ["bone", "spine"],
    "train": {"epochs": 1, "batch_size": 16},
    "max_explain_images": 6,
}


def _comparable(document: dict) -> str:
    """The results document without what differs between runs: clocks, executor, cache folder."""
    for key in ("created", "finished", "config_hash"):
        document.pop(key)
    for key in ("executor", "cache_dir"):
        document["config"].pop(key)
    document["components"].pop("executors")
    document["component_options"].pop("executors")
    for cell in document["cells"]:
        cell.pop("seconds")
    return json.dumps(document, sort_keys=True)


class _CountCells(NullProgress):
    """A progress display that counts how often the run advances its per-cell bar."""

    def __init__(self) -> None:
        self.cells = 0

    def start(self, description: str, total: int) -> Callable[[], None]:
        def advance() -> None:
            self.cells += description == "cells"

        return advance


@pytest.mark.slow
def test_local_and_ray_runs_give_identical_results(ray_instance, tmp_path):
    from xaibench.config import resolve_config
    from xaibench.engine.benchmark import run_benchmark

    components = collect_components(get_plugin_manager(load_plugins="ray"))
    defaults = components.tasks.create("osteoporosis").defaults()
    documents = {}
    for name in ("local", "ray"):
        # Each run its own cache: the Ray workers build the phantom at the same time.
        overrides = {"executor": {"name": name}, "cache_dir": str(tmp_path / f"cache-{name}")}
        config = resolve_config(defaults, TINY, overrides)
        progress = _CountCells()
        documents[name] = run_benchmark(config, components, tmp_path / name, progress).document
        assert progress.cells == 2, name  # the progress display hears of every cell
    assert [c["status"] for c in documents["ray"]["cells"]] == ["ok", "ok"]
    assert documents["ray"]["config"]["executor"]["name"] == "ray"
    assert _comparable(documents["local"]) == _comparable(documents["ray"])
    for table in ("predictions.csv", "explanations.csv"):
        local = (tmp_path / "local" / table).read_bytes()
        assert local == (tmp_path / "ray" / table).read_bytes(), table
