"""``phantom``: a built-in synthetic chest-radiograph dataset whose class signal is only in bone.

Real chest X-rays with DXA T-scores are private, yet every part of the benchmark (training,
saliency, perturbation, the bone-overlap scores) must be runnable and testable anywhere. The
phantom provides images that *look* like a frontal chest radiograph, carry exact region masks, and
encode bone mineral density **only** in bone pixels — so an explanation that points at the lungs
is wrong by construction, and perturbing bone must destroy a good model's prediction.

The generative model (phantom v1) is deliberately simple and fast (pure vectorised numpy):

1. **Cohort** (:func:`cohort_table`). Patients are drawn one at a time from their own random
   stream. Each patient gets a WHO class from ``class_shares``, a T-score from the normal
   ``N(-0.82, 1.02)`` truncated to that class's interval (that normal reproduces the reference
   cohort's 57/38/5 shares), and ``1 + Poisson(images_per_patient - 1)`` images; repeat images
   carry the patient's T-score plus a tiny jitter (kept inside the class, so a patient's label
   never changes between visits). BMD is a linear function of T (illustrative constants below).
2. **Anatomy** (:func:`sample_anatomy`). Per patient: body width and soft-tissue thickness, two
   lungs, the heart, the spine (vertebral bodies separated by disc gaps), 9-10 rib pairs and two
   clavicles, each a parametric shape with patient-specific size, position and curvature. A bone
   thickness factor (about ±7%) makes bone brightness vary between patients of equal BMD.
3. **Acquisition** (:func:`sample_acquisition`). Per image: a small pose change (shift, scale,
   rotation of about 1%), an exposure gain (±8%), a noise level, a trabecular-texture seed.
4. **Shapes** (:func:`anatomy_shapes`). Each structure is rasterised on the pixel grid as a mask
   and a thickness profile; the masks are the dataset's region masks (before any blur).
5. **Rendering** (:func:`render_radiograph`). An attenuation (line-integral) map is composed from
   the profiles — soft tissue, minus air in the lungs, plus the heart, plus bone — and shown as
   ``1 - exp(-attenuation)`` (bright = attenuating), then blurred (detector), scaled by the gain,
   and given gaussian noise.

Only the bone term depends on the T-score: bone attenuation scales with ``exp(0.2 * T)`` times the
patient's bone thickness factor, and the trabecular texture inside vertebral bodies gets coarser
contrast as BMD falls. Soft tissue, lungs, heart, pose, exposure and noise are drawn from random
streams that never see the T-score, so they are statistically independent of it.

Everything is deterministic in ``(seed, options, index)``: every patient and image has its own
:func:`numpy.random.default_rng` stream keyed by ``[seed, patient, ...]``, so a sample does not
depend on access order, on which other samples were read, or (for a given patient) on
``n_images``.

A later version, **phantom v2**, is meant to make the images physically realistic: Beer-Lambert
attenuation with energy-dependent coefficients of bone, soft tissue and air, anatomical shapes
fitted to real radiographs, cited reference BMD values, and a realistic detector. The split into
cohort / anatomy / acquisition / shapes / rendering functions is there so v2 can replace one stage
at a time; bump :attr:`PhantomDataset.version` whenever images change.
"""

from __future__ import annotations

import hashlib
import json
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from pydantic import ConfigDict, Field, PrivateAttr, field_validator
from scipy import ndimage, special

from xaibench.data.base import Dataset, Sample
from xaibench.data.who import (
    NORMAL_AT_OR_ABOVE,
    OSTEOPOROSIS_AT_OR_BELOW,
    WHO_CLASSES,
)

if TYPE_CHECKING:
    import pandas as pd

# --------------------------------------------------------------------------------------------
# Cohort constants
# --------------------------------------------------------------------------------------------

