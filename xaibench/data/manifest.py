"""``manifest``: the user's own radiographs, described by a CSV (``docs/data.md`` has the format).

Columns: ``image`` (PNG, JPEG or DICOM path, relative to the CSV's folder or to the
``image_root`` given), ``patient_id``; optional ``split`` (train/val/test), ``source_id`` (the
source's own image id), one source column per region (``mask_<region>`` files, ``rle_``,
``siim_rle_``, ``polygon_``, ``box_`` annotations: :mod:`xaibench.data.region_formats`) and any
other columns — label columns such as ``t_score``, ``label`` or one per finding, and metadata
(age, sex, view, ...). The dataset knows no class: the task reads its labels from
:meth:`ManifestDataset.table` and checks them.

Decisions, each also in the docs:

* **Grid.** Images are resized to a square ``image_size`` (default 256) — bilinear with
  anti-aliasing for images, nearest neighbour for masks — so a cohort of mixed detector sizes
  runs without preprocessing; the aspect ratio is not kept. ``image_size: null`` keeps the
  native size and then every image must have the same size.
* **Intensities** follow :mod:`xaibench.data.images`: bit depth for PNG/JPEG, the DICOM pixel
  pipeline (rescale, VOI LUT/window, MONOCHROME1 inverted) for DICOM; never quantised to 8 bits.
* **Sample ids** are ``row00001``, ``row00002``, ...: the 1-based CSV data row, so a user can
  join results back to their own CSV, while file names and patient ids — which may contain names
  — never reach a results file. Patient ids and metadata only live in memory (splits, tables).
* **Regions** are the region columns with at least one non-empty cell. An empty cell means
  "this image has no annotation of the region": its mask is empty, so localisation scores are
  undefined (NaN, excluded) for that image, and the runner skips the region's perturbation tests
  when a test image lacks it (see :meth:`ManifestDataset.annotated`). An explicit empty
  annotation (``[]``, SIIM's ``-1``) is an annotation: the region is absent from the image. An
  image a person excluded from a region in the ``qc_exclude`` column (``region: reason``
  pairs, ``;``-separated; :mod:`xaibench.segmenters.quality` proposes them) counts as not
  annotated for it, with the reason kept (:meth:`ManifestDataset.excluded`). A
  mask file whose size is an exact integer fraction of its image's is upsampled
  nearest-neighbour. ``bone``, ``lungs`` and ``clavicles`` are derived from their parts where no
  column gives them (:mod:`xaibench.data.manifest_regions`).
* **Checks.** Construction runs every check that needs no decoding (columns, paths inside the
  image root, files exist, annotation syntax, splits, duplicates) and refuses a faulty manifest
  with all problems listed by row. Labels are the task's to check.
  Decoding problems appear while images load — before any training — and all at once with
  ``xaibench data check``.
* **Containment.** Image and mask paths must resolve (``..`` and symlinks followed) inside the
  image root (the CSV's folder, or the ``image_root`` the user gives) and name regular files
  with one hard link, unless ``allow_outside_paths`` is set, so a manifest from someone else
  cannot make the benchmark read arbitrary files (:mod:`xaibench.data.check` explains the
  threat). The rules are checked when the CSV is read and again on each file's open
  descriptor, which is then what is read (:meth:`xaibench.data.files.Containment.read`), so a
  symlink or hard link swapped in between is refused too, and a FIFO is never waited on.
* **Pixel budget.** An image or mask whose header declares more than ``max_pixels`` pixels is
  refused before decoding (:data:`~xaibench.data.images.DEFAULT_MAX_PIXELS`, 60 million):
  a small file can hold a decompression bomb.
* **Nothing from file headers.** Decoding keeps pixels only (for DICOM, the pixel data and the
  attributes that scale it); no header value — patient name, ids, dates, institution — is kept
  in a :class:`~xaibench.data.base.Sample` or in :meth:`ManifestDataset.table`, so none can
  reach a results file.
* **Sidecar.** ``<csv stem>.json`` beside the CSV, when ``xaibench data masks`` wrote it, says
  which segmenter made the masks; :attr:`ManifestDataset.mask_provenance` exposes it and
  ``results.json`` records it (:mod:`xaibench.data.manifest_sidecar`). Other JSON files there
  are ignored.
* **Fingerprint**: hashes of the CSV (annotation cells included) and of every image and mask
  file's bytes (taken while the images load, so each file is read once), so replacing a file
  invalidates caches. Where the files are (``image_root``) is not part of it.
"""

from __future__ import annotations

import hashlib
import json
import operator
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import ConfigDict, Field, PrivateAttr

