"""``phantom``: built-in synthetic chest radiographs whose class signal lives only in bone.

Real chest X-rays with DXA T-scores are private, yet every part of the benchmark (training,
saliency, perturbation, the bone-overlap scores) must run and be testable anywhere. The phantom
provides frontal chest radiographs with exact region masks that encode bone mineral density
**only** in bone: an explanation that points at the lungs is wrong by construction, and
perturbing bone must destroy a good model's prediction.

Phantom v2 is anatomically and physically plausible:

1. **Cohort** (:func:`~xaibench.data.phantom_cohort.cohort_table`). Patients are drawn one at a
   time, each from its own random stream: a WHO class from ``class_shares``, a T-score from
   ``N(-0.82, 1.02)`` truncated to the class (that normal reproduces the study's 57/38/5 shares),
   and ``1 + Poisson(images_per_patient - 1)`` images whose T-scores carry a small measurement
   jitter that never changes the class.
2. **BMD** (:func:`~xaibench.data.phantom_cohort.bmd_of_t_score`). ``BMD = 0.858 + 0.120 T`` g/cm^2,
   i.e. ``T = (BMD - 0.858) / 0.120``: the NHANES III femoral-neck reference for young (20-29 years)
   non-Hispanic white women (Looker et al., Osteoporos Int 1998;8:468-489), the reference that
   defines WHO T-scores. The phantom uses it as the patient's systemic bone status: the ratio ``r =
   BMD / 0.858`` scales the cortical thickness (``r``) and the trabecular bone volume fraction
   (``r^2``) of every bone, and the trabecular texture grows more heterogeneous as ``r`` falls
   (:mod:`xaibench.data.phantom_anatomy`).
3. **Anatomy** (:mod:`xaibench.data.phantom_anatomy`). Per patient, from a stream that never sees
   the T-score: body, breasts, lungs, diaphragm, heart, trachea, spine, ribs, clavicles,
   scapulae and sternum, rasterised once as per-tissue path-length maps and exact masks
   (:mod:`xaibench.data.phantom_maps`, with the shapes in :mod:`xaibench.data.phantom_shapes`).
4. **Acquisition** (:func:`~xaibench.data.phantom_render.sample_acquisition`). Per image:
   positioning (shift, rotation, magnification, depth of inspiration), effective energy, photon
   fluence, display window. Repeat images of a patient share the anatomy and differ only by these.
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

This module holds :class:`PhantomDataset` (options, table, chunked generation and its cache).
The cohort, BMD and marker draws are in :mod:`xaibench.data.phantom_cohort`; the per-image
acquisition and the rendering of one image are in :mod:`xaibench.data.phantom_render`.
"""

from __future__ import annotations

import hashlib
import json
import operator
import os
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import ConfigDict, Field, PrivateAttr, field_validator

from xaibench.cache import CacheNamespace, content_key, default_cache_dir
from xaibench.component import Seed
from xaibench.data.base import Dataset, Sample
from xaibench.data.phantom_anatomy import BONE_GROUPS, REGION_BITS, sample_anatomy
from xaibench.data.phantom_cohort import (
    _STREAM_ANATOMY,
    _STREAM_IMAGE,
    _STREAM_TEXTURE,
    MAX_PHANTOM_IMAGES,
    STUDY_CLASS_SHARES,
    Cohort,
    bmd_of_t_score,
    cohort_table,
    marker_drawn,
    unrelated_bone_t_score,
)
from xaibench.data.phantom_maps import PatientMaps, patient_maps
from xaibench.data.phantom_render import render_image, sample_acquisition
from xaibench.data.who import who_class

if TYPE_CHECKING:
    import pandas as pd


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
