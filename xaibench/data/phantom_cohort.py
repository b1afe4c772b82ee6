"""The phantom's cohort: patients, WHO classes, T-scores, BMD and the shortcut marker's draw.

Constants of the cohort (the WHO T-score reference, the study's class shares, the marker's lead
and box), the random-stream tags every phantom stream is keyed by, the BMD <-> T-score
conversions and :func:`cohort_table`, which draws every patient and image of a
:class:`~xaibench.data.phantom.PhantomDataset` from its own stream. The whole phantom is
described in :mod:`xaibench.data.phantom`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

from xaibench.data.who import NORMAL_AT_OR_ABOVE, OSTEOPOROSIS_AT_OR_BELOW, WHO_CLASSES

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