#: Young-adult mean lumbar-spine BMD in g/cm^2, used as ``BMD = mean + T * sd``. ILLUSTRATIVE
#: values of the right order for DXA of the lumbar spine in women; phantom v2 replaces them with a
#: cited reference population.
YOUNG_ADULT_BMD_MEAN: float = 1.05
#: Young-adult standard deviation of lumbar-spine BMD in g/cm^2 (illustrative, see above).
YOUNG_ADULT_BMD_SD: float = 0.11

#: Mean and standard deviation of the cohort's T-score distribution. Truncating this normal at
#: -1 and -2.5 gives about 57% normal, 38% osteopenia and 5% osteoporosis, the reference shares.
T_SCORE_MEAN: float = -0.82
T_SCORE_SD: float = 1.02

#: WHO classes in label order, with the T-score interval each covers. Osteopenia is the open
#: interval (-2.5, -1); the outer limits (3 and -5) only bound the truncated normal.
CLASS_NAMES: tuple[str, str, str] = WHO_CLASSES
CLASS_T_RANGES: tuple[tuple[float, float], ...] = (
    (NORMAL_AT_OR_ABOVE, 3.0),
    (
        float(np.nextafter(OSTEOPOROSIS_AT_OR_BELOW, 0.0)),
        float(np.nextafter(NORMAL_AT_OR_ABOVE, -np.inf)),
    ),
    (-5.0, OSTEOPOROSIS_AT_OR_BELOW),
)

#: Standard deviation of the T-score jitter of a patient's repeat images (measurement noise).
REPEAT_T_JITTER_SD: float = 0.03

#: Bone attenuation scales with ``exp(BONE_DENSITY_SLOPE * T)``: about 0.56 at T = -2.9 against
#: 1.0 at T = 0, strong enough for a small CNN, weak next to the ±8% exposure gain for a model
#: that only looks at global brightness.
BONE_DENSITY_SLOPE: float = 0.2

# Random-stream tags: each stream is ``default_rng([seed, patient, (visit,) tag])``.
_STREAM_COHORT = 0
_STREAM_ANATOMY = 1
_STREAM_IMAGE = 2


def bmd_of_t_score(t_score: float | np.ndarray) -> np.ndarray:
    """Return the BMD (g/cm^2) corresponding to T-scores under the illustrative reference."""
    return YOUNG_ADULT_BMD_MEAN + np.asarray(t_score, dtype=float) * YOUNG_ADULT_BMD_SD


def _truncated_normal(u: float, low: float, high: float) -> float:
    """Map a uniform ``u`` in [0, 1) to the cohort normal truncated to ``[low, high]``.

    Inverse-CDF sampling is exact, needs one uniform per draw and is far cheaper than
    ``scipy.stats.truncnorm`` per call.
    """
    a = special.ndtr((low - T_SCORE_MEAN) / T_SCORE_SD)
    b = special.ndtr((high - T_SCORE_MEAN) / T_SCORE_SD)
    t = T_SCORE_MEAN + T_SCORE_SD * float(special.ndtri(a + u * (b - a)))
    return min(max(t, low), high)


@dataclass(frozen=True)
class Cohort:
    """The cheap per-image description of the phantom cohort (no pixels).

    Attributes:
        patient: Patient index of every image.
        visit: Visit number (0, 1, ...) of every image within its patient.
        t_score: T-score of every image.
    """

    patient: np.ndarray
    visit: np.ndarray
    t_score: np.ndarray


