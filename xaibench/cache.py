"""A small content-addressed cache on disk for expensive, reusable tensors (frozen features).

Namespaces are top-level folders (``features``: frozen backbone features; ``phantom``: rendered
phantom chunks; ``fits``: trained models, see :mod:`xaibench.fit_cache`); :func:`cache_info`
and :func:`prune_cache` back ``xaibench cache info|prune``.

Entries are keyed by a hash of everything they depend on, written atomically (temporary file,
then rename) so a killed run never leaves a half-written entry, and stored as safetensors.
The location is ``$XAIBENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/xaibench``, else
``~/.cache/xaibench``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
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


def write_atomic(path: Path, content: str | bytes) -> None:
    """Write a file so that it is either its old or its new content, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    if isinstance(content, str):
        tmp.write_text(content)
    else:
        tmp.write_bytes(content)
    tmp.replace(path)


def _entries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def cache_info(root: Path | None = None) -> list[dict[str, Any]]:
    """Per namespace: ``namespace``, ``files``, ``bytes``, ``oldest``, ``newest`` (Unix mtime)."""
    root = root or default_cache_dir()
    rows: list[dict[str, Any]] = []
    if not root.is_dir():
        return rows
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = _entries(folder)
        stats = [f.stat() for f in files]
        rows.append(
            {
                "namespace": folder.name,
                "files": len(files),
                "bytes": sum(st.st_size for st in stats),
                "oldest": min((st.st_mtime for st in stats), default=None),
                "newest": max((st.st_mtime for st in stats), default=None),
            }
        )
    return rows


def prune_cache(
    root: Path | None = None,
    *,
    older_than_days: float | None = None,
    namespace: str | None = None,
    everything: bool = False,
    dry_run: bool = False,
) -> tuple[int, int]:
    """Delete cache entries; return ``(files, bytes)`` deleted (or that would be, with dry_run).

    Entries are files; ``older_than_days`` keeps those written more recently, ``everything``
    takes all of them. Leftover temporary files of killed writers (``.*.tmp``) always go.
    Nothing outside ``root`` is touched, and ``root`` itself is kept.

    Raises:
        XaibenchError: Neither ``older_than_days`` nor ``everything`` is given, or ``namespace``
            does not exist.
    """
    from xaibench.errors import XaibenchError

    root = root or default_cache_dir()
    if older_than_days is None and not everything:
        raise XaibenchError("say what to prune: --older-than DAYS or --all")
    if not root.is_dir():
        return 0, 0
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if namespace is not None:
        folders = [f for f in folders if f.name == namespace]
        if not folders:
            names = ", ".join(p.name for p in root.iterdir() if p.is_dir()) or "none"
            raise XaibenchError(f"no cache namespace {namespace!r} in {root} (namespaces: {names})")
    cutoff = None if older_than_days is None else time.time() - older_than_days * 86400
    count = size = 0
    for folder in folders:
        for file in _entries(folder):
            stale_tmp = file.name.startswith(".") and file.name.endswith(".tmp")
            if everything or stale_tmp or (cutoff is not None and file.stat().st_mtime < cutoff):
                count += 1
                size += file.stat().st_size
                if not dry_run:
                    file.unlink(missing_ok=True)
        if everything and not dry_run and namespace is None:
            shutil.rmtree(folder, ignore_errors=True)
    return count, size
