"""xaibench-cardiomegaly: the ``cardiomegaly`` task and its phantom, as an xaibench plugin.

Registers, through xaibench's public hooks only:

* task ``cardiomegaly`` — a task file shipped in this package (``cardiomegaly.yaml``), read by
  xaibench's ``FileTask``: normal vs cardiomegaly by cardiothoracic ratio (CTR > 0.5), region of
  interest the heart; ``xaibench run cardiomegaly --data manifest.csv`` runs it on your own
  radiographs (the core ``manifest`` dataset, whose labels come from the task);
* dataset ``cardiac_phantom`` — the core phantom with each heart resized to a drawn CTR, labelled
  by the CTR measured on its masks.

Targets are lazy ``"module:Class"`` strings, so ``xaibench ls`` imports nothing of this package.
"""

from __future__ import annotations

from xaibench.hookspecs import hookimpl
from xaibench.registry import Register

__version__ = "0.2.0"

#: The task file, as a packaged resource (``package:file``).
TASK_FILE = "xaibench_cardiomegaly:cardiomegaly.yaml"


@hookimpl
def register_tasks(register: Register) -> None:
    """Register ``cardiomegaly`` (the packaged task file)."""
    register(
        "cardiomegaly",
        "xaibench.tasks.file_task:FileTask",
        summary="normal vs cardiomegaly (cardiothoracic ratio > 0.5) from chest X-rays; "
        "region: heart",
        options={"file": TASK_FILE},
    )


@hookimpl
def register_datasets(register: Register) -> None:
    """Register ``cardiac_phantom``."""
    register(
        "cardiac_phantom",
        "xaibench_cardiomegaly.phantom:CardiacPhantomDataset",
        summary="the phantom with hearts resized to a drawn cardiothoracic ratio; label = "
        "measured CTR > 0.5",
    )
