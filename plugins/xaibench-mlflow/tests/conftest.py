"""A real MLflow tracking server for the tests, on 127.0.0.1, in a temporary folder.

``mlflow server`` (3.x) runs uvicorn and a job runner as child processes, so it is started in
its own process group and the whole group is stopped at teardown (SIGTERM, then SIGKILL), even
when a test failed. Its SQLite database, artifacts and HOME live in the fixture's folder.
MLflow is imported at the top: a missing MLflow fails these tests; it never skips them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow  # noqa: F401  (no MLflow installed: fail, never skip)
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

#: How long the server may take to answer /health (it migrates a new database first).
STARTUP_SECONDS = 180


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 where no server listens (a tracking server that is down)."""
    return free_port()


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server's process group: SIGTERM, then SIGKILL after 5 s.

    uvicorn's graceful shutdown waits for the keep-alive connections of this process's clients,
    so SIGKILL usually ends it.
    """
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            # the group may outlive its leader: try once more after it exited
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue
        return


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start ``mlflow server`` (SQLite backend, a temporary artifact folder); yield its URL."""
    root = tmp_path_factory.mktemp("mlflow-server")
    home = root / "home"
    home.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    mlflow_cli = Path(sys.executable).parent / "mlflow"
    command = [
        str(mlflow_cli) if mlflow_cli.exists() else "mlflow",
        "server",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["HOME"] = str(home)
    log = (root / "server.log").open("wb")
    process = subprocess.Popen(
        command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"mlflow server exited ({process.returncode}): {_tail(root)}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not answer in {STARTUP_SECONDS} s: {_tail(root)}")
            time.sleep(0.25)
        yield url
    finally:
        _stop(process)
        log.close()


def _tail(root: Path) -> str:
    text = (root / "server.log").read_text(errors="replace")
    return " | ".join(text.strip().splitlines()[-5:])
