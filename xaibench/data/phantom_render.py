"""Rendering of one phantom image: per-image acquisition, pose, marker and physics.

:func:`sample_acquisition` draws an image's positioning, energy, exposure and display window;
:func:`render_image` poses a patient's maps, adds the bone at the image's BMD and the shortcut
marker, and runs the physics of :mod:`xaibench.data.phantom_physics`. The whole phantom is
described in :mod:`xaibench.data.phantom`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from xaibench.data.phantom_anatomy import (
    BONE_GROUPS,
    FIELD_CM,
    REGION_BITS,
    bone_path_lengths,
    trabecular_bvtv,
    trabecular_heterogeneity,
)
from xaibench.data.phantom_cohort import MARKER_BOX_CM, MARKER_LEAD_MM, MARKER_SIDE_CM, bmd_ratio
from xaibench.data.phantom_maps import PatientMaps
from xaibench.data.phantom_physics import (
    attenuation_coefficients,
    detector_blur,
    display_window,
    log_transform,
    quantize16,
    quantum_noise,
)

# --------------------------------------------------------------------------------------------
# Acquisition
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Acquisition:
    """Per-image acquisition parameters (independent of anatomy and T-score).

    Attributes:
        shift: Patient translation ``(dx, dy)`` on the detector, cm.
        angle: In-plane rotation of the patient, radians.
        scale: Magnification (distance to the detector).
        inspiration: Extra vertical scale of the anatomy (depth of inspiration).
        energy_kev: Effective photon energy (tube voltage and filtration), keV.
        fluence: Photons per cm^2 reaching the detector unattenuated.
        level: Centre of the display tone curve (line-integral units).
        width: Spread of the display tone curve.
        marker_shift: Offset of the marker box from its nominal place ``(dx, dy)``, cm.
    """

    shift: tuple[float, float]
    angle: float
    scale: float
    inspiration: float
    energy_kev: float
    fluence: float
    level: float
    width: float
    marker_shift: tuple[float, float]


def sample_acquisition(rng: np.random.Generator) -> Acquisition:
    """Draw one image's acquisition parameters.

    Positioning differences between repeat films are small (clipped at about 0.7 cm, 1.5
    degrees, 2.5% magnification and 3% inspiration), as between two PA films of one patient.

    Args:
        rng: The image's stream.

    Returns:
        The image's :class:`Acquisition`.
    """
    n = rng.normal
    u = rng.uniform
    return Acquisition(
        shift=(float(np.clip(n(0.0, 0.35), -0.7, 0.7)), float(np.clip(n(0.0, 0.35), -0.7, 0.7))),
        angle=float(np.deg2rad(np.clip(n(0.0, 0.7), -1.5, 1.5))),
        scale=float(np.clip(1.0 + n(0.0, 0.01), 0.975, 1.025)),
        inspiration=float(np.clip(1.0 + n(0.0, 0.012), 0.97, 1.03)),
        energy_kev=float(u(57.0, 63.0)),
        fluence=float(np.exp(u(np.log(1.5e6), np.log(6e6)))),
        level=float(u(3.05, 3.35)),
        width=float(u(0.95, 1.05)),
        marker_shift=(float(u(-0.5, 0.5)), float(u(-0.05, 0.05))),
    )


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------

#: Electronic noise of the detector, in photon-equivalent counts per pixel.
ELECTRONIC_NOISE: float = 3.0
#: Standard deviation of the detector's point-spread function, cm (a CsI scintillator).
DETECTOR_PSF_CM: float = 0.015


def _pose_transform(size: int, acq: Acquisition) -> tuple[np.ndarray, np.ndarray]:
    """Matrix and offset mapping output (row, col) to canonical (row, col) under the pose."""
    pix = FIELD_CM / size
    centre = (size - 1) / 2.0
    cos, sin = np.cos(acq.angle), np.sin(acq.angle)
    # Image (x, y) = scale * R(angle) * diag(1, inspiration) * anatomy (x, y) + shift, about
    # the field centre; invert it, in (row, col) = (y, x) order.
    forward = acq.scale * np.array([[cos, -sin], [sin, cos]]) @ np.diag([1.0, acq.inspiration])
    inverse_xy = np.linalg.inv(forward)
    inverse = inverse_xy[::-1, ::-1]  # (x, y) -> (row, col) order
    shift_rc = np.array([acq.shift[1], acq.shift[0]]) / pix
    offset = centre - inverse @ (np.array([centre, centre]) + shift_rc)
    return inverse, offset


def _box_coverage(coords: np.ndarray, pix: float, lo: float, hi: float) -> np.ndarray:
    """Share of each pixel's extent along one axis inside ``[lo, hi]``."""
    return (
        np.clip(np.minimum(coords + pix / 2, hi) - np.maximum(coords - pix / 2, lo), 0, pix) / pix
    )


