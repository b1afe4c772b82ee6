import atexit
import os
import shutil
import tempfile

import pytest

# The environment is set before anything imports huggingface_hub or xaibench: huggingface_hub
# reads HF_HUB_CACHE and HF_HUB_OFFLINE once, at import.
os.environ["HF_HUB_OFFLINE"] = "1"  # nothing in the suite may wait on a model hub
# Feature and phantom caches go to a throw-away folder, never the user's ~/.cache (subprocesses
# inherit it); an empty Hugging Face cache: what a test finds there, it put there itself. Both
# are removed when the session ends.
_SCRATCH = [
    tempfile.mkdtemp(prefix="xaibench-test-cache-"),
    tempfile.mkdtemp(prefix="xaibench-test-hf-"),
]
os.environ["XAIBENCH_CACHE_DIR"], os.environ["HF_HUB_CACHE"] = _SCRATCH
atexit.register(lambda: [shutil.rmtree(path, ignore_errors=True) for path in _SCRATCH])

import huggingface_hub.constants  # noqa: E402 (after the environment above)

from xaibench.plugins import (  # noqa: E402 (after the environment above)
    Components,
    PluginManager,
    collect_components,
    get_plugin_manager,
)


@pytest.fixture
def pm() -> PluginManager:
    """A fresh plugin manager with the built-ins only."""
    return get_plugin_manager(entry_points=False)


@pytest.fixture
def components(pm: PluginManager) -> Components:
    return collect_components(pm)


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    """Point the Hugging Face cache at an empty folder so the real one is never consulted.

    ``huggingface_hub.constants`` reads the environment once at import, and
    ``snapshot_download`` reads ``constants.HF_HUB_CACHE`` at call time, so both are patched.
    """
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache
