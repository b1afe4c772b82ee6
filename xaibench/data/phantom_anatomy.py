"""Geometry of the phantom's chest: per-patient anatomy as tissue path-length maps and masks.

A frontal (PA) chest radiograph is a projection, so the phantom describes each patient by what a
ray crosses rather than by a 3D volume: for every pixel, the path length (cm) through soft
tissue, lung, breast and each bone. Every structure is a parametric shape with a known
cross-section, so the path length has a closed form and the masks are exact.

Coordinates are centimetres on a 40 cm x 40 cm field (a 43 cm detector less its margins), ``x``
to the image right (the patient's left, as a PA film is read), ``y`` downwards, origin at the
field centre. Structures, with the mask each belongs to:

* **Soft tissue**: a thorax (elliptic cylinder of half-width ``W`` and half-depth ``D``, rounded
  at the thoracic inlet), the neck and the shoulders; a fat fraction per patient.
* **Breasts** (the study's cohort is female): two ellipsoids of breast tissue over the lower
  lung fields, of patient-specific size, with the sharp inferior border of a breast shadow.
* ``lungs``: two lungs with rounded apices, a lateral border inside the ribs, a medial border at
  the mediastinum and a base on the diaphragm, whose two domes (the right one higher) are
  parabolas ending in sharp costophrenic angles; the trachea is an air column down to the carina
  and the aortic knob and heart displace lung.
* ``heart``: a tilted ellipse, two thirds to the patient's left, resting on the diaphragm.
* ``spine``: vertebral bodies T1-L1 (rounded rectangles growing caudally, disc gaps, cortical
  shell and endplates over trabecular bone), the pedicles (cortical rings seen end-on) and the
  spinous processes.
* ``ribs``: twelve pairs. Each rib is an elliptic arc in the image: the *posterior* part leaves
  the spine at its vertebra, runs laterally and gently downwards to the chest wall, turns, and
  the *anterior* part runs medially and more steeply down to the costochondral junction, where
  it fades (costal cartilage is nearly radiolucent). Ribs 11 and 12 float (posterior only).
  Where the rib runs along the beam (laterally) its path length grows, so rib margins at the
  chest wall look denser, as on a film.
* ``clavicles``: S-shaped tubes from the sternal end up to the acromial end.
* ``scapulae``: a thin triangular blade over the upper lateral chest, with a thick lateral
  border and the glenoid.
* ``sternum``: manubrium and body, over the spine (faint on a PA film, as in reality).

Bones are tubes or plates with an elliptic cross-section: an outer chord of half-depth ``c``
with a cortical shell of thickness ``t_c`` around a trabecular core. Bone mineral density enters
only here, per image, through :func:`bone_path_lengths`: the cortical thickness scales with the
BMD ratio ``r = BMD / BMD_young`` and the trabecular bone volume fraction with ``r**2``
(trabecular bone is lost faster than areal BMD suggests), while the trabecular texture of the
patient becomes more heterogeneous as ``r`` falls. Outer bone dimensions do not depend on BMD.

Everything patient-specific comes from the anatomy stream of :func:`sample_anatomy`; the maps of
a patient are rasterised once (:func:`patient_maps`) and reused for every image of the patient.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: Side of the (square) field of view in cm.
FIELD_CM: float = 40.0

#: Region bits of the label map, one per region mask (``bone`` is their bone subset).
REGION_BITS: dict[str, int] = {
    "spine": 1,
    "ribs": 2,
    "clavicles": 4,
    "scapulae": 8,
    "sternum": 16,
    "lungs": 32,
    "heart": 64,
    "shortcut": 128,
}
#: The bone groups, in bit order.
BONE_GROUPS: tuple[str, ...] = ("spine", "ribs", "clavicles", "scapulae", "sternum")

#: Trabecular bone volume fraction (BV/TV) at the young-adult reference BMD (``r = 1``); about
#: the value of a healthy young vertebral body.
REFERENCE_BVTV: float = 0.22

#: Smallest rasterised half-thickness of a bone, in pixels: thinner bones are drawn this thick
#: with their attenuation spread out so their mass is kept, so no mask is ever empty.
_MIN_HALF_PX = 0.6

_F32 = np.float32


def trabecular_bvtv(ratio: float) -> float:
    """Return the trabecular bone volume fraction at BMD ratio ``ratio = BMD / BMD_young``."""
    return REFERENCE_BVTV * ratio**2


def trabecular_heterogeneity(ratio: float) -> float:
    """Return the relative contrast of the trabecular texture at BMD ratio ``ratio``.

    Osteoporotic trabecular bone loses its thin horizontal struts first and looks coarser and
    more heterogeneous; the contrast rises from 0.15 (``r >= 1``) to 0.45 (``r = 0.3``).
    """
    return float(np.clip(0.15 + 0.43 * (1.0 - ratio), 0.15, 0.45))


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Anatomy:
    """One patient's shape and tissue parameters (cm, radians), drawn independently of BMD.

    Per-side values are ``(patient's right = image left, patient's left = image right)``.
    """

    body_cx: float
    chest_half_width: float
    chest_half_depth: float
    neck_half_width: float
    fat_fraction: float
    chest_wall: float
    mediastinum: float
    apex_y: tuple[float, float]
    apex_radius: float
    dome_y: tuple[float, float]
    costophrenic_drop: float
    heart_dx: float
    heart_cy: float
    heart_axes: tuple[float, float]
    heart_angle: float
    heart_half_depth: float
    knob_y: float
    knob_radius: float
    carina_y: float
    trachea_half_width: float
    breast_dx: float
    breast_y: float
    breast_axes: tuple[float, float]
    breast_depth: float
    spine_top: float
    spine_sway: float
    spine_phase: float
    vertebra_scale: float
    bone_size: float
    rib_reach: float
    rib_drop_post: float
    rib_drop_ant: float
    rib_end: float
    clavicle_medial_y: float
    clavicle_lateral_y: float
    clavicle_bend: float
    scapula_dx: float
    scapula_top: float
    scapula_bottom: float
    manubrium_top: float
    sternum_length: float


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw one patient's anatomy from a stream that never sees the T-score.

    Ranges are those of adult women on a PA chest film (chest width 26-33 cm, AP depth
    17-23 cm, cardiothoracic ratio about 0.4-0.5, right hemidiaphragm 1-2.5 cm higher).

    Args:
        rng: The patient's anatomy stream.

    Returns:
        The patient's :class:`Anatomy`.
    """
    u = rng.uniform
    width = u(13.0, 16.5)
    dome_left = u(5.0, 8.0)
    apex = u(-14.2, -12.6)
    return Anatomy(
        body_cx=float(rng.normal(0.0, 0.3)),
        chest_half_width=width,
        chest_half_depth=u(8.5, 11.5),
        neck_half_width=u(5.0, 6.0),
        fat_fraction=u(0.15, 0.45),
        chest_wall=u(1.3, 1.9),
        mediastinum=u(2.0, 2.6),
        apex_y=(apex + u(-0.4, 0.4), apex + u(-0.4, 0.4)),
        apex_radius=u(7.0, 9.0),
        dome_y=(dome_left - u(1.0, 2.5), dome_left),
        costophrenic_drop=u(3.5, 5.5),
        heart_dx=u(1.8, 3.0),
        heart_cy=dome_left - u(2.2, 3.2),
        heart_axes=(u(6.0, 7.2), u(4.3, 5.2)),
        heart_angle=float(np.deg2rad(u(18.0, 30.0))),
        heart_half_depth=u(4.5, 5.5),
        knob_y=u(-7.5, -5.8),
        knob_radius=u(1.5, 2.0),
        carina_y=u(-7.0, -5.0),
        trachea_half_width=u(0.8, 1.0),
        breast_dx=width * u(0.45, 0.60),
        breast_y=u(2.0, 6.0),
        breast_axes=(u(5.0, 7.5), u(4.5, 6.5)),
        breast_depth=u(1.0, 5.0),
        spine_top=u(-18.2, -16.8),
        spine_sway=u(-0.35, 0.35),
        spine_phase=u(0.0, 2.0 * np.pi),
        vertebra_scale=u(0.93, 1.05),
        bone_size=u(0.95, 1.05),
        rib_reach=u(0.96, 1.02),
        rib_drop_post=u(0.85, 1.15),
        rib_drop_ant=u(0.85, 1.15),
        rib_end=u(0.9, 1.1),
        clavicle_medial_y=u(-14.3, -13.0),
        clavicle_lateral_y=u(-15.3, -14.0),
        clavicle_bend=u(0.2, 0.5),
        scapula_dx=u(-0.6, 0.6),
        scapula_top=u(-15.0, -14.0),
        scapula_bottom=u(-4.0, -2.0),
        manubrium_top=u(-13.5, -12.5),
        sternum_length=u(9.5, 11.5),
    )


