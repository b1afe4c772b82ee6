"""Hand-made image files and manifests for the tests of hostile inputs.

PNG and JPEG that declare any size (decompression bombs that are a few kilobytes on disk), DICOM
with any header, plain PNGs, and manifests written from row dictionaries.
"""

from __future__ import annotations

import csv
import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_blank_png(path: Path, width: int, height: int) -> Path:
    """A 1-bit all-black PNG of any size, compressed row by row (never held as pixels).

    An all-zero image compresses about 1000:1, so a 9000 x 9000 file takes a few kilobytes on
    disk while decoding it would take hundreds of megabytes: a decompression bomb.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\0" * (1 + (width + 7) // 8)  # filter byte, then the packed bits
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", data)
        + png_chunk(b"IEND", b"")
    )
    return path


def write_jpeg_claiming(path: Path, width: int, height: int) -> Path:
    """A small JPEG whose frame header (SOF0) claims ``width`` x ``height`` pixels."""
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    return path


def write_dicom(
    path: Path,
    stored: np.ndarray,
    *,
    rows: int | None = None,
    columns: int | None = None,
    frames: int | None = None,
    photometric: str = "MONOCHROME2",
    header: dict[str, object] | None = None,
) -> Path:
    """A secondary-capture DICOM of 16-bit stored values.

    ``rows``/``columns``/``frames`` override what the header says about the pixels; ``header``
    sets any other attributes (patient name, ids, ...) by keyword.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    for keyword, value in (header or {}).items():
        setattr(ds, keyword, value)
    ds.Rows = rows if rows is not None else stored.shape[0]
    ds.Columns = columns if columns is not None else stored.shape[1]
    if frames is not None:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(stored, dtype="<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def save_png(path: Path, array: np.ndarray) -> Path:
    """``array`` as a PNG file (Pillow picks the mode from the dtype)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


#: T-scores of the three WHO classes (normal, osteopenia, osteoporosis).
T_SCORES = (0.5, -1.8, -3.0)


def write_manifest(folder: Path, rows: list[dict[str, object]]) -> Path:
    """``folder/manifest.csv`` (UTF-8) with the union of the rows' columns."""
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    path = folder / "manifest.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows([{c: row.get(c, "") for c in columns} for row in rows])
    return path


def clean_rows(folder: Path) -> list[dict[str, object]]:
    """Three clean rows, one per class, images inside ``folder`` (appended to a test's rows)."""
    rows: list[dict[str, object]] = []
    for k, t_score in enumerate(T_SCORES):
        save_png(folder / "ok" / f"{k}.png", np.full((4, 4), 10 * k, np.uint8))
        rows.append({"image": f"ok/{k}.png", "patient_id": f"OK{k}", "t_score": t_score})
    return rows


def image_row(image: str, patient: str, **extra: object) -> dict[str, object]:
    """One manifest row of an osteopenia image (``extra`` adds or replaces cells)."""
    return {"image": image, "patient_id": patient, "t_score": -1.8, **extra}
