"""Built-in importers of public chest X-ray collections (``xaibench data import``)."""

from __future__ import annotations

from xaibench.hookspecs import hookimpl
from xaibench.registry import Register

#: Source name -> (lazy target, summary). Each importer's module documents its layout.
IMPORTERS: dict[str, tuple[str, str]] = {
    "padchest": (
        "xaibench.data.importers.padchest:PadChestImporter",
        "PadChest: 27 findings (torchxrayvision's set) + normal, 16-bit PNGs",
    ),
    "vindr": (
        "xaibench.data.importers.vindr:VinDrImporter",
        "VinDr-CXR: image labels and finding boxes, official train/test split, DICOM",
    ),
    "rsna_pneumonia": (
        "xaibench.data.importers.rsna_pneumonia:RsnaPneumoniaImporter",
        "RSNA Pneumonia Detection: pneumonia label and boxes, DICOM",
    ),
    "siim": (
        "xaibench.data.importers.siim:SiimImporter",
        "SIIM-ACR Pneumothorax: pneumothorax label and RLE mask, DICOM",
    ),
}


@hookimpl
def register_importers(register: Register) -> None:
    """Register the importers in :data:`IMPORTERS`."""
    for name, (target, summary) in IMPORTERS.items():
        register(name, target, summary=summary)
