"""Decoding radiographs and masks from files: PNG/JPEG through Pillow, DICOM through pydicom.

Every image becomes a float ``[H, W]`` array of raw intensities in [0, 1] with bone bright, and
every mask a boolean ``[H, W]`` array. The rules (also in ``docs/data.md``):

* **PNG, JPEG (and whatever else Pillow opens)** are scaled by their bit depth: 8-bit by 255,
  16-bit by 65535, so 12- and 16-bit precision survives (nothing is quantised to 8 bits). Colour
  images become grey by ITU-R BT.601 luma (``0.299 R + 0.587 G + 0.114 B``, Pillow's own ``L``
  weights) computed in floating point; an RGB file whose three channels are equal is read as that
  grey exactly. Alpha is ignored. The EXIF orientation of a photo-style JPEG is applied.
* **DICOM** goes through the standard's pixel pipeline: stored values, then the Modality LUT
  (Rescale Slope/Intercept, :func:`pydicom.pixels.apply_modality_lut`), then the first VOI LUT or
  window (:func:`pydicom.pixels.apply_voi` / :func:`pydicom.pixels.apply_windowing`), then a
  linear map of the pipeline's output range onto [0, 1]: the VOI LUT's output bits, the window's
  output range, or, without any VOI, the Modality-LUT image of the range ``BitsStored`` allows.
  ``MONOCHROME1`` (bright = low values) is inverted so bone is bright as in ``MONOCHROME2``.
  Multi-frame files, colour files and compressed transfer syntaxes without an installed decoder
  are refused with a message naming the file (and, for compression, the missing package).

Decoders take the file's bytes rather than a path, so the caller can hash the same bytes it
decodes and read each file once.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from xaibench.errors import XaibenchError

#: ITU-R BT.601 luma weights (Pillow uses the same for ``convert("L")``).
LUMA_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)

#: File name endings treated as DICOM even without the ``DICM`` preamble.
DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom", ".dic")

#: Pillow modes that hold 16-bit unsigned grey values.
_MODES_16BIT = ("I;16", "I;16L", "I;16B", "I;16N")


class ImageReadError(XaibenchError):
    """A file is missing, corrupt, or holds something that is not a single grey image."""


def is_dicom(data: bytes, name: str = "") -> bool:
    """Whether ``data`` is a DICOM file: the ``DICM`` magic at byte 128, or a DICOM file name.

    Args:
        data: The file's bytes.
        name: The file's name; a ``.dcm``/``.dicom``/``.dic`` ending marks raw DICOM without the
            128-byte preamble, which some exporters write.
    """
    return data[128:132] == b"DICM" or name.lower().endswith(DICOM_SUFFIXES)


def decode_image(data: bytes, name: str) -> np.ndarray:
    """Decode an image file's bytes to raw grey intensities.

    Args:
        data: The file's bytes.
        name: How to name the file in errors (its path).

    Returns:
        A float32 ``[H, W]`` array in [0, 1], bone bright.

    Raises:
        ImageReadError: Unreadable or corrupt data, several frames, a pixel format with no grey
            meaning, or a compressed DICOM without a decoder; the message names ``name``.
    """
    if is_dicom(data, name):
        return _decode_dicom(data, name)
    return _decode_pillow_image(data, name)


def decode_mask(data: bytes, name: str) -> np.ndarray:
    """Decode a mask file's bytes: any non-zero pixel is inside the region.

    Colour masks count a pixel as inside when any colour channel is non-zero (alpha is ignored);
    palette masks use the palette index, so index 0 is outside whatever its colour.

    Args:
        data: The file's bytes (PNG recommended; JPEG's lossy noise would leak into the mask).
        name: How to name the file in errors (its path).

    Returns:
        A bool ``[H, W]`` array.

    Raises:
        ImageReadError: Unreadable or corrupt data, or several frames; the message names ``name``.
    """
    image = _open_pillow(data, name)
    array = np.asarray(image)
    if image.mode in ("LA", "PA", "RGBA", "La", "RGBa"):
        array = array[..., :-1]
    if array.ndim == 3:
        return np.asarray(array.any(axis=2))
    return np.asarray(array != 0)


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Resize to ``size x size`` (aspect ratio not kept) with anti-aliasing, in float.

    Anti-aliasing (a Gaussian pre-filter when shrinking) keeps fine trabecular texture from
    aliasing into moiré; interpolation is bilinear. An image already at ``size`` is returned
    unchanged, bit for bit.
    """
    if image.shape == (size, size):
        return image
    from skimage.transform import resize

    out = resize(image.astype(np.float64), (size, size), order=1, anti_aliasing=None)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Resize a boolean mask to ``size x size`` by nearest neighbour (no new values, no blur)."""
    if mask.shape == (size, size):
        return mask
    from skimage.transform import resize

    out = resize(mask, (size, size), order=0, anti_aliasing=False, preserve_range=True)
    return np.asarray(out, dtype=bool)


# --------------------------------------------------------------------------------------------
# Pillow
# --------------------------------------------------------------------------------------------


def _open_pillow(data: bytes, name: str) -> Any:
    """Open and fully decode ``data`` with Pillow; one frame only; EXIF orientation applied."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    image: Image.Image
    try:
        image = Image.open(io.BytesIO(data))
        frames = int(getattr(image, "n_frames", 1))
        if frames > 1:
            raise ImageReadError(
                f"{name}: holds {frames} frames; give one image per file"
            ) from None
        image.load()
    except ImageReadError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        # SyntaxError is how some Pillow plugins report a malformed header.
        raise ImageReadError(f"{name}: not a readable image ({exc})") from None
    except Image.DecompressionBombError as exc:
        raise ImageReadError(f"{name}: {exc}") from None
    if image.getexif().get(0x0112, 1) != 1:  # EXIF orientation tag, 1 = as stored
        image = ImageOps.exif_transpose(image)
    return image