def cohort_table(
    n_images: int,
    seed: int,
    class_shares: tuple[float, float, float],
    images_per_patient: float,
) -> Cohort:
    """Draw patients until ``n_images`` images exist; the last patient may lose visits.

    Each patient's draws come from its own stream, and all of them (class, T, number of visits,
    jitter of every visit) are drawn whether or not they are used, so patient ``p`` is the same
    person in every dataset with the same seed and shares, whatever ``n_images`` is.

    Args:
        n_images: Number of images.
        seed: Dataset seed.
        class_shares: Probabilities of normal, osteopenia and osteoporosis per patient.
        images_per_patient: Mean number of images per patient (>= 1).

    Returns:
        The per-image patient index, visit and T-score.
    """
    cumulative = np.cumsum(class_shares)
    extra_visits = images_per_patient - 1.0
    patients: list[int] = []
    visits: list[int] = []
    t_scores: list[float] = []
    patient = 0
    while len(patients) < n_images:
        rng = np.random.default_rng([seed, patient, _STREAM_COHORT])
        label = min(int(np.searchsorted(cumulative, rng.random(), side="right")), 2)
        while class_shares[label] <= 0:  # float round-off at the top of the cumsum
            label -= 1
        low, high = CLASS_T_RANGES[label]
        t_patient = _truncated_normal(float(rng.random()), low, high)
        n_visits = 1 + int(rng.poisson(extra_visits))
        jitter = rng.normal(0.0, REPEAT_T_JITTER_SD, size=n_visits)
        jitter[0] = 0.0
        for visit in range(min(n_visits, n_images - len(patients))):
            patients.append(patient)
            visits.append(visit)
            t_scores.append(min(max(t_patient + float(jitter[visit]), low), high))
        patient += 1
    return Cohort(
        patient=np.asarray(patients, dtype=np.int64),
        visit=np.asarray(visits, dtype=np.int64),
        t_score=np.asarray(t_scores, dtype=np.float64),
    )


