"""JSRT chest radiographs with the SCR masks: lungs, heart and clavicles (``jsrt``).

**What the user downloads.** The JSRT database (Japanese Society of Radiological Technology,
http://db.jsrt.or.jp/eng.php): 247 PA radiographs as headerless raw files, ``JPCLN001.IMG`` ...
``JPCLN154.IMG`` (one lung nodule each) and ``JPCNN001.IMG`` ... ``JPCNN093.IMG`` (no nodule),
2048 x 2048, 0.175 mm pixels, 12 bits (decoded by :func:`xaibench.data.images.decode_jsrt_raw`);
and its clinical data, ``CLNDAT_EN.txt`` (nodule cases) and ``CNNDAT_EN.txt`` (non-nodule cases;
some copies spell it ``.TXT``). The SCR database (Segmentation in Chest Radiographs, van Ginneken
et al. 2006, https://www.isi.uu.nl/Research/Databases/SCR/) adds the first observer's masks as
GIFs at half resolution (1024 x 1024), split into SCR's two cross-validation folds:
``scratch/fold1/masks/<object>/JPCLN001.gif`` and ``scratch/fold2/...`` with ``<object>`` one of
``left lung``, ``right lung``, ``heart``, ``left clavicle``, ``right clavicle``. SCR names sides
by the patient (the right lung is on the image's left); so do the region names written here.

**ROOT** holds the clinical files (at ROOT or in ``Clinical_Information/``), the images (at ROOT
or in ``All247images/``, ``Nodule154images/``, ``NonNodule93images/``, ``images/``) and the SCR
folders (``scratch/fold1`` and ``scratch/fold2``, or ``fold1``/``fold2``).

**Clinical files, as published** (no header, one record per image, fields separated by tabs or
runs of spaces): ``CLNDAT_EN.txt``: file name, degree of subtlety (1-5), nodule size (mm), age,
sex (``male``/``female``), nodule x and y (pixels of the 2048 image, origin top left),
``malignant``/``benign``, then the anatomic location and diagnosis as free text (not written:
free text). ``CNNDAT_EN.txt``: file name, age, sex, ``non-nodule``. ``?`` marks an unknown value.
**Quirk:** some records are not separated by a line break (``...hematomaJPCLN003.IMG``), so
records are split where a JSRT file name starts, not at line ends.

**Rows.** One per image listed in the clinical files; the image itself must exist under ROOT
(else excluded, counted). ``patient_id`` is the image id: JSRT holds one image per patient.
``nodule`` (1/0) comes from the file prefix (``JPCLN`` / ``JPCNN``, JSRT's own convention);
``malignant`` is 1/0 for nodule cases and blank for the others. ``box_nodule`` (option
``nodule_box``) is the square circumscribing a circle of the published diameter around the
published centre (side ``size_mm / 0.175`` pixels, clipped to the image): an approximation of
the nodule's extent, as JSRT publishes no outline; ``[]`` on non-nodule images, blank where the
size is ``?``. Masks come from SCR; ``scr_fold`` (1 or 2) says which fold holds the image.

torchxrayvision has no JSRT reader, so this one is written here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import ClassVar, Literal

from xaibench.data.importers.base import (
    ImageFinder,
    ImportedRows,
    Importer,
    ImportLayoutError,
    keep_present,
    source_file,
)
from xaibench.progress import Progress

SOURCE = "jsrt"

#: JSRT's pixel spacing (mm) and image side (pixels).
PIXEL_MM = 0.175
SIDE = 2048

#: SCR's object folder -> region name.
SCR_OBJECTS: dict[str, str] = {
    "left lung": "left_lung",
    "right lung": "right_lung",
    "heart": "heart",
    "left clavicle": "left_clavicle",
    "right clavicle": "right_clavicle",
}

#: Where the SCR folds may be, relative to ROOT: fold number -> candidate mask folders.
SCR_FOLDS: dict[int, tuple[str, ...]] = {
    1: ("scratch/fold1/masks", "fold1/masks", "SCR/fold1/masks"),
    2: ("scratch/fold2/masks", "fold2/masks", "SCR/fold2/masks"),
}

#: Folders (relative to ROOT) the ``.IMG`` files may be in, searched in this order.
IMAGE_FOLDERS: tuple[str, ...] = (
    "",
    "All247images",
    "Nodule154images",
    "NonNodule93images",
    "images",
)

#: A JSRT file name; where one starts, a record starts.
_RECORD = re.compile(r"(JPC[LN]N\d{3})\.IMG", re.IGNORECASE)

#: Why an image was left out.
NOT_IN_SCR = "no SCR mask (masks=required)"
DUPLICATE = "listed twice in the clinical files (first kept)"


class JsrtImporter(Importer):
    """JSRT (247 PA radiographs, nodule labels) with SCR's lung, heart and clavicle masks.

    Attributes:
        masks: ``required`` (default): the SCR folds must be under ROOT and an image without
            all five masks is excluded; ``optional``: masks where SCR has them, empty cells
            elsewhere (JSRT without SCR).
        nodule_box: Write ``box_nodule`` from the published centre and diameter.
    """

    display_name: ClassVar[str] = "JSRT + SCR"
    homepage: ClassVar[str] = "http://db.jsrt.or.jp/eng.php"
    download: ClassVar[str] = (
        "JSRT's 247 .IMG files with CLNDAT_EN.txt and CNNDAT_EN.txt, and SCR's masks "
        "(scratch/fold1, scratch/fold2)"
    )
    regions: ClassVar[tuple[str, ...]] = (*SCR_OBJECTS.values(), "nodule")
    findings: ClassVar[tuple[str, ...]] = ("nodule", "malignant")

    masks: Literal["required", "optional"] = "required"
    nodule_box: bool = True

    def read(self, root: Path, progress: Progress) -> ImportedRows:
        """Read the clinical files, find images and SCR masks; see the module docstring."""
        imported = ImportedRows([])
        nodule_file = source_file(
            root,
            "CLNDAT_EN.txt",
            "CLNDAT_EN.TXT",
            "Clinical_Information/CLNDAT_EN.txt",
            "Clinical_Information/CLNDAT_EN.TXT",
            source=SOURCE,
        )
        plain_file = source_file(
            root,
            "CNNDAT_EN.txt",
            "CNNDAT_EN.TXT",
            "Clinical_Information/CNNDAT_EN.txt",
            "Clinical_Information/CNNDAT_EN.TXT",
            source=SOURCE,
        )
        records = parse_clinical(nodule_file, root, nodule=True)
        records += parse_clinical(plain_file, root, nodule=False)
        folds = self._scr_folds(root)
        images = _image_index(root)
        finder = ImageFinder(root)
        rows: list[dict[str, str]] = []
        seen: set[str] = set()
        for record in progress.track(records, total=len(records), description="JSRT"):
            image_id = record["id"]
            if image_id in seen:
                imported.exclude(DUPLICATE)
                continue
            seen.add(image_id)
            row = self._row(record, images)
            masks = _scr_masks(image_id, folds, root, finder)
            if masks is None:
                if self.masks == "required":
                    imported.exclude(NOT_IN_SCR)
                    continue
                masks = {f"mask_{region}": "" for region in SCR_OBJECTS.values()}
                masks["scr_fold"] = ""
            row.update(masks)
            rows.append(row)
        imported.rows = keep_present(rows, root, imported, source=SOURCE)
        unlisted = len(set(images) - seen)
        if unlisted:
            imported.notes.append(
                f"{unlisted} .IMG files under ROOT are not in the clinical files: not imported"
            )
        imported.notes.append(
            "images are JSRT's raw .IMG files (2048x2048, 12-bit, read by xaibench's JSRT "
            "decoder); SCR masks are 1024x1024 and upsampled 2x to the image grid"
        )
        return imported

    def _scr_folds(self, root: Path) -> dict[int, Path]:
        """Fold number -> the SCR mask folder found under ROOT."""
        base = root.resolve()
        found: dict[int, Path] = {}
        for fold, candidates in SCR_FOLDS.items():
            for candidate in candidates:
                path = root / candidate
                if path.is_dir() and path.resolve().is_relative_to(base):
                    found[fold] = path
                    break
        if not found and self.masks == "required":
            raise ImportLayoutError(
                f"{SOURCE}: SCR mask folders {SCR_FOLDS[1][0]} and {SCR_FOLDS[2][0]} not found "
                f"under {root}; unpack SCR's masks there, or pass -O masks=optional for JSRT "
                "without masks"
            )
        for fold, path in found.items():
            for folder in SCR_OBJECTS:
                if not (path / folder).is_dir():
                    raise ImportLayoutError(
                        f"{SOURCE}: SCR fold {fold} ({path.relative_to(root)}) has no folder "
                        f"{folder!r}; expected {', '.join(repr(f) for f in SCR_OBJECTS)}"
                    )
        return found

    def _row(self, record: dict[str, str], images: dict[str, str]) -> dict[str, str]:
        image_id = record["id"]
        nodule = image_id.upper().startswith("JPCLN")
        row = {
            "image": images.get(image_id.upper(), f"{image_id}.IMG"),
            "patient_id": image_id,
            "source_id": f"{image_id}.IMG",
            "view": "PA",
            "nodule": "1" if nodule else "0",
            "malignant": record.get("malignant", ""),
        }
        if self.nodule_box:
            row["box_nodule"] = _nodule_box(record) if nodule else "[]"
        row.update(
            {
                "sex": record["sex"],
                "age": record["age"],
                "nodule_subtlety": record.get("subtlety", ""),
                "nodule_size_mm": record.get("size_mm", ""),
                "nodule_x": record.get("x", ""),
                "nodule_y": record.get("y", ""),
            }
        )
        return row


def parse_clinical(path: Path, root: Path, *, nodule: bool) -> list[dict[str, str]]:
    """Records of ``CLNDAT_EN.txt`` (``nodule``) or ``CNNDAT_EN.txt``, as text cells.

    Unknown values (``?``) become empty cells; sex becomes ``M``/``F``; malignancy ``1``/``0``.

    Raises:
        ImportLayoutError: A record has too few fields or a value of the wrong kind (named
            with the file and the image id).
    """
    shown = path.relative_to(root) if path.is_relative_to(root) else path
    text = path.read_bytes().decode("utf-8", errors="replace")
    parts = _RECORD.split(text)
    records: list[dict[str, str]] = []
    # parts = [before, id1, rest1, id2, rest2, ...]
    for image_id, rest in zip(parts[1::2], parts[2::2], strict=True):
        fields = rest.split()
        image_id = image_id.upper()
        needed = 7 if nodule else 2
        if len(fields) < needed:
            raise ImportLayoutError(
                f"{SOURCE}: {shown}: the record of {image_id}.IMG has {len(fields)} fields, "
                f"expected at least {needed} after the file name"
            )
        try:
            if nodule:
                record = {
                    "subtlety": _integer(fields[0]),
                    "size_mm": _number(fields[1]),
                    "age": _integer(fields[2]),
                    "sex": _sex(fields[3]),
                    "x": _integer(fields[4]),
                    "y": _integer(fields[5]),
                    "malignant": _malignancy(fields[6]),
                }
            else:
                record = {"age": _integer(fields[0]), "sex": _sex(fields[1])}
        except ValueError as exc:
            raise ImportLayoutError(
                f"{SOURCE}: {shown}: the record of {image_id}.IMG: {exc}"
            ) from None
        record["id"] = image_id
        records.append(record)
    if not records:
        raise ImportLayoutError(
            f"{SOURCE}: {shown} holds no record (expected lines starting with JPC...IMG)"
        )
    return records


def _integer(value: str) -> str:
    if value == "?":
        return ""
    if not value.isdigit():
        raise ValueError(f"{value!r} is not a whole number or '?'")
    return str(int(value))


def _number(value: str) -> str:
    if value == "?":
        return ""
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a number or '?'") from None
    if not number >= 0 or number == float("inf"):
        raise ValueError(f"{value!r} is not a size in mm")
    return value


def _sex(value: str) -> str:
    lowered = value.lower()
    if lowered in ("male", "m"):
        return "M"
    if lowered in ("female", "f"):
        return "F"
    if value == "?":
        return ""
    raise ValueError(f"sex {value!r} is neither male nor female nor '?'")


def _malignancy(value: str) -> str:
    lowered = value.lower()
    if lowered == "malignant":
        return "1"
    if lowered == "benign":
        return "0"
    if value == "?":
        return ""
    raise ValueError(f"{value!r} is neither malignant nor benign nor '?'")


def _nodule_box(record: dict[str, str]) -> str:
    """The square around the published nodule (JSON ``[[x, y, w, h]]``), or "" if unknown."""
    if not record.get("size_mm") or not record.get("x") or not record.get("y"):
        return ""
    side = float(record["size_mm"]) / PIXEL_MM
    centre_x, centre_y = int(record["x"]), int(record["y"])
    left = max(0.0, centre_x - side / 2)
    top = max(0.0, centre_y - side / 2)
    right = min(float(SIDE), centre_x + side / 2)
    bottom = min(float(SIDE), centre_y + side / 2)
    if right <= left or bottom <= top:
        return ""
    box = [round(left, 1), round(top, 1), round(right - left, 1), round(bottom - top, 1)]
    return json.dumps([box])


def _image_index(root: Path) -> dict[str, str]:
    """Upper-case image id -> path relative to ROOT, from the image folders (first wins)."""
    found: dict[str, str] = {}
    base = root.resolve()
    for folder in IMAGE_FOLDERS:
        path = root / folder if folder else root
        if not path.is_dir() or not path.resolve().is_relative_to(base):
            continue
        for entry in sorted(path.iterdir()):
            match = re.fullmatch(r"(JPC[LN]N\d{3})\.IMG", entry.name, flags=re.IGNORECASE)
            if match and entry.is_file():
                key = match.group(1).upper()
                found.setdefault(key, f"{folder}/{entry.name}" if folder else entry.name)
    return found


def _scr_masks(
    image_id: str, folds: dict[int, Path], root: Path, finder: ImageFinder
) -> dict[str, str] | None:
    """The image's five SCR mask cells and ``scr_fold``, or None when no fold has all five.

    A mask counts when it is a regular file inside ROOT (``finder``; a symlink does not).
    """
    for fold, path in folds.items():
        cells: dict[str, str] = {}
        for folder, region in SCR_OBJECTS.items():
            mask = (path / folder / f"{image_id}.gif").relative_to(root).as_posix()
            if finder.status(mask) is not None:
                break
            cells[f"mask_{region}"] = mask
        else:
            cells["scr_fold"] = str(fold)
            return cells
    return None


__all__ = ["JsrtImporter", "parse_clinical"]
