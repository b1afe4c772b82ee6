import os
import tempfile

import huggingface_hub.constants
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing in the suite may wait on a model hub
# Feature caches go to a throw-away folder, never the user's ~/.cache (subprocesses inherit it).
os.environ["XAIBENCH_CACHE_DIR"] = tempfile.mkdtemp(prefix="xaibench-test-cache-")
# An empty Hugging Face cache: what a test finds there, it put there itself.
os.environ["HF_HUB_CACHE"] = tempfile.mkdtemp(prefix="xaibench-test-hf-")

from xaibench.plugins import Components, PluginManager, collect_components, get_plugin_manager


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
