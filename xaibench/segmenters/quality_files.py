"""Files of mask quality control: the contact sheet PNG and a manifest with ``qc_exclude``.

Split from :mod:`xaibench.segmenters.quality` (which re-exports both) to keep modules small.
:func:`all_rows` opens the manifest that quality control and the agreement check
(:mod:`xaibench.segmenters.agreement`) both read: every row, its exclusions ignored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from xaibench.data.values import printable

if TYPE_CHECKING:
    from xaibench.data.manifest import ManifestDataset
    from xaibench.segmenters.quality import QualityReport

_EIGHT = np.ones((3, 3), dtype=bool)
_COLOURS = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (170, 110, 40),
)


def all_rows(
    manifest: str | Path,
    *,
    image_root: str | Path | None,
    allow_outside_paths: bool,
    image_size: int | None,
) -> ManifestDataset:
    """The manifest's dataset with every row, also those a ``qc_exclude`` column excludes.

    Raises:
        ManifestError: The manifest has problems.
    """
    from xaibench.data.manifest import ManifestDataset

    return ManifestDataset(
        path=str(manifest),
        image_root=None if image_root is None else str(image_root),
        allow_outside_paths=allow_outside_paths,
        image_size=image_size,
    ).ignoring_exclusions()


def contact_sheet(
    images: Sequence[np.ndarray],
    masks: Sequence[Mapping[str, np.ndarray]],
    captions: Sequence[str],
    path: str | Path,
    *,
    columns: int = 4,
    tile: int = 192,
) -> Path:
    """Write a PNG grid of images with their mask outlines, one caption line per tile.

    Captions should hold sample ids and flag names only, never patient metadata. Outlines are
    the mask minus its binary erosion, one colour per region (the same region keeps its colour
    on every tile); the legend under the grid names them.

    Args:
        images: Raw images ``[H, W]`` in [0, 1].
        masks: Per image, region -> boolean mask on its grid.
        captions: Per image, its caption.
        path: The PNG to write.
        columns: Tiles per row.
        tile: Tile side in pixels (images are resized to it, masks nearest-neighbour).

    Returns:
        ``path``.
    """
    from PIL import Image, ImageDraw, ImageFont
    from scipy import ndimage

    regions = sorted({r for m in masks for r in m})
    colour = {r: _COLOURS[i % len(_COLOURS)] for i, r in enumerate(regions)}
    caption_h = 14
    n = max(len(images), 1)
    rows = math.ceil(n / columns)
    legend_h = 14 * math.ceil(len(regions) / 4) + 4
    sheet = Image.new("RGB", (columns * tile, rows * (tile + caption_h) + legend_h), (0, 0, 0))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for j, (image, image_masks, caption) in enumerate(zip(images, masks, captions, strict=True)):
        grey = np.clip(np.asarray(image, dtype=float), 0.0, 1.0)
        rgb = np.repeat((grey * 255).round().astype(np.uint8)[..., None], 3, axis=2)
        for region, mask in image_masks.items():
            m = np.asarray(mask, dtype=bool)
            edge = m & ~ndimage.binary_erosion(m, structure=_EIGHT)
            rgb[edge] = colour[region]
        tile_image = Image.fromarray(rgb).resize((tile, tile), Image.Resampling.NEAREST)
        x, y = (j % columns) * tile, (j // columns) * (tile + caption_h)
        sheet.paste(tile_image, (x, y))
        draw.text((x + 2, y + tile + 1), printable(caption)[:40], fill=(255, 255, 255), font=font)
    top = rows * (tile + caption_h) + 2
    for i, region in enumerate(regions):
        draw.text(
            ((i % 4) * (columns * tile // 4) + 2, top + 14 * (i // 4)),
            region, fill=colour[region], font=font,
        )  # fmt: skip
    out = Path(path)
    sheet.save(out, format="PNG")
    return out


def write_exclusions(
    manifest: str | Path,
    report: QualityReport,
    out: str | Path,
    *,
    image_root: str | Path | None = None,
    allow_outside_paths: bool = False,
) -> Path:
    """Write ``manifest``'s rows to ``out`` with the flagged regions added to ``qc_exclude``.

    Existing ``qc_exclude`` pairs are kept (a region already excluded keeps its reason); every
    flagged region of a row is added with its first flag's reason. Paths are written as in the
    input, so they stay relative to the same image root: run with ``--image-root`` when ``out``
    is in another folder. Cells are escaped for spreadsheets (:mod:`xaibench.escape`). Edit the
    file to keep an image a person judged fine (delete its pair) before running with it.

    Raises:
        XaibenchError: The manifest cannot be read, or ``out`` is the manifest itself.
    """
    from xaibench.data.check import format_problems, read_manifest
    from xaibench.data.manifest_regions import QC_EXCLUDE_COLUMN, parse_exclusions
    from xaibench.errors import XaibenchError
    from xaibench.escape import to_csv

    rows, problems = read_manifest(
        manifest, image_root=image_root, allow_outside_paths=allow_outside_paths
    )
    if rows is None or problems:
        raise XaibenchError(f"manifest {manifest}: {format_problems(problems, 5)}")
    target = Path(out)
    if target.resolve() == rows.path:
        raise XaibenchError(f"--write-exclusions {out}: give a new file, not the manifest itself")
    frame = rows.frame.copy()
    column = (
        list(frame[QC_EXCLUDE_COLUMN]) if QC_EXCLUDE_COLUMN in frame.columns else [""] * len(frame)
    )
    for row, cell in report.exclusions().items():
        pairs = parse_exclusions(column[row - 1])
        for region, reason in parse_exclusions(cell).items():
            pairs.setdefault(region, reason)
        column[row - 1] = "; ".join(f"{r}: {why}" for r, why in pairs.items())
    frame[QC_EXCLUDE_COLUMN] = column
    target.write_text(to_csv(frame), encoding="utf-8")
    return target
