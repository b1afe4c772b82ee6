"""Built-in dataset sources."""

from __future__ import annotations

from xaibench.hookspecs import hookimpl
from xaibench.registry import Register


@hookimpl
def register_datasets(register: Register) -> None:
    """Register ``phantom`` and ``manifest``."""
    register(
        "phantom",
        "xaibench.data.phantom:PhantomDataset",
        summary="embedded synthetic chest radiographs with bone, lung and heart masks",
    )
    register(
        "manifest",
        "xaibench.data.manifest:ManifestDataset",
        summary="your own PNG, JPEG or DICOM radiographs listed in a CSV (see docs/data.md)",
    )
