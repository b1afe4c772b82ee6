"""Cache entries: one file each, verified on every read.

An entry is ``<cache>/<namespace>/<name>.xbc``: a fixed header — magic bytes, the cache format,
the payload's length and a SHA-256 over the entry's namespace, name and payload — then the
payload (safetensors or JSON; nothing pickled). The header lives in the entry's own file, not in
a sidecar, so one rename publishes payload and checksum together: a reader never pairs a new
payload with an old checksum. Hashing the name too means an entry copied or renamed onto another
key is refused like a corrupt one.

:class:`CacheNamespace` is the one reader and writer of entries (features, phantom chunks,
trained models, and plugins' own namespaces): an entry that fails verification, or whose
payload cannot be parsed, is logged on one line (logger ``xaibench.cache``), deleted and
reported as a miss, so the caller computes it again. Writes go through a temporary file unique
to the writer and one rename; a write that fails (read-only folder, full disk) is reported
once and the process writes nothing more to that folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, overload

import torch

from xaibench.cache.folder import (
    CACHE_FORMAT,
    NAME_RE,
    NAMESPACE_RE,
    SUFFIX,
    atomic_write,
    cache_lock,
    cache_state,
    default_cache_dir,
    logger,
    stop_writing,
)

T = TypeVar("T")

#: Magic bytes of an entry (binary, with a line break so that text-mode mangling shows).
MAGIC = b"\x89XBC\r\n\x1a\n"
#: magic, cache format, payload length, SHA-256 of namespace, name and payload.
HEADER = struct.Struct("<8sIQ32s")


def content_key(*parts: Any) -> str:
    """SHA-256 of the canonical JSON of ``parts``: equal inputs, equal keys."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def _digest(namespace: str, name: str, payload: bytes) -> bytes:
    hasher = hashlib.sha256(b"xaibench cache entry\0")
    hasher.update(f"{namespace}/{name}\0".encode())
    hasher.update(payload)
    return hasher.digest()


def header_is_valid(path: Path, size: int) -> bool:
    """Whether ``path`` (``size`` bytes) starts with an entry header that fits its size."""
    try:
        with open(path, "rb") as file:
            head = file.read(HEADER.size)
    except OSError:
        return False
    if len(head) < HEADER.size:
        return False
    magic, version, length, _ = HEADER.unpack(head)
    return magic == MAGIC and version == CACHE_FORMAT and length == size - HEADER.size


