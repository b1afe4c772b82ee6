"""The phantom patient's maps: its anatomy rasterised as path lengths, labels and bone elements.

:func:`patient_maps` draws a patient's :class:`~xaibench.data.phantom_anatomy.Anatomy` once on
the canonical (unposed) grid; every image of the patient reuses the result. The geometry is
described in :mod:`xaibench.data.phantom_anatomy`; the rasterisation helpers and the rib,
clavicle and scapula shapes are in :mod:`xaibench.data.phantom_shapes`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from xaibench.data.phantom_anatomy import (
    _F32,
    BONE_GROUPS,
    FIELD_CM,
    REGION_BITS,
    Anatomy,
    BoneElements,
)
from xaibench.data.phantom_shapes import (
    _blobs,
    _blocks,
    _clavicles,
    _Collector,
    _Grid,
    _ribs,
    _scapulae,
    _smoothstep,
)

# --------------------------------------------------------------------------------------------
# The patient's maps
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PatientMaps:
    """A patient's anatomy rasterised on the canonical (unposed) grid.

    Attributes:
        soft: Soft-tissue path length (cm) per pixel (the body less lungs and airway).
        lung: Inflated-lung path length (cm).
        breast: Breast-tissue path length (cm).
        labels: Region bits (:data:`REGION_BITS`) per pixel, ``uint8``.
        bone: The bone elements.
        fat_fraction: Share of adipose tissue in the soft tissue.
    """

    soft: np.ndarray
    lung: np.ndarray
    breast: np.ndarray
    labels: np.ndarray
    bone: BoneElements
    fat_fraction: float


def _ellipse_r2(
    x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: float, ay: float, angle: float = 0.0
) -> np.ndarray:
    dx, dy = x - cx, y - cy
    if angle:
        cos, sin = np.cos(angle), np.sin(angle)
        dx, dy = cos * dx + sin * dy, -sin * dx + cos * dy
    return (dx / ax) ** 2 + (dy / ay) ** 2


def _chord(r2: np.ndarray, half_depth: float) -> np.ndarray:
    """Path length through an ellipsoid-like body at normalised radius^2 ``r2``."""
    return 2.0 * half_depth * np.sqrt(np.clip(1.0 - r2, 0.0, None))


def patient_maps(a: Anatomy, size: int, texture_rng: np.random.Generator) -> PatientMaps:
    """Rasterise anatomy ``a`` on the canonical ``size x size`` grid.

    Args:
        a: The patient's anatomy.
        size: Image side in pixels.
        texture_rng: The patient's stream for the trabecular texture (part of the anatomy:
            the same bone has the same trabeculae on every image).

    Returns:
        The patient's :class:`PatientMaps`.
    """
    pix = FIELD_CM / size
    coords = ((np.arange(size) + 0.5) * pix - FIELD_CM / 2).astype(_F32)
    grid = _Grid(size, pix, coords)
    x = coords[None, :].astype(_F32)
    y = coords[:, None].astype(_F32)
    w, d = a.chest_half_width, a.chest_half_depth

    # ---- body: one elliptic profile per row whose half-width follows the outline of neck,
    # shoulders (the widest part), axillae and thorax, and whose depth grows below the inlet
    nw, sw = a.neck_half_width, w + 1.2
    slope = np.power(_smoothstep((y + 19.5) / 6.0), 0.7)
    half_width = np.where(
        y < -13.5,
        nw + (sw - nw) * slope,
        np.where(
            y < -10.5,
            sw + (w - sw) * (y + 13.5) / 3.0,
            w * (1.0 - 0.04 * np.clip((y - 10.0) / 10.0, 0.0, 1.0)),
        ),
    )
    half_depth = 0.9 * nw + (d - 0.9 * nw) * _smoothstep((y + 19.0) / 9.0)
    body = 2.0 * half_depth * np.sqrt(np.clip(1.0 - ((x - a.body_cx) / half_width) ** 2, 0.0, None))

    # ---- diaphragm and lungs
    labels = np.zeros((size, size), dtype=np.uint8)
    lung = np.zeros((size, size), dtype=_F32)
    lung_mask = np.zeros((size, size), dtype=bool)
    lat_in = w - a.chest_wall
    lung_depth = 2.0 * d - 3.5
    diaphragm = np.empty((size, size), dtype=_F32)
    for k, side in enumerate((-1.0, 1.0)):
        ell = side * (x - a.body_cx)
        dome_l = 0.45 * lat_in
        curve = a.costophrenic_drop / (lat_in - dome_l) ** 2
        y_d = a.dome_y[k] + curve * (ell - dome_l) ** 2
        diaphragm = np.where(ell >= 0, y_d, diaphragm) if k else y_d
        centre = 0.5 * (a.mediastinum + lat_in) - 1.0
        top = a.apex_y[k]
        g = np.sqrt(np.clip(1.0 - ((top + a.apex_radius - y) / a.apex_radius) ** 2, 0.0, 1.0))
        g = np.where(y >= top + a.apex_radius, 1.0, g)
        med = centre - (centre - a.mediastinum) * g
        lat = centre + (lat_in - centre) * g
        inside = (ell > med) & (ell < lat) & (y > top) & (y < y_d)
        across = np.clip((ell - med) / np.maximum(lat - med, 1e-3), 0.0, 1.0)
        profile = np.power(4.0 * across * (1.0 - across), 0.35)
        vertical = 0.55 + 0.45 * _smoothstep((y - top) / 14.0)
        base = 0.5 + 0.5 * np.sqrt(np.clip((y_d - y) / 4.0, 0.0, 1.0))
        lung = np.where(inside, lung_depth * profile * vertical * base * g, lung)
        lung_mask |= inside

    # ---- heart, aortic knob, trachea: soft tissue that displaces lung
    hr2 = _ellipse_r2(
        x, y, a.body_cx + a.heart_dx, a.heart_cy, a.heart_axes[0], a.heart_axes[1], a.heart_angle
    )
    heart_mask = (hr2 < 1.0) & (y < diaphragm)
    heart_depth = np.where(heart_mask, _chord(hr2, a.heart_half_depth), 0.0)
    knob = _chord(
        _ellipse_r2(x, y, a.body_cx + a.mediastinum + 1.0, a.knob_y, a.knob_radius, a.knob_radius),
        a.knob_radius,
    )
    lung = np.maximum(lung - heart_depth - knob, 0.0)
    lung_mask &= ~heart_mask & (lung > 0.0)
    trachea = np.where(
        y < a.carina_y,
        _chord(((x - a.body_cx) / a.trachea_half_width) ** 2, a.trachea_half_width),
        0.0,
    )
    labels |= np.where(lung_mask, REGION_BITS["lungs"], 0).astype(np.uint8)
    labels |= np.where(heart_mask, REGION_BITS["heart"], 0).astype(np.uint8)
    soft = np.maximum(body - lung - trachea, 0.0)

    # ---- breasts: the inferior border is sharp, the upper part fades into the chest wall
    breast = np.zeros((size, size), dtype=_F32)
    for side in (-1.0, 1.0):
        cx = a.body_cx + side * a.breast_dx
        ry = np.where(y < a.breast_y, 1.8 * a.breast_axes[1], a.breast_axes[1])
        r2 = ((x - cx) / a.breast_axes[0]) ** 2 + ((y - a.breast_y) / ry) ** 2
        breast = np.maximum(breast, a.breast_depth * np.sqrt(np.clip(1.0 - r2, 0.0, None)))
    breast = np.where(body > 0.0, breast, 0.0)

    # ---- trabecular texture: anisotropic (vertical struts dominate), fixed per patient
    noise = texture_rng.standard_normal((size, size), dtype=_F32)
    sig = (max(0.5, 0.25 / pix), max(0.5, 0.12 / pix))
    texture = ndimage.gaussian_filter(noise, sigma=sig, truncate=3.0)
    texture /= max(float(texture.std()), 1e-6)

    # ---- bones
    bones = _Collector()
    s = a.bone_size
    spine_x = a.body_cx + a.spine_sway * np.sin(np.pi * (np.arange(13) / 12.0) + a.spine_phase)
    heights = (1.55 + 0.075 * np.arange(13)) * a.vertebra_scale
    discs = (0.45 + 0.03 * np.arange(13)) * a.vertebra_scale
    tops = a.spine_top + np.concatenate([[0.0], np.cumsum(heights + discs)[:-1]])
    vy = tops + heights / 2
    va = (1.35 + 0.06 * np.arange(13)) * s
    vb = (1.0 + 0.05 * np.arange(13)) * s
    n_v = 13
    # Manubrium and sternal body, on the midline, in the same call as the vertebral bodies.
    man_h = 2.3 * s
    body_h = 0.5 * a.sternum_length - man_h
    st_cy = np.array([a.manubrium_top + man_h, a.manubrium_top + 2 * man_h + 0.2 + body_h])
    _blocks(
        bones,
        grid,
        "spine",
        spine_x,
        vy,
        va,
        heights / 2,
        vb,
        np.full(n_v, 0.07),
        np.full(n_v, 0.05),
        np.zeros(n_v),
    )
    _blocks(
        bones,
        grid,
        "sternum",
        np.full(2, a.body_cx),
        st_cy,
        np.array([2.5, 1.45]) * s,
        np.array([man_h, body_h]),
        np.array([0.6, 0.5]) * s,
        np.full(2, 0.05),
        np.full(2, 0.05),
        np.array([0.35, 0.0]),
    )
    # Pedicles (two per vertebra, upper half of the body) and spinous processes.
    ped_x = np.concatenate([spine_x - 0.62 * va, spine_x + 0.62 * va])
    ped_y = np.tile(vy - 0.2 * heights, 2)
    _blobs(
        bones,
        grid,
        "spine",
        ped_x,
        ped_y,
        np.tile(0.22 * va, 2),
        np.tile(0.3 * heights, 2),
        np.full(2 * n_v, 0.45 * s),
        np.full(2 * n_v, 0.08),
    )
    _blobs(
        bones,
        grid,
        "spine",
        spine_x,
        vy + 0.45 * heights,
        0.15 * va,
        0.4 * heights,
        np.full(n_v, 0.6 * s),
        np.full(n_v, 0.1),
    )
    _ribs(bones, grid, a, spine_x, tops, heights, va)
    _clavicles(bones, grid, a)
    _scapulae(bones, grid, a)
    elements = bones.build(texture)

    flat = labels.reshape(-1)
    for k, group in enumerate(BONE_GROUPS):
        hit = np.zeros(size * size, dtype=bool)
        hit[elements.pix[elements.group == k]] = True
        flat |= np.where(hit, REGION_BITS[group], 0).astype(np.uint8)
    return PatientMaps(
        soft=soft.astype(_F32),
        lung=lung.astype(_F32),
        breast=breast.astype(_F32),
        labels=labels,
        bone=elements,
        fat_fraction=a.fat_fraction,
    )
