"""RSNA Pneumonia Detection Challenge (2018): pneumonia labels and lung-opacity boxes, DICOM.

Layout read (ROOT is the folder the Kaggle competition data was unpacked to):

* ``stage_2_train_labels.csv``: ``patientId, x, y, width, height, Target``, one row per box
  (several rows = several boxes of one image); ``Target`` 0 rows have empty box cells.
* ``stage_2_detailed_class_info.csv`` (optional): ``patientId, class`` with ``Lung Opacity``,
  ``No Lung Opacity / Not Normal`` or ``Normal``.
* ``stage_2_train_images/<patientId>.dcm``.

The stage 1 files (``stage_1_train_labels.csv``, ``stage_1_detailed_class_info.csv``,
``stage_1_train_images/``) are read when the stage 2 ones are absent. The test images have no
published labels and are not imported.

Per image:

* ``pneumonia``: the ``Target`` (``1`` = evidence of pneumonia), and ``normal``: ``1`` when the
  detailed class is ``Normal``, ``0`` for the other two classes (blank without the file).
* ``box_pneumonia``: the image's boxes ``[[x, y, width, height], ...]`` in native pixels (the
  challenge's own convention, the manifest's ``box_`` format; 1024 x 1024 images); ``[]`` for
  ``Target`` 0 (annotated: no opacity). The boxes are the challenge's "Lung Opacity" boxes,
  the region the radiologists marked as evidence of pneumonia; the region is named after the
  finding so that a ``pneumonia`` task's region has the finding's name.
* ``rsna_class``: the detailed class as snake_case text (a stratum: ``normal`` against
  ``no_lung_opacity_not_normal`` separates two kinds of negatives).
* ``patient_id``: the ``patientId``. Despite its name it identifies one image: the challenge
  published one image per id and no link between ids of one person (the images come from NIH
  ChestX-ray14, whose patient ids were removed), so each image counts as its own patient.
* ``view``, ``sex``, ``age`` from the DICOM header (``ViewPosition`` PA/AP, ``PatientSex``,
  ``PatientAge``) unless ``dicom_headers: false``. AP films are mostly bedside films of sicker
  patients: ``view`` is worth a stratum here.

Quirks and their policy (counted in ``manifest.json``): rows of one image whose ``Target``
differ, a ``Target`` 1 row without a box, a ``Target`` 0 row with one, a ``Target`` other than
0/1, or a box with ``width``/``height`` <= 0: the image is excluded (``inconsistent labels``).

torchxrayvision's ``RSNA_Pneumonia_Dataset`` is not used as the reader: by default it reads
its packaged label copy and a DICOM-header CSV of its own making (not part of the challenge's
download), keeps the first row per image (dropping further boxes from its table) and needs the
images to serve them; we read the user's files, keep every box and read view, sex and age from
the user's DICOM headers. Its label (``Target`` for both Pneumonia and Lung Opacity) is ours.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from xaibench.data.importers.base import (
    ImportedRows,
    Importer,
    ImportLayoutError,
    keep_present,
    read_table,
    source_file,
)
from xaibench.data.importers.cells import box_cell, dicom_header_cells, parse_number
from xaibench.progress import Progress

SOURCE = "rsna_pneumonia"
LABEL_COLUMNS = ["patientId", "x", "y", "width", "height", "Target"]
INCONSISTENT = "inconsistent labels"
CLASSES = {
    "lung opacity": "lung_opacity",
    "no lung opacity / not normal": "no_lung_opacity_not_normal",
    "normal": "normal",
}


def _stage_files(root: Path) -> tuple[Path, Path | None, str]:
    """The labels file, the class file (or None) and the image folder of the stage present."""
    for stage in ("stage_2", "stage_1"):
        if (root / f"{stage}_train_labels.csv").is_file():
            labels = source_file(root, f"{stage}_train_labels.csv", source=SOURCE)
            info = root / f"{stage}_detailed_class_info.csv"
            return labels, info if info.is_file() else None, f"{stage}_train_images"
    source_file(root, "stage_2_train_labels.csv", "stage_1_train_labels.csv", source=SOURCE)
    raise AssertionError("unreachable")  # pragma: no cover


class RsnaPneumoniaImporter(Importer):
    """RSNA Pneumonia Detection (``stage_2_train_labels.csv`` + ``stage_2_train_images/``).

    Options:
        dicom_headers: Read ``view``, ``sex`` and ``age`` from each image's DICOM header.
    """

    display_name: ClassVar[str] = "RSNA Pneumonia Detection"
    citation: ClassVar[str] = (
        "Shih G, Wu CC, Halabi SS, et al. Augmenting the National Institutes of Health Chest "
        "Radiograph Dataset with Expert Annotations of Possible Pneumonia. Radiology: "
        "Artificial Intelligence 2019; 1(1):e180041"
    )
    homepage: ClassVar[str] = "https://www.kaggle.com/c/rsna-pneumonia-detection-challenge"
    download: ClassVar[str] = (
        "stage_2_train_labels.csv, stage_2_detailed_class_info.csv and "
        "stage_2_train_images/<patientId>.dcm"
    )
    regions: ClassVar[tuple[str, ...]] = ("pneumonia",)
    findings: ClassVar[tuple[str, ...]] = ("pneumonia", "normal")

    dicom_headers: bool = True

    def read(self, root: Path, progress: Progress) -> ImportedRows:
        """Group the label rows per image, attach the detailed class, keep present images."""
        labels_path, info_path, folder = _stage_files(root)
        table = read_table(labels_path, LABEL_COLUMNS, root=root, source=SOURCE)
        classes: dict[str, str] = {}
        if info_path is not None:
            info = read_table(info_path, ["patientId", "class"], root=root, source=SOURCE)
            for ident, name in info[["patientId", "class"]].itertuples(index=False):
                classes.setdefault(ident, CLASSES.get(name.lower(), ""))
        imported = ImportedRows([], notes=[f"labels from {labels_path.name}"])
        targets: dict[str, set[str]] = {}
        boxes: dict[str, list[list[float]]] = {}
        bad: set[str] = set()
        for ident, *cells, target in table[LABEL_COLUMNS].itertuples(index=False):
            if not ident:
                imported.exclude("row without patientId")
                continue
            targets.setdefault(ident, set()).add(target)
            boxes.setdefault(ident, [])
            numbers = [parse_number(c) for c in cells]
            has_box = any(c != "" for c in cells)
            if target not in ("0", "1") or has_box != (target == "1"):
                bad.add(ident)
            elif has_box:
                x, y, w, h = numbers
                if x is None or y is None or w is None or h is None or w <= 0 or h <= 0:
                    bad.add(ident)
                else:
                    boxes[ident].append([x, y, w, h])
        if not targets:
            raise ImportLayoutError(f"{SOURCE}: {labels_path.name} lists no image")
        rows: list[dict[str, str]] = []
        for ident, seen in targets.items():
            if ident in bad or len(seen) != 1:
                imported.exclude(INCONSISTENT)
                continue
            row = {
                "image": f"{folder}/{ident}.dcm",
                "patient_id": ident,
                "source_id": ident,
                "pneumonia": next(iter(seen)),
                "box_pneumonia": box_cell(boxes[ident]),
            }
            if info_path is not None:
                rsna_class = classes.get(ident, "")
                row["normal"] = "" if not rsna_class else "1" if rsna_class == "normal" else "0"
                row["rsna_class"] = rsna_class
            rows.append(row)
        imported.rows = keep_present(rows, root, imported, source=SOURCE)
        if self.dicom_headers:
            for row in progress.track(
                imported.rows, total=len(imported.rows), description="reading DICOM headers"
            ):
                row.update(dicom_header_cells(root / row["image"]))
        if info_path is None:
            imported.notes.append("no detailed class file: no 'normal' and 'rsna_class' columns")
        imported.notes.append(
            "patient_id is the patientId, which identifies one image: each image counts as "
            "its own patient"
        )
        return imported
