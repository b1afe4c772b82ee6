"""Region annotations written in a manifest cell: COCO RLE, SIIM-ACR RLE, polygons and boxes.

A manifest names a region's source by its column prefix (``docs/data.md`` has examples):

* ``rle_<region>``: COCO run-length encoding as JSON, ``{"size": [height, width], "counts": ...}``
  with ``counts`` the compressed string COCO writes or a list of ints (uncompressed: run
  lengths in column-major order, the first run background), or a JSON list of such objects
  (their union; ``[]`` is an explicit empty annotation). CheXlocalize and CheXmask publish
  this format. Decoded by :mod:`pycocotools.mask`, so the convention is COCO's.
* ``siim_rle_<region>``: SIIM-ACR Pneumothorax's ``EncodedPixels`` text, as its
  ``train-rle.csv`` has it. ``-1`` means "annotated, no finding". Otherwise space-separated
  ``start length`` pairs over the pixels in **column-major** order (down the first column,
  then the next; 0-based) where each ``start`` counts the background pixels since the end of
  the previous run (the first from pixel 0) — the "relative" RLE of the challenge, as
  decoded by SIIM's ``mask_functions.rle2mask`` (``reshape(width, height)`` then
  transposed) and torchxrayvision's ``SIIM_Pneumothorax_Dataset``. Those pairs are exactly
  COCO's uncompressed counts (background run, foreground run, ...) without the final
  background run, so they are decoded by pycocotools too. Several encodings of one image (the
  challenge's CSV has one row per pneumothorax instance) are joined with ``|`` and mean their
  union.
* ``polygon_<region>``: a JSON list of polygons, each a list of ``[x, y]`` points in pixel
  coordinates of the native image (origin at the top-left corner of the top-left pixel, x to
  the right, y down). Rasterised by pycocotools (``frPyObjects``), COCO's convention.
* ``box_<region>``: a JSON list of boxes ``[x, y, w, h]`` in native pixel coordinates (x, y the
  top-left corner, as NIH ChestX-ray14's ``BBox_List`` and COCO). A box covers every pixel whose
  **centre** lies inside it; a centre on an edge counts on the right and bottom edges and not on
  the left and top ones, as pycocotools' polygon rasteriser decides ties: column ``c`` (centre
  ``c + 0.5``) is inside when ``x < c + 0.5 <= x + w``, rows likewise. So an integer box covers
  exactly ``w * h`` pixels and every box on a half-pixel grid the same pixels as COCO's; written
  here rather than through pycocotools' box-as-polygon rasterisation because the centre rule is
  exact and simple to state for any fractional box, and costs one slice per box.

Checking is split like the manifest's: :func:`parse_annotation` does the cheap syntax checks
that need no image (bad JSON, wrong structure, a list RLE whose counts do not sum to its
size, polygons with fewer than 3 points or zero area, boxes with ``w`` or ``h <= 0``), and
:func:`rasterise` the checks that need the image's native size (an RLE size differing from
the image, compressed counts not summing to ``height * width``, boxes or polygon points outside
the image, SIIM runs past the last pixel) before it draws the mask. Both raise
:class:`AnnotationError` with a one-line message; the manifest adds row and column.

Decoding is vectorised: no Python loop runs per pixel (the compressed COCO string is parsed
with numpy, see :func:`coco_string_counts`).
"""

from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Column prefix -> region format (``mask_`` columns name image files).
REGION_PREFIXES: dict[str, str] = {
    "mask_": "mask",
    "rle_": "rle",
    "siim_rle_": "siim_rle",
    "polygon_": "polygon",
    "box_": "box",
}
#: SIIM-ACR's "annotated, no finding" cell.
SIIM_EMPTY = "-1"
#: A compressed COCO counts string: characters ``0`` (48) to ``o`` (111).
_COUNTS_STRING = re.compile(r"[0-o]*")
#: Longest JSON cell read (a CheXmask lung RLE is a few kB; 10 MB is far beyond any real cell).
MAX_CELL_CHARS = 10_000_000


