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


#: A one-cell run on a 60-image phantom at 32 px, small enough for an in-process test
#: (no sanity checks, galleries or disk cache; add what a test needs).
TINY_PHANTOM_RUN = {
    "task": "osteoporosis",
    "dataset": {
        "name": "phantom",
        "options": {"n_images": 60, "image_size": 32, "class_shares": [0.4, 0.3, 0.3]},
    },
    "backbones": [{"name": "test_resnet.random", "options": {"img_size": 32}}],
    "strategies": ["linear_probe"],
    "train": {"epochs": 1, "batch_size": 16},
    "max_explain_images": 6,
    "gallery_images": 0,
    "sanity": {"images": 0},
    "analysis": {"bootstrap": 50},
    "cache": False,
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
