"""Where backbone weights come from, loaded safely, with a hash for the results.

Resolution order, the same for every family:

1. an explicit local file or directory (``weights: path``) — it must exist;
2. the local Hugging Face cache for the family's repository id, offline (``local_files_only``):
   nothing is ever downloaded at run time;
3. otherwise a :class:`MissingWeightsError` that says where it looked and how to get the file.

Random initialisation happens only when asked for (``random_init: true`` or ``--random-init``)
and is then recorded in every result. Checkpoints are read with safetensors, or with
``torch.load(weights_only=True)`` for pickled formats, never with full unpickling.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from xaibench.errors import XaibenchError

#: Weight-file suffixes in order of preference (safetensors first: no code execution).
WEIGHT_SUFFIXES: tuple[str, ...] = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")


class MissingWeightsError(XaibenchError):
    """No weights where they were looked for; the message lists the places and the remedy."""

    def __init__(self, backbone: str, looked: list[str], hint: str) -> None:
        self.backbone = backbone
        self.looked = looked
        self.hint = hint
        super().__init__(
            f"backbone {backbone!r}: no weights found (looked in: {'; '.join(looked)}); {hint}"
        )


@dataclass(frozen=True)
class ResolvedWeights:
    """Where weights were found.

    Attributes:
        source: ``file``, ``directory`` (a local folder or a cache snapshot) or ``random``.
        path: The file or folder (``None`` for random init).
        sha256: Hash of the weight file(s) (sorted by name, each hash fed into one digest), so a
            result names exactly the weights it came from; ``None`` for random init.
        files: The weight files that were hashed.
    """

    source: Literal["file", "directory", "random"]
    path: Path | None = None
    sha256: str | None = None
    files: tuple[Path, ...] = field(default_factory=tuple)

    @property
    def random_init(self) -> bool:
        """Whether these are random weights."""
        return self.source == "random"

    def describe(self) -> dict[str, object]:
        """JSON-able provenance for the results file."""
        return {
            "source": self.source,
            "path": None if self.path is None else str(self.path),
            "sha256": self.sha256,
            "files": [f.name for f in self.files],
        }


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in chunks (weights can be gigabytes).

    Memoised per (path, size, modification time): a run locates each backbone's weights once up
    front and again in every cell, and a multi-gigabyte checkpoint must not be read each time.
    """
    resolved = path.resolve()
    stat = resolved.stat()
    return _sha256_of(resolved, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _sha256_of(path: Path, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def files_sha256(files: Iterable[Path]) -> str:
    """One hash for several weight files (sharded checkpoints): hash of their sorted hashes."""
    ordered = sorted(files, key=lambda p: p.name)
    if len(ordered) == 1:
        return file_sha256(ordered[0])
    digest = hashlib.sha256()
    for f in ordered:
        digest.update(f"{f.name}:{file_sha256(f)}\n".encode())
    return digest.hexdigest()


def weight_files(directory: Path) -> tuple[Path, ...]:
    """The weight files in ``directory`` of the most preferred format present."""
    for suffix in WEIGHT_SUFFIXES:
        found = tuple(sorted(p for p in directory.iterdir() if p.suffix == suffix and p.is_file()))
        if found:
            return found
    return ()


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file safely into a flat ``name -> tensor`` dict.

    safetensors files are read with :func:`safetensors.torch.load_file`; pickled files with
    ``torch.load(weights_only=True)``. A checkpoint that nests its weights under ``state_dict``
    or ``model`` (common for training checkpoints) is unwrapped.

    Raises:
        XaibenchError: Missing, unreadable or unsafe file; the message names it.
    """
    if not path.is_file():
        raise XaibenchError(f"weights file {str(path)!r} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: object = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise XaibenchError(
            f"cannot read weights file {str(path)!r}: {type(exc).__name__}: {exc}"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and set(state) == {key}:
            state = state[key]
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise XaibenchError(f"weights file {str(path)!r} does not hold a flat tensor state dict")
    return dict(state)


def hf_cache_snapshot(repo_id: str, revision: str | None = None) -> Path | None:
    """The local snapshot folder of ``repo_id`` in the Hugging Face cache, or ``None``.

    Never touches the network (``local_files_only=True``).
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        return None


def hf_cache_dir() -> Path:
    """Where the Hugging Face cache lives (``HF_HUB_CACHE`` / ``HF_HOME`` respected)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def resolve_weights(
    backbone: str,
    *,
    weights: str | Path | None,
    hf_repo: str | None,
    random_init: bool,
    hint: str = "",
) -> ResolvedWeights:
    """Find the weights of one backbone (see the module docstring for the order).

    Args:
        backbone: Registry name, for messages.
        weights: Explicit local file or directory, or ``None``.
        hf_repo: Hugging Face repository id to look up in the local cache, or ``None``.
        random_init: Skip loading: random weights, explicitly requested.
        hint: How to obtain the weights, appended to the error.

    Raises:
        MissingWeightsError: Nothing found; lists every place looked in.
    """
    if random_init:
        return ResolvedWeights("random")
    looked: list[str] = []
    if weights is not None:
        path = Path(weights).expanduser()
        if path.is_file():
            return ResolvedWeights("file", path, file_sha256(path), (path,))
        if path.is_dir():
            files = weight_files(path)
            return ResolvedWeights("directory", path, files_sha256(files) if files else None, files)
        looked.append(f"{str(path)!r} (no such file or directory)")
    elif hf_repo is not None:
        snapshot = hf_cache_snapshot(hf_repo)
        if snapshot is not None:
            files = weight_files(snapshot)
            if files:
                return ResolvedWeights("directory", snapshot, files_sha256(files), files)
        looked.append(f"Hugging Face cache {str(hf_cache_dir())!r} for {hf_repo!r}")
    else:
        looked.append("no 'weights' path was given and the backbone has no default repository")
    remedy = hint or (
        f"download them on a machine with internet (`hf download {hf_repo}`) "
        "and copy the cache, or pass a local file with the backbone option 'weights'"
        if hf_repo
        else "pass a local file with the backbone option 'weights'"
    )
    raise MissingWeightsError(
        backbone, looked, remedy + "; or use --random-init for untrained weights"
    )