# --------------------------------------------------------------------------------------------
# Bone elements: every bone pixel's cross-section, evaluated per image at its BMD
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BoneElements:
    """Per bone pixel (a pixel covered by several bones appears once per bone), flat arrays.

    The cross-section is an ellipse of half-depth ``c`` along the beam with a cortical shell of
    reference thickness ``tc``. ``dn`` is the normalised offset from the bone's axis across it
    (0 on the axis, 1 at the edge) and ``q = tc / half-width``; ``dn2`` and ``q2`` are the same
    along a second axis whose end caps are also cortical (vertebral endplates, pedicle rings).
    ``weight`` scales both chords (obliquity, mass kept when drawn thicker, fading ends) and
    ``texture`` is the patient's trabecular texture at the pixel.

    Attributes:
        pix: Flat pixel index.
        group: Index into :data:`BONE_GROUPS`.
        dn: Normalised offset across the bone, in [0, 1).
        dn2: Normalised offset along the second axis, in [0, 1) (0 when there is none).
        c: Half-depth of the outer cross-section along the beam, cm.
        tc: Cortical thickness at the reference BMD, cm.
        q: ``tc`` over the half-width across the bone.
        q2: Cortical thickness over the half-width along the second axis.
        p2: Pixel size in the units of ``dn2``: an end cap thinner than a pixel covers only
            that share of the outermost pixel (partial volume), instead of all or nothing.
        weight: Multiplier of both chords.
        texture: Trabecular texture (zero mean, unit variance over the image).
    """

    pix: np.ndarray
    group: np.ndarray
    dn: np.ndarray
    dn2: np.ndarray
    c: np.ndarray
    tc: np.ndarray
    q: np.ndarray
    q2: np.ndarray
    p2: np.ndarray
    weight: np.ndarray
    texture: np.ndarray