class AnnotationError(ValueError):
    """An annotation cell is malformed or does not fit its image; the message is one line."""


@dataclass(frozen=True)
class Annotation:
    """A parsed annotation cell.

    Attributes:
        format: ``rle``, ``siim_rle``, ``polygon`` or ``box``.
        parts: The pieces whose union is the region: RLE objects (``dict`` with ``size`` and
            ``counts``), SIIM pair arrays (int64), polygons (float ``[n, 2]`` arrays) or boxes
            (float ``[4]`` arrays). Empty for an explicit empty annotation.
    """

    format: str
    parts: tuple[Any, ...]


def region_column(column: str) -> tuple[str, str] | None:
    """``(format, region)`` of a region column name (``box_heart`` -> ``("box", "heart")``)."""
    for prefix, fmt in REGION_PREFIXES.items():
        if column.startswith(prefix):
            return fmt, column[len(prefix) :]
    return None


def _no_constant(name: str) -> float:
    raise AnnotationError(f"{name} is not a number JSON allows")


def _json(cell: str) -> Any:
    if len(cell) > MAX_CELL_CHARS:
        raise AnnotationError(f"cell is longer than {MAX_CELL_CHARS:,} characters")
    try:
        return json.loads(cell, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"not valid JSON ({exc.msg} at character {exc.pos + 1})") from None
    except RecursionError:
        raise AnnotationError("not valid JSON (nested too deeply)") from None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_annotation(fmt: str, cell: str) -> Annotation:
    """Parse a non-empty annotation cell of format ``fmt`` (the cheap checks, no image).

    Raises:
        AnnotationError: The cell is malformed; the message says how.
    """
    if fmt == "siim_rle":
        return Annotation(fmt, _parse_siim(cell))
    value = _json(cell)
    if fmt == "rle":
        items = value if isinstance(value, list) else [value]
        return Annotation(
            fmt, tuple(_parse_rle(item, k, len(items)) for k, item in enumerate(items))
        )
    if not isinstance(value, list):
        kind = "boxes" if fmt == "box" else "polygons"
        raise AnnotationError(f"expected a JSON list of {kind}")
    if fmt == "polygon":
        return Annotation(fmt, tuple(_parse_polygon(p, k) for k, p in enumerate(value)))
    if fmt == "box":
        return Annotation(fmt, tuple(_parse_box(b, k) for k, b in enumerate(value)))
    raise ValueError(f"unknown region format {fmt!r}")


def _which(k: int, n: int, what: str) -> str:
    return f"{what} {k + 1}: " if n > 1 else ""


def _parse_rle(item: object, k: int, n: int) -> dict[str, Any]:
    where = _which(k, n, "RLE")
    if not isinstance(item, dict):
        raise AnnotationError(f"{where}expected a JSON object with 'size' and 'counts'")
    extra = sorted(set(item) - {"size", "counts"})
    if extra or "size" not in item or "counts" not in item:
        wrong = f"unknown key {extra[0]!r}" if extra else "missing 'size' or 'counts'"
        raise AnnotationError(f"{where}{wrong}; a COCO RLE has 'size' and 'counts' only")
    size = item["size"]
    if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) and v > 0 for v in size)):
        raise AnnotationError(f"{where}'size' must be [height, width], two positive integers")
    counts = item["counts"]
    h, w = size
    if isinstance(counts, str):
        if not _COUNTS_STRING.fullmatch(counts):
            raise AnnotationError(f"{where}'counts' is not a compressed COCO RLE string")
    elif isinstance(counts, list):
        if not all(_is_int(c) and c >= 0 for c in counts):
            raise AnnotationError(f"{where}'counts' must be non-negative integers")
        if sum(counts) != h * w:
            raise AnnotationError(
                f"{where}'counts' sum to {sum(counts)}, not height x width = {h * w}"
            )
    else:
        raise AnnotationError(f"{where}'counts' must be a string or a list of integers")
    return {"size": [h, w], "counts": counts}


