"""``phantom``: built-in synthetic chest radiographs whose class signal lives only in bone.

Real chest X-rays with DXA T-scores are private, yet every part of the benchmark (training,
saliency, perturbation, the bone-overlap scores) must run and be testable anywhere. The phantom
provides frontal chest radiographs with exact region masks that encode bone mineral density
**only** in bone: an explanation that points at the lungs is wrong by construction, and
perturbing bone must destroy a good model's prediction.

Phantom v2 is anatomically and physically plausible:

1. **Cohort** (:func:`cohort_table`). Patients are drawn one at a time, each from its own random
   stream: a WHO class from ``class_shares``, a T-score from ``N(-0.82, 1.02)`` truncated to the
   class (that normal reproduces the study's 57/38/5 shares), and ``1 + Poisson(images_per_patient
   - 1)`` images whose T-scores carry a small measurement jitter that never changes the class.
2. **BMD** (:func:`bmd_of_t_score`). ``BMD = 0.858 + 0.120 T`` g/cm^2, i.e. ``T = (BMD - 0.858) /
   0.120``: the NHANES III femoral-neck reference for young (20-29 years) non-Hispanic white
   women (Looker et al., Osteoporos Int 1998;8:468-489), the reference that defines WHO T-scores.
   The phantom uses it as the patient's systemic bone status: the ratio ``r = BMD / 0.858`` scales
   the cortical thickness (``r``) and the trabecular bone volume fraction (``r^2``) of every
   bone, and the trabecular texture grows more heterogeneous as ``r`` falls
   (:mod:`xaibench.data.phantom_anatomy`).
3. **Anatomy** (:mod:`xaibench.data.phantom_anatomy`). Per patient, from a stream that never sees
   the T-score: body, breasts, lungs, diaphragm, heart, trachea, spine, ribs, clavicles,
   scapulae and sternum, rasterised once as per-tissue path-length maps and exact masks.
4. **Acquisition** (:func:`sample_acquisition`). Per image: positioning (shift, rotation,
   magnification, depth of inspiration), effective energy, photon fluence, display window.
   Repeat images of a patient share the anatomy and differ only by these.
5. **Physics** (:mod:`xaibench.data.phantom_physics`). Beer-Lambert projection, quantum noise,
   detector blur, log transform and a display tone curve; 16-bit output.

Only the bone path lengths depend on the T-score. Soft tissue, lungs, heart, breasts, pose,
exposure, noise and the display are drawn from streams that never see it, so they are
statistically independent of the class.

**Known-answer controls.** ``shortcut`` (0-1) draws, on that share of images, a small lead marker
in the upper image-right corner (outside the body, where radiographers put their side markers)
whose lead thickness, hence brightness, encodes the image's class; the ``shortcut`` region is the
marker's box on every image, marker or not. ``bone_signal=False`` renders every patient's bone at
a BMD drawn independently of the class, so bone carries no label information. Together they make
a model that can only succeed through a shortcut, which the explainability metrics must expose.

**Determinism and caching.** Every patient and image has its own
:func:`numpy.random.default_rng` stream keyed by ``[seed, patient, ...]``, so a sample depends
only on ``(options, index)``: not on access order, on other samples, or (for a given patient) on
``n_images``. Images are generated in chunks (all images of a patient from one rasterised
anatomy) and cached on disk under ``<cache dir>/phantom`` (see :mod:`xaibench.cache`), keyed by
the version and every option but ``n_images`` and written atomically, so a second run (or a
second dataset object) loads instead of rendering. Bump :attr:`PhantomDataset.version` whenever
images change.
"""

from __future__ import annotations

import hashlib
import json
import operator
import os
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import ConfigDict, Field, PrivateAttr, field_validator
from scipy import ndimage, special

from xaibench.cache import CacheNamespace, content_key, default_cache_dir
from xaibench.component import Seed
from xaibench.data.base import Dataset, Sample
from xaibench.data.phantom_anatomy import (
    BONE_GROUPS,
    FIELD_CM,
    REGION_BITS,
    PatientMaps,
    bone_path_lengths,
    patient_maps,
    sample_anatomy,
    trabecular_bvtv,
    trabecular_heterogeneity,
)
from xaibench.data.phantom_physics import (
    attenuation_coefficients,
    detector_blur,
    display_window,
    log_transform,
    quantize16,
    quantum_noise,
)
from xaibench.data.who import (
    NORMAL_AT_OR_ABOVE,
    OSTEOPOROSIS_AT_OR_BELOW,
    WHO_CLASSES,
    who_class,
)

