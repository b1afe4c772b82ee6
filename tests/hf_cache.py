"""A fake local Hugging Face cache for tests: nothing here ever talks to the hub."""

import hashlib
import shutil
from pathlib import Path

REVISION = "0123456789abcdef0123456789abcdef01234567"


def fake_cache_repo(cache: Path, repo_id: str, source: Path) -> Path:
    """Lay ``source`` out as a cached snapshot: blobs, relative symlinks, ``refs/main``."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / REVISION
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for file in sorted(source.iterdir()):
        blob = repo / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()
        shutil.copyfile(file, blob)
        (snapshot / file.name).symlink_to(Path("..", "..", "blobs", blob.name))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    return snapshot
