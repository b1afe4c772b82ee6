"""Rasterisation helpers and bone shapes of the phantom's chest.

Vectorised helpers that rasterise many structures of one kind at once (pixel windows, local
coordinate grids, the collector of bone elements, blocks, blobs and segments), and the
parametric shapes of the ribs, clavicles and scapulae that
:func:`xaibench.data.phantom_maps.patient_maps` draws with them. The geometry and its
coordinates are described in :mod:`xaibench.data.phantom_anatomy`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xaibench.data.phantom_anatomy import (
    _F32,
    _MIN_HALF_PX,
    BONE_GROUPS,
    FIELD_CM,
    Anatomy,
    BoneElements,
)

# --------------------------------------------------------------------------------------------
# Rasterisation helpers (vectorised over several structures of one kind)
# --------------------------------------------------------------------------------------------


@dataclass
class _Grid:
    size: int
    pix: float
    coords: np.ndarray  # pixel-centre coordinate (cm) along either axis

    def window(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pixel windows covering ``[lo, hi]`` (cm) per structure, padded to a common length.

        Returns the start index per structure, the index grid ``[N, n]`` (clipped) and its
        validity mask.
        """
        start = np.clip(np.floor((lo + FIELD_CM / 2) / self.pix - 0.5).astype(int), 0, self.size)
        stop = np.clip(np.ceil((hi + FIELD_CM / 2) / self.pix - 0.5).astype(int) + 1, 0, self.size)
        n = max(int((stop - start).max(initial=0)), 1)
        idx = start[:, None] + np.arange(n)[None, :]
        valid = idx < stop[:, None]
        return start, np.minimum(idx, self.size - 1), valid


class _Collector:
    """Accumulates bone elements of all structures."""

    def __init__(self) -> None:
        self.parts: list[dict[str, np.ndarray]] = []

    def add(self, group: str, keep: np.ndarray, pix: np.ndarray, **fields: np.ndarray) -> None:
        part = {"pix": pix[keep].astype(np.int64)}
        for name, value in fields.items():
            part[name] = np.broadcast_to(value, keep.shape)[keep].astype(_F32)
        part["group"] = np.full(part["pix"].shape, BONE_GROUPS.index(group), dtype=np.int8)
        self.parts.append(part)

    def build(self, texture: np.ndarray) -> BoneElements:
        cat = {k: np.concatenate([p[k] for p in self.parts]) for k in self.parts[0]}
        return BoneElements(
            pix=cat["pix"],
            group=cat["group"],
            dn=cat["dn"],
            dn2=cat["dn2"],
            c=cat["c"],
            tc=cat["tc"],
            q=cat["q"],
            q2=cat["q2"],
            p2=cat["p2"],
            weight=cat["weight"],
            texture=texture.reshape(-1)[cat["pix"]].astype(_F32),
        )


