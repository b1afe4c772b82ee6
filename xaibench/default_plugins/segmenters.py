"""Built-in segmenters (``xaibench data masks``)."""

from __future__ import annotations

from xaibench.hookspecs import hookimpl
from xaibench.registry import Register

#: Segmenter name -> (lazy target, summary). Each segmenter's module documents its regions.
SEGMENTERS: dict[str, tuple[str, str]] = {
    "torchxrayvision_pspnet": (
        "xaibench.segmenters.torchxrayvision_pspnet:TorchXRayVisionPSPNet",
        "TorchXRayVision's ChestX-Det PSPNet: lungs, heart, clavicles, scapulae, spine, ... (14)",
    ),
}


@hookimpl
def register_segmenters(register: Register) -> None:
    """Register the segmenters in :data:`SEGMENTERS`."""
    for name, (target, summary) in SEGMENTERS.items():
        register(name, target, summary=summary)