def _decode_pillow_image(data: bytes, name: str) -> np.ndarray:
    image = _open_pillow(data, name)
    mode = image.mode
    if mode == "1":
        return np.asarray(image, dtype=np.float32)
    if mode == "L":
        return (np.asarray(image, dtype=np.float64) / 255.0).astype(np.float32)
    if mode == "LA":
        return (np.asarray(image, dtype=np.float64)[..., 0] / 255.0).astype(np.float32)
    if mode in _MODES_16BIT:
        return (np.asarray(image, dtype=np.float64) / 65535.0).astype(np.float32)
    if mode == "I":
        # 32-bit integers: older Pillow opened 16-bit PNGs this way; other ranges are ambiguous.
        values = np.asarray(image, dtype=np.float64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ImageReadError(
                f"{name}: 32-bit integer pixels outside 0..65535 have no known grey scale; "
                "save the image as 8- or 16-bit grey PNG"
            )
        return (values / 65535.0).astype(np.float32)
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if values.size and (not np.isfinite(values).all() or values.min() < 0 or values.max() > 1):
            raise ImageReadError(
                f"{name}: floating-point pixels must be finite and in [0, 1]; "
                "save the image as 8- or 16-bit grey PNG"
            )
        return values.astype(np.float32)
    try:
        rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
    except (ValueError, OSError) as exc:
        raise ImageReadError(
            f"{name}: pixel mode {mode!r} cannot be converted to grey ({exc})"
        ) from None
    return _luma(rgb / 255.0)


def _luma(rgb: np.ndarray) -> np.ndarray:
    """Grey from ``[H, W, 3]`` floats in [0, 1]; equal channels give that grey exactly."""
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    if np.array_equal(red, green) and np.array_equal(red, blue):
        return red.astype(np.float32)
    grey = rgb @ np.asarray(LUMA_WEIGHTS)
    return np.clip(grey, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------------------------
# DICOM
# --------------------------------------------------------------------------------------------


def _read_dicom(data: bytes, name: str) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except (InvalidDicomError, OSError, ValueError, KeyError, EOFError) as exc:
        raise ImageReadError(f"{name}: not a readable DICOM file ({exc})") from None
    if "Rows" not in ds or "Columns" not in ds:
        raise ImageReadError(f"{name}: DICOM file has no image (no Rows/Columns)")
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        # Raw DICOM without file meta (some exporters): its encoding is what pydicom read.
        from pydicom.dataset import FileMetaDataset
        from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

        implicit, little = ds.original_encoding
        meta = meta if meta is not None else FileMetaDataset()
        meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian
            if implicit
            else ExplicitVRLittleEndian
            if little
            else ExplicitVRBigEndian
        )
        ds.file_meta = meta
    return ds


def _dicom_problem(ds: Any, name: str) -> str | None:
    """Why a DICOM dataset cannot become one grey image, or None if it can (header only).

    Checks what is knowable without decoding pixels: pixel data present, one frame, a
    monochrome photometric interpretation, and an installed decoder for the transfer syntax.
    """
    if "PixelData" not in ds:
        return f"{name}: DICOM file has no pixel data"
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        return (
            f"{name}: multi-frame DICOM ({frames} frames) is not supported; "
            "export one frame per file"
        )
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        return (
            f"{name}: DICOM photometric interpretation {photometric or '(missing)'!r} is not "
            "grey; radiographs must be MONOCHROME1 or MONOCHROME2"
        )
    syntax = ds.file_meta.TransferSyntaxUID
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        return f"{name}: pydicom has no decoder for transfer syntax {syntax.name} ({syntax})"
    if not decoder.is_available:
        needs = "; ".join(decoder.missing_dependencies) or "an optional pydicom plugin"
        return (
            f"{name}: DICOM pixel data is compressed as {syntax.name} ({syntax}) and no "
            f"installed package can decode it; install one of: {needs}"
        )
    return None


def _decode_dicom(data: bytes, name: str) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing

    ds = _read_dicom(data, name)
    problem = _dicom_problem(ds, name)
    if problem is not None:
        raise ImageReadError(problem)
    try:
        stored = ds.pixel_array
    except Exception as exc:  # any decoder failure means a corrupt file
        raise ImageReadError(f"{name}: cannot decode DICOM pixel data ({exc})") from None
    if stored.ndim != 2:
        raise ImageReadError(f"{name}: DICOM pixel data is {stored.shape}, not one grey image")
    try:
        bits = int(ds.BitsStored)
        signed = int(ds.get("PixelRepresentation", 0)) == 1
        stored_range = (
            np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1])
            if signed
            else np.array([0, 2**bits - 1])
        )
        values = apply_modality_lut(stored, ds)
        if ds.get("VOILUTSequence"):
            values = apply_voi(values, ds, index=0)
            lut_bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
            low, high = 0.0, float(2**lut_bits - 1)
        elif "WindowCenter" in ds and "WindowWidth" in ds:
            values = apply_windowing(values, ds, index=0)
            # The window's output range: what it maps -inf and +inf to (pydicom's convention).
            with np.errstate(over="ignore", invalid="ignore"):
                ends = apply_windowing(np.array([-np.inf, np.inf]), ds, index=0)
            low, high = float(ends[0]), float(ends[1])
        else:
            ends = apply_modality_lut(stored_range, ds)
            low, high = float(ends[0]), float(ends[1])
    except (ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise ImageReadError(f"{name}: invalid DICOM intensity attributes ({exc})") from None
    if not np.isfinite([low, high]).all() or low == high:
        raise ImageReadError(f"{name}: DICOM output range [{low}, {high}] is empty")
    values = np.asarray(values, dtype=np.float64)
    if str(ds.PhotometricInterpretation).strip() == "MONOCHROME1":
        scaled = (high - values) / (high - low)
    else:
        scaled = (values - low) / (high - low)
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)
