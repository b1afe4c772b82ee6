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
a patient are rasterised once (:func:`xaibench.data.phantom_maps.patient_maps`) and reused for
every image of the patient.

This module holds the anatomy itself: the constants of the field and the label map, the
per-patient parameters (:class:`Anatomy`, :func:`sample_anatomy`) and the per-image bone
cross-sections at a given BMD (:class:`BoneElements`, :func:`bone_path_lengths`). The
rasterisation helpers and the rib, clavicle and scapula shapes are in
:mod:`xaibench.data.phantom_shapes`; the patient's maps are drawn in
:mod:`xaibench.data.phantom_maps`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
