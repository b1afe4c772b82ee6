"""SIIM-ACR Pneumothorax Segmentation: DICOM images and run-length-encoded pneumothorax masks.

Layouts read (ROOT is the folder the collection was downloaded or unpacked to):

* **Original** (SIIM's release, the 2019 Kaggle challenge's stage 1, the academic torrent):
  ``train-rle.csv`` with header ``ImageId, EncodedPixels`` (a leading space in the second
  name) and images nested ``dicom-images-train/<study UID>/<series UID>/<ImageId>.dcm``.
* **Kaggle stage 2**: ``stage_2_train.csv`` (``ImageId,EncodedPixels``: the final labels of
  the stage 1 train and test images) with the images in any folder under ROOT: the nested
  ``dicom-images-train``/``dicom-images-test`` trees, a flat ``stage_2_images/`` or ``train/``.

Images are found by walking every folder under ROOT (symbolic links are not followed) and
mapping ``<ImageId>.dcm`` to its path, so every one of these layouts works unchanged. Both
label files may be present; the option ``labels`` picks one (``auto``: ``stage_2_train.csv``
when present, the final labels, else ``train-rle.csv``).

Per image (the CSV has one row per pneumothorax part, and one ``-1`` row for an image
without pneumothorax):

* ``pneumothorax``: ``1`` when any row has an encoding, else ``0``.
* ``siim_rle_pneumothorax``: SIIM's ``EncodedPixels`` text as published, the rows of one
  image joined with ``|`` (the manifest reads them as one union); ``-1`` for an image without
  pneumothorax (annotated, empty). The manifest decodes it (``xaibench/data/region_formats``).
  A ``-1`` row next to encoded rows of the same image is dropped (counted in the notes).
* ``patient_id``: the ImageId. SIIM publishes no patient identifier (the DICOM PatientID is a
  per-image pseudonym), so each image counts as its own patient: a split cannot keep one
  person's images together. Recorded in the sidecar's notes.
* ``view``, ``sex``, ``age`` from each file's DICOM header (``ViewPosition``, ``PatientSex``,
  ``PatientAge``; header only, no pixels) unless ``dicom_headers: false``.

Rows with an empty or malformed ``EncodedPixels`` (not ``-1`` nor integer pairs) are excluded
and counted. torchxrayvision's ``SIIM_Pneumothorax_Dataset`` is not used as the reader: it
reads its packaged copy of ``train-rle.csv`` unless given a path, opens the images to serve
them, and keeps one sample per CSV row (an image with two parts is two samples); we read the
user's file and group by image. We follow it in walking the image folders for ``<ImageId>.dcm``
and in its label (``EncodedPixels != -1``).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from xaibench.data.importers.base import (
    ImportedRows,
    Importer,
    ImportLayoutError,
    keep_present,
    read_table,
    source_file,
)
from xaibench.data.importers.cells import dicom_header_cells, walk_files
from xaibench.progress import Progress

SOURCE = "siim"
LABEL_FILES: dict[str, tuple[str, ...]] = {
    "stage_2_train.csv": ("stage_2_train.csv", "stage_2_train.csv.gz"),
    "train-rle.csv": ("train-rle.csv", "train-rle.csv.gz"),
}
EMPTY = "-1"
MALFORMED = "EncodedPixels empty or malformed"


def _valid_encoding(text: str) -> bool:
    tokens = text.split()
    return (
        bool(tokens) and len(tokens) % 2 == 0 and all(t.isascii() and t.isdigit() for t in tokens)
    )


class SiimImporter(Importer):
    """SIIM-ACR Pneumothorax (``train-rle.csv`` or ``stage_2_train.csv`` + DICOM folders).

    Options:
        labels: Which label file: ``auto`` (``stage_2_train.csv`` when present, else
            ``train-rle.csv``) or one of the two names.
        dicom_headers: Read ``view``, ``sex`` and ``age`` from each image's DICOM header.
    """

    display_name: ClassVar[str] = "SIIM-ACR Pneumothorax"
    citation: ClassVar[str] = (
        "SIIM-ACR Pneumothorax Segmentation, Society for Imaging Informatics in Medicine and "
        "American College of Radiology, Kaggle 2019"
    )
    homepage: ClassVar[str] = "https://www.kaggle.com/c/siim-acr-pneumothorax-segmentation"
    download: ClassVar[str] = (
        "train-rle.csv and dicom-images-train/<study>/<series>/<ImageId>.dcm (or the Kaggle "
        "stage 2 stage_2_train.csv with the DICOM images in any folder under ROOT)"
    )
    regions: ClassVar[tuple[str, ...]] = ("pneumothorax",)
    findings: ClassVar[tuple[str, ...]] = ("pneumothorax",)

    labels: Literal["auto", "stage_2_train.csv", "train-rle.csv"] = "auto"
    dicom_headers: bool = True

    def _label_file(self, root: Path) -> Path:
        if self.labels != "auto":
            return source_file(root, *LABEL_FILES[self.labels], source=SOURCE)
        for candidates in LABEL_FILES.values():
            for name in candidates:
                if (root / name).is_file():
                    return source_file(root, name, source=SOURCE)
        return source_file(root, "train-rle.csv", "stage_2_train.csv", source=SOURCE)

    def read(self, root: Path, progress: Progress) -> ImportedRows:
        """Read the label file and map each ImageId to its DICOM file under ``root``."""
        path = self._label_file(root)
        table = read_table(path, ["ImageId", "EncodedPixels"], root=root, source=SOURCE)
        imported = ImportedRows([], notes=[f"labels from {path.name}"])
        parts: dict[str, list[str]] = {}
        malformed: set[str] = set()
        for image_id, encoding in table[["ImageId", "EncodedPixels"]].itertuples(index=False):
            if not image_id:
                imported.exclude("row without ImageId")
                continue
            if encoding != EMPTY and not _valid_encoding(encoding):
                malformed.add(image_id)
            parts.setdefault(image_id, []).append(encoding)
        if not parts:
            raise ImportLayoutError(f"{SOURCE}: {path.name} lists no image")
        files = walk_files(root, [".dcm"])
        if not any(image_id in files for image_id in parts):
            first = next(iter(parts))
            raise ImportLayoutError(
                f"{SOURCE}: none of the {len(parts)} images listed in {path.name} was found "
                f"as <ImageId>.dcm under {root} (expected e.g. dicom-images-train/<study "
                f"UID>/<series UID>/{first}.dcm); is ROOT the folder the collection was "
                "downloaded to?"
            )
        rows: list[dict[str, str]] = []
        dropped_empty = 0
        for image_id, encodings in parts.items():
            if image_id in malformed:
                imported.exclude(MALFORMED)
                continue
            found = [e for e in encodings if e != EMPTY]
            dropped_empty += len(encodings) - len(found) if found else 0
            relative = files.get(image_id, f"{image_id}.dcm")
            rows.append(
                {
                    "image": relative,
                    "patient_id": image_id,
                    "source_id": image_id,
                    "pneumothorax": "1" if found else "0",
                    "siim_rle_pneumothorax": "|".join(found) if found else EMPTY,
                }
            )
        if dropped_empty:
            imported.notes.append(
                f"{dropped_empty} '-1' row(s) next to encoded rows of the same image ignored"
            )
        imported.rows = keep_present(rows, root, imported, source=SOURCE)
        if self.dicom_headers:
            rows_read = progress.track(
                imported.rows, total=len(imported.rows), description="reading DICOM headers"
            )
            for row in rows_read:
                row.update(dicom_header_cells(root / row["image"]))
        imported.notes.append(
            "patient_id is the ImageId: SIIM publishes no patient identifier, so each image "
            "counts as its own patient"
        )
        return imported
