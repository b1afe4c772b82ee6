"""X-ray physics of the phantom: attenuation, Beer-Lambert projection, detector and display.

The phantom never builds a 3D volume. Its anatomy module returns, per pixel, the *path length*
(cm) an X-ray travels through each tissue on its way from the source to the detector (soft
tissue, lung, breast, cortical bone, trabecular bone, lead). This module turns those maps into a
radiograph the way a digital detector and its console do:

1. **Beer-Lambert** (:func:`line_integral`, :func:`transmitted_intensity`): the expected photon
   count behind the patient is ``I = I0 * exp(-sum_t mu_t * L_t)`` for linear attenuation
   coefficients ``mu_t`` (1/cm) at one *effective* energy (a monoenergetic stand-in for the
   polyenergetic beam; no beam hardening, no scatter).
2. **Quantum noise** (:func:`quantum_noise`): photon counts are Poisson. It is drawn through its
   normal approximation ``N(I, I + sigma_e^2)`` (with electronic noise ``sigma_e``), which is
   accurate to well under 1% at the counts the phantom uses (hundreds of photons per pixel and
   more), and lets the standard-normal field be drawn independently of the image: two
   renderings that differ only in bone density then differ only near bone, which the tests of
   the class signal rely on.
3. **Detector blur** (:func:`detector_blur`): the scintillator's light spread, a Gaussian
   point-spread function applied to the counts (after the noise, as in a real detector, so
   the noise is correlated over neighbouring pixels).
4. **Log transform** (:func:`log_transform`): ``p = -ln(counts / I0)``, the line integral the
   detector estimates; flat-field corrected, so exposure changes noise, not brightness.
5. **Display** (:func:`display_window`): a sigmoid tone curve (like the characteristic curve of
   a film or a console's default LUT) maps ``p`` into [0, 1], bright where attenuation is high.
   It is smooth, so no bone value is clipped flat, and it is applied pixel by pixel, so it never
   moves information from one region into another.

Attenuation coefficients are NIST XCOM values (Hubbell & Seltzer, NIST Standard Reference
Database 126 / NISTIR 5632) for the ICRU Report 44 tissue compositions, at 50, 60 and 70 keV;
:func:`attenuation_coefficients` interpolates them log-log for an effective energy in between.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import ndimage

#: Photon energies (keV) of the attenuation table.
TABLE_ENERGIES_KEV: tuple[float, float, float] = (50.0, 60.0, 70.0)

#: Linear attenuation coefficients (1/cm) at :data:`TABLE_ENERGIES_KEV`: NIST XCOM mass
#: attenuation coefficients of the ICRU-44 compositions times their densities (soft tissue
#: 1.06 g/cm^3, adipose 0.95, breast 1.02, inflated lung 0.26, cortical bone 1.92, lead 11.35).
#: At 60 keV: mu/rho = 0.2048 (soft tissue), 0.1974 (adipose), 0.2006 (breast), 0.2053 (lung),
#: 0.3148 (cortical bone), 5.020 (lead) cm^2/g.
MU_TABLE: Mapping[str, tuple[float, float, float]] = {
    "soft_tissue": (0.2400, 0.2171, 0.2031),
    "adipose": (0.2017, 0.1875, 0.1781),
    "breast": (0.2230, 0.2046, 0.1929),
    "lung": (0.0590, 0.0534, 0.0499),
    "cortical_bone": (0.8145, 0.6045, 0.4935),
    "lead": (91.28, 56.97, 38.41),
}


def attenuation_coefficients(energy_kev: float) -> dict[str, float]:
    """Return ``mu`` (1/cm) of every tissue at ``energy_kev``, interpolated log-log.

    Attenuation falls roughly as a power of energy between absorption edges (there are none of
    the tabulated materials' edges between 50 and 70 keV), so interpolating ``log mu`` against
    ``log E`` is accurate; outside the table the nearest segment is extrapolated.

    Args:
        energy_kev: Effective photon energy in keV (about 45-75 is sensible).

    Returns:
        Tissue name -> linear attenuation coefficient.
    """
    log_e = np.log(np.asarray(TABLE_ENERGIES_KEV))
    x = float(np.log(energy_kev))
    k = 0 if x <= log_e[1] else 1
    w = (x - log_e[k]) / (log_e[k + 1] - log_e[k])
    out = {}
    for name, values in MU_TABLE.items():
        lo, hi = np.log(values[k]), np.log(values[k + 1])
        out[name] = float(np.exp(lo + w * (hi - lo)))
    return out


def line_integral(
    path_lengths: Mapping[str, np.ndarray | float], mu: Mapping[str, float]
) -> np.ndarray:
    """Return ``sum_t mu_t * L_t``: the dimensionless attenuation along each ray.

    Args:
        path_lengths: Tissue -> path length in cm (arrays broadcast together).
        mu: Tissue -> linear attenuation coefficient in 1/cm; every tissue of ``path_lengths``
            must be present.

    Returns:
        The line integral, as a float array.
    """
    total: np.ndarray | float = 0.0
    for tissue, length in path_lengths.items():
        total = total + mu[tissue] * np.asarray(length)
    return np.asarray(total)


def transmitted_intensity(
    i0: float | np.ndarray,
    path_lengths: Mapping[str, np.ndarray | float],
    mu: Mapping[str, float],
) -> np.ndarray:
    """Beer-Lambert: ``I = I0 * exp(-sum_t mu_t * L_t)``, the expected count behind the patient.

    Doubling tissue ``t``'s path length multiplies ``I`` by ``exp(-mu_t * L_t)``; the tests
    check exactly that.

    Args:
        i0: Unattenuated count (photons per pixel).
        path_lengths: Tissue -> path length in cm.
        mu: Tissue -> linear attenuation coefficient in 1/cm.

    Returns:
        The expected count per pixel.
    """
    return np.asarray(i0) * np.exp(-line_integral(path_lengths, mu))


def quantum_noise(
    expected: np.ndarray, standard_normal: np.ndarray, electronic_sd: float = 0.0
) -> np.ndarray:
    """Add Poisson (quantum) and Gaussian (electronic) noise to expected photon counts.

    The Poisson law is drawn through its normal approximation ``N(I, I)`` so that the random
    field ``standard_normal`` is independent of ``expected`` (see the module docstring).

    Args:
        expected: Expected counts ``I`` (>= 0).
        standard_normal: A standard-normal field of the same shape.
        electronic_sd: Standard deviation of the detector's electronic noise, in counts.

    Returns:
        Noisy counts, clipped below at 0.5 so that the logarithm stays finite.
    """
    counts = expected + np.sqrt(expected + electronic_sd**2) * standard_normal
    return np.maximum(counts, 0.5)


def detector_blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Blur the last two axes by the detector's Gaussian point-spread function.

    Args:
        image: ``[..., H, W]`` counts.
        sigma_px: Standard deviation of the PSF in pixels (0: no blur).

    Returns:
        The blurred image (same dtype); borders are reflected. The kernel reaches
        ``int(2 * sigma_px + 0.5)`` pixels.
    """
    if sigma_px <= 0:
        return image
    # Truncated at 2 sigma (renormalised): the PSF's tails are negligible, and a compact kernel
    # keeps every structure's influence within a known distance of its mask.
    out = ndimage.gaussian_filter1d(image, sigma_px, axis=-1, mode="reflect", truncate=2.0)
    return ndimage.gaussian_filter1d(out, sigma_px, axis=-2, mode="reflect", truncate=2.0)


def log_transform(counts: np.ndarray, i0: float) -> np.ndarray:
    """Return the detector's estimate of the line integral, ``-ln(counts / I0)``.

    Args:
        counts: Detected counts (> 0).
        i0: The flat-field (unattenuated) count.

    Returns:
        ``p`` per pixel: 0 in air, about 2-3 behind the lungs, 4-5 behind the heart.
    """
    return np.log(i0) - np.log(counts)


def display_window(p: np.ndarray, level: float, width: float) -> np.ndarray:
    """Map line integrals to display intensity in (0, 1) with a sigmoid tone curve.

    ``0.5`` at ``p = level``; ``width`` is the spread (the curve's slope at the level is
    ``1 / (4 * width)``). Bright means attenuating, as on a radiograph.

    Args:
        p: Line integrals.
        level: Centre of the window.
        width: Spread of the window (> 0).

    Returns:
        Display values in (0, 1), same dtype as ``p``.
    """
    return 0.5 + 0.5 * np.tanh((p - level) / (2.0 * width))


def quantize16(image: np.ndarray) -> np.ndarray:
    """Quantise display values in [0, 1] to 16-bit detector output (``uint16``).

    Args:
        image: Values in [0, 1].

    Returns:
        ``round(image * 65535)`` as ``uint16``.
    """
    return np.rint(np.clip(image, 0.0, 1.0) * 65535.0).astype(np.uint16)
