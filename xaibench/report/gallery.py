"""Saliency galleries: test images with their maps, so a person can look before trusting IoU.

Per cell and saliency method up to three PNGs: the ``best`` and ``worst`` images by the gallery
score (IoU with the primary region by default) and a seeded ``random`` draw — the extremes show
what the score rewards and punishes, the random draw what is typical. A fourth, ``specific``,
appears when perturbation shows the model needs a region other than the primary one more than
any other (the largest specific Δ, see :func:`specific_region`): the images whose
positive-class probability dropped most when that region was perturbed.

Each column is one test image: the radiograph on top, and below it the map in red over the
image, with the outline of every region the run scores (the primary region cyan and drawn on
top; the others in the colours of :data:`REGION_COLOURS`, in the run's region order). Each map is
stretched to the colour range by its own 1st and 99th percentiles (:func:`map_range`), so a faint
map, or one dominated by a few extreme pixels, stays visible; under each map a colour bar gives
the two values in the map's own units. Above each column its label: the sample id (never patient
data), the true class, the class the run calls (at its validation threshold) with the
positive-class probability, and the score that picked the image; below the columns a legend
names each outline colour. Small images are enlarged (nearest neighbour) to at least 160 px a
tile. Written with Pillow and its built-in font (no plotting library needed); the same input
gives the same PNG bytes.

:class:`GalleryPicker` chooses the images while maps stream past batch by batch, keeping only
``3 k`` maps in memory however many images are explained.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

#: Tiles smaller than this (pixels) are enlarged so the gallery is readable.
MIN_TILE = 160

#: Outline colours by the region's position in the run's list (primary region first), as
#: ``(name, RGB in [0, 1])``; more regions than colours reuse them in turn (the legend names each).
#: Red is the map's colour and never an outline.
REGION_COLOURS: tuple[tuple[str, tuple[float, float, float]], ...] = (
    ("cyan", (0.0, 0.9, 0.9)),
    ("yellow", (1.0, 0.85, 0.0)),
    ("green", (0.2, 0.8, 0.2)),
    ("magenta", (0.9, 0.3, 0.9)),
    ("orange", (1.0, 0.55, 0.0)),
    ("blue", (0.3, 0.45, 1.0)),
    ("white", (1.0, 1.0, 1.0)),
)

#: Percentiles of each map's values drawn at the two ends of the colour range.
CONTRAST_PERCENTILES = (1.0, 99.0)

#: The map's colour at full strength (RGB in [0, 1]), blended over the image.
MAP_COLOUR = (1.0, 0.1, 0.1)

_BAND = (20, 20, 20)  # background of the label and legend bands
_BAR = 8  # height of a colour bar, pixels
_TEXT = (235, 235, 235)
_PAD = 3


def region_colours(regions: Sequence[str]) -> dict[str, tuple[str, tuple[float, float, float]]]:
    """Each region's outline colour ``(name, RGB)``, by its position in ``regions``."""
    return {r: REGION_COLOURS[i % len(REGION_COLOURS)] for i, r in enumerate(regions)}


def _outline(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask)


def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=10)


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int, font: Any) -> str:
    """``text``, cut with ``...`` to fit ``width`` pixels (the full text is in the index)."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def _line_height(font: Any) -> int:
    box = font.getbbox("Ag|")
    return int(box[3]) + 2


def map_range(saliency: np.ndarray) -> tuple[float, float]:
    """The values of a map drawn at the bottom and the top of the colour range.

    The map's 1st and 99th percentiles (:data:`CONTRAST_PERCENTILES`, over its finite values), so
    that a handful of extreme pixels cannot squeeze every other pixel into the bottom of the range;
    where they coincide (a map that is constant but for under 1% of its pixels), its minimum and
    maximum. ``(0, 0)`` when no value is finite.
    """
    values = np.asarray(saliency, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 0.0
    lo, hi = (float(v) for v in np.percentile(values, CONTRAST_PERCENTILES))
    if not hi > lo:
        lo, hi = float(values.min()), float(values.max())
    return lo, hi


def map_strength(saliency: np.ndarray) -> np.ndarray:
    """Each pixel's colour strength in [0, 1]: the map scaled by :func:`map_range`, clipped.

    A map with a single value (or none finite) is drawn at strength 0 everywhere.
    """
    values = np.asarray(saliency, dtype=np.float64)
    lo, hi = map_range(values)
    if not hi > lo:
        return np.zeros(values.shape)
    with np.errstate(invalid="ignore"):
        strength = np.clip((values - lo) / (hi - lo), 0.0, 1.0)
    return np.where(np.isfinite(strength), strength, 0.0)


def _blend(gray: np.ndarray, strength: np.ndarray) -> np.ndarray:
    """The map's colour over ``gray`` (``[..., 3]``) at ``strength`` (``[...]``)."""
    alpha = strength[..., None]
    return gray * (1 - alpha) + np.array(MAP_COLOUR) * alpha


