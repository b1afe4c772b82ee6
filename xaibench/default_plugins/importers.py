"""Built-in importers of public chest X-ray collections (``xaibench data import``)."""

from __future__ import annotations

from xaibench.hookspecs import hookimpl
from xaibench.registry import Register

#: Source name -> (lazy target, summary). Each importer's module documents its layout.
IMPORTERS: dict[str, tuple[str, str]] = {
    "nih": ("xaibench.data.importers.nih:NIHChestXray14", "NIH ChestX-ray14, boxes of 8"),
    "chexpert": ("xaibench.data.importers.chexpert:CheXpert", "CheXpert (+ CheXlocalize RLE)"),
    "mimic": ("xaibench.data.importers.mimic:MimicCxrJpg", "MIMIC-CXR-JPG, CheXpert labels"),
}


@hookimpl
def register_importers(register: Register) -> None:
    """Register the importers in :data:`IMPORTERS`."""
    for name, (target, summary) in IMPORTERS.items():
        register(name, target, summary=summary)
