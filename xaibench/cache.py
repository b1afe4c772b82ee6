"""A small content-addressed cache on disk for expensive, reusable tensors (frozen features).

Entries are keyed by a hash of everything they depend on, written atomically (temporary file,
then rename) so a killed run never leaves a half-written entry, and stored as safetensors.
The location is ``$XAIBENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/xaibench``, else
``~/.cache/xaibench``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

CACHE_ENV = "XAIBENCH_CACHE_DIR"


def default_cache_dir() -> Path:
    """Where the cache lives (see the module docstring)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "xaibench"


def content_key(*parts: Any) -> str:
    """SHA-256 of the canonical JSON of ``parts``: equal inputs, equal keys."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


class TensorCache:
    """Tensors on disk under ``root/<namespace>/<key>.safetensors``, with hit and miss counts."""

    def __init__(self, root: Path | None = None, namespace: str = "features") -> None:
        self.root = (root or default_cache_dir()) / namespace
        self.hits = 0
        self.misses = 0

    def path(self, key: str) -> Path:
        """File of ``key``."""
        return self.root / f"{key}.safetensors"

    def get(self, key: str) -> torch.Tensor | None:
        """The cached tensor, or ``None`` (a miss)."""
        from safetensors.torch import load_file

        file = self.path(key)
        if not file.is_file():
            self.misses += 1
            return None
        try:
            tensor = load_file(str(file))["tensor"]
        except Exception:  # a corrupt entry is a miss, recomputed and overwritten
            self.misses += 1
            return None
        self.hits += 1
        return tensor

    def put(self, key: str, tensor: torch.Tensor) -> None:
        """Store ``tensor`` atomically."""
        from safetensors.torch import save_file

        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{key}.{os.getpid()}.tmp"
        save_file({"tensor": tensor.detach().cpu().contiguous()}, str(tmp))
        tmp.replace(self.path(key))