def marker_coverage(size: int, acq: Acquisition) -> tuple[np.ndarray, np.ndarray]:
    """Return the shortcut box mask and the lead marker's per-pixel area coverage.

    The box is fixed on the detector (every pixel that overlaps :data:`MARKER_BOX_CM`, so the
    marker's blur halo is inside it too); the marker, a square of :data:`MARKER_SIDE_CM`, sits
    in it with a small per-image offset. Coverage is exact pixel-area overlap, so the marker
    keeps its lead mass at every size.
    """
    pix = FIELD_CM / size
    coords = (np.arange(size) + 0.5) * pix - FIELD_CM / 2
    bx, by, bw, bh = MARKER_BOX_CM
    # Every pixel that overlaps the box, so the marker's blur halo stays inside the region.
    box = (_box_coverage(coords, pix, by, by + bh)[:, None] > 0) & (
        _box_coverage(coords, pix, bx, bx + bw)[None, :] > 0
    )
    side = MARKER_SIDE_CM
    x0 = bx + 0.5 * (bw - side) + acq.marker_shift[0]
    y0 = by + 0.5 * (bh - side) + acq.marker_shift[1]
    glyph = np.outer(
        _box_coverage(coords, pix, y0, y0 + side), _box_coverage(coords, pix, x0, x0 + side)
    )
    return box, glyph.astype(np.float32)


def render_image(
    maps: PatientMaps,
    acq: Acquisition,
    bone_t_score: float,
    marker_class: int | None,
    standard_normal: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one radiograph of a patient.

    Args:
        maps: The patient's canonical maps.
        acq: The image's acquisition.
        bone_t_score: T-score the bone is rendered with.
        marker_class: Class whose lead marker is drawn, or ``None`` for no marker.
        standard_normal: ``[S, S]`` standard-normal field for the quantum noise.

    Returns:
        The 16-bit image ``[S, S]`` (``uint16``) and its region bits (``uint8``).
    """
    size = maps.soft.shape[0]
    pix = FIELD_CM / size
    mu = attenuation_coefficients(acq.energy_kev)
    f = maps.fat_fraction
    mu_soft = (1.0 - f) * mu["soft_tissue"] + f * mu["adipose"]
    attenuation = mu_soft * maps.soft + mu["lung"] * maps.lung + mu["breast"] * maps.breast

    ratio = bmd_ratio(bone_t_score)
    cortical, trabecular = bone_path_lengths(maps.bone, ratio)
    bvtv = trabecular_bvtv(ratio)
    texture = np.maximum(1.0 + trabecular_heterogeneity(ratio) * maps.bone.texture, 0.0)
    excess = (mu["cortical_bone"] - mu_soft) * (cortical + bvtv * trabecular * texture)
    attenuation += (
        np.bincount(maps.bone.pix, weights=excess, minlength=size * size)
        .reshape(size, size)
        .astype(np.float32)
    )

    matrix, offset = _pose_transform(size, acq)
    attenuation = ndimage.affine_transform(
        attenuation, matrix, offset, order=1, mode="nearest", prefilter=False
    )
    labels = ndimage.affine_transform(maps.labels, matrix, offset, order=0, mode="nearest")

    box, glyph = marker_coverage(size, acq)
    bone_bits = sum(REGION_BITS[g] for g in BONE_GROUPS)
    box &= (labels & bone_bits) == 0  # disjoint from bone even where thin bones are drawn thick
    labels |= np.where(box, REGION_BITS["shortcut"], 0).astype(np.uint8)
    if marker_class is not None:
        attenuation += mu["lead"] * 0.1 * MARKER_LEAD_MM[marker_class] * glyph

    i0 = acq.fluence * pix * pix
    expected = i0 * np.exp(-attenuation)
    counts = quantum_noise(expected, standard_normal, ELECTRONIC_NOISE)
    counts = detector_blur(counts, max(0.5, DETECTOR_PSF_CM / pix))
    shown = display_window(log_transform(counts, i0), acq.level, acq.width)
    return quantize16(shown), labels