if TYPE_CHECKING:
    import pandas as pd

# --------------------------------------------------------------------------------------------
# Cohort constants
# --------------------------------------------------------------------------------------------

#: Young-adult mean femoral-neck BMD (g/cm^2): NHANES III, non-Hispanic white women aged 20-29
#: (Looker et al., Osteoporos Int 1998;8:468-489), the WHO T-score reference.
YOUNG_ADULT_BMD_MEAN: float = 0.858
#: Young-adult standard deviation of femoral-neck BMD (g/cm^2), same reference.
YOUNG_ADULT_BMD_SD: float = 0.120

#: Mean and standard deviation of the cohort's T-score distribution. Truncating this normal at
#: -1 and -2.5 gives about 57% normal, 38% osteopenia and 5% osteoporosis, the study's shares.
T_SCORE_MEAN: float = -0.82
T_SCORE_SD: float = 1.02

#: The study's class shares (Kim et al. 2025): normal, osteopenia, osteoporosis.
STUDY_CLASS_SHARES: tuple[float, float, float] = (0.572, 0.377, 0.051)

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

#: Lead thickness (mm) of the shortcut marker per class: about 1.2, 2.6 and 4.4 units of line
#: integral at 60 keV, far enough apart that energy and window variation never mix them up.
MARKER_LEAD_MM: tuple[float, float, float] = (0.21, 0.46, 0.77)
#: The marker's box (cm, image coordinates, before its per-image jitter): upper image right,
#: above the shoulder, clear of every bone under any pose the phantom draws.
MARKER_BOX_CM: tuple[float, float, float, float] = (14.6, -20.0, 5.4, 2.75)  # x, y, width, height
#: Side of the (square) lead marker, cm: big enough to keep its contrast at 64 px, where the
#: detector blur spreads a smaller one over air.
MARKER_SIDE_CM: float = 1.8

#: Most images a phantom may have: its cohort table is drawn for every image up front.
MAX_PHANTOM_IMAGES = 1_000_000

# Random-stream tags: each stream is ``default_rng([seed, patient, (visit,) tag])``.
_STREAM_COHORT = 0
_STREAM_ANATOMY = 1
_STREAM_IMAGE = 2
_STREAM_TEXTURE = 3
_STREAM_SHORTCUT = 4
_STREAM_BONE = 5


def bmd_of_t_score(t_score: float | np.ndarray) -> np.ndarray:
    """Return femoral-neck-equivalent BMD (g/cm^2) for T-scores: ``0.858 + 0.120 T``."""
    return YOUNG_ADULT_BMD_MEAN + np.asarray(t_score, dtype=float) * YOUNG_ADULT_BMD_SD


def t_score_of_bmd(bmd: float | np.ndarray) -> np.ndarray:
    """Return the T-score of a BMD (g/cm^2): ``(BMD - 0.858) / 0.120``."""
    return (np.asarray(bmd, dtype=float) - YOUNG_ADULT_BMD_MEAN) / YOUNG_ADULT_BMD_SD


def bmd_ratio(t_score: float) -> float:
    """Return ``BMD / BMD_young`` (1 at T = 0, 0.65 at T = -2.5): what scales the bone."""
    return float(bmd_of_t_score(t_score)) / YOUNG_ADULT_BMD_MEAN


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


def unrelated_bone_t_score(seed: int, patient: int) -> float:
    """The T-score a patient's bone is drawn with when ``bone_signal=False``.

    From the cohort's untruncated normal (so the bone looks like the cohort's) on a stream that
    never sees the patient's class, clipped to the phantom's range [-5, 3].
    """
    rng = np.random.default_rng([seed, patient, _STREAM_BONE])
    return float(np.clip(rng.normal(T_SCORE_MEAN, T_SCORE_SD), -5.0, 3.0))


def marker_drawn(seed: int, patient: int, visit: int, shortcut: float) -> bool:
    """Whether image ``(patient, visit)`` carries the shortcut marker at strength ``shortcut``.

    One uniform per image from its own stream, compared with ``shortcut``: raising the strength
    only adds markers, and ``shortcut=0`` never draws one.
    """
    u = np.random.default_rng([seed, patient, visit, _STREAM_SHORTCUT]).random()
    return bool(u < shortcut)


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