def _parse_siim(cell: str) -> tuple[np.ndarray, ...]:
    parts: list[np.ndarray] = []
    pieces = cell.split("|")
    for k, piece in enumerate(pieces):
        where = _which(k, len(pieces), "encoding")
        text = piece.strip()
        if text == SIIM_EMPTY:
            continue
        tokens = text.split()
        if not tokens or not all(t.isascii() and t.isdigit() for t in tokens):
            raise AnnotationError(
                f"{where}expected '-1' or space-separated non-negative integers "
                f"(start length pairs), got {text[:40]!r}"
            )
        if len(tokens) % 2:
            raise AnnotationError(f"{where}odd number of values; runs are 'start length' pairs")
        pairs = np.array(tokens, dtype=np.int64)
        if (pairs[1::2] == 0).any():
            raise AnnotationError(f"{where}a run has length 0")
        parts.append(pairs)
    return tuple(parts)


def _points(value: object) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(_is_number(v) for v in value)


def _parse_polygon(value: object, k: int) -> np.ndarray:
    where = f"polygon {k + 1}: "
    if not isinstance(value, list) or not all(_points(p) for p in value):
        raise AnnotationError(f"{where}expected a list of [x, y] points")
    if len(value) < 3:
        raise AnnotationError(f"{where}{len(value)} point(s); a polygon needs at least 3")
    points = np.array(value, dtype=float)
    if not np.isfinite(points).all():
        raise AnnotationError(f"{where}coordinates must be finite")
    x, y = points[:, 0], points[:, 1]
    area = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
    if area == 0:
        raise AnnotationError(f"{where}zero area (its points are on one line)")
    return points


def _parse_box(value: object, k: int) -> np.ndarray:
    where = f"box {k + 1}: "
    if not (isinstance(value, list) and len(value) == 4 and all(_is_number(v) for v in value)):
        raise AnnotationError(f"{where}expected [x, y, w, h], four numbers")
    box = np.array(value, dtype=float)
    if not np.isfinite(box).all():
        raise AnnotationError(f"{where}values must be finite")
    if box[2] <= 0 or box[3] <= 0:
        raise AnnotationError(f"{where}width and height must be > 0, got {value[2]}, {value[3]}")
    return box


def coco_string_counts(text: str) -> np.ndarray:
    """The run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString``, vectorised).

    Each count is written in 5-bit groups, low bits first, one character per group (value +
    48); bit 0x20 continues the count, bit 0x10 of the last group is its sign; from the third
    count on, each is stored as its difference to the count two before. Written here because
    pycocotools has no public call that returns the counts, and its decoder trusts them: a
    string whose counts sum to less than ``height * width`` decodes to uninitialised memory.

    Raises:
        AnnotationError: The string ends inside a count, or a count is too long or negative.
    """
    codes = np.frombuffer(text.encode("ascii"), dtype=np.uint8).astype(np.int64) - 48
    if codes.size == 0:
        return np.zeros(0, dtype=np.int64)
    more = (codes & 0x20) != 0
    if more[-1]:
        raise AnnotationError("'counts' string ends inside a count")
    ends = np.flatnonzero(~more)
    starts = np.concatenate(([0], ends[:-1] + 1))
    length = ends - starts + 1
    if length.max() > 7:
        raise AnnotationError("'counts' string has a count longer than 7 characters")
    group = np.repeat(np.arange(ends.size), length)
    shift = 5 * (np.arange(codes.size) - starts[group])
    values = np.zeros(ends.size, dtype=np.int64)
    np.add.at(values, group, (codes & 0x1F) << shift)
    negative = (codes[ends] & 0x10) != 0
    values[negative] -= np.int64(1) << (5 * length[negative])
    counts = values.copy()
    counts[3::2] = np.cumsum(values[1::2])[1:]  # odd positions: x1, x1 + x3, ...
    counts[4::2] = np.cumsum(values[2::2])[1:]  # even from 2: x2, x2 + x4, ...
    if (counts < 0).any():
        raise AnnotationError("'counts' string decodes to a negative run length")
    return counts


