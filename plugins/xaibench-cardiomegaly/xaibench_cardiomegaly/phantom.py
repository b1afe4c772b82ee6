"""``cardiac_phantom``: the core phantom's chest radiographs, with the class signal in heart size.

xaibench's ``phantom`` encodes bone density in bone; this dataset reuses it whole — cohort,
anatomy, acquisition, physics, masks, caching — and changes one thing: every patient's heart is
resized so that the cardiothoracic ratio (CTR, :mod:`xaibench_cardiomegaly.ctr`) lands on a
target drawn for the patient, and the label is the CTR *measured* on the rendered masks. An
explanation of a cardiomegaly call should therefore point at the heart (and the thoracic borders
the ratio is taken against), never at bone.

Per patient:

1. **Anatomy** — drawn exactly as the core phantom draws it (same streams), so patient ``p`` is the
   core phantom's patient ``p``, only with another heart.
2. **Target CTR** — from the patient's own cardiac stream (which sees nothing else):
   cardiomegaly with probability ``cardiomegaly_share``, then a target uniform in
   ``[0.5 + margin, ctr_range[1]]`` for cardiomegaly or in ``[ctr_range[0], 0.5 - margin]`` for
   a normal heart. ``margin`` keeps targets away from the threshold, so small data and small
   models can learn the task; ``margin: 0`` gives a continuous CTR distribution whose cases near
   0.5 are as hard as they are on films.
3. **Heart** — its ellipse's semi-axes and its depth along the beam are scaled by one factor
   (:func:`enlarge_heart`; the depth at most 3/4 of the chest's): a dilated heart is bigger in
   every direction, and the larger chord displaces more lung, as on a film. The factor is the
   target over the CTR the anatomy's geometry predicts (:func:`predicted_ctr`). The heart's
   centre stays put: it keeps resting on the diaphragm (the core clips the heart there) and grows
   to the left, right and up, inside the lung fields.
4. **Measurement** — the patient's maps are rasterised at the dataset's ``image_size`` and the CTR
   is measured on their heart and lung masks. That measured value is the ``ctr`` column and
   defines the label, so label and pixels always agree even where the geometric prediction is off
   by a pixel (measured CTRs fall within about 0.015 of their targets at 128 px).

Repeat images of a patient differ only by positioning, exposure and noise (the core's
acquisition); a rotation of at most 1.5 degrees and a vertical inspiration scale leave the ratio of
two horizontal diameters unchanged to within a pixel, so the CTR is measured once per patient, on
the canonical (unposed) maps.

Bone density still follows the cohort's T-scores (``t_score``, ``bmd``; the study's class shares
by default), drawn on streams that never see the cardiac label: bone varies between patients but
carries no information about the heart. The core's class-coded ``shortcut`` marker would code the
WHO *bone* class, not this label, so it is refused here; the ``shortcut`` region (the empty marker
box in the corner) remains as a region that should never matter.

Cached on disk like the core phantom (its images under ``<cache>/phantom`` with a key that includes
this dataset's version and options, so it never collides with the core phantom's), plus the
per-patient CTR measurements in the plugin's own cache namespace, ``<cache>/cardiac_phantom``,
through :class:`xaibench.cache.CacheNamespace` (checksummed, verified on every read; a corrupt
entry is logged, deleted and measured again).
"""

from __future__ import annotations

import dataclasses
import json
import operator
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import Field, PrivateAttr, field_validator, model_validator

from xaibench.cache import CacheNamespace, content_key, default_cache_dir
from xaibench.data.base import Sample
from xaibench.data.phantom import PhantomDataset
from xaibench.data.phantom_anatomy import (
    FIELD_CM,
    REGION_BITS,
    Anatomy,
    sample_anatomy,
)
from xaibench.data.phantom_maps import PatientMaps, patient_maps
from xaibench.data.who import WHO_CLASSES, who_class
from xaibench.errors import XaibenchError
from xaibench_cardiomegaly.ctr import CLASS_NAMES, CTR_THRESHOLD, CtrMeasurement, measure_ctr

if TYPE_CHECKING:
    import pandas as pd

#: Version of what this package changes in the phantom's images and labels; bump it whenever
#: they change. The dataset's version combines it with the core phantom's, so a new core
#: renderer also invalidates the cache.
CARDIAC_VERSION = "1"

#: Random-stream tags, as in the core phantom (``default_rng([seed, patient, tag])``). Anatomy and
#: texture use the core's tags, so a patient keeps the core phantom's body (the tests check that
#: the maps agree); the cardiac draw has its own tag, far from the core's 0-5.
STREAM_ANATOMY = 1
STREAM_TEXTURE = 3
STREAM_CARDIAC = 101

