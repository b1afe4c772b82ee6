"""Built-in importers of public chest X-ray collections (``xaibench data import``)."""

from __future__ import annotations

from xaibench.hookspecs import hookimpl
from xaibench.registry import Register

#: Source name -> (lazy target, summary). Each importer's module documents its layout.
IMPORTERS: dict[str, tuple[str, str]] = {
    "nih": ("xaibench.data.importers.nih:NIHChestXray14", "NIH ChestX-ray14, boxes of 8"),
    "chexpert": ("xaibench.data.importers.chexpert:CheXpert", "CheXpert (+ CheXlocalize RLE)"),
    "mimic": ("xaibench.data.importers.mimic:MimicCxrJpg", "MIMIC-CXR-JPG, CheXpert labels"),
    "jsrt": (
        "xaibench.data.importers.jsrt:JsrtImporter",
        "JSRT radiographs (nodule labels) with SCR's lung, heart and clavicle masks",
    ),
    "montgomery": (
        "xaibench.data.importers.montgomery:MontgomeryImporter",
        "Montgomery County TB set (NLM) with manual left/right lung masks",
    ),
    "shenzhen": (
        "xaibench.data.importers.shenzhen:ShenzhenImporter",
        "Shenzhen Hospital TB set (NLM) with the separately published lung masks",
    ),
    "chexmask": (
        "xaibench.data.importers.chexmask:ChexmaskImporter",
        "CheXmask lung and heart masks (COCO RLE) joined onto another importer's manifest",
    ),
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