def _local(
    grid: _Grid, x_lo: np.ndarray, x_hi: np.ndarray, y_lo: np.ndarray, y_hi: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Local coordinate grids ``x, y`` ``[N, h, w]``, flat pixel indices and validity."""
    _, cols, cval = grid.window(x_lo, x_hi)
    _, rows, rval = grid.window(y_lo, y_hi)
    x = grid.coords[cols][:, None, :]
    y = grid.coords[rows][:, :, None]
    pix = rows[:, :, None] * grid.size + cols[:, None, :]
    valid = rval[:, :, None] & cval[:, None, :]
    return x, y, pix, valid


def _col(values: object) -> np.ndarray:
    """A per-structure parameter as ``[N, 1, 1]`` for broadcasting over local grids."""
    return np.asarray(values, dtype=_F32)[:, None, None]


def _blocks(
    out: _Collector,
    grid: _Grid,
    group: str,
    cx: np.ndarray,
    cy: np.ndarray,
    half_w: np.ndarray,
    half_h: np.ndarray,
    c: np.ndarray,
    tc: np.ndarray,
    tc_end: np.ndarray,
    taper: np.ndarray,
) -> None:
    """Rounded-rectangle bones (vertebral bodies, sternum): superellipse ``u^4 + v^4 < 1``.

    The half-width shrinks by ``taper`` (a fraction) from top to bottom (a manubrium is wider at
    the top); the cross-section across is elliptic, and the top and bottom caps (endplates) are
    cortical.
    """
    m = _MIN_HALF_PX * grid.pix
    hw_eff, hh_eff = np.maximum(half_w, m), np.maximum(half_h, m)
    x, y, pix, valid = _local(grid, cx - hw_eff, cx + hw_eff, cy - hh_eff, cy + hh_eff)
    v = (y - _col(cy)) / _col(hh_eff)
    a_row = _col(hw_eff) * (1.0 - _col(taper) * 0.5 * (v + 1.0))
    uu = (x - _col(cx)) / a_row
    shape = uu**4 + v**4
    keep = valid & (shape < 1.0)
    a_v = a_row * np.power(np.clip(1.0 - v**4, 1e-6, None), 0.25)
    dn = np.abs(x - _col(cx)) / a_v
    keep &= dn < 1.0
    mass = _col(half_w * half_h / (hw_eff * hh_eff))
    out.add(
        group,
        keep,
        pix,
        dn=dn,
        dn2=np.abs(v),
        c=_col(c),
        tc=_col(tc),
        q=_col(tc) / a_v,
        q2=_col(tc_end / hh_eff),
        p2=_col(grid.pix / hh_eff),
        weight=mass,
    )


def _blobs(
    out: _Collector,
    grid: _Grid,
    group: str,
    cx: np.ndarray,
    cy: np.ndarray,
    rx: np.ndarray,
    ry: np.ndarray,
    c: np.ndarray,
    tc: np.ndarray,
) -> None:
    """Bones seen end-on (pedicles, spinous processes, glenoid): a cortical ring, ellipse."""
    m = _MIN_HALF_PX * grid.pix
    rx_eff, ry_eff = np.maximum(rx, m), np.maximum(ry, m)
    x, y, pix, valid = _local(grid, cx - rx_eff, cx + rx_eff, cy - ry_eff, cy + ry_eff)
    rho = np.sqrt(((x - _col(cx)) / _col(rx_eff)) ** 2 + ((y - _col(cy)) / _col(ry_eff)) ** 2)
    keep = valid & (rho < 1.0)
    out.add(
        group,
        keep,
        pix,
        dn=np.zeros(1),
        dn2=rho,
        c=_col(c),
        tc=_col(tc),
        q=np.zeros(1),
        q2=_col(tc / np.minimum(rx_eff, ry_eff)),
        p2=_col(grid.pix / np.minimum(rx_eff, ry_eff)),
        weight=_col(rx * ry / (rx_eff * ry_eff)),
    )


def _segments(
    out: _Collector,
    grid: _Grid,
    group: str,
    p0: np.ndarray,
    p1: np.ndarray,
    half: np.ndarray,
    c: np.ndarray,
    tc: np.ndarray,
) -> None:
    """Straight tubes from ``p0`` to ``p1`` (``[N, 2]``, cm): the scapula's lateral border."""
    h_eff = np.maximum(half, _MIN_HALF_PX * grid.pix)
    lo, hi = np.minimum(p0, p1) - h_eff[:, None], np.maximum(p0, p1) + h_eff[:, None]
    x, y, pix, valid = _local(grid, lo[:, 0], hi[:, 0], lo[:, 1], hi[:, 1])
    dx, dy = _col(p1[:, 0] - p0[:, 0]), _col(p1[:, 1] - p0[:, 1])
    rx, ry = x - _col(p0[:, 0]), y - _col(p0[:, 1])
    t = np.clip((rx * dx + ry * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    dist = np.sqrt((rx - t * dx) ** 2 + (ry - t * dy) ** 2)
    dn = dist / _col(h_eff)
    keep = valid & (dn < 1.0)
    out.add(
        group,
        keep,
        pix,
        dn=dn,
        dn2=np.zeros(1),
        c=_col(c),
        tc=_col(tc),
        q=_col(tc / half),
        q2=np.zeros(1),
        p2=np.zeros(1),
        weight=_col(half / h_eff),
    )


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.minimum(np.maximum(x, 0.0), 1.0)
    return x * x * (3.0 - 2.0 * x)


#: Per rib (1-12): lateral reach as a share of the chest, posterior and anterior drop (cm), and
#: the distance of the costochondral junction from the midline (cm); ribs 11-12 float.
_RIB_REACH = np.array([0.55, 0.78, 0.9, 0.96, 1.0, 1.0, 1.0, 1.0, 0.98, 0.95, 0.62, 0.45])
_RIB_DROP_POST = np.array([1.0, 2.0, 2.8, 3.3, 3.6, 3.8, 4.0, 4.2, 4.3, 4.4, 3.2, 2.2])
_RIB_DROP_ANT = np.array([1.5, 2.2, 2.8, 3.2, 3.5, 3.7, 3.9, 4.0, 4.0, 4.0, 1.0, 1.0])
#: Medial descent of the anterior ribs per cm (a shear of the arc: anterior ribs run obliquely
#: down towards the sternum instead of flattening out).
_RIB_SHEAR = 0.45
_RIB_JUNCTION = np.array([3.0, 3.8, 4.8, 5.8, 6.8, 7.8, 8.6, 9.4, 10.2, 11.0, 0.0, 0.0])


def _ribs(
    out: _Collector,
    grid: _Grid,
    a: Anatomy,
    spine_x: np.ndarray,
    tops: np.ndarray,
    heights: np.ndarray,
    va: np.ndarray,
) -> None:
    """Twelve rib pairs as elliptic arcs (see the module docstring), vectorised over 24 ribs."""
    s = a.bone_size
    n = 12
    k = np.arange(n)
    lat_in = a.chest_half_width - a.chest_wall + 0.4
    off = va[:n] + 0.4
    reach = np.maximum(_RIB_REACH * a.rib_reach * (lat_in - off), 1.0)
    drop_p = _RIB_DROP_POST * a.rib_drop_post
    drop_a = _RIB_DROP_ANT * a.rib_drop_ant
    y_origin = tops[:n] + 0.3 * heights[:n]
    cy = y_origin + drop_p
    junction = _RIB_JUNCTION * a.rib_end
    end = np.where(
        k < 10,
        np.arccos(np.clip((junction - off) / reach, 0.05, 0.98)),
        -0.35 + 0.0 * k,
    )
    half_p, half_a = 0.5 * s, 0.48 * s
    half_p_k = np.where(k == 0, 0.65 * s, half_p)
    depth_p, depth_a = 0.42 * s, 0.32 * s
    cage_depth = 0.85 * a.chest_half_depth

    sides = np.repeat([-1.0, 1.0], n)
    cx = np.tile(spine_x[:n], 2) + sides * np.tile(off, 2)
    reach2, cy2 = np.tile(reach, 2), np.tile(cy, 2)
    dp2, da2, end2 = np.tile(drop_p, 2), np.tile(drop_a, 2), np.tile(end, 2)
    hp2 = np.tile(half_p_k, 2)
    h_max = max(half_a, float(hp2.max()), _MIN_HALF_PX * grid.pix)
    far = cx + sides * reach2
    x_lo, x_hi = np.minimum(cx, far) - h_max, np.maximum(cx, far) + h_max
    y_lo = cy2 - dp2 - h_max
    shear = _RIB_SHEAR * a.rib_drop_ant
    pos_end = np.maximum(end2, 0.0)
    y_hi = cy2 + da2 * np.sin(pos_end) + shear * reach2 * (1.0 - np.cos(pos_end)) + h_max
    x, y, pix, valid = _local(grid, x_lo, x_hi, y_lo, y_hi)

    # Distance to the arc on the whole window, then everything else only near the arc.
    lateral = _col(sides) * (x - _col(cx))
    ex = lateral / _col(reach2)
    anterior = y >= _col(cy2)
    b = np.where(anterior, _col(da2), _col(dp2))
    sh = np.where(anterior, _F32(shear), _F32(0.0))
    ey = (y - _col(cy2) - sh * (_col(reach2) - lateral)) / b
    rho = np.sqrt(ex * ex + ey * ey) + _F32(1e-9)
    grad = np.sqrt((ex / _col(reach2) + ey * sh / b) ** 2 + (ey / b) ** 2) / rho
    dist = np.abs(rho - 1.0) / grad
    near = valid & (dist < h_max)
    rib = np.broadcast_to(np.arange(2 * n)[:, None, None], near.shape)[near]
    ex, ey, dist, pix = (np.broadcast_to(v, near.shape)[near] for v in (ex, ey, dist, pix))

    phi = np.arctan2(ey, ex)
    blend = _smoothstep((phi + 0.2) / 0.8)  # 0 posterior, 1 anterior
    half = hp2[rib] + (half_a - hp2[rib]) * blend
    depth = depth_p + (depth_a - depth_p) * blend
    tc = s * (0.12 - 0.03 * blend)
    h_eff = np.maximum(half, _MIN_HALF_PX * grid.pix)
    dn = dist / h_eff
    keep = (phi >= -np.pi / 2) & (phi <= end2[rib]) & (dn < 1.0)
    sin_phi = np.abs(np.sin(phi))
    rr = reach2[rib]
    oblique = np.minimum(
        np.sqrt(rr**2 * sin_phi**2 + cage_depth**2 * (1 - sin_phi**2)) / (rr * sin_phi + 1e-6),
        2.0,
    )
    fade = np.where(end2[rib] > 0, _smoothstep((end2[rib] - phi) / 0.3), 1.0)  # cartilage
    out.add(
        "ribs",
        keep,
        pix,
        dn=dn,
        dn2=np.zeros(1),
        c=depth,
        tc=tc,
        q=tc / half,
        q2=np.zeros(1),
        p2=np.zeros(1),
        weight=(half / h_eff) * oblique * (0.35 + 0.65 * fade),
    )


def _clavicles(out: _Collector, grid: _Grid, a: Anatomy) -> None:
    """Two S-shaped clavicles, from 1.8 cm off the midline to the acromion."""
    s = a.bone_size
    medial = 1.8
    length = a.chest_half_width - 1.2 - medial
    sides = np.array([-1.0, 1.0])
    x_med = a.body_cx + sides * medial
    x_lat = a.body_cx + sides * (medial + length)
    h_max = max(0.65 * s, _MIN_HALF_PX * grid.pix)
    y_lo = np.full(2, min(a.clavicle_medial_y, a.clavicle_lateral_y) - a.clavicle_bend - h_max)
    y_hi = np.full(2, max(a.clavicle_medial_y, a.clavicle_lateral_y) + a.clavicle_bend + h_max)
    x, y, pix, valid = _local(
        grid, np.minimum(x_med, x_lat) - h_max, np.maximum(x_med, x_lat) + h_max, y_lo, y_hi
    )
    v = (_col(sides) * (x - a.body_cx) - medial) / length
    rise = a.clavicle_lateral_y - a.clavicle_medial_y
    centre = a.clavicle_medial_y + rise * v + a.clavicle_bend * np.sin(2.0 * np.pi * v)
    slope = (rise + a.clavicle_bend * 2.0 * np.pi * np.cos(2.0 * np.pi * v)) / length
    dist = np.abs(y - centre) / np.sqrt(1.0 + slope * slope)
    half = (0.65 - 0.15 * np.clip(v, 0.0, 1.0)) * s
    h_eff = np.maximum(half, _MIN_HALF_PX * grid.pix)
    dn = dist / h_eff
    keep = valid & (v >= 0.0) & (v <= 1.0) & (dn < 1.0)
    out.add(
        "clavicles",
        keep,
        pix,
        dn=dn,
        dn2=np.zeros(1),
        c=half,
        tc=np.full(1, 0.15 * s),
        q=0.15 * s / half,
        q2=np.zeros(1),
        p2=np.zeros(1),
        weight=half / h_eff,
    )


def _scapulae(out: _Collector, grid: _Grid, a: Anatomy) -> None:
    """Two scapulae: a thin triangular blade, a thick lateral border and the glenoid."""
    s = a.bone_size
    w = a.chest_half_width
    sides = np.array([-1.0, 1.0])
    sup = np.stack([a.body_cx + sides * (0.72 * w + a.scapula_dx), np.full(2, a.scapula_top)], 1)
    inf = np.stack([a.body_cx + sides * (0.78 * w + a.scapula_dx), np.full(2, a.scapula_bottom)], 1)
    gle = np.stack([a.body_cx + sides * (w + 0.1), np.full(2, a.scapula_top + 2.6)], 1)
    # Blade: inside the triangle, thinning towards its borders.
    verts = np.stack([sup, inf, gle], 1)  # [2, 3, 2]
    lo, hi = verts.min(1), verts.max(1)
    x, y, pix, valid = _local(grid, lo[:, 0], hi[:, 0], lo[:, 1], hi[:, 1])
    edge_min = np.full((x.shape[0], y.shape[1], x.shape[2]), np.inf)
    for i in range(3):
        p, q = verts[:, i], verts[:, (i + 1) % 3]
        r = verts[:, (i + 2) % 3]
        nx, ny = -(q[:, 1] - p[:, 1]), q[:, 0] - p[:, 0]
        norm = np.sqrt(nx * nx + ny * ny)
        orient = np.sign((r[:, 0] - p[:, 0]) * nx + (r[:, 1] - p[:, 1]) * ny)
        dist = (
            (x - _col(p[:, 0])) * _col(nx * orient) + (y - _col(p[:, 1])) * _col(ny * orient)
        ) / _col(norm)
        edge_min = np.minimum(edge_min, dist)
    keep = valid & (edge_min > 0.0)
    out.add(
        "scapulae",
        keep,
        pix,
        dn=np.zeros(1),
        dn2=np.zeros(1),
        c=np.full(1, 0.17 * s),
        tc=np.full(1, 0.07 * s),
        q=np.zeros(1),
        q2=np.zeros(1),
        p2=np.zeros(1),
        weight=np.sqrt(np.clip(edge_min / 0.6, 0.0, 1.0)),
    )
    _segments(
        out,
        grid,
        "scapulae",
        gle,
        inf,
        np.full(2, 0.45 * s),
        np.full(2, 0.5 * s),
        np.full(2, 0.12 * s),
    )
    _blobs(
        out,
        grid,
        "scapulae",
        gle[:, 0],
        gle[:, 1],
        np.full(2, 1.1 * s),
        np.full(2, 1.7 * s),
        np.full(2, 1.0 * s),
        np.full(2, 0.15 * s),
    )