class CacheNamespace:
    """The entries of one namespace of a cache folder: verified reads, atomic writes.

    Plugins keep their own entries with it (a namespace of their own, named like
    ``cardiac_phantom``)::

        store = CacheNamespace("my_plugin", cache_dir)  # cache_dir None: the default
        values = store.read(name, json.loads)  # None: missing, unusable or bad (logged)
        if values is None:
            values = compute()
            store.write(name, json.dumps(values).encode())

    Args:
        namespace: Folder of the entries: a lowercase letter, then lowercase letters, digits
            and underscores (at most 64).
        root: The cache folder (default: :func:`~xaibench.cache.default_cache_dir`).

    Raises:
        ValueError: ``namespace`` breaks the naming rule.
    """

    def __init__(self, namespace: str, root: Path | str | None = None) -> None:
        if not NAMESPACE_RE.fullmatch(namespace):
            raise ValueError(f"cache namespace {namespace!r}: use [a-z][a-z0-9_]*, at most 64")
        self.namespace = namespace
        self.cache_dir = Path(root).expanduser() if root is not None else default_cache_dir()
        self.folder = self.cache_dir / namespace

    @property
    def writable(self) -> bool:
        """Whether entries are written (callers may skip building a payload when not)."""
        return cache_state(self.cache_dir).writable

    def path(self, name: str) -> Path:
        """The file of entry ``name`` (letters, digits, ``-`` and ``_``; at most 200).

        Raises:
            ValueError: ``name`` breaks the naming rule.
        """
        if not NAME_RE.fullmatch(name):
            raise ValueError(f"cache entry name {name!r}: use [A-Za-z0-9][A-Za-z0-9_-]*")
        return self.folder / f"{name}{SUFFIX}"

    @overload
    def read(self, name: str) -> bytes | None: ...
    @overload
    def read(self, name: str, parse: Callable[[bytes], T]) -> T | None: ...

    def read(self, name: str, parse: Callable[[bytes], Any] | None = None) -> Any:
        """The verified payload of entry ``name`` (parsed by ``parse``), or None: a miss.

        Missing entries, entries of a cache folder this process may not read and symbolic
        links are misses. An entry that fails verification, or that ``parse`` rejects (any
        exception), is logged, deleted and a miss.
        """
        if not cache_state(self.cache_dir).readable:
            return None
        path = self.path(name)
        try:
            flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
            fd = os.open(path, flags)
        except OSError:  # missing, a symbolic link (never followed), unreadable
            return None
        with os.fdopen(fd, "rb") as file:
            seen = os.fstat(file.fileno())
            if not stat.S_ISREG(seen.st_mode):
                return None
            payload, problem = self._verified(name, file, seen.st_size)
        if problem is None and parse is not None:
            try:
                return parse(payload)
            except Exception as exc:  # a payload that passed its checksum yet does not parse
                problem = f"payload does not parse: {type(exc).__name__}"
        if problem is not None:
            self.discard(name, problem, seen=seen)
            return None
        return payload

    def _verified(self, name: str, file: Any, size: int) -> tuple[bytes, str | None]:
        head = file.read(HEADER.size)
        if len(head) < HEADER.size:
            return b"", "shorter than an entry header"
        magic, version, length, digest = HEADER.unpack(head)
        if magic != MAGIC:
            return b"", "no entry header"
        if version != CACHE_FORMAT:
            return b"", f"entry format {version}, expected {CACHE_FORMAT}"
        if length != size - HEADER.size:
            return b"", f"{size - HEADER.size} bytes of payload, the header says {length}"
        payload = file.read(length)
        if len(payload) != length or _digest(self.namespace, name, payload) != digest:
            return b"", "checksum mismatch"
        return payload, None

    def write(self, name: str, payload: bytes) -> bool:
        """Store ``payload`` as entry ``name``, atomically; False when the cache is not written.

        A cache folder this process may not write is left alone; a write that fails is
        reported once, and nothing more is written to the folder by this process.
        """
        if not cache_state(self.cache_dir).writable:
            return False
        path = self.path(name)
        header = HEADER.pack(
            MAGIC, CACHE_FORMAT, len(payload), _digest(self.namespace, name, payload)
        )

        def write(fd: int) -> None:
            for part in (header, payload):
                view = memoryview(part)
                while view:
                    view = view[os.write(fd, view) :]

        try:
            self.folder.mkdir(exist_ok=True)
            atomic_write(path, write, self.cache_dir)
        except OSError as exc:
            stop_writing(self.cache_dir, f"{exc.strerror or exc} writing {path}")
            return False
        return True

    def discard(self, name: str, reason: str, *, seen: os.stat_result | None = None) -> None:
        """Log entry ``name`` as corrupt and delete it (only the file read: ``seen``).

        A good entry another writer put in its place since ``seen`` was read is kept.
        """
        path = self.path(name)
        if not cache_state(self.cache_dir).writable:
            logger.warning(f"cache entry {path} is corrupt ({reason}): not used")
            return
        with cache_lock(self.cache_dir):
            try:
                now = os.lstat(path)
                if seen is None or (now.st_dev, now.st_ino) == (seen.st_dev, seen.st_ino):
                    path.unlink()
            except OSError:
                pass  # gone already, or not ours to delete
        logger.warning(f"cache entry {path} is corrupt ({reason}): deleted, computing it again")


class TensorCache:
    """Tensors under ``<cache>/<namespace>/<key>.xbc`` (safetensors), with hit and miss counts.

    Attributes:
        root: The namespace folder.
        store: Its :class:`CacheNamespace`.
    """

    def __init__(self, root: Path | None = None, namespace: str = "features") -> None:
        self.store = CacheNamespace(namespace, root)
        self.root = self.store.folder
        self.hits = 0
        self.misses = 0

    def path(self, key: str) -> Path:
        """File of ``key``."""
        return self.store.path(key)

    def get(self, key: str) -> torch.Tensor | None:
        """The cached tensor, or ``None`` (a miss: missing, unusable or corrupt)."""
        from safetensors.torch import load

        tensor = self.store.read(key, lambda data: load(data)["tensor"])
        if tensor is None:
            self.misses += 1
            return None
        self.hits += 1
        return tensor

    def put(self, key: str, tensor: torch.Tensor) -> None:
        """Store ``tensor`` atomically (nothing happens when the cache is not writable)."""
        from safetensors.torch import save

        if self.store.writable:
            self.store.write(key, save({"tensor": tensor.detach().cpu().contiguous()}))
