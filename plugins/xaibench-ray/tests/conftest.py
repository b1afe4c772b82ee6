"""A private Ray instance for the tests, with nothing written outside temporary folders.

The environment is set at import, before Ray starts anywhere in this process, because Ray reads
it once: no usage statistics; token authentication with a random token passed in the
environment, so Ray neither writes ``~/.ray/auth_token`` nor runs without a token (its servers
listen on every interface, and Ray resolves a loopback node address to the host's own); no
model hub. Runs that cache name their own ``cache_dir``.
"""

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["RAY_AUTH_MODE"] = "token"
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
os.environ.pop("RAY_ADDRESS", None)  # never join a cluster the developer happens to run
os.environ["HF_HUB_OFFLINE"] = "1"


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    """Set environment variables for the duration of the block, then restore them."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[Path]:
    """Start a 2-CPU Ray instance for one test module; yield its temporary folder.

    Ray's socket paths live under ``_temp_dir`` and must stay under ~107 characters, hence a
    short folder in /tmp rather than pytest's deep tmp_path. Ray's processes (and the workers
    they start) get a HOME inside that folder, so nothing they write lands in the user's home.
    """
    import ray

    assert not ray.is_initialized(), "a Ray instance is already running in this process"
    root = Path(tempfile.mkdtemp(prefix="xbray", dir="/tmp"))
    home = root / "home"
    home.mkdir()
    try:
        with _environ(HOME=str(home)):
            ray.init(
                address="local",
                num_cpus=2,
                num_gpus=0,
                include_dashboard=False,
                log_to_driver=False,
                _temp_dir=str(root / "r"),
            )
        yield root
    finally:
        ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)