#: Plausible CTR targets: below 0.30 the heart would be smaller than any adult's, above 0.66 its
#: left border would approach the chest wall in the narrowest chests the phantom draws.
CTR_LIMITS: tuple[float, float] = (0.30, 0.66)


#: Largest heart depth along the beam, as a share of the chest's (the phantom's natural hearts
#: take 0.4-0.65 of it).
MAX_HEART_DEPTH_SHARE = 0.75


@dataclass(frozen=True)
class HeartPlan:
    """What a patient's heart is drawn for.

    Attributes:
        enlarged: Whether the cardiac stream drew cardiomegaly (the label is still the measured
            CTR's; with ``margin > 0`` the two agree for every patient the tests looked at).
        target_ctr: The CTR the heart is resized for.
        natural_ctr: The CTR the unscaled anatomy's geometry predicts.
        scale: Factor on the heart's semi-axes and depth: ``target_ctr / natural_ctr``.
    """

    enlarged: bool
    target_ctr: float
    natural_ctr: float
    scale: float


def predicted_ctr(anatomy: Anatomy) -> float:
    """The CTR an anatomy's geometry predicts, before rasterisation.

    The heart is an ellipse with semi-axes ``(a, b)`` tilted by ``t``; its horizontal half-extent
    is ``sqrt(a^2 cos^2 t + b^2 sin^2 t)``. The lungs' lateral borders lie ``chest_wall`` inside
    the chest's half-width on either side. Only used to choose the heart's scale; the label comes
    from the measurement (the two agree to about 0.015 at 128 px).
    """
    a, b = anatomy.heart_axes
    t = anatomy.heart_angle
    half_heart = float(np.sqrt((a * np.cos(t)) ** 2 + (b * np.sin(t)) ** 2))
    return half_heart / (anatomy.chest_half_width - anatomy.chest_wall)


def enlarge_heart(anatomy: Anatomy, scale: float) -> Anatomy:
    """Return ``anatomy`` with the heart's two semi-axes and half-depth multiplied by ``scale``.

    The centre, tilt and every other structure are kept; the core clips the heart at the
    diaphragm, so it keeps resting on it. The depth along the beam stops at
    :data:`MAX_HEART_DEPTH_SHARE` of the chest's, so even the largest heart leaves room in front
    and behind it (the image hardly changes: by then the heart has displaced all lung in front
    of and behind it).
    """
    a, b = anatomy.heart_axes
    depth = min(anatomy.heart_half_depth * scale, MAX_HEART_DEPTH_SHARE * anatomy.chest_half_depth)
    return dataclasses.replace(anatomy, heart_axes=(a * scale, b * scale), heart_half_depth=depth)


def _threads() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


