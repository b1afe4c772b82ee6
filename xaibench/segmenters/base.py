"""The segmenter contract: radiographs in, named anatomy masks out (``xaibench data masks``).

Δ_bone and IoU_bone need bone masks, and almost no public chest X-ray collection has them. A
segmenter fills the gap: it maps a batch of raw radiographs to boolean masks of the regions it
declares, on the images' own grid, so ``xaibench data masks MANIFEST --segmenter NAME`` can write
``mask_<region>`` files for a whole cohort.

Rules every segmenter follows (the conformance kit checks them):

* **Raw in, same grid out.** :meth:`Segmenter.segment` takes raw images ``[B, 1, H, W]`` in
  [0, 1] (the manifest dataset's output) and returns, for every name in :attr:`Segmenter.regions`,
  a boolean tensor ``[B, H, W]`` on the same device. Resizing to the network's input and back
  (nearest neighbour for masks) is the segmenter's job, so callers never see its input size.
* **Weights are local and hashed.** :meth:`Segmenter.load` finds the weights the way backbone
  weights are found (a given file or folder, else the library's own cache folder), never
  downloads, loads them safely (safetensors or ``torch.load(weights_only=True)``), and raises
  :class:`~xaibench.errors.XaibenchError` naming the file to place where when they are missing.
  :meth:`Segmenter.provenance` names the weights (file name and SHA-256, never the folder) and the
  library versions; it goes into the manifest's sidecar and from there into results.
* **Deterministic.** The same images give the same masks (eval mode, no dropout, no sampling).
* **Names are xaibench's.** Region names are snake_case and use xaibench's vocabulary (``lungs``,
  ``left_lung``, ``heart``, ``spine``, ``clavicles``, ``bone``, ...); a segmenter maps its own
  labels to them and documents the mapping (and what a name covers, e.g. which bones ``bone`` is).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from xaibench.component import Component

if TYPE_CHECKING:
    import torch


class Segmenter(Component):
    """Maps raw radiographs to named boolean masks (subclass per model).

    Options are pydantic fields (``weights``: a local file or folder; ``threshold``; ...),
    validated like every component's and recorded in the provenance.

    Attributes:
        regions: The region names :meth:`segment` returns, in order.
        weights_hint: Where the weights come from and where to put them when they are missing
            (for the docs and for the error).
    """

    regions: ClassVar[tuple[str, ...]] = ()
    weights_hint: ClassVar[str] = ""

    @abstractmethod
    def load(self, device: torch.device) -> None:
        """Find and load the weights, build the model on ``device`` in eval mode.

        Called once before the first :meth:`segment`.

        Raises:
            XaibenchError: The weights are missing (the message names the file to place and
                where) or cannot be read safely.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement load()")

    @abstractmethod
    def segment(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Masks of every region in :attr:`regions` for raw ``images`` ``[B, 1, H, W]`` in [0, 1].

        Returns:
            Region name -> boolean tensor ``[B, H, W]`` on the images' grid and device.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement segment()")

    @abstractmethod
    def provenance(self) -> dict[str, Any]:
        """JSON-able record of what made the masks.

        Segmenter name, version, options, weights file name and SHA-256, library versions;
        never an absolute path (it may hold a name). A segmenter without a weight file says so
        with ``"weights": None`` (the conformance kit's ``provenance`` check wants a key holding
        ``sha256`` or that).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement provenance()")


#: Tolerance for float rounding at the ends of [0, 1] (the backbones' too).
RAW_TOLERANCE = 1e-4


def check_raw(images: torch.Tensor, who: str) -> None:
    """Raise :class:`~xaibench.errors.InputRangeError` unless ``images`` are raw ``[B, 1, H, W]``.

    Call it first in :meth:`Segmenter.segment`: a segmenter fed 0-255 or already-normalised
    images still returns confident masks, and only an error keeps them out of a manifest. The
    conformance kit's ``raw_range`` check requires it.

    Args:
        images: What ``segment`` received.
        who: How the message names the caller, e.g. ``"segmenter 'lung_threshold'"``.

    Raises:
        InputRangeError: Not four-dimensional with one channel, values outside [0, 1] (beyond
            float rounding), or NaN.
    """
    import torch

    from xaibench.errors import InputRangeError

    if images.ndim != 4 or images.shape[1] != 1:
        raise InputRangeError(f"{who}: expected images [B, 1, H, W], got {tuple(images.shape)}")
    if images.numel() == 0:
        return
    with torch.no_grad():
        low, high = (float(v) for v in torch.aminmax(images.detach()))
    if low != low or high != high:
        raise InputRangeError(f"{who}: images contain NaN")
    if low < -RAW_TOLERANCE or high > 1.0 + RAW_TOLERANCE:
        raise InputRangeError(
            f"{who}: images must be raw intensities in [0, 1], got values in "
            f"[{low:.4g}, {high:.4g}] (are they already normalised, or 0-255?)"
        )