def _short(value: float) -> str:
    return f"{value:.3g}"


def _legend_rows(
    draw: ImageDraw.ImageDraw, items: Sequence[tuple[str, tuple[int, ...]]], width: int, font: Any
) -> list[list[tuple[str, tuple[int, ...], int]]]:
    """Legend entries ``(text, colour, x)`` flowed into rows no wider than ``width``."""
    rows: list[list[tuple[str, tuple[int, ...], int]]] = [[]]
    x = _PAD
    swatch = 14
    for text, colour in items:
        label = _fit(draw, text, max(20, width - 2 * _PAD - swatch - 4), font)
        size = swatch + 4 + math.ceil(draw.textlength(label, font=font)) + 10
        if rows[-1] and x + size > width:
            rows.append([])
            x = _PAD
        rows[-1].append((label, colour, x))
        x += size
    return rows


def render_gallery(
    images: np.ndarray,
    maps: np.ndarray,
    masks: np.ndarray | Mapping[str, np.ndarray] | None,
    labels: Sequence[Sequence[str]] | None = None,
) -> Image.Image:
    """Compose the gallery image.

    Args:
        images: ``[K, H, W]`` raw intensities in [0, 1].
        maps: ``[K, H, W]`` saliency maps (any scale).
        masks: Region masks to outline, ``[K, H, W]`` bool each: one array (outlined cyan, no
            legend), or ``{region: masks}`` in the run's region order (colours by position,
            :data:`REGION_COLOURS`; the first is drawn on top), named in a legend below; or
            ``None``.
        labels: Per column, the lines of text written above it (cut to the column's width), or
            ``None`` for no label band.
    """
    k, h, w = images.shape
    if masks is None:
        outlined: list[tuple[np.ndarray, tuple[float, float, float]]] = []
        legend: list[tuple[str, tuple[int, ...]]] = []
    elif isinstance(masks, np.ndarray):
        outlined, legend = [(masks, REGION_COLOURS[0][1])], []
    else:
        colours = region_colours(list(masks))
        outlined = [(masks[r], colours[r][1]) for r in reversed(list(masks))]  # first on top
        # swatch colours converted as the canvas is (truncated), so they match the outlines
        legend = [
            (f"{r} ({colours[r][0]})", tuple(int(c * 255) for c in colours[r][1])) for r in masks
        ]
    canvas = np.zeros((2 * h, k * w, 3), dtype=np.float32)
    ranges = [map_range(maps[i]) for i in range(k)]
    for i in range(k):
        gray = np.repeat(images[i][..., None], 3, axis=2)
        heat = _blend(gray, map_strength(maps[i]))
        for mask, colour in outlined:
            heat[_outline(np.asarray(mask[i], dtype=bool))] = colour
        canvas[:h, i * w : (i + 1) * w] = gray
        canvas[h:, i * w : (i + 1) * w] = heat
    picture = Image.fromarray((np.clip(canvas, 0, 1) * 255).astype(np.uint8))
    scale = max(1, -(-MIN_TILE // w))
    if scale > 1:
        picture = picture.resize((k * w * scale, 2 * h * scale), Image.Resampling.NEAREST)
    tile, width = w * scale, k * w * scale
    font = _font()
    line = _line_height(font)
    measure = ImageDraw.Draw(picture)
    lines = max((len(panel) for panel in labels or []), default=0)
    top = lines * line + 2 * _PAD if lines else 0
    rows = _legend_rows(measure, legend, width, font) if legend else []
    bars = _BAR + line + 2 * _PAD
    bottom = len(rows) * (line + 4) + 2 * _PAD if rows else 0
    framed = Image.new("RGB", (width, top + picture.height + bars + bottom), _BAND)
    framed.paste(picture, (0, top))
    draw = ImageDraw.Draw(framed)
    for i, panel in enumerate(labels or []):
        for j, text in enumerate(panel):
            shown = _fit(draw, str(text), tile - 2 * _PAD, font)
            draw.text((i * tile + _PAD, _PAD + j * line), shown, fill=_TEXT, font=font)
    y = top + picture.height + _PAD
    for i, (lo, hi) in enumerate(ranges):
        _colour_bar(framed, draw, (i * tile + _PAD, y), tile - 2 * _PAD, (lo, hi), font)
    y += bars
    for row in rows:
        for text, rgb, x in row:
            draw.rectangle([x, y + 2, x + 13, y + line - 1], outline=rgb, width=2)
            draw.text((x + 18, y), text, fill=_TEXT, font=font)
        y += line + 4
    return framed


def _colour_bar(
    framed: Image.Image,
    draw: ImageDraw.ImageDraw,
    at: tuple[int, int],
    width: int,
    values: tuple[float, float],
    font: Any,
) -> None:
    """A map's colour bar at ``at``: the colour range over mid grey, its two values below."""
    x, y = at
    ramp = np.linspace(0.0, 1.0, width)[None, :].repeat(_BAR, axis=0)
    strip = _blend(np.full((_BAR, width, 3), 0.5), ramp)
    framed.paste(Image.fromarray((np.clip(strip, 0, 1) * 255).astype(np.uint8)), (x, y))
    lo, hi = _short(values[0]), _short(values[1])
    draw.text((x, y + _BAR + 1), lo, fill=_TEXT, font=font)
    right = x + width - math.ceil(draw.textlength(hi, font=font))
    draw.text((right, y + _BAR + 1), hi, fill=_TEXT, font=font)


#: A label used as it is in a file name: ASCII letters, digits, ``.`` and ``-``, single
#: underscores between them, starting with a letter or digit (so never ``__``, never ``___``).
_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]*(?:_[A-Za-z0-9.-]+)*")

#: Longest file name made from labels as they are; longer ones are shortened and hashed.
_MAX_PLAIN = 200


def gallery_filename(backbone: str, strategy: str, seed: int, method: str) -> str:
    """A file name safe on every platform for one cell and method, distinct for distinct ones.

    Plain labels (:data:`_PLAIN`; ``method`` is ``<saliency>__<kind>``, each plain) make
    ``<backbone>__<strategy>__seed<seed>__<method>.png``, which reads back unambiguously since
    no plain label holds ``__``. Any other label (``res/a``, ``a__b``, non-ASCII, very long) is
    sanitised and followed by ``___`` and a hash of the exact labels: a plain name never holds
    ``___``, so no label can reproduce another's hashed name, and ``res/a`` and ``res_a`` get
    different files.
    """
    pieces = [backbone, strategy, *method.split("__")]
    raw = f"{backbone}__{strategy}__seed{seed}__{method}"
    if all(_PLAIN.fullmatch(p) for p in pieces) and len(raw) <= _MAX_PLAIN:
        return f"{raw}.png"
    exact = json.dumps([backbone, strategy, seed, method], ensure_ascii=False)
    digest = hashlib.sha256(exact.encode("utf-8")).hexdigest()[:16]
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", raw)[:150].lstrip("._-")
    return f"{readable}___{digest}.png"


def write_gallery(
    path: Path,
    images: np.ndarray,
    maps: np.ndarray,
    masks: np.ndarray | Mapping[str, np.ndarray] | None,
    labels: Sequence[Sequence[str]] | None = None,
) -> None:
    """Render and save one gallery PNG at ``path`` (see :func:`render_gallery`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    render_gallery(images, maps, masks, labels).save(path)


#: The gallery kinds, in the order reports show them (``specific`` only when a non-primary region
#: has the largest specific Δ).
GALLERY_KINDS = ("best", "worst", "random")
SPECIFIC = "specific"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class SpecificRegion:
    """The region a ``specific`` gallery ranks by (see :func:`specific_region`).

    Attributes:
        perturbation: The perturbation whose Δ records chose it (lowest off-target cost).
        region: The region with the largest specific Δ under it.
        specific: That specific Δ (raw Δ minus the control regions' Δ).
        off_target: The perturbation's mean ``control_delta`` over its regions.
    """

    perturbation: str
    region: str
    specific: float
    off_target: float


def specific_region(
    records: Sequence[Mapping[str, Any]], primary: str | None, perturbations: Sequence[str]
) -> SpecificRegion | None:
    """The region perturbation shows the model needs most, when it is not the primary region.

    From one cell's ``delta_region`` records that are ``ok``, perturb a region (not a complement
    ``outside_*``) and carry ``details.specific`` and ``details.control_delta`` (the controls of
    issue 17, item 2): first the perturbation with the lowest off-target cost — the mean
    ``control_delta`` over its regions (ties: the first in ``perturbations``, the run's order) —
    as the issue asks of the headline Δ, the same rule in every cell; then, under it, the region
    with the largest specific Δ (ties: the first record). None when no record carries the values,
    when the largest specific Δ is not above 0 (the model needs no region more than its
    controls), or when that region is ``primary`` (the best and worst galleries show it already).
    """
    usable = []
    for rec in records:
        details = rec.get("details") or {}
        region = rec.get("region")
        if (
            rec.get("metric") != "delta_region"
            or rec.get("status") != "ok"
            or not rec.get("perturbation")
            or not isinstance(region, str)
            or region.startswith("outside_")
            or details.get("complement_of") is not None
            or not _finite(details.get("specific"))
            or not _finite(details.get("control_delta"))
        ):
            continue
        usable.append(rec)
    if not usable:
        return None
    costs: dict[str, list[float]] = {}
    for rec in usable:
        costs.setdefault(str(rec["perturbation"]), []).append(
            float(rec["details"]["control_delta"])
        )
    order = {p: i for i, p in enumerate(perturbations)}
    chosen = min(costs, key=lambda p: (float(np.mean(costs[p])), order.get(p, len(order)), p))
    candidates = [r for r in usable if r["perturbation"] == chosen]
    top = max(candidates, key=lambda r: float(r["details"]["specific"]))  # first of ties
    value = float(top["details"]["specific"])
    if not value > 0 or top["region"] == primary:
        return None
    return SpecificRegion(chosen, str(top["region"]), value, float(np.mean(costs[chosen])))


def panel_lines(
    true_class: str | None,
    called: str | None,
    positive: str | None,
    probability: float | None,
    score_name: str | None,
    score: float | None,
    sample_id: str | None = None,
) -> list[str]:
    """The label above one gallery column: its title, true class, the call, p(positive), score.

    The title is the sample id (the dataset's stable, non-identifying id; never patient
    metadata), omitted when None.
    """
    lines = [] if sample_id is None else [str(sample_id)]
    lines.append(f"true {true_class if true_class is not None else '?'}")
    lines.append(f"called {called if called is not None else '?'}")
    p = "n/a" if probability is None or not math.isfinite(probability) else f"{probability:.3f}"
    lines.append(f"p({positive if positive is not None else 'positive'}) {p}")
    if score_name:
        shown = "n/a" if score is None or not math.isfinite(score) else f"{score:.3f}"
        lines.append(f"{score_name} {shown}")
    return lines


@dataclass
class GalleryPicker:
    """Choose the best, worst and random ``k`` of ``n`` explained images while maps stream by.

    Best and worst are by a per-image score (higher is better); images whose score is NaN are
    never extremes, and ties go to the earlier image so that the choice is deterministic. The
    random draw is fixed at construction from ``seed``.

    Args:
        k: Images per gallery.
        n: Images that will be offered (in order, through :meth:`add`).
        seed: Seed of the random draw.
    """

    k: int
    n: int
    seed: int
    _random: set[int] = field(init=False)
    _kept: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(init=False)
    _random_maps: dict[int, np.ndarray] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        size = min(self.k, self.n)
        self._random = {int(i) for i in rng.choice(self.n, size=size, replace=False)}
        self._kept = {}

    def add(self, start: int, maps: np.ndarray, scores: np.ndarray | None) -> None:
        """Offer the maps of images ``start .. start + len(maps) - 1`` with their scores."""
        index = np.arange(start, start + len(maps))
        for i, m in zip(index, maps, strict=True):
            if int(i) in self._random:
                self._random_maps[int(i)] = np.array(m, copy=True)
        if scores is None or self.k == 0:
            return
        scores = np.asarray(scores, dtype=np.float64)
        finite = ~np.isnan(scores)
        for kind, sign in (("best", -1.0), ("worst", 1.0)):
            old = self._kept.get(kind)
            cand_s, cand_i, cand_m = scores[finite], index[finite], maps[finite]
            if old is not None:
                cand_s = np.concatenate([old[0], cand_s])
                cand_i = np.concatenate([old[1], cand_i])
                cand_m = np.concatenate([old[2], cand_m])
            order = np.lexsort((cand_i, sign * cand_s))[: self.k]
            self._kept[kind] = (cand_s[order], cand_i[order], np.array(cand_m[order], copy=True))

    def picks(self) -> dict[str, tuple[list[int], list[float | None], np.ndarray]]:
        """Per kind: image indices, their scores (None for random without a score), maps."""
        out: dict[str, tuple[list[int], list[float | None], np.ndarray]] = {}
        for kind in ("best", "worst"):
            if kind in self._kept and len(self._kept[kind][1]):
                s, i, m = self._kept[kind]
                out[kind] = ([int(v) for v in i], [float(v) for v in s], m)
        if self._random_maps:
            chosen = sorted(self._random_maps)
            out["random"] = (
                chosen,
                [None] * len(chosen),
                np.stack([self._random_maps[i] for i in chosen]),
            )
        return out