def rasterise(annotation: Annotation, shape: tuple[int, int]) -> np.ndarray:
    """The boolean mask of ``annotation`` on an image of native ``shape`` (rows, columns).

    Raises:
        AnnotationError: The annotation does not fit the image (see the module docstring).
    """
    height, width = shape
    mask = np.zeros(shape, dtype=bool)
    if not annotation.parts:
        return mask
    from pycocotools import mask as coco

    fmt = annotation.format
    if fmt == "box":
        for k, box in enumerate(annotation.parts):
            x, y, w, h = (float(v) for v in box)
            if x < 0 or y < 0 or x + w > width or y + h > height:
                raise AnnotationError(
                    f"box {k + 1} [{x:g}, {y:g}, {w:g}, {h:g}] is outside the "
                    f"{width}x{height} (width x height) image"
                )
            c0, c1 = math.floor(x - 0.5) + 1, math.floor(x + w - 0.5) + 1
            r0, r1 = math.floor(y - 0.5) + 1, math.floor(y + h - 0.5) + 1
            mask[max(r0, 0) : r1, max(c0, 0) : c1] = True
        return mask
    if fmt == "polygon":
        flat = []
        for k, points in enumerate(annotation.parts):
            x, y = points[:, 0], points[:, 1]
            if x.min() < 0 or y.min() < 0 or x.max() > width or y.max() > height:
                raise AnnotationError(
                    f"polygon {k + 1} has points outside the {width}x{height} (width x height) "
                    "image; coordinates are native pixels"
                )
            flat.append(points.ravel().tolist())
        rles = coco.frPyObjects(flat, height, width)
    elif fmt == "rle":
        rles = []
        for k, item in enumerate(annotation.parts):
            where = _which(k, len(annotation.parts), "RLE")
            h, w = item["size"]
            if (h, w) != (height, width):
                raise AnnotationError(
                    f"{where}size is {h}x{w} (height x width) but the image is "
                    f"{height}x{width}; RLE must be on the native image grid"
                )
            counts = item["counts"]
            if isinstance(counts, str):
                total = int(coco_string_counts(counts).sum())
                if total != h * w:
                    raise AnnotationError(
                        f"{where}'counts' sum to {total}, not height x width = {h * w}"
                    )
                rles.append({"size": [h, w], "counts": counts.encode("ascii")})
            else:
                rles.append(coco.frPyObjects({"size": [h, w], "counts": counts}, h, w))
    elif fmt == "siim_rle":
        rles = []
        for k, pairs in enumerate(annotation.parts):
            total = int(pairs.sum())
            if total > height * width:
                raise AnnotationError(
                    f"{_which(k, len(annotation.parts), 'encoding')}runs end at pixel {total}, "
                    f"past the {height}x{width} image's {height * width} pixels"
                )
            counts = [*pairs.tolist(), height * width - total]
            rles.append(
                coco.frPyObjects({"size": [height, width], "counts": counts}, height, width)
            )
    else:
        raise ValueError(f"unknown region format {fmt!r}")
    merged = coco.merge(rles) if len(rles) > 1 else rles[0]
    with warnings.catch_warnings():
        # pycocotools 2.0.11's decode hands numpy 2 an ``__array__`` without ``copy``; the
        # result is the same, the DeprecationWarning is its own.
        warnings.simplefilter("ignore", DeprecationWarning)
        return np.asarray(coco.decode(merged), dtype=bool)


def fit_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray | None:
    """``mask`` on an image grid of ``shape``, or None when it does not fit.

    A mask of the image's size is returned as it is; one whose size is the image's divided by
    the same integer ``k`` in both directions (SCR's 1024 px masks of JSRT's 2048 px images) is
    upsampled nearest-neighbour, each mask pixel becoming a ``k x k`` block.
    """
    if mask.shape == shape:
        return mask
    (mh, mw), (h, w) = mask.shape, shape
    if mh and mw and h % mh == 0 and w % mw == 0 and h // mh == w // mw:
        k = h // mh
        return np.repeat(np.repeat(mask, k, axis=0), k, axis=1)
    return None
