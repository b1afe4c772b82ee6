"""Shared helpers for tests that drive the ``xaibench`` command line in a subprocess."""

import subprocess
import sys
from pathlib import Path

import yaml

#: A one-cell run small enough for a test: tiny ResNet at 32 px, one epoch, few explained images.
SMALL_MANIFEST_RUN = {
    "dataset": {"name": "manifest", "options": {"image_size": 32}},
    "backbones": [{"name": "test_resnet.random", "options": {"img_size": 32}}],
    "strategies": ["full"],
    "saliency": ["saliency"],
    "perturbations": ["zero"],
    "train": {"epochs": 1},
    "max_explain_images": 4,
    "gallery_images": 0,
    "sanity": {"images": 0},
}


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python -m xaibench ARGS`` in ``cwd`` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "xaibench", *args],
        capture_output=True, text=True, cwd=cwd, timeout=600, check=False,
    )  # fmt: skip


def small_manifest_config(folder: Path) -> Path:
    """Write :data:`SMALL_MANIFEST_RUN` as ``small.yaml`` in ``folder``."""
    path = folder / "small.yaml"
    path.write_text(yaml.safe_dump(SMALL_MANIFEST_RUN))
    return path