# --------------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------------


def _threads() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


class PhantomDataset(Dataset):
    """Synthetic chest radiographs with exact region masks; the WHO class is encoded only in bone.

    Use it to run and test the whole benchmark without private data: a model that predicts the
    class well must look at bone, and explanations can be scored against exact masks. The
    ``shortcut`` and ``bone_signal`` options turn it into a known-answer control for shortcut
    learning.
    """

    model_config = ConfigDict(use_attribute_docstrings=True)

    region_names: ClassVar[tuple[str, ...]] = (
        "bone",
        *BONE_GROUPS,
        "lungs",
        "heart",
        "shortcut",
    )
    region_groups: ClassVar[dict[str, tuple[str, ...]]] = {"bone": BONE_GROUPS}
    display_name: ClassVar[str] = "Phantom chest X-ray (synthetic)"
    version: ClassVar[str] = "2"
    #: Whether generated chunks are cached on disk (tests and benchmarks may switch it off).
    disk_cache: ClassVar[bool] = True

    n_images: int = Field(1000, ge=1, le=MAX_PHANTOM_IMAGES)
    """Number of images (rows); patients are drawn until this many images exist (at most
    1,000,000: the cohort table and the split arrays are built for every image up front)."""
    image_size: int = Field(128, ge=32, le=1024)
    """Side of the square images in pixels (the 40 cm field is the same at every size)."""
    seed: Seed = 0
    """Seed of every random stream; the same seed and options give identical samples."""
    class_shares: tuple[float, float, float] = STUDY_CLASS_SHARES
    """Probability of normal, osteopenia and osteoporosis per patient (default: the study's
    57.2/37.7/5.1%); ``"balanced"`` gives equal shares."""
    images_per_patient: float = Field(1.45, ge=1.0)
    """Mean images per patient (reference: 21,031 images of 14,502 women, about 1.45)."""
    shortcut: float = Field(0.0, ge=0.0, le=1.0)
    """Share of images carrying a class-coded lead marker outside the body (0: no cue, 1: every
    image, so the marker predicts the class perfectly)."""
    bone_signal: bool = True
    """Whether bone density follows the class; False renders bone at an unrelated BMD."""

    _cohort: Cohort | None = PrivateAttr(default=None)
    _table: pd.DataFrame | None = PrivateAttr(default=None)

    @property
    def strata_columns(self) -> tuple[str, ...]:
        """``marker`` when the shortcut is on: do maps find bone on images without the cue?"""
        return ("marker",) if self.shortcut > 0 else ()

    _cache_key: tuple[object, ...] | None = PrivateAttr(default=None)
    _cache_dir: Path | None = PrivateAttr(default=None)
    _cache_off: bool = PrivateAttr(default=False)
    _chunks: OrderedDict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = PrivateAttr(
        default_factory=OrderedDict
    )

    @field_validator("class_shares", mode="before")
    @classmethod
    def _named_shares(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value == "balanced":
                return (1 / 3, 1 / 3, 1 / 3)
            raise ValueError(f"class_shares must be three shares or 'balanced', got {value!r}")
        return value

    @field_validator("class_shares")
    @classmethod
    def _check_shares(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(not np.isfinite(v) or v < 0 for v in value) or abs(sum(value) - 1.0) > 1e-6:
            raise ValueError(
                "class_shares must be three non-negative shares (normal, osteopenia, "
                f"osteoporosis) summing to 1, got {tuple(value)} (sum {sum(value):.6g})"
            )
        return value

    # ---- cohort and table ---------------------------------------------------------------

    def _get_cohort(self) -> Cohort:
        # Caches are keyed by the options they come from: ``model_copy(update=...)`` copies
        # private attributes, and a stale cohort would silently mislabel every image.
        key = (json.dumps(self.options(), sort_keys=True),)
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

    def _bone_t(self, patient: int, t_score: float) -> float:
        return t_score if self.bone_signal else unrelated_bone_t_score(self.seed, patient)

    def _get_table(self) -> pd.DataFrame:
        cohort = self._get_cohort()
        if self._table is None:
            import pandas as pd

            patients, visits = cohort.patient.tolist(), cohort.visit.tolist()
            bone_t = [self._bone_t(p, t) for p, t in zip(patients, cohort.t_score, strict=True)]
            self._table = pd.DataFrame(
                {
                    "sample_id": [f"phantom-{i:05d}" for i in range(self.n_images)],
                    "patient_id": [f"P{p:05d}" for p in patients],
                    "t_score": cohort.t_score,
                    "bmd": bmd_of_t_score(cohort.t_score),
                    "visit": cohort.visit,
                    "image_bmd": bmd_of_t_score(np.asarray(bone_t)),
                    "marker": np.asarray(
                        [
                            marker_drawn(self.seed, p, v, self.shortcut)
                            for p, v in zip(patients, visits, strict=True)
                        ],
                        dtype=np.int64,
                    ),
                }
            )
        return self._table

    def table(self) -> pd.DataFrame:
        """Return one row per image without rendering.

        Columns: ``sample_id``, ``patient_id``, ``t_score`` (the label's source), ``bmd`` (its
        BMD), ``visit``, ``image_bmd`` (the BMD the bone is rendered with: ``bmd`` unless
        ``bone_signal`` is off) and ``marker`` (1 where the shortcut marker is drawn).

        Returns:
            A fresh copy of the cached table, so callers may modify it.
        """
        return self._get_table().copy()

    # ---- samples ---------------------------------------------------------------------------

    def __getitem__(self, index: int) -> Sample:
        """Return sample ``index`` (negative indices count from the end, like a list).

        Raises:
            IndexError: ``index`` is out of range.
        """
        i = operator.index(index)
        if i < 0:
            i += self.n_images
        if not 0 <= i < self.n_images:
            raise IndexError(f"phantom index {index} out of range for {self.n_images} images")
        row = self._get_table().iloc[i]
        images, labels = self._chunk(i // self.chunk_images())
        j = i % self.chunk_images()
        import torch

        image = torch.from_numpy(images[j].astype(np.float32) / np.float32(65535.0))
        return Sample(
            sample_id=str(row["sample_id"]),
            patient_id=str(row["patient_id"]),
            image=image.unsqueeze(0),
            regions={name: torch.from_numpy(m) for name, m in self.masks_of(labels[j]).items()},
            attributes={
                "t_score": float(row["t_score"]),
                "bmd": float(row["bmd"]),
                "visit": int(row["visit"]),
                "image_bmd": float(row["image_bmd"]),
                "marker": int(row["marker"]),
            },
        )

    def masks_of(self, labels: np.ndarray) -> dict[str, np.ndarray]:
        """Decode region bits into one boolean mask per region name (``bone`` = the union)."""
        masks = {name: (labels & bit) > 0 for name, bit in REGION_BITS.items()}
        bone_bits = sum(REGION_BITS[g] for g in BONE_GROUPS)
        masks["bone"] = (labels & bone_bits) > 0
        return {name: masks[name] for name in self.region_names}

    def chunk_images(self) -> int:
        """Images per generated (and cached) chunk: 64 at <= 256 px, fewer for larger images."""
        return int(np.clip((1 << 22) // (self.image_size**2), 8, 64))

    def _options_key(self) -> str:
        options = {k: v for k, v in self.options().items() if k != "n_images"}
        return content_key("phantom", self.version, options)

    def use_cache(self, directory: Path | None, *, enabled: bool = True) -> None:
        """Follow the run's ``cache`` / ``cache_dir`` settings (see :class:`Dataset`)."""
        self._cache_dir, self._cache_off = directory, not enabled

    def _cache_file(self, start: int, stop: int) -> Path:
        return self._cache_store().path(self._cache_name(start, stop))

    def _cache_store(self) -> CacheNamespace:
        return CacheNamespace("phantom", self._cache_dir or default_cache_dir())

    def _cache_name(self, start: int, stop: int) -> str:
        return f"{self._options_key()}-{start}-{stop}"

    def _chunk(self, chunk: int) -> tuple[np.ndarray, np.ndarray]:
        key = (self._options_key(), chunk)
        cached = self._chunks.get(key)
        if cached is not None:
            self._chunks.move_to_end(key)
            return cached
        n = self.chunk_images()
        start, stop = chunk * n, min((chunk + 1) * n, self.n_images)
        disk = self.disk_cache and not self._cache_off
        result = self._load(start, stop) if disk else None
        if result is None:
            result = self.generate(range(start, stop))
            if disk:
                self._store(start, stop, result)
        self._chunks[key] = result
        while len(self._chunks) > 2:
            self._chunks.popitem(last=False)
        return result

    def _load(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray] | None:
        from safetensors.numpy import load

        shape = (stop - start, self.image_size, self.image_size)

        def parse(data: bytes) -> tuple[np.ndarray, np.ndarray]:
            arrays = load(data)
            images, labels = arrays["images"], arrays["labels"]
            if images.shape != shape or labels.shape != shape:
                raise ValueError(f"chunk of shape {images.shape}, expected {shape}")
            return images, labels

        # verified on read: a corrupt chunk is logged, deleted and rendered again
        return self._cache_store().read(self._cache_name(start, stop), parse)

    def _store(self, start: int, stop: int, result: tuple[np.ndarray, np.ndarray]) -> None:
        from safetensors.numpy import save

        # a read-only or full cache never stops a run (reported once)
        store = self._cache_store()
        if store.writable:
            store.write(
                self._cache_name(start, stop), save({"images": result[0], "labels": result[1]})
            )

    def generate(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Render the images at ``indices`` without any cache.

        Images of one patient share one rasterised anatomy; patients are rendered on a few
        threads (numpy and scipy release the GIL), which changes nothing in the output.

        Args:
            indices: Image indices (in any order).

        Returns:
            ``uint16`` images ``[N, S, S]`` (display value x 65535) and ``uint8`` region bits
            ``[N, S, S]``, in the order of ``indices``.
        """
        cohort = self._get_cohort()
        idx = [int(i) for i in indices]
        by_patient: dict[int, list[int]] = {}
        for k, i in enumerate(idx):
            by_patient.setdefault(int(cohort.patient[i]), []).append(k)
        s = self.image_size
        images = np.empty((len(idx), s, s), dtype=np.uint16)
        labels = np.empty((len(idx), s, s), dtype=np.uint8)

        def work(patient: int) -> None:
            maps = self.patient_maps(patient)
            for k in by_patient[patient]:
                i = idx[k]
                images[k], labels[k] = self._render_one(
                    maps, patient, int(cohort.visit[i]), float(cohort.t_score[i])
                )

        patients = list(by_patient)
        threads = min(_threads(), len(patients))
        if threads > 1:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(work, patients))
        else:
            for patient in patients:
                work(patient)
        return images, labels

    def patient_maps(self, patient: int) -> PatientMaps:
        """Rasterise patient ``patient``'s anatomy at this dataset's image size."""
        anatomy = sample_anatomy(np.random.default_rng([self.seed, patient, _STREAM_ANATOMY]))
        texture = np.random.default_rng([self.seed, patient, _STREAM_TEXTURE])
        return patient_maps(anatomy, self.image_size, texture)

    def _render_one(
        self,
        maps: PatientMaps,
        patient: int,
        visit: int,
        t_score: float,
        bone_t_score: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, patient, visit, _STREAM_IMAGE])
        acq = sample_acquisition(rng)
        noise = rng.standard_normal((self.image_size, self.image_size), dtype=np.float32)
        marker = (
            int(who_class(np.asarray([t_score]))[0])
            if marker_drawn(self.seed, patient, visit, self.shortcut)
            else None
        )
        bone_t = self._bone_t(patient, t_score) if bone_t_score is None else bone_t_score
        return render_image(maps, acq, bone_t, marker, noise)

    def render(
        self, patient: int, visit: int, t_score: float, *, bone_t_score: float | None = None
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Render one image of ``patient`` at ``visit`` with the given T-score (never cached).

        Exposed so experiments can render the *same* anatomy, acquisition and noise at another
        T-score (counterfactual images); :meth:`__getitem__` uses the cohort's T-score.

        Args:
            patient: Patient index.
            visit: Visit number of the patient.
            t_score: T-score of the image (its class codes the shortcut marker, if drawn).
            bone_t_score: T-score the bone is rendered with; default ``t_score`` (or the
                patient's unrelated one when ``bone_signal`` is off).

        Returns:
            The image ``[S, S]`` (float32 in [0, 1]) and the region masks (bool ``[S, S]``).
        """
        image, labels = self._render_one(
            self.patient_maps(patient), patient, visit, t_score, bone_t_score
        )
        return image.astype(np.float32) / np.float32(65535.0), self.masks_of(labels)

    def fingerprint(self) -> str:
        """Return the sha256 of the class name, version and options."""
        payload = {"class": type(self).__name__, "version": self.version, "options": self.options()}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
