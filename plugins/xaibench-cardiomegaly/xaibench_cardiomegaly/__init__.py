"""xaibench-cardiomegaly: the ``cardiomegaly`` task and its datasets, as an xaibench plugin.

Registers, through xaibench's public hooks only:

* task ``cardiomegaly`` — normal vs cardiomegaly by cardiothoracic ratio (CTR > 0.5), region of
  interest the heart;
* dataset ``cardiac_phantom`` — the core phantom with each heart resized to a drawn CTR, labelled
  by the CTR measured on its masks;
* dataset ``cardiac_manifest`` — your own radiographs labelled normal/cardiomegaly, from a CSV.

Targets are lazy ``"module:Class"`` strings, so ``xaibench ls`` imports nothing of this package.
"""

from __future__ import annotations

from xaibench.hookspecs import hookimpl
from xaibench.registry import Register

__version__ = "0.1.0"


@hookimpl
def register_tasks(register: Register) -> None:
    """Register ``cardiomegaly``."""
    register(
        "cardiomegaly",
        "xaibench_cardiomegaly.task:Cardiomegaly",
        summary="normal vs cardiomegaly (cardiothoracic ratio > 0.5) from chest X-rays; "
        "region: heart",
    )


@hookimpl
def register_datasets(register: Register) -> None:
    """Register ``cardiac_phantom`` and ``cardiac_manifest``."""
    register(
        "cardiac_phantom",
        "xaibench_cardiomegaly.phantom:CardiacPhantomDataset",
        summary="the phantom with hearts resized to a drawn cardiothoracic ratio; label = "
        "measured CTR > 0.5",
    )
    register(
        "cardiac_manifest",
        "xaibench_cardiomegaly.manifest:CardiacManifestDataset",
        summary="your own radiographs labelled normal/cardiomegaly (optional ctr), from a CSV",
    )