class CardiacPhantomDataset(PhantomDataset):
    """The core phantom with each heart resized to a drawn CTR; the label is the measured CTR.

    Use it to run and test the cardiomegaly task without private data: only heart size (relative
    to the thorax) carries the label, and explanations can be scored against exact heart masks.
    Options are the core phantom's plus ``cardiomegaly_share``, ``ctr_range`` and ``margin``.
    """

    display_name: ClassVar[str] = "Cardiac phantom chest X-ray (synthetic)"
    version: ClassVar[str] = f"{PhantomDataset.version}+cardiac.{CARDIAC_VERSION}"

    cardiomegaly_share: float = Field(0.4, ge=0.0, le=1.0)
    """Probability that a patient is drawn with cardiomegaly (CTR target above 0.5)."""
    ctr_range: tuple[float, float] = (0.38, 0.64)
    """Lowest and highest CTR target: normal hearts are drawn in ``[low, 0.5 - margin]``,
    enlarged ones in ``[0.5 + margin, high]``, uniformly (limits 0.30 and 0.66)."""
    margin: float = Field(0.03, ge=0.0, lt=0.12)
    """Gap kept on either side of the 0.5 threshold (0: a continuous CTR distribution)."""
    shortcut: float = Field(0.0, ge=0.0, le=1.0)
    """Not supported: the core's marker codes the bone class, not this label; must be 0."""

    _heart_key: str | None = PrivateAttr(default=None)
    _heart: np.ndarray | None = PrivateAttr(default=None)
    _cardiac_table: pd.DataFrame | None = PrivateAttr(default=None)
    _cardiac_table_key: str | None = PrivateAttr(default=None)
    _ctr_cache_dir: Path | None = PrivateAttr(default=None)
    _ctr_cache_off: bool = PrivateAttr(default=False)

    @field_validator("shortcut")
    @classmethod
    def _no_shortcut(cls, value: float) -> float:
        if value != 0:
            raise ValueError(
                "the cardiac phantom has no shortcut marker (the core's codes the WHO bone "
                "class, which says nothing about the heart); leave shortcut at 0"
            )
        return value

    @model_validator(mode="after")
    def _check_targets(self) -> CardiacPhantomDataset:
        low, high = self.ctr_range
        lo_limit, hi_limit = CTR_LIMITS
        if not (lo_limit <= low < CTR_THRESHOLD - self.margin):
            raise ValueError(
                f"ctr_range[0] must be in [{lo_limit}, 0.5 - margin) = [{lo_limit}, "
                f"{CTR_THRESHOLD - self.margin:g}), got {low}"
            )
        if not (CTR_THRESHOLD + self.margin < high <= hi_limit):
            raise ValueError(
                f"ctr_range[1] must be in (0.5 + margin, {hi_limit}] = "
                f"({CTR_THRESHOLD + self.margin:g}, {hi_limit}], got {high}"
            )
        return self

    @property
    def strata_columns(self) -> tuple[str, ...]:
        """``thorax_cm`` and ``bone_class``: neither defines the label, both are worth a look.

        By thorax width (quartile bands): a model that learned absolute heart size instead of the
        ratio calls cardiomegaly too often in wide chests and misses it in narrow ones. By WHO
        bone class: bone carries nothing about the heart, so performance should not vary by it.
        """
        return ("thorax_cm", "bone_class")

    # ---- per-patient heart ------------------------------------------------------------------

    def base_anatomy(self, patient: int) -> Anatomy:
        """Patient ``patient``'s anatomy as the core phantom draws it (heart not yet resized)."""
        return sample_anatomy(np.random.default_rng([self.seed, patient, STREAM_ANATOMY]))

    def heart_plan(self, patient: int, anatomy: Anatomy | None = None) -> HeartPlan:
        """Draw patient ``patient``'s class and CTR target and the heart scale that reaches it.

        Both uniforms are drawn whatever the class, so a patient's target depends only on the
        seed, the patient and the target options.

        Args:
            patient: Patient index.
            anatomy: The patient's :meth:`base_anatomy`, when already drawn.
        """
        rng = np.random.default_rng([self.seed, patient, STREAM_CARDIAC])
        u_class, u_target = (float(u) for u in rng.random(2))
        enlarged = u_class < self.cardiomegaly_share
        low, high = self.ctr_range
        if enlarged:
            low = CTR_THRESHOLD + self.margin
        else:
            high = CTR_THRESHOLD - self.margin
        target = low + u_target * (high - low)
        natural = predicted_ctr(anatomy or self.base_anatomy(patient))
        return HeartPlan(enlarged, target, natural, target / natural)

    def anatomy(self, patient: int) -> Anatomy:
        """Patient ``patient``'s anatomy with the heart resized to its CTR target."""
        base = self.base_anatomy(patient)
        return enlarge_heart(base, self.heart_plan(patient, base).scale)

    def patient_maps(self, patient: int) -> PatientMaps:
        """Rasterise the patient's anatomy, heart resized, at this dataset's image size.

        The core renders every image of the patient from these maps, so images, masks and the
        measured CTR all come from one heart.
        """
        texture = np.random.default_rng([self.seed, patient, STREAM_TEXTURE])
        return patient_maps(self.anatomy(patient), self.image_size, texture)

    def measure(self, patient: int) -> CtrMeasurement:
        """Measure patient ``patient``'s CTR on its canonical heart and lung masks (cm)."""
        labels = self.patient_maps(patient).labels
        return measure_ctr(
            (labels & REGION_BITS["heart"]) > 0,
            (labels & REGION_BITS["lungs"]) > 0,
            FIELD_CM / self.image_size,
        )

    # ---- the measurements of every patient, cached ------------------------------------------

    def _target_options(self) -> dict[str, Any]:
        return {k: v for k, v in self.options().items() if k != "n_images"}

    def use_cache(self, directory: Path | None, *, enabled: bool = True) -> None:
        """Follow the run's ``cache`` / ``cache_dir`` settings for images and measurements."""
        super().use_cache(directory, enabled=enabled)
        self._ctr_cache_dir, self._ctr_cache_off = directory, not enabled

    def _ctr_store(self) -> CacheNamespace:
        return CacheNamespace("cardiac_phantom", self._ctr_cache_dir or default_cache_dir())

    def _ctr_name(self, n_patients: int) -> str:
        key = content_key("cardiac_phantom", self.version, self._target_options())
        return f"{key}-ctr-{n_patients}"

    def _ctr_file(self, n_patients: int) -> Path:
        return self._ctr_store().path(self._ctr_name(n_patients))

    def _measurements(self, n_patients: int) -> np.ndarray:
        """``[n_patients, 3]``: measured CTR, heart and thorax diameter (cm) per patient.

        Every patient's maps are rasterised once (a few ms each, on a few threads) and the
        result is kept in memory and on disk, keyed by every option but ``n_images``.
        """
        key = json.dumps([self._target_options(), n_patients], sort_keys=True)
        if self._heart is not None and self._heart_key == key:
            return self._heart
        disk = self.disk_cache and not self._ctr_cache_off
        values = self._load_measurements(n_patients) if disk else None
        if values is None:
            threads = min(_threads(), n_patients)
            with ThreadPoolExecutor(threads) as pool:
                found = list(pool.map(self.measure, range(n_patients)))
            values = np.array([[m.ctr, m.heart_cm, m.thorax_cm] for m in found], dtype=float)
            if disk:
                self._store_measurements(values)
        self._heart, self._heart_key = values, key
        return values

    def _load_measurements(self, n_patients: int) -> np.ndarray | None:
        def parse(data: bytes) -> np.ndarray:
            values = np.asarray(json.loads(data), dtype=float)
            if values.shape != (n_patients, 3):
                raise ValueError(f"{values.shape} measurements, expected {(n_patients, 3)}")
            return values

        # verified on read: a corrupt entry is logged, deleted and measured again
        return self._ctr_store().read(self._ctr_name(n_patients), parse)

    def _store_measurements(self, values: np.ndarray) -> None:
        # a read-only or full cache never stops a run (reported once)
        self._ctr_store().write(self._ctr_name(len(values)), json.dumps(values.tolist()).encode())

    # ---- table and samples ---------------------------------------------------------------

    def _labelled_table(self) -> pd.DataFrame:
        key = json.dumps(self.options(), sort_keys=True)
        if self._cardiac_table is not None and self._cardiac_table_key == key:
            return self._cardiac_table
        table = super().table()
        patient = _patient_indices(table["patient_id"])
        values = self._measurements(int(patient.max()) + 1)[patient]
        table["ctr"] = values[:, 0]
        table["heart_cm"] = values[:, 1]
        table["thorax_cm"] = values[:, 2]
        table["label"] = np.asarray(CLASS_NAMES, dtype=object)[
            (values[:, 0] > CTR_THRESHOLD).astype(int)
        ]
        table["bone_class"] = np.asarray(WHO_CLASSES, dtype=object)[
            who_class(table["t_score"].to_numpy(dtype=float))
        ]
        self._cardiac_table, self._cardiac_table_key = table, key
        return table

    def table(self) -> pd.DataFrame:
        """One row per image, without rendering any (each patient's masks are rasterised once).

        Columns: the core phantom's (``sample_id``, ``patient_id``, ``t_score``, ``bmd``,
        ``visit``, ``image_bmd``, ``marker``) plus ``ctr`` (measured, the label's source),
        ``heart_cm`` and ``thorax_cm`` (its two diameters), ``label`` (``normal`` or
        ``cardiomegaly``) and ``bone_class`` (the WHO class of ``t_score``).

        Returns:
            A fresh copy, so callers may modify it.
        """
        return self._labelled_table().copy()

    def __getitem__(self, index: int) -> Sample:
        """The core phantom's sample, with ``ctr`` and ``label`` among its attributes."""
        sample = super().__getitem__(index)
        i = operator.index(index)
        row = self._labelled_table().iloc[i]
        return dataclasses.replace(
            sample,
            attributes={**sample.attributes, "ctr": float(row["ctr"]), "label": str(row["label"])},
        )


def _patient_indices(patient_ids: pd.Series) -> np.ndarray:
    """Patient indices from the core phantom's ids (``P00012`` -> 12).

    Raises:
        XaibenchError: An id is not of that form (the core changed its ids): better to stop
            than to give patients each other's hearts.
    """
    parts = patient_ids.astype(str).str.fullmatch(r"P(\d+)")
    if not parts.all():
        bad = patient_ids[~parts].iloc[0]
        raise XaibenchError(
            f"cardiac_phantom cannot read the core phantom's patient id {bad!r}; expected "
            "'P' and a number (xaibench-cardiomegaly needs an update for this xaibench)"
        )
    return patient_ids.astype(str).str.slice(1).astype(np.int64).to_numpy()