from xaibench.data.base import Dataset, Sample
from xaibench.data.check import (
    ManifestRows,
    format_problems,
    printable,
    read_manifest,
)
from xaibench.data.files import Containment, FileRefusedError
from xaibench.data.images import (
    DEFAULT_MAX_PIXELS,
    ImageReadError,
    decode_image,
    resize_image,
    resize_mask,
)
from xaibench.data.manifest_regions import decode_region, derive, region_annotated, region_layout
from xaibench.data.manifest_sidecar import mask_provenance as read_mask_provenance
from xaibench.data.region_formats import AnnotationError
from xaibench.errors import MultipleErrors, XaibenchError

if TYPE_CHECKING:
    import pandas as pd

#: Problems listed in the error of a manifest that refuses to load.
MAX_LISTED_PROBLEMS = 20


class ManifestError(MultipleErrors):
    """A manifest has problems; one item per problem, named by row (the CLI prints each)."""


class ManifestDataset(Dataset):
    """Your own chest radiographs (PNG, JPEG or DICOM) with any labels and regions, from a CSV.

    Bring private data to the benchmark without code: one CSV row per image, paths relative to
    the CSV (or to ``image_root``). Check a new manifest with ``xaibench data check
    manifest.csv`` first; it reads every image and reports every problem at once.
    """

    model_config = ConfigDict(use_attribute_docstrings=True)

    display_name: ClassVar[str] = "Your images (CSV manifest)"
    fixed_regions: ClassVar[bool] = False
    version: ClassVar[str] = "2"

    path: str
    """The manifest CSV; image and mask paths in it are relative to its folder (or to
    ``image_root``)."""
    image_size: int | None = Field(256, ge=16, le=4096)
    """Side of the square grid every image and mask is resized to; null keeps the native size
    (all images must then have the same size)."""
    image_root: str | None = None
    """The folder image and mask paths are relative to and must stay inside; default the CSV's
    folder. For a manifest written by ``xaibench data import`` (paths relative to the dataset's
    folder), give that folder (``--image-root``). Set by you, never read from a file; where the
    files are does not change the data, so it is not part of the fingerprint."""
    allow_outside_paths: bool = False
    """Accept image and mask paths that resolve (after ``..`` and symlinks) outside the image
    root. Off by default, so a manifest received from someone else cannot make the benchmark
    read arbitrary files of whoever runs it; turn it on for a manifest you wrote yourself over a
    shared image store (``--allow-outside-paths``). It also accepts files with several hard
    links. It does not change the data, so it is not part of the fingerprint."""
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1)
    """Largest image or mask, in pixel values (rows x columns x channels x frames: a colour
    pixel counts three times), read from the file's header and refused before decoding: a
    guard against decompression bombs (a 22 KB PNG can declare 179 megapixels). The default,
    60 million, admits every chest radiograph (at most 18.5 MP, 55.5 million values as colour)
    and mammogram (at most about 29 MP). It refuses or admits files but never changes one, so it
    is not part of the fingerprint."""

    _rows: ManifestRows | None = PrivateAttr(default=None)
    _key: tuple[object, ...] | None = PrivateAttr(default=None)
    _layout: tuple[tuple[str, ...], dict[str, tuple[str, ...]]] = PrivateAttr(default=((), {}))
    _digests: dict[int, str] = PrivateAttr(default_factory=dict)
    _provenance: dict[str, Any] | None = PrivateAttr(default=None)
    _honour_exclusions: bool = PrivateAttr(default=True)

    def model_post_init(self, context: Any, /) -> None:
        """Read and check the CSV now, so a faulty manifest fails before any work starts."""
        self._manifest()

    def _manifest(self) -> ManifestRows:
        # Keyed by the options read_manifest sees, since ``model_copy(update=...)`` copies
        # private attributes.
        key = (self.path, self.allow_outside_paths, self.image_root)
        if self._rows is None or self._key != key:
            rows, problems = read_manifest(
                self.path, allow_outside_paths=self.allow_outside_paths, image_root=self.image_root
            )
            if problems or rows is None:
                raise ManifestError(
                    f"manifest {self.path} has {len(problems)} problem"
                    f"{'s' if len(problems) != 1 else ''} (rows are 1-based CSV data rows; "
                    "`xaibench data check` lists them all)",
                    format_problems(problems, MAX_LISTED_PROBLEMS).splitlines(),
                )
            self._provenance = read_mask_provenance(rows.path, rows.csv_sha256)
            self._rows, self._key = rows, key
            self._layout = region_layout(rows.regions)
            self._digests.clear()
        return self._rows

    # --- regions ------------------------------------------------------------------------------

    @property
    def region_names(self) -> tuple[str, ...]:
        """``bone`` (given or derived), every annotated region column, other derived regions."""
        self._manifest()
        return self._layout[0]

    @property
    def strata_columns(self) -> tuple[str, ...]:
        """Every column of :meth:`table` but ``sample_id``, ``patient_id`` and ``split``.

        The manifest cannot tell label columns from metadata; the runner leaves out the task's
        label columns (``Task.label_columns``).
        """
        return tuple(self._manifest().metadata)

    @property
    def region_groups(self) -> Mapping[str, tuple[str, ...]]:
        """Derived regions and their parts (``{"bone": ("spine", "ribs")}``)."""
        self._manifest()
        return dict(self._layout[1])

    def annotated(self, region: str) -> np.ndarray:
        """Per sample, whether ``region`` is annotated (a non-empty cell), not just empty.

        An explicit empty annotation (``[]``, ``-1``) counts as annotated. A derived region is
        annotated where every one of its parts is.

        Raises:
            KeyError: ``region`` is not one of :attr:`region_names`.
        """
        if region not in self.region_names:
            raise KeyError(region)
        flags = region_annotated(self._manifest().regions, self._layout[1], region)
        for i in self.excluded(region):
            flags[i] = False
        return flags

    def excluded(self, region: str) -> dict[int, str]:
        """0-based rows excluded from ``region``'s scores by ``qc_exclude``, with reasons.

        A derived region is excluded where it or one of its parts is (``left_lung`` excluded
        excludes ``lungs``). Such an image counts as not annotated for the region
        (:meth:`annotated`) and its mask is empty, so its localisation scores are undefined
        (NaN, left out) and the region's perturbation tests are skipped like those of a region
        missing on a test image. Empty when reading :meth:`ignoring_exclusions`.
        """
        rows = self._manifest()
        if not self._honour_exclusions:
            return {}
        out = dict(rows.exclusions.get(region, {}))
        for part in self._layout[1].get(region, ()):
            for i, reason in self.excluded(part).items():
                out.setdefault(i, f"{part}: {reason}")
        return dict(sorted(out.items()))

    def _is_excluded(self, region: str, i: int) -> bool:
        if not self._honour_exclusions:
            return False
        if i in self._manifest().exclusions.get(region, {}):
            return True
        return any(self._is_excluded(p, i) for p in self._layout[1].get(region, ()))

    def ignoring_exclusions(self) -> ManifestDataset:
        """A copy that reads every mask, ``qc_exclude`` or not (for quality control)."""
        copy = self.model_copy()
        copy._honour_exclusions = False
        return copy

    @property
    def mask_provenance(self) -> dict[str, Any] | None:
        """What made the manifest's masks (``xaibench data masks``), from its sidecar; or None.

        Read from ``<csv stem>.json`` beside the CSV when it is a ``xaibench-masks`` sidecar
        (:mod:`xaibench.data.manifest_sidecar`): the segmenter's provenance, the regions it
        wrote and the quality-control summary. ``results.json`` records it in its dataset
        section.
        """
        self._manifest()
        return None if self._provenance is None else json.loads(json.dumps(self._provenance))

    # --- samples ------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Number of rows."""
        return len(self._manifest())

    def table(self) -> pd.DataFrame:
        """One row per CSV row, from the CSV alone (no image is opened).

        Columns: ``sample_id``, ``patient_id``, ``split`` when given (normalised), then every
        other column that is neither a file nor a region nor ``source_id`` — label columns
        included, as typed by :func:`~xaibench.data.values.typed_column` (numbers where the
        whole column is numeric, else the stripped text). File paths are left out: they may
        contain names.
        """
        import pandas as pd

        rows = self._manifest()
        columns: dict[str, Any] = {
            "sample_id": [_sample_id(i) for i in range(len(rows))],
            "patient_id": list(rows.frame["patient_id"]),
        }
        if rows.split is not None:
            columns["split"] = list(rows.split)
        for name, values in rows.metadata.items():
            columns[name] = values.to_numpy(copy=True)
        return pd.DataFrame(columns)

    def __getitem__(self, index: int) -> Sample:
        """Read, decode and resize row ``index`` (0-based; negative counts from the end).

        Raises:
            IndexError: ``index`` is out of range.
            XaibenchError: A file cannot be read or decoded, or a region does not fit its image
                (a mask of another size, an annotation outside the image); the message names
                the row and the column.
        """
        rows = self._manifest()
        i = operator.index(index)
        if i < 0:
            i += len(rows)
        if not 0 <= i < len(rows):
            raise IndexError(f"manifest index {index} out of range for {len(rows)} rows")
        digest = hashlib.sha256()
        image_path = rows.images[i]
        data = self._read(i, "image")
        digest.update(data)
        try:
            image = decode_image(data, str(image_path), max_pixels=self.max_pixels)
        except ImageReadError as exc:
            raise self._row_error(i, "image", str(exc)) from None
        shape = (int(image.shape[0]), int(image.shape[1]))
        masks: dict[str, np.ndarray] = {}
        flags: dict[str, bool] = {}
        for region, source in rows.regions.items():
            flags[region] = bool(source.annotated[i])
            if source.format == "mask":  # the files' bytes, as before non-file formats existed
                digest.update(b"\0" + region.encode() + b"\0")
            if not flags[region]:
                masks[region] = np.zeros(shape, dtype=bool)
                continue
            cell = str(rows.frame[source.column].iat[i])
            name = str(source.paths[i]) if source.paths is not None else source.column

            def read(column: str = source.column) -> bytes:
                data = self._read(i, column)
                digest.update(data)
                return data

            try:
                masks[region] = decode_region(source, cell, shape, read, self.max_pixels, name)
            except AnnotationError as exc:
                raise self._row_error(i, source.column, str(exc)) from None
        self._digests[i] = digest.hexdigest()
        derive(masks, flags, self._layout[1], shape)
        for region in self.region_names:
            if self._is_excluded(region, i):  # qc_exclude: not annotated, empty mask
                masks[region] = np.zeros(shape, dtype=bool)
        if self.image_size is not None:
            image = resize_image(image, self.image_size)
            masks = {r: resize_mask(masks[r], self.image_size) for r in self.region_names}
        import torch

        return Sample(
            sample_id=_sample_id(i),
            patient_id=str(rows.frame["patient_id"].iat[i]),
            image=torch.from_numpy(np.ascontiguousarray(image)).unsqueeze(0),
            regions={
                r: torch.from_numpy(np.ascontiguousarray(masks[r])) for r in self.region_names
            },
            attributes=self._attributes(i),
        )

    def native_image(self, index: int) -> np.ndarray:
        """Row ``index``'s image (0-based) decoded on its own grid: no resize, no regions.

        What a segmenter needs (``xaibench data masks``): masks are written on each image's
        native grid, whatever :attr:`image_size` says.

        Returns:
            A float32 ``[H, W]`` array of raw intensities in [0, 1].

        Raises:
            IndexError: ``index`` is out of range.
            XaibenchError: The file cannot be read or decoded; the message names the row.
        """
        rows = self._manifest()
        i = operator.index(index)
        if not 0 <= i < len(rows):
            raise IndexError(f"manifest index {index} out of range for {len(rows)} rows")
        data = self._read(i, "image")
        try:
            return decode_image(data, str(rows.images[i]), max_pixels=self.max_pixels)
        except ImageReadError as exc:
            raise self._row_error(i, "image", str(exc)) from None

    def _attributes(self, i: int) -> dict[str, float | int | str]:
        rows = self._manifest()
        out: dict[str, float | int | str] = {}
        if rows.split is not None:
            out["split"] = rows.split[i]
        for name, values in rows.metadata.items():
            value = values.iat[i]
            out[name] = float(value) if isinstance(value, float | np.floating) else str(value)
        return out

    def _read(self, i: int, column: str) -> bytes:
        """The bytes of row ``i``'s file in ``column``, checked as it is read.

        The CSV was checked when it was read, but a symlink, hard link or FIFO may have been
        swapped in since: :meth:`~xaibench.data.files.Containment.read` checks containment,
        file type and links again, on the descriptor the bytes are then read from.
        """
        rows = self._manifest()
        files = Containment(rows.root, allow_outside_paths=self.allow_outside_paths)
        try:
            return files.read(str(rows.frame[column].iat[i]))
        except FileRefusedError as exc:
            raise self._row_error(i, column, str(exc)) from None

    def _row_error(self, i: int, column: str, message: str) -> XaibenchError:
        return XaibenchError(
            printable(
                f"manifest {self.path}, row {i + 1} ({column}): {message} "
                f"(run `xaibench data check {self.path}` to list every problem at once)"
            )
        )

    def fingerprint(self) -> str:
        """Hash of the version, the options (not the files' location), the CSV and every file.

        Annotation cells (RLE, polygons, boxes) are in the CSV's hash. File hashes are taken
        while samples load; files of rows not loaded yet are read (not decoded) here, so the
        fingerprint always covers every file's current bytes.
        """
        rows = self._manifest()
        for i in range(len(rows)):
            if i not in self._digests:
                digest = hashlib.sha256(self._read(i, "image"))
                for region, source in rows.regions.items():
                    if source.format != "mask":
                        continue
                    digest.update(b"\0" + region.encode() + b"\0")
                    if source.annotated[i]:
                        digest.update(self._read(i, source.column))
                self._digests[i] = digest.hexdigest()
        payload = {
            "class": type(self).__name__,
            "version": self.version,
            "options": {
                k: v
                for k, v in self.options().items()
                if k not in ("path", "allow_outside_paths", "max_pixels", "image_root")
            },
            "csv": rows.csv_sha256,
            "files": [self._digests[i] for i in range(len(rows))],
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _sample_id(i: int) -> str:
    """Non-identifying id of 0-based row ``i``: ``row`` and the 1-based CSV data row."""
    return f"row{i + 1:05d}"
