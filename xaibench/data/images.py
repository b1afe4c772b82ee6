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
* **JSRT raw (``.IMG``)**: the JSRT chest radiograph database (and the SCR masks drawn on it)
  ships headerless raw files: 2048 x 2048 pixels, one 16-bit big-endian unsigned word per pixel
  in row order, 12 bits used (0..4095), *high values dark* (film optical density: lung fields
  high, bone low), so the grey value is ``(4095 - v) / 4095``. A file is read this way only when
  its name ends in ``.img`` (any case) **and** it holds exactly 2048 x 2048 x 2 = 8,388,608
  bytes; any other ``.img`` file (another vendor's raw format, an Analyze header) and any word
  above 4095 are refused with a message naming the file, never guessed.

**Pixel budget.** A file is untrusted input: an all-black PNG of 13,375 x 13,375 pixels takes
22 KB on disk and minutes and gigabytes to decode (a *decompression bomb*; Pillow only refuses
above 179 megapixels). Every decoder reads the image's size from its header first — Pillow's
lazy ``Image.open`` for PNG, JPEG and the rest (width x height x channels), ``Rows x Columns x
SamplesPerPixel x NumberOfFrames`` for DICOM — and refuses an image over ``max_pixels``
(:data:`DEFAULT_MAX_PIXELS` unless the caller says otherwise) before any pixel is decoded.

Any failure of a parser on a file's bytes becomes an :class:`ImageReadError` naming the file,
never a traceback: a corrupt or hostile file is a problem of that file, like any other.

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

#: Pixel values an image may have (its header says) before it is refused without decoding: rows
#: x columns x channels (a colour pixel counts three times, as it is decoded as three values)
#: x frames.
#:
#: 60 million admits every real radiograph with room to spare: chest radiographs are at most
#: about 4,300 x 4,300 (18.5 MP; 55.5 million values even when exported as colour JPEG),
#: full-field mammograms at most about 4,800 x 6,000 (29 MP, 50 µm detectors), long-leg and
#: full-spine stitches about 3,000 x 9,000 (27 MP). It also bounds memory: decoding and
#: resizing one image at the budget peaked at 1.3 GB (grey PNG), 1.4 GB (colour PNG) and 2.1 GB
#: (16-bit DICOM) measured for the whole process, where the issue's 13,375 x 13,375 bomb (179 MP
#: in 22 KB) took 3.6 GB and 76 s. Raise it with ``xaibench data check --max-pixels`` and the
#: ``manifest`` dataset option ``max_pixels``.
DEFAULT_MAX_PIXELS = 60_000_000

#: JSRT's raw ``.IMG`` files: side length in pixels, bits used, and the exact file size.
JSRT_SIDE = 2048
JSRT_BITS = 12
JSRT_BYTES = JSRT_SIDE * JSRT_SIDE * 2

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


def decode_image(data: bytes, name: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image file's bytes to raw grey intensities.

    Args:
        data: The file's bytes.
        name: How to name the file in errors (its path).
        max_pixels: The pixel budget: an image whose header declares more pixel values (rows x
            columns x channels x frames) is refused before decoding.

    Returns:
        A float32 ``[H, W]`` array in [0, 1], bone bright.

    Raises:
        ImageReadError: An empty file, unreadable or corrupt data, an image over the pixel
            budget, several frames, a pixel format with no grey meaning, or a compressed DICOM
            without a decoder; the message names ``name``.
    """
    if not data:
        raise ImageReadError(f"{name}: empty file (0 bytes)")
    if is_dicom(data, name):
        return _decode_dicom(data, name, max_pixels)
    if name.lower().endswith(".img"):
        return decode_jsrt_raw(data, name, max_pixels=max_pixels)
    return _decode_pillow_image(data, name, max_pixels)


def decode_jsrt_raw(data: bytes, name: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a JSRT ``.IMG`` file: headerless 2048 x 2048, 16-bit big-endian, 12 bits used.

    JSRT's values are film optical densities (air dark = high), so bone-bright grey is
    ``(4095 - v) / 4095``. Hand-written: no library reads this headerless format (Pillow's raw
    decoder needs the size and mode given, which is all this function does with numpy).

    Args:
        data: The file's bytes.
        name: How to name the file in errors (its path).
        max_pixels: The pixel budget (see :func:`decode_image`).

    Returns:
        A float32 ``[2048, 2048]`` array in [0, 1], bone bright.

    Raises:
        ImageReadError: The file is not exactly 8,388,608 bytes, or a value exceeds 12 bits.
    """
    if len(data) != JSRT_BYTES:
        raise ImageReadError(
            f"{name}: a .IMG file is read as a JSRT raw radiograph (2048x2048 16-bit big-endian, "
            f"no header, exactly {JSRT_BYTES:,} bytes) but this one has {len(data):,} bytes; "
            "convert other raw formats to PNG or DICOM"
        )
    check_budget(name, JSRT_SIDE, JSRT_SIDE, max_pixels)
    values = np.frombuffer(data, dtype=">u2").reshape(JSRT_SIDE, JSRT_SIDE)
    top = (1 << JSRT_BITS) - 1
    high = int(values.max())
    if high > top:
        raise ImageReadError(
            f"{name}: holds the value {high}, above JSRT's 12-bit range 0..{top}; "
            "not a JSRT raw radiograph"
        )
    return ((top - values.astype(np.float64)) / top).astype(np.float32)


def decode_mask(data: bytes, name: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a mask file's bytes: any non-zero pixel is inside the region.

    Colour masks count a pixel as inside when any colour channel is non-zero (alpha is ignored);
    palette masks use the palette index, so index 0 is outside whatever its colour.

    Args:
        data: The file's bytes (PNG recommended; JPEG's lossy noise would leak into the mask).
        name: How to name the file in errors (its path).
        max_pixels: The pixel budget (see :func:`decode_image`).

    Returns:
        A bool ``[H, W]`` array.

    Raises:
        ImageReadError: An empty file, unreadable or corrupt data, an image over the pixel
            budget, or several frames; the message names ``name``.
    """
    image = _open_pillow(data, name, max_pixels)
    try:
        array = np.asarray(image)
    except Exception as exc:  # a parser's failure on hostile bytes: the file's problem
        raise ImageReadError(f"{name}: not a readable image ({_reason(exc)})") from None
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


def check_budget(
    name: str, rows: int, columns: int, max_pixels: int, *, frames: int = 1, samples: int = 1
) -> None:
    """Refuse an image whose header declares more than ``max_pixels`` pixels.

    Args:
        name: The file, for the message.
        rows: Image height, from the header.
        columns: Image width, from the header.
        max_pixels: The budget.
        frames: Frames in the file (DICOM ``NumberOfFrames``).
        samples: Values per pixel (3 for colour; DICOM ``SamplesPerPixel``).

    Raises:
        ImageReadError: Over budget; the message names the file, its size, the budget and the
            options that raise it.
    """
    total = rows * columns * max(frames, 1) * max(samples, 1)
    if total <= max_pixels:
        return
    size = f"{rows}x{columns} pixels"
    size += f" x {frames} frames" if frames > 1 else ""
    size += f" x {samples} channels" if samples > 1 else ""
    raise ImageReadError(
        f"{name}: {size} ({total:,}) exceed the pixel budget of {max_pixels:,}, a guard against "
        "decompression bombs; if the file is genuine, raise it with --max-pixels (dataset "
        "option max_pixels)"
    )


def _reason(exc: BaseException) -> str:
    """A parser's error, one line and short, for a message (never an object's repr)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _open_pillow(data: bytes, name: str, max_pixels: int) -> Any:
    """Open ``data`` with Pillow, check its size, then decode; one frame; EXIF orientation.

    ``Image.open`` reads the header only, so the pixel budget is checked before any decoding.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise ImageReadError(f"{name}: empty file (0 bytes)")
    image: Image.Image
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageReadError(
            f"{name}: not a recognised image file (neither a format Pillow reads, such as PNG "
            "or JPEG, nor DICOM)"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Above Pillow's own limit (179 MP), or above its warning limit where warnings are errors.
        raise ImageReadError(
            f"{name}: {_reason(exc)}; refused as a possible decompression bomb"
        ) from None
    except Exception as exc:  # a parser's failure on hostile bytes: the file's problem
        raise ImageReadError(f"{name}: not a readable image ({_reason(exc)})") from None
    width, height = image.size
    # A colour pixel is decoded as three values (a palette one too), so it counts three times.
    samples = 3 if image.mode in ("P", "PA") else len(image.getbands())
    check_budget(name, height, width, max_pixels, samples=samples)
    try:
        if getattr(image, "is_animated", False):
            frames = int(getattr(image, "n_frames", 2))
            raise ImageReadError(f"{name}: holds {frames} frames; give one image per file")
        image.load()
        if image.getexif().get(0x0112, 1) != 1:  # EXIF orientation tag, 1 = as stored
            image = ImageOps.exif_transpose(image)
    except ImageReadError:
        raise
    except Exception as exc:  # truncated data, bad chunks, a decoder's error
        raise ImageReadError(f"{name}: not a readable image ({_reason(exc)})") from None
    return image


def _decode_pillow_image(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    image = _open_pillow(data, name, max_pixels)
    try:
        return _pillow_grey(image, name)
    except ImageReadError:
        raise
    except Exception as exc:  # a parser's failure on hostile bytes: the file's problem
        raise ImageReadError(f"{name}: not a readable image ({_reason(exc)})") from None


def _pillow_grey(image: Any, name: str) -> np.ndarray:
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

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as exc:  # a parser's failure on hostile bytes: the file's problem
        raise ImageReadError(f"{name}: not a readable DICOM file ({_reason(exc)})") from None
    try:
        if "Rows" not in ds or "Columns" not in ds:
            raise ImageReadError(f"{name}: DICOM file has no image (no Rows/Columns)")
        meta = getattr(ds, "file_meta", None)
        if meta is None or "TransferSyntaxUID" not in meta:
            # Raw DICOM without file meta (some exporters): its encoding is what pydicom read.
            from pydicom.dataset import FileMetaDataset
            from pydicom.uid import (
                ExplicitVRBigEndian,
                ExplicitVRLittleEndian,
                ImplicitVRLittleEndian,
            )

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
    except ImageReadError:
        raise
    except Exception as exc:  # elements are parsed lazily: a bad one fails here
        raise ImageReadError(f"{name}: invalid DICOM header ({_reason(exc)})") from None
    return ds


def _dicom_budget(ds: Any, name: str, max_pixels: int) -> None:
    """Refuse a DICOM whose header declares more pixels than the budget (all frames, samples)."""
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except Exception as exc:  # a value of the wrong type or multiplicity
        raise ImageReadError(
            f"{name}: invalid DICOM image size attributes ({_reason(exc)})"
        ) from None
    check_budget(name, rows, columns, max_pixels, frames=frames, samples=samples)


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


def _decode_dicom(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing

    ds = _read_dicom(data, name)
    _dicom_budget(ds, name, max_pixels)
    try:
        problem = _dicom_problem(ds, name)
    except Exception as exc:  # a value of the wrong type, an unknown transfer syntax
        raise ImageReadError(f"{name}: invalid DICOM header ({_reason(exc)})") from None
    if problem is not None:
        raise ImageReadError(problem)
    try:
        stored = ds.pixel_array
    except Exception as exc:  # any decoder failure means a corrupt file
        raise ImageReadError(f"{name}: cannot decode DICOM pixel data ({_reason(exc)})") from None
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
    except Exception as exc:  # a value of the wrong type or range in the header
        raise ImageReadError(
            f"{name}: invalid DICOM intensity attributes ({_reason(exc)})"
        ) from None
    if not np.isfinite([low, high]).all() or low == high:
        raise ImageReadError(f"{name}: DICOM output range [{low}, {high}] is empty")
    values = np.asarray(values, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        if str(ds.PhotometricInterpretation).strip() == "MONOCHROME1":
            scaled = (high - values) / (high - low)
        else:
            scaled = (values - low) / (high - low)
    if not np.isfinite(scaled).all():
        raise ImageReadError(f"{name}: DICOM pixel values are not finite after rescaling")
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)
