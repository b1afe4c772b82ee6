"""CheXmask lung and heart masks joined onto another collection's manifest (``chexmask``).

**What CheXmask is.** Gaggion et al. (Scientific Data 2024; PhysioNet,
https://physionet.org/content/chexmask-cxr-segmentation-data/) segmented the lungs and heart of
every frontal image of ChestX-ray8 (NIH), CheXpert, MIMIC-CXR-JPG, PadChest and VinDr-CXR (and,
in version 0.1 only, CANDID-PTX) with HybridGNet, and publish one CSV per collection. JSRT,
Shenzhen and Montgomery are *not* in CheXmask (their own manual masks are imported by ``jsrt``,
``shenzhen`` and ``montgomery``). Columns, as published (order varies: PadChest puts ``Dice RCA
(Max)`` first): the collection's own image id (``Image Index`` for ChestX-ray8, ``Path`` for
CheXpert, ``dicom_id`` for MIMIC-CXR-JPG, ``ImageID`` for PadChest and CANDID-PTX, ``image_id``
for VinDr-CXR), ``Dice RCA (Mean)``, ``Dice RCA (Max)``, ``Landmarks``, ``Left Lung``, ``Right
Lung``, ``Heart``, ``Height``, ``Width``.

**RLE convention** (read from CheXmask's own ``DataPostprocessing/utils.py``,
``get_mask_from_RLE``): space-separated ``start length`` pairs over the mask flattened in **row
order** (C order, ``reshape(height, width)``), starts **1-based**, on a ``Height x Width`` grid.
This differs from COCO (column order, counts alternating from background), so each mask is
decoded here and re-encoded with pycocotools as COCO RLE JSON (``{"size": [h, w], "counts":
"..."}``), the manifest's one RLE convention. Runs outside the grid, an odd number count, a
non-number, or a grid over the pixel budget make that image's cells empty (counted).

**Resolution.** CheXmask publishes ``OriginalResolution/<Collection>.csv`` (masks warped back to
each image's original size: ``Height``/``Width`` are the original image's) and
``Preprocessed/<Collection>.csv`` (1024 x 1024 on the image padded to a square, which needs the
unpublished paddings to map back). Only ``OriginalResolution`` is read. A user who holds a
resized copy of a collection (CheXpert-v1.0-small, NIH's 1024 PNGs are the original size) gets
RLE cells whose ``size`` differs from the image, which ``xaibench data check`` reports per row;
such masks are not rescaled here.

**Quality.** Each row carries Reverse Classification Accuracy Dice estimates; CheXmask's README
recommends using only masks with ``Dice RCA (Mean) >= 0.7``. Option ``min_dice_rca`` (default
0.7; 0 keeps all) leaves the three mask cells of an image below it empty and counts it; the
estimate itself is written as ``chexmask_dice_rca``.

**The join.** ``-O manifest=PATH`` names a manifest another importer wrote (``nih``,
``chexpert``, ...). It is read as text with the manifest reader's strict CSV parser
(:func:`xaibench.data.csvtext.parse_csv`); its paths are copied as they are and never opened.
Rows are matched on ``source_id`` against the collection's id column, compared as:
``chexpert``: the path after ``CheXpert-v1.0/`` or ``CheXpert-v1.0-small/`` (CheXmask's ``Path``
has no such prefix); ``mimic`` and ``vindr``: the file name without ``.jpg``/``.dcm``/
``.dicom``/``.png``; the others: the file name. Every manifest row is written with
``rle_left_lung``, ``rle_right_lung``, ``rle_heart`` and ``chexmask_dice_rca`` added; a row
CheXmask does not cover keeps empty cells (``unmatched=keep``, counted) or is left out
(``unmatched=drop``). Image paths stay relative to the *other* collection's ROOT: run with
``--image-root`` that ROOT, not CheXmask's. Regions are named by the patient's side (CheXmask's
``Right Lung`` is on the image's left).
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from xaibench.data.images import DEFAULT_MAX_PIXELS
from xaibench.data.importers.base import ImportedRows, Importer, ImportLayoutError, source_file
from xaibench.progress import Progress

SOURCE = "chexmask"

#: Option value -> (CheXmask's file stem, its id column).
COLLECTIONS: dict[str, tuple[str, str]] = {
    "nih": ("ChestX-Ray8", "Image Index"),
    "chexpert": ("CheXpert", "Path"),
    "mimic": ("MIMIC-CXR-JPG", "dicom_id"),
    "padchest": ("Padchest", "ImageID"),
    "vindr": ("VinDr-CXR", "image_id"),
    "candid": ("CANDID-PTX", "ImageID"),
}

#: CheXmask column -> region written.
MASK_COLUMNS: dict[str, str] = {
    "Left Lung": "left_lung",
    "Right Lung": "right_lung",
    "Heart": "heart",
}
DICE_COLUMN = "Dice RCA (Mean)"
DICE_OUT = "chexmask_dice_rca"

#: Region-column prefixes of the manifest (K1); one source column per region.
REGION_PREFIXES = ("mask_", "rle_", "siim_rle_", "polygon_", "box_")

#: What the counts are called.
NO_ROW = "no CheXmask row"
LOW_DICE = "Dice RCA (Mean) below min_dice_rca"
BAD_RLE = "CheXmask RLE or size invalid"
DUPLICATE = "CheXmask lists the image twice (first used)"

_CHEXPERT_PREFIX = re.compile(r"^(?:.*/)?CheXpert-v1\.0(?:-small)?/", re.IGNORECASE)
_EXTENSIONS = re.compile(r"\.(?:jpg|jpeg|dcm|dicom|png)$", re.IGNORECASE)


class ChexmaskImporter(Importer):
    """Joins CheXmask's lung and heart masks (as COCO RLE) onto a collection's manifest.

    Attributes:
        manifest: The manifest to join onto (written by ``xaibench data import``).
        collection: Which CheXmask CSV: ``nih``, ``chexpert``, ``mimic``, ``padchest``,
            ``vindr``, ``candid``.
        min_dice_rca: Masks of images whose ``Dice RCA (Mean)`` is below are left empty.
        unmatched: ``keep`` manifest rows CheXmask does not cover (empty cells) or ``drop``.
    """

    display_name: ClassVar[str] = "CheXmask"
    homepage: ClassVar[str] = "https://physionet.org/content/chexmask-cxr-segmentation-data/"
    download: ClassVar[str] = (
        "CheXmask's OriginalResolution/<Collection>.csv (or .csv.gz), plus a manifest of the "
        "collection from another importer (-O manifest=PATH -O collection=NAME)"
    )
    regions: ClassVar[tuple[str, ...]] = tuple(MASK_COLUMNS.values())
    image_root_hint: ClassVar[str] = "JOINED_ROOT (the ROOT its manifest was imported from)"

    manifest: str
    collection: Literal["nih", "chexpert", "mimic", "padchest", "vindr", "candid"]
    min_dice_rca: float = Field(default=0.7, ge=0.0, le=1.0)
    unmatched: Literal["keep", "drop"] = "keep"

    def read(self, root: Path, progress: Progress) -> ImportedRows:
        """Read the manifest, stream the CheXmask CSV, join; see the module docstring."""
        stem, id_column = COLLECTIONS[self.collection]
        table = self._chexmask_file(root, stem)
        rows = self._read_manifest()
        wanted: dict[str, list[int]] = {}
        for index, row in enumerate(rows):
            wanted.setdefault(join_key(self.collection, row["source_id"]), []).append(index)
        cells: dict[int, dict[str, str]] = {}
        counts: dict[str, int] = {}
        seen: set[str] = set()
        for record in progress.track(
            _stream(table, root, id_column), total=None, description="CheXmask"
        ):
            key = join_key(self.collection, record[id_column])
            if key not in wanted:
                continue
            if key in seen:
                counts[DUPLICATE] = counts.get(DUPLICATE, 0) + 1
                continue
            seen.add(key)
            added, problem = self._cells(record)
            if problem:
                counts[problem] = counts.get(problem, 0) + len(wanted[key])
            for index in wanted[key]:
                cells[index] = added
        imported = ImportedRows([])
        empty = {f"rle_{region}": "" for region in MASK_COLUMNS.values()} | {DICE_OUT: ""}
        for index, row in enumerate(rows):
            if index not in cells:
                if self.unmatched == "drop":
                    imported.exclude(NO_ROW)
                    continue
                counts[NO_ROW] = counts.get(NO_ROW, 0) + 1
            imported.rows.append({**row, **cells.get(index, empty)})
        for reason, count in sorted(counts.items()):
            imported.notes.append(f"{count} images: masks left empty, {reason}")
        imported.notes.append(
            "image paths are the joined manifest's: run with --image-root the ROOT that "
            "manifest was imported from, not CheXmask's folder"
        )
        return imported

    def _chexmask_file(self, root: Path, stem: str) -> Path:
        try:
            return source_file(
                root,
                f"OriginalResolution/{stem}.csv",
                f"OriginalResolution/{stem}.csv.gz",
                f"{stem}.csv",
                f"{stem}.csv.gz",
                source=SOURCE,
            )
        except ImportLayoutError:
            if any((root / "Preprocessed").glob(f"{stem}.csv*")):
                raise ImportLayoutError(
                    f"{SOURCE}: only Preprocessed/{stem}.csv found under {root}; its masks are "
                    "on 1024x1024 padded squares, not the images: download "
                    f"OriginalResolution/{stem}.csv"
                ) from None
            raise

    def _read_manifest(self) -> list[dict[str, str]]:
        """The manifest to join onto: its rows as text (``'`` escapes undone)."""
        from xaibench.data.csvtext import parse_csv
        from xaibench.escape import csv_text_back

        path = Path(self.manifest).expanduser()
        if not path.is_file():
            raise ImportLayoutError(f"{SOURCE}: option manifest: {path} is not a file")
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ImportLayoutError(f"{SOURCE}: option manifest: {path}: {exc}") from None
        text = parse_csv(raw)
        if text.findings:
            row, column, message = text.findings[0]
            where = f" row {row}" if row is not None else ""
            where += f" column {column!r}" if column else ""
            raise ImportLayoutError(f"{SOURCE}: manifest {path}{where}: {message}")
        header = [str(csv_text_back(name)) for name in text.header]
        for required in ("image", "patient_id", "source_id"):
            if required not in header:
                raise ImportLayoutError(
                    f"{SOURCE}: manifest {path} has no column {required!r} (write it with "
                    "xaibench data import)"
                )
        for name in header:
            if name == DICE_OUT or any(
                name == f"{prefix}{region}"
                for prefix in REGION_PREFIXES
                for region in MASK_COLUMNS.values()
            ):
                raise ImportLayoutError(
                    f"{SOURCE}: manifest {path} already has column {name!r}; CheXmask would "
                    "add a second source for the region (a region has one source column)"
                )
        rows = [
            {name: str(csv_text_back(cell)) for name, cell in zip(header, values, strict=True)}
            for values in text.rows
        ]
        if not rows:
            raise ImportLayoutError(f"{SOURCE}: manifest {path} has no rows")
        return rows

    def _cells(self, record: dict[str, str]) -> tuple[dict[str, str], str | None]:
        """The cells CheXmask adds for one image, and why masks were left empty (or None)."""
        dice_text = record[DICE_COLUMN].strip()
        try:
            dice = float(dice_text)
        except ValueError:
            dice = math.nan
        cells = {f"rle_{region}": "" for region in MASK_COLUMNS.values()}
        cells[DICE_OUT] = dice_text if math.isfinite(dice) else ""
        if not math.isfinite(dice) or dice < self.min_dice_rca:
            return cells, LOW_DICE
        try:
            height, width = int(record["Height"]), int(record["Width"])
            encoded = {
                f"rle_{region}": chexmask_to_coco(record[column], height, width)
                for column, region in MASK_COLUMNS.items()
            }
        except ValueError:
            return cells, BAD_RLE
        cells.update(encoded)
        return cells, None


def join_key(collection: str, identifier: str) -> str:
    """How ``identifier`` (a manifest's ``source_id`` or CheXmask's id) is compared."""
    text = identifier.strip().replace("\\", "/")
    if collection == "chexpert":
        return _CHEXPERT_PREFIX.sub("", text)
    name = text.rsplit("/", 1)[-1]
    if collection in ("mimic", "vindr"):
        name = _EXTENSIONS.sub("", name)
    return name


def chexmask_to_coco(rle: str, height: int, width: int) -> str:
    """CheXmask's RLE (1-based starts, row order) as COCO RLE JSON, through pycocotools.

    Raises:
        ValueError: Not pairs of whole numbers, a run outside the grid, a grid that is empty or
            over the pixel budget.
    """
    from pycocotools import mask as coco_mask

    if height <= 0 or width <= 0 or height * width > DEFAULT_MAX_PIXELS:
        raise ValueError(f"grid {height}x{width} is empty or too large")
    try:
        numbers = np.array(rle.split(), dtype=np.int64)
    except (ValueError, OverflowError):
        raise ValueError("RLE holds something other than whole numbers") from None
    if numbers.size == 0 or numbers.size % 2:
        raise ValueError("RLE is not start/length pairs")
    starts, lengths = numbers[0::2] - 1, numbers[1::2]
    total = height * width
    if (starts < 0).any() or (lengths < 0).any() or (starts + lengths > total).any():
        raise ValueError("RLE run outside the grid")
    # Filled straight into the transposed grid: C order (width, height) is the column order
    # (Fortran order of (height, width)) pycocotools encodes, so neither a row-order mask nor a
    # transposing copy is made (7x faster on a 2828 x 2320 CheXpert grid: 15 ms per mask).
    transposed = np.zeros((width, height), dtype=np.uint8)
    for start, length in zip(starts.tolist(), lengths.tolist(), strict=True):
        end = start + length
        while start < end:  # a run may wrap past the end of a row
            row, column = divmod(start, width)
            stop = min(end, (row + 1) * width)
            transposed[column : column + stop - start, row] = 1
            start = stop
    encoded = coco_mask.encode(transposed.T)
    counts = encoded["counts"]
    return json.dumps(
        {
            "size": [height, width],
            "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
        }
    )


def _stream(path: Path, root: Path, id_column: str) -> Iterator[dict[str, str]]:
    """CheXmask's CSV row by row (it holds gigabytes of RLE: never read whole).

    Raises:
        ImportLayoutError: A required column is missing, or the file is not CSV.
    """
    shown = path.relative_to(root) if path.is_relative_to(root) else path
    required = [id_column, DICE_COLUMN, *MASK_COLUMNS, "Height", "Width"]
    previous = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)  # one RLE cell exceeds the default 128 KiB
    try:
        opener = gzip.open if path.name.endswith(".gz") else open
        with (
            opener(path, "rb") as binary,
            io.TextIOWrapper(binary, encoding="utf-8-sig", newline="") as text,
        ):
            reader = csv.reader(text)
            try:
                header = [name.strip() for name in next(reader)]
            except StopIteration:
                raise ImportLayoutError(f"{SOURCE}: {shown} is empty") from None
            missing = [c for c in required if c not in header]
            if missing:
                raise ImportLayoutError(
                    f"{SOURCE}: {shown} has no column {', '.join(repr(c) for c in missing)} "
                    f"(it has: {', '.join(header[:12])})"
                )
            positions = {name: header.index(name) for name in required}
            for values in reader:
                if len(values) < len(header):
                    continue  # a truncated last line: nothing to join
                yield {name: values[i] for name, i in positions.items()}
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        raise ImportLayoutError(f"{SOURCE}: {shown} cannot be read as CSV: {exc}") from None
    finally:
        with contextlib.suppress(Exception):
            csv.field_size_limit(previous)
