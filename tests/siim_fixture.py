"""A SIIM-ACR Pneumothorax folder in its published layouts, with synthetic DICOM images.

``train-rle.csv`` (header ``ImageId, EncodedPixels``, leading space as published) with images
nested ``dicom-images-train/<study UID>/<series UID>/<ImageId>.dcm``, or Kaggle's stage 2
``stage_2_train.csv`` (``ImageId,EncodedPixels``) with a flat image folder. The encoder writes
SIIM's relative run-length encoding (column-major pixel order, each start counted from the end
of the previous run), written here from the format's description, not copied.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from image_files import write_dicom


def siim_encode(mask: np.ndarray) -> str:
    """SIIM's ``EncodedPixels`` of a boolean mask (``-1`` when empty)."""
    flat = np.asarray(mask, dtype=bool).T.reshape(-1)  # column-major
    padded = np.concatenate([[False], flat, [False]])
    changes = np.flatnonzero(padded[1:] != padded[:-1])
    starts, ends = changes[0::2], changes[1::2]
    if not len(starts):
        return "-1"
    pairs: list[int] = []
    previous_end = 0
    for start, end in zip(starts, ends, strict=True):
        pairs += [int(start - previous_end), int(end - start)]
        previous_end = int(end)
    return " ".join(map(str, pairs))


def image_id(k: int) -> str:
    """A SOP-instance-UID-like ImageId, as SIIM's."""
    return f"1.2.276.0.7230010.3.1.4.8323329.{1000 + k}.1517875{k:03d}.{100000 + k}"


def write_siim_image(
    root: Path,
    ident: str,
    pixels: np.ndarray,
    *,
    flat_folder: str | None = None,
    header: dict[str, object] | None = None,
) -> Path:
    """One DICOM file at SIIM's nested path (or ``flat_folder/<ImageId>.dcm``)."""
    if flat_folder is None:
        folder = root / "dicom-images-train" / f"{ident}.2" / f"{ident}.1"
    else:
        folder = root / flat_folder
    return write_dicom(folder / f"{ident}.dcm", pixels, header=header)


def write_labels(root: Path, rows: list[tuple[str, str]], *, stage_2: bool = False) -> Path:
    """The label CSV: ``train-rle.csv`` as published (leading spaces) or ``stage_2_train.csv``."""
    root.mkdir(parents=True, exist_ok=True)
    if stage_2:
        path = root / "stage_2_train.csv"
        text = "ImageId,EncodedPixels\n" + "".join(f"{i},{e}\n" for i, e in rows)
    else:
        path = root / "train-rle.csv"
        text = "ImageId, EncodedPixels\n" + "".join(f"{i}, {e}\n" for i, e in rows)
    path.write_text(text)
    return path


def pneumothorax_dataset(
    root: Path, n: int, size: int = 48, seed: int = 0
) -> tuple[list[str], dict[str, np.ndarray]]:
    """``n`` images, every second one with a bright pneumothorax lesion where its RLE says.

    Negative images are noise; positive ones add a bright rectangle of random place and size
    (a learnable, localisable finding). Returns the ImageIds and the positive images' masks.
    """
    rng = np.random.default_rng(seed)
    ids: list[str] = []
    masks: dict[str, np.ndarray] = {}
    rows: list[tuple[str, str]] = []
    for k in range(n):
        ident = image_id(k)
        ids.append(ident)
        pixels = rng.integers(8000, 16000, size=(size, size)).astype(np.uint16)
        if k % 2:
            mask = np.zeros((size, size), dtype=bool)
            h, w = rng.integers(size // 4, size // 2, size=2)
            r, c = rng.integers(0, size - h), rng.integers(0, size - w)
            mask[r : r + h, c : c + w] = True
            pixels[mask] = 60000
            masks[ident] = mask
            rows.append((ident, siim_encode(mask)))
        else:
            rows.append((ident, "-1"))
        write_siim_image(
            root, ident, pixels, header={"ViewPosition": "PA" if k % 3 else "AP", "PatientSex": "M"}
        )
    write_labels(root, rows)
    return ids, masks