# --------------------------------------------------------------------------------------------
# Anatomy and acquisition parameters
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Anatomy:
    """Per-patient shape and tissue parameters, in normalised image coordinates.

    Coordinates run from -1 to 1 across the image: ``x`` left to right (image right is the
    patient's left, as in a PA radiograph), ``y`` top to bottom. None of these depends on BMD
    except through :attr:`bone_thickness`, which is itself drawn independently of the T-score.
    """

    body_cx: float
    body_half_width: float
    soft_mu: float
    lung_dx: float
    lung_cy: float
    lung_half_width: float
    lung_half_height: tuple[float, float]
    lung_air: float
    heart_dx: float
    heart_cy: float
    heart_half_width: float
    heart_half_height: float
    heart_angle: float
    heart_mu: float
    spine_dx: float
    spine_sway: float
    spine_half_width: float
    vertebra_period: float
    disc_gap: float
    vertebra_phase: float
    n_ribs: int
    rib_top: float
    rib_spacing: float
    rib_thickness: float
    rib_rise: float
    rib_drop: float
    clavicle_y: float
    clavicle_rise: float
    clavicle_length: float
    clavicle_thickness: float
    bone_thickness: float


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw one patient's anatomy from a stream that never sees the T-score.

    Args:
        rng: The patient's anatomy stream.

    Returns:
        The patient's :class:`Anatomy`.
    """
    u = rng.uniform
    body_half_width = u(0.80, 0.92)
    return Anatomy(
        body_cx=float(rng.normal(0.0, 0.015)),
        body_half_width=body_half_width,
        soft_mu=u(0.55, 0.75),
        lung_dx=body_half_width * u(0.48, 0.52),
        lung_cy=u(-0.14, -0.06),
        lung_half_width=body_half_width * u(0.35, 0.39),
        lung_half_height=(u(0.58, 0.64), u(0.62, 0.68)),
        lung_air=u(0.55, 0.70),
        heart_dx=u(0.12, 0.18),
        heart_cy=u(0.30, 0.38),
        heart_half_width=u(0.32, 0.38),
        heart_half_height=u(0.22, 0.27),
        heart_angle=np.deg2rad(u(-30.0, -15.0)),
        heart_mu=u(0.08, 0.16),
        spine_dx=float(rng.normal(0.0, 0.01)),
        spine_sway=float(rng.normal(0.0, 0.012)),
        spine_half_width=u(0.052, 0.064),
        vertebra_period=u(0.12, 0.14),
        disc_gap=u(0.022, 0.030),
        vertebra_phase=u(0.0, 1.0),
        n_ribs=int(rng.integers(9, 11)),
        rib_top=u(-0.80, -0.74),
        rib_spacing=u(0.135, 0.150),
        rib_thickness=0.04 * u(0.92, 1.08),
        rib_rise=u(0.12, 0.22),
        rib_drop=u(0.38, 0.52),
        clavicle_y=u(-0.76, -0.70),
        clavicle_rise=u(0.10, 0.18),
        clavicle_length=body_half_width * u(0.62, 0.72),
        clavicle_thickness=u(0.045, 0.055),
        bone_thickness=u(0.93, 1.07),
    )


@dataclass(frozen=True)
class Acquisition:
    """Per-image acquisition parameters: pose, exposure, detector.

    Attributes:
        shift: Pose translation ``(dx, dy)`` in normalised units.
        scale: Magnification (patient-to-detector distance, breathing).
        angle: In-plane rotation in radians.
        gain: Exposure/gain factor applied to the displayed intensity (±8%).
        noise_sd: Standard deviation of the additive gaussian noise.
    """

    shift: tuple[float, float]
    scale: float
    angle: float
    gain: float
    noise_sd: float


def sample_acquisition(rng: np.random.Generator) -> Acquisition:
    """Draw one image's acquisition parameters (independent of anatomy and T-score).

    Args:
        rng: The image's stream.

    Returns:
        The image's :class:`Acquisition`.
    """
    return Acquisition(
        shift=(float(rng.normal(0.0, 0.012)), float(rng.normal(0.0, 0.012))),
        scale=float(1.0 + rng.normal(0.0, 0.01)),
        angle=float(np.deg2rad(rng.normal(0.0, 0.8))),
        gain=float(rng.uniform(0.92, 1.08)),
        noise_sd=float(rng.uniform(0.010, 0.020)),
    )


# --------------------------------------------------------------------------------------------
# Shapes: masks and thickness profiles on the pixel grid
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shapes:
    """Rasterised anatomy: a mask and a thickness profile (0..1, 0 outside) per structure.

    Masks are exact geometric shapes before any blur; profiles are what the renderer integrates.
    """

    masks: dict[str, np.ndarray]
    profiles: dict[str, np.ndarray]


def pose_grid(size: int, acquisition: Acquisition) -> tuple[np.ndarray, np.ndarray]:
    """Return anatomical coordinates ``(x, y)`` of every pixel centre under the image's pose.

    Args:
        size: Image side in pixels.
        acquisition: Supplies shift, scale and rotation.

    Returns:
        Two ``[size, size]`` float arrays.
    """
    c = (np.arange(size, dtype=np.float64) + 0.5) * (2.0 / size) - 1.0
    xi, yi = c[None, :], c[:, None]
    dx, dy = acquisition.shift
    cos, sin = np.cos(acquisition.angle), np.sin(acquisition.angle)
    xs, ys = xi - dx, yi - dy
    x = (cos * xs + sin * ys) / acquisition.scale
    y = (-sin * xs + cos * ys) / acquisition.scale
    return x, y


def _ellipse(
    x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: float, ay: float, angle: float = 0.0
) -> np.ndarray:
    """Return the squared normalised radius of an (optionally rotated) ellipse; < 1 inside."""
    dx, dy = x - cx, y - cy
    if angle:
        cos, sin = np.cos(angle), np.sin(angle)
        dx, dy = cos * dx + sin * dy, -sin * dx + cos * dy
    return (dx / ax) ** 2 + (dy / ay) ** 2


def _add_band(
    out: np.ndarray,
    lateral: np.ndarray,
    y: np.ndarray,
    row_range: tuple[np.ndarray, np.ndarray],
    curve: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    length: float,
    half_thickness: float,
) -> None:
    """Draw a tube of half-thickness ``half_thickness`` along ``y = centre(lateral)`` into ``out``.

    ``out`` receives, in place, the maximum of itself and the tube's thickness profile
    ``sqrt(1 - d^2)`` (``d`` the normalised perpendicular distance to the centre line) for
    ``0 <= lateral <= length``. Dividing the vertical offset by ``sqrt(1 + slope^2)`` turns it into
    the perpendicular distance, so sloped bands keep their thickness. Only the rows the band can
    reach are computed, which keeps twenty ribs cheap.

    Args:
        out: ``[S, S]`` profile accumulator, updated in place.
        lateral: Distance along the bone's axis (e.g. from the spine), per pixel.
        y: Vertical anatomical coordinate per pixel.
        row_range: Per-row minimum and maximum of ``y`` (to find the rows to compute).
        curve: Maps ``lateral`` to the centre line's ``y`` and its slope ``dy/dlateral``.
        length: Length of the bone along ``lateral``.
        half_thickness: Half of the bone's thickness.
    """
    probe_centre, probe_slope = curve(np.linspace(0.0, length, 65))
    margin = half_thickness * float(np.sqrt(1.0 + np.max(probe_slope**2))) + 0.02
    low, high = float(probe_centre.min()) - margin, float(probe_centre.max()) + margin
    rows = np.flatnonzero((row_range[1] >= low) & (row_range[0] <= high))
    if rows.size == 0:
        return
    window = slice(int(rows[0]), int(rows[-1]) + 1)
    lat, yy = lateral[window], y[window]
    centre, slope = curve(lat)
    d2 = (yy - centre) ** 2 / (half_thickness**2 * (1.0 + slope**2))
    q = np.where((lat >= 0.0) & (lat <= length) & (d2 < 1.0), 1.0 - d2, 0.0)
    np.maximum(out[window], np.sqrt(q), out=out[window])


def _rib_curve(
    y0: float, rise: float, drop: float, reach: float
) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Centre line of a posterior rib: ``y0 - rise * v + drop * v^2`` with ``v = lateral / reach``.

    It rises a little as it leaves the spine and then falls laterally, like the projected arc of
    a posterior rib on a PA film.
    """

    def curve(lateral: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        v = lateral / reach
        return y0 + v * (drop * v - rise), (2.0 * drop * v - rise) / reach

    return curve


def _clavicle_curve(
    y0: float, rise: float, length: float
) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Centre line of a clavicle: rises laterally by ``rise`` with a slight S-shaped sway."""

    def curve(lateral: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        v = lateral / length
        centre = y0 - rise * v + 0.03 * np.sin(2.0 * np.pi * v)
        return centre, (-rise + 0.06 * np.pi * np.cos(2.0 * np.pi * v)) / length

    return curve


def anatomy_shapes(anatomy: Anatomy, x: np.ndarray, y: np.ndarray, pixel: float) -> Shapes:
    """Rasterise every structure of ``anatomy`` on the coordinate grid ``(x, y)``.

    Args:
        anatomy: The patient's anatomy.
        x: Anatomical x coordinate of every pixel centre.
        y: Anatomical y coordinate of every pixel centre.
        pixel: Pixel pitch in normalised units (``2 / size``); thin bones never get thinner than
            about one pixel, so their masks are never empty.

    Returns:
        Masks and profiles of ``body``, ``lungs``, ``heart``, ``spine``, ``ribs``, ``clavicles``.
    """
    a = anatomy
    masks: dict[str, np.ndarray] = {}
    profiles: dict[str, np.ndarray] = {}

    # Body: a vertical cylinder, slightly narrower towards the neck.
    half_width = a.body_half_width * (1.0 - 0.10 * np.clip(-y - 0.55, 0.0, None))
    r_body = ((x - a.body_cx) / half_width) ** 2
    profiles["body"] = np.sqrt(np.clip(1.0 - r_body, 0.0, None))
    masks["body"] = r_body < 1.0

    # Heart: a tilted ellipse low in the middle, reaching to the image right.
    r_heart = _ellipse(
        x,
        y,
        a.body_cx + a.heart_dx,
        a.heart_cy,
        a.heart_half_width,
        a.heart_half_height,
        a.heart_angle,
    )
    masks["heart"] = r_heart < 1.0
    profiles["heart"] = np.sqrt(np.clip(1.0 - r_heart, 0.0, None))

    # Lungs: two ellipsoids of air; the heart displaces lung, so the masks exclude it.
    lung_profile = np.zeros_like(x)
    for side, half_height in zip((-1.0, 1.0), a.lung_half_height, strict=True):
        cy = a.lung_cy + (half_height - a.lung_half_height[0]) * 0.5
        r = _ellipse(x, y, a.body_cx + side * a.lung_dx, cy, a.lung_half_width, half_height)
        lung_profile = np.maximum(lung_profile, np.sqrt(np.clip(1.0 - r, 0.0, None)))
    lungs = (lung_profile > 0.0) & ~masks["heart"] & masks["body"]
    masks["lungs"] = lungs
    profiles["lungs"] = np.where(lungs, lung_profile, 0.0)

    # Spine: vertebral bodies (rounded rectangles, wider caudally) separated by disc gaps.
    spine_x = a.body_cx + a.spine_dx + a.spine_sway * np.sin(1.3 * y + 0.4)
    vert_half_width = np.maximum(a.spine_half_width * (1.0 + 0.12 * y), 1.1 * pixel)
    local = (y / a.vertebra_period + a.vertebra_phase) % 1.0 - 0.5  # -0.5..0.5 within a period
    body_half_height = 0.5 * (1.0 - a.disc_gap / a.vertebra_period)
    rx = (x - spine_x) / vert_half_width
    r_vert = rx**4 + (local / body_half_height) ** 4
    spine = r_vert < 1.0
    masks["spine"] = spine
    profiles["spine"] = np.where(spine, np.sqrt(np.clip(1.0 - rx**2, 0.0, None)), 0.0)

    # Ribs: posterior rib pairs leaving the spine, rising slightly, then curving down laterally.
    row_range = (y.min(axis=1), y.max(axis=1))
    rib_half = max(0.5 * a.rib_thickness, 0.55 * pixel)
    rib_start = a.spine_half_width * 0.8
    reach = a.body_half_width * 0.93 - rib_start
    rib_profile = np.zeros_like(x)
    for side in (-1.0, 1.0):
        lateral = side * (x - spine_x) - rib_start  # distance from the rib's spinal end
        for k in range(a.n_ribs):
            length = reach * (0.55 if k == 0 else 0.8 if k == 1 else 1.0)
            curve = _rib_curve(
                a.rib_top + k * a.rib_spacing, a.rib_rise, a.rib_drop * (1.0 + 0.04 * k), reach
            )
            _add_band(rib_profile, lateral, y, row_range, curve, length, rib_half)
    masks["ribs"] = rib_profile > 0.0
    profiles["ribs"] = rib_profile

    # Clavicles: thick slanted bands from the sternum up to the shoulders, gently S-shaped.
    clav_half = max(0.5 * a.clavicle_thickness, 0.55 * pixel)
    clav_profile = np.zeros_like(x)
    curve = _clavicle_curve(a.clavicle_y, a.clavicle_rise, a.clavicle_length)
    for side in (-1.0, 1.0):
        lateral = side * (x - a.body_cx) - 0.06
        _add_band(clav_profile, lateral, y, row_range, curve, a.clavicle_length, clav_half)
    masks["clavicles"] = clav_profile > 0.0
    profiles["clavicles"] = clav_profile

    masks["bone"] = masks["spine"] | masks["ribs"] | masks["clavicles"]
    return Shapes(masks=masks, profiles=profiles)


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------

# Peak attenuation of each bone at reference density (T = 0, bone_thickness = 1).
_MU_VERTEBRA = 0.75
_MU_RIB = 0.35
_MU_CLAVICLE = 0.45


def bone_density_factor(t_score: float, bone_thickness: float) -> float:
    """Return the factor that scales all bone attenuation: ``exp(0.2 T) * bone_thickness``.

    This is the only channel through which the T-score reaches pixels (besides
    :func:`trabecular_contrast`).
    """
    return float(np.exp(BONE_DENSITY_SLOPE * t_score) * bone_thickness)


def trabecular_contrast(t_score: float) -> float:
    """Return the relative contrast of the trabecular texture: rises as BMD falls.

    Osteoporotic vertebrae lose thin horizontal trabeculae and look coarser and more
    heterogeneous; a contrast from about 0.12 (T = 3) to 0.45 (T = -5) mimics that.
    """
    return float(np.clip(0.25 - 0.04 * t_score, 0.10, 0.50))


def render_radiograph(
    shapes: Shapes,
    anatomy: Anatomy,
    acquisition: Acquisition,
    t_score: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Compose the attenuation map and turn it into a noisy, blurred radiograph.

    Args:
        shapes: Masks and profiles on the pixel grid.
        anatomy: The patient's anatomy (tissue coefficients).
        acquisition: Gain and noise of this image.
        t_score: The image's T-score; it only scales bone terms.
        rng: The image's stream (texture and noise).

    Returns:
        A ``[size, size]`` float32 image in [0, 1].
    """
    p = shapes.profiles
    size = p["body"].shape[0]
    scale = size / 128.0

    soft = anatomy.soft_mu * p["body"]
    soft = soft - anatomy.lung_air * anatomy.soft_mu * p["lungs"]
    soft = soft + anatomy.heart_mu * p["heart"]

    # Trabecular texture: low-pass noise inside vertebral bodies, contrast set by BMD.
    texture = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma=max(0.7, scale))
    texture /= max(float(texture.std()), 1e-12)
    density = bone_density_factor(t_score, anatomy.bone_thickness)
    vertebra = _MU_VERTEBRA * p["spine"] * (1.0 + trabecular_contrast(t_score) * texture)
    bone = density * (
        np.clip(vertebra, 0.0, None) + _MU_RIB * p["ribs"] + _MU_CLAVICLE * p["clavicles"]
    )

    intensity = -np.expm1(-(np.clip(soft, 0.0, None) + bone))
    intensity = ndimage.gaussian_filter(intensity, sigma=0.6 * scale)
    intensity *= acquisition.gain
    intensity += acquisition.noise_sd * rng.standard_normal((size, size))
    return np.clip(intensity, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------------


class PhantomDataset(Dataset):
    """Synthetic chest radiographs with region masks; the WHO class is encoded only in bone.

    Use it to run and test the whole benchmark without private data: a model that predicts the
    class well must look at bone, and explanations can be scored against exact masks.
    """

    model_config = ConfigDict(use_attribute_docstrings=True)

    region_names: ClassVar[tuple[str, ...]] = (
        "bone",
        "spine",
        "ribs",
        "clavicles",
        "lungs",
        "heart",
    )
    region_groups: ClassVar[dict[str, tuple[str, ...]]] = {"bone": ("spine", "ribs", "clavicles")}
    display_name: ClassVar[str] = "Phantom chest X-ray (synthetic)"
    version: ClassVar[str] = "1"

    n_images: int = Field(1000, ge=1)
    """Number of images (rows); patients are drawn until this many images exist."""
    image_size: int = Field(128, ge=32, le=1024)
    """Side of the square images in pixels (anatomy scales with it)."""
    seed: int = Field(0, ge=0)
    """Seed of every random stream; the same seed and options give identical samples."""
    class_shares: tuple[float, float, float] = (0.572, 0.377, 0.051)
    """Probability of normal, osteopenia and osteoporosis per patient (reference cohort shares)."""
    images_per_patient: float = Field(1.45, ge=1.0)
    """Mean images per patient (reference: 21,031 images of 14,502 women, about 1.45)."""

    _cohort: Cohort | None = PrivateAttr(default=None)
    _table: pd.DataFrame | None = PrivateAttr(default=None)
    _cache_key: tuple[object, ...] | None = PrivateAttr(default=None)

    @field_validator("class_shares")
    @classmethod
    def _check_shares(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(not np.isfinite(v) or v < 0 for v in value) or abs(sum(value) - 1.0) > 1e-6:
            raise ValueError(
                "class_shares must be three non-negative shares (normal, osteopenia, "
                f"osteoporosis) summing to 1, got {tuple(value)} (sum {sum(value):.6g})"
            )
        return value

    def _get_cohort(self) -> Cohort:
        # Caches are keyed by the options they come from: ``model_copy(update=...)`` copies
        # private attributes, and a stale cohort would silently mislabel every image.
        key = (self.n_images, self.seed, self.class_shares, self.images_per_patient)
        if self._cohort is None or self._cache_key != key:
            self._cohort = cohort_table(
                self.n_images, self.seed, self.class_shares, self.images_per_patient
            )
            self._table = None
            self._cache_key = key
        return self._cohort

    def __len__(self) -> int:
        """Number of images."""
        return self.n_images

    def table(self) -> pd.DataFrame:
        """Return one row per image (ids, ``t_score``, ``bmd``, ``visit``) without rendering.

        Returns:
            A fresh copy of the cached table, so callers may modify it.
        """
        cohort = self._get_cohort()
        if self._table is None:
            import pandas as pd

            self._table = pd.DataFrame(
                {
                    "sample_id": [f"phantom-{i:05d}" for i in range(self.n_images)],
                    "patient_id": [f"P{p:05d}" for p in cohort.patient],
                    "t_score": cohort.t_score,
                    "bmd": bmd_of_t_score(cohort.t_score),
                    "visit": cohort.visit,
                }
            )
        return self._table.copy()

    def __getitem__(self, index: int) -> Sample:
        """Render sample ``index`` (negative indices count from the end, like a list).

        Raises:
            IndexError: ``index`` is out of range.
        """
        i = operator.index(index)
        if i < 0:
            i += self.n_images
        if not 0 <= i < self.n_images:
            raise IndexError(f"phantom index {index} out of range for {self.n_images} images")
        cohort = self._get_cohort()
        patient, visit = int(cohort.patient[i]), int(cohort.visit[i])
        t_score = float(cohort.t_score[i])
        image, masks = self.render(patient, visit, t_score)
        import torch

        return Sample(
            sample_id=f"phantom-{i:05d}",
            patient_id=f"P{patient:05d}",
            image=torch.from_numpy(image).unsqueeze(0),
            regions={name: torch.from_numpy(masks[name]) for name in self.region_names},
            attributes={
                "t_score": t_score,
                "bmd": float(bmd_of_t_score(t_score)),
                "visit": visit,
            },
        )

    def render(
        self, patient: int, visit: int, t_score: float
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Render one image of ``patient`` at ``visit`` with the given T-score.

        Exposed so experiments can render the *same* anatomy and acquisition at another T-score
        (counterfactual images); :meth:`__getitem__` uses the cohort's T-score.

        Args:
            patient: Patient index.
            visit: Visit number of the patient.
            t_score: T-score to render.

        Returns:
            The image ``[S, S]`` (float32 in [0, 1]) and the region masks (bool ``[S, S]``).
        """
        anatomy = sample_anatomy(np.random.default_rng([self.seed, patient, _STREAM_ANATOMY]))
        rng = np.random.default_rng([self.seed, patient, visit, _STREAM_IMAGE])
        acquisition = sample_acquisition(rng)
        x, y = pose_grid(self.image_size, acquisition)
        shapes = anatomy_shapes(anatomy, x, y, pixel=2.0 / self.image_size)
        image = render_radiograph(shapes, anatomy, acquisition, t_score, rng)
        masks = {name: np.ascontiguousarray(shapes.masks[name]) for name in self.region_names}
        return image, masks

    def fingerprint(self) -> str:
        """Return the sha256 of the class name, version and options."""
        payload = {"class": type(self).__name__, "version": self.version, "options": self.options()}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