def bone_path_lengths(elements: BoneElements, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Return cortical and trabecular path lengths (cm) per bone element at BMD ratio ``ratio``.

    The outer chord of an elliptic cross-section at offset ``dn`` is ``2 c sqrt(1 - dn^2)``; the
    marrow cavity is the ellipse shrunk by the cortical thickness ``tc * ratio``, so the cortical
    path is the outer chord minus the inner one and the trabecular path is the inner chord.

    Args:
        elements: The patient's bone elements.
        ratio: ``BMD / BMD_young`` of the image.

    Returns:
        ``(cortical, trabecular)`` path lengths, one per element.
    """
    e = elements
    tc = e.tc * _F32(ratio)
    lim = 1.0 - e.q * _F32(ratio)
    outer = 2.0 * e.c * np.sqrt(np.maximum(1.0 - e.dn * e.dn, 0.0))
    rel = e.dn / np.maximum(lim, _F32(1e-3))
    inner = np.where(
        e.dn < lim,
        2.0 * np.maximum(e.c - tc, 0.0) * np.sqrt(np.maximum(1.0 - rel * rel, 0.0)),
        0.0,
    )
    cap = e.q2 * _F32(ratio)
    in_cap = e.dn2 >= 1.0 - np.maximum(cap, e.p2)
    cap_share = np.minimum(cap / np.maximum(e.p2, cap + 1e-9), 1.0)
    inner = np.where(in_cap, inner * (1.0 - cap_share), inner)
    inner = np.minimum(inner, outer)
    return ((outer - inner) * e.weight).astype(_F32), (inner * e.weight).astype(_F32)


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
