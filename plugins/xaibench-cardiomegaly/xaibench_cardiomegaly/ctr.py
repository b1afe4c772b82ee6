"""The cardiothoracic ratio (CTR), measured from region masks, and the label it defines.

The CTR is the classic radiographic screen for cardiomegaly: on a frontal (PA) chest film, the
widest transverse diameter of the cardiac silhouette over the widest inner diameter of the
thorax; above 0.5 the heart is called enlarged (Danzer, Am J Med Sci 1919; every radiology
textbook since). It is defined here once, on masks, so the phantom's labels, a manifest's optional
``ctr`` column and the tests all mean the same number:

* **Heart diameter** — the horizontal extent of the heart mask: its rightmost minus its leftmost
  column, whatever rows they are on. This is the clinical ``MRD + MLD`` (greatest distance of the
  right and of the left heart border from the midline, usually at different levels), which for a
  tilted heart is wider than its widest single row.
* **Thoracic diameter** — the widest horizontal extent, within one row, of ``lungs | heart``: the
  distance between the lateral borders of the two lung fields at the level where they are furthest
  apart. The lung fields' lateral borders lie on the inner margins of the ribs, which is where the
  inner thoracic diameter is measured on a film; the heart is included so that a heart reaching
  past a lung's border (impossible in the phantom, possible in a hand-drawn mask) still counts.

Extents are counted in pixel columns (``last - first + 1``) on the same grid for both diameters,
so the ratio does not depend on the pixel size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Class names in label order (index 0 and 1).
CLASS_NAMES: tuple[str, str] = ("normal", "cardiomegaly")

#: A CTR above this is cardiomegaly (the PA-film convention; 0.5 itself is normal).
CTR_THRESHOLD: float = 0.5


@dataclass(frozen=True)
class CtrMeasurement:
    """A cardiothoracic ratio and the two diameters it is made of.

    Attributes:
        ctr: ``heart_cm / thorax_cm``; NaN when either mask is empty.
        heart_cm: Widest transverse diameter of the heart (MRD + MLD), in the unit of the pixel
            size given (cm for the phantom, pixels by default).
        thorax_cm: Widest inner thoracic diameter (one row of ``lungs | heart``), same unit.
    """

    ctr: float
    heart_cm: float
    thorax_cm: float


def measure_ctr(heart: np.ndarray, lungs: np.ndarray, pixel_cm: float = 1.0) -> CtrMeasurement:
    """Measure the cardiothoracic ratio of one image from its heart and lung masks.

    Args:
        heart: Boolean heart mask ``[H, W]`` (rows top to bottom, columns left to right).
        lungs: Boolean mask of both lung fields ``[H, W]``, same grid.
        pixel_cm: Width of a pixel column; only scales the diameters, never the ratio.

    Returns:
        The :class:`CtrMeasurement`; every field is NaN when the heart mask is empty.

    Raises:
        ValueError: The masks are not 2-D or differ in shape.
    """
    heart = np.asarray(heart, dtype=bool)
    lungs = np.asarray(lungs, dtype=bool)
    if heart.ndim != 2 or heart.shape != lungs.shape:
        raise ValueError(
            f"heart and lung masks must be 2-D and of one shape, got {heart.shape} and "
            f"{lungs.shape}"
        )
    columns = np.flatnonzero(heart.any(axis=0))
    if columns.size == 0:
        return CtrMeasurement(float("nan"), float("nan"), float("nan"))
    heart_px = int(columns[-1] - columns[0] + 1)
    thorax = heart | lungs
    filled = thorax.any(axis=1)
    first = thorax.argmax(axis=1)
    last = thorax.shape[1] - 1 - thorax[:, ::-1].argmax(axis=1)
    thorax_px = int((last - first + 1)[filled].max())
    return CtrMeasurement(heart_px / thorax_px, heart_px * pixel_cm, thorax_px * pixel_cm)


def ctr_class(ctr: float | np.ndarray) -> np.ndarray:
    """Label index per CTR: 1 (cardiomegaly) above :data:`CTR_THRESHOLD`, else 0 (normal)."""
    return (np.asarray(ctr, dtype=float) > CTR_THRESHOLD).astype(np.int64)
