"""VinDr-CXR: image-level labels and finding boxes from several radiologists, DICOM.

Layouts read (ROOT is the folder the collection was downloaded to):

* **PhysioNet** (the official release, ``physionet.org/content/vindr-cxr/1.0.0``):
  ``annotations/annotations_train.csv`` and ``annotations/annotations_test.csv`` (one row per
  box: ``image_id, rad_id, class_name, x_min, y_min, x_max, y_max``; a ``No finding`` row
  without coordinates for a reader who marked nothing), ``annotations/image_labels_train.csv``
  and ``annotations/image_labels_test.csv`` (one row per image and reader: ``image_id,
  rad_id`` and one 0/1 column per label: 22 local labels, the 6 global ones ``COPD``, ``Lung
  tumor``, ``Pneumonia``, ``Tuberculosis``, ``Other diseases`` (``Other disease`` in the test
  file) and ``No finding``), images ``train/<image_id>.dicom`` and ``test/<image_id>.dicom``.
  The files may also lie at ROOT instead of ``annotations/``. Every training image was read
  independently by three radiologists (``rad_id`` R1..R17); every test image by the consensus
  of five (one row per image; its ``rad_id`` column may be absent).
* **Kaggle** (VinBigData Chest X-ray Abnormalities Detection, 2020): ``train.csv``
  (``image_id, class_name, class_id, rad_id, x_min, y_min, x_max, y_max``; 14 box classes and
  ``No finding``) and ``train/<image_id>.dicom``. Its test images have no published labels and
  are not imported; the labels come from the box rows.

Per image:

* **Findings** (``1``/``0``), one column per label, snake_case (``aortic_enlargement``,
  ``nodule_mass``, ``other_diseases``, ...), from the image-label files where present, else
  from the box rows (a finding a reader boxed is positive for that reader). The readers of a
  training image are combined by the option ``readers``: ``union`` (default; positive when any
  reader marked it, as torchxrayvision's ``VinDr_Dataset`` and the Kaggle challenge's
  ground truth do), ``majority`` (positive when more than half of the image's readers
  marked it) or one radiologist's ``rad_id`` (``R9``: that reader's labels and boxes only;
  training images that reader did not read are excluded, counted; the test part keeps its
  consensus). ``no_finding`` is ``1`` exactly when every other finding is ``0`` after
  combining (a reader's "No finding" does not outvote another reader's finding).
* **Boxes** ``box_<finding>`` for each local label (22 on PhysioNet, the 14 challenge classes
  on Kaggle): the corners ``x_min, y_min, x_max, y_max`` become the manifest's ``[x, y, w,
  h]`` (``w = x_max - x_min``), native pixels. A positive finding's cell is the union of the
  boxes of every reader who drew one; a negative finding's cell is ``[]`` (annotated: every
  image was read for every label). A positive finding without any box (the labels file and the
  box file disagree) is left empty (not annotated) and counted in the notes, as are boxes with
  zero or negative width or height (dropped).
* ``split`` (option ``split: official``): the official test images are ``test``; the
  official training images are ``train``, except a seeded ``val_fraction`` of them (default
  0.1, ``seed`` 0) that become ``val``, since a run needs a validation split and VinDr has
  none. ``split: none`` writes no ``split`` column (the run splits by patient itself).
  ``split: auto`` (default) is ``official`` when the test part was imported, else ``none``
  (Kaggle's copy has no test labels, and a run needs test images); ``official`` without a
  test part fails naming ``annotations/annotations_test.csv``.
  ``source_split`` always holds the official part (``train``/``test``); it is also a
  stratum worth having, since training labels come from three separate readers and test labels
  from a consensus of five.
* ``patient_id``: the ``image_id``. VinDr publishes no patient identifier, so each image
  counts as its own patient.

torchxrayvision's ``VinDr_Dataset`` (``VinBrain_Dataset``) is not used as the reader: it reads
one annotation CSV at a time, matches labels by substring (``'Pleural effusion'`` also for
``Effusion``), keeps 14 labels and needs the images to serve them; we read both parts, all
labels and every reader's boxes. Its "any reader" label rule is our default ``union``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from xaibench.data.importers.base import (
    ImportedRows,
    Importer,
    ImportLayoutError,
    keep_present,
    read_table,
    source_file,
)
from xaibench.data.importers.cells import box_cell, parse_number
from xaibench.progress import Progress

SOURCE = "vindr"
BOX_COLUMNS = ["image_id", "class_name", "x_min", "y_min", "x_max", "y_max"]
NO_FINDING = "No finding"

#: PhysioNet's 22 local labels (boxed), then its 6 global labels, as its files spell them.
LOCAL_LABELS: tuple[str, ...] = (
    "Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Clavicle fracture",
    "Consolidation", "Edema", "Emphysema", "Enlarged PA", "ILD", "Infiltration", "Lung Opacity",
    "Lung cavity", "Lung cyst", "Mediastinal shift", "Nodule/Mass", "Pleural effusion",
    "Pleural thickening", "Pneumothorax", "Pulmonary fibrosis", "Rib fracture", "Other lesion",
)  # fmt: skip
GLOBAL_LABELS: tuple[str, ...] = (
    "COPD", "Lung tumor", "Pneumonia", "Tuberculosis", "Other diseases", NO_FINDING,
)  # fmt: skip
#: The 14 box classes of the Kaggle challenge.
KAGGLE_LABELS: tuple[str, ...] = (
    "Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Consolidation", "ILD",
    "Infiltration", "Lung Opacity", "Nodule/Mass", "Other lesion", "Pleural effusion",
    "Pleural thickening", "Pneumothorax", "Pulmonary fibrosis",
)  # fmt: skip
#: Spellings that differ between the published files.
ALIASES: dict[str, str] = {"Other disease": "Other diseases"}


def snake(label: str) -> str:
    """``Nodule/Mass`` -> ``nodule_mass``, ``Enlarged PA`` -> ``enlarged_pa``."""
    return re.sub(r"[^a-z0-9]+", "_", ALIASES.get(label, label).lower()).strip("_")


FINDINGS: tuple[str, ...] = tuple(snake(label) for label in (*LOCAL_LABELS, *GLOBAL_LABELS))


class _Part:
    """What one official part (train or test) says about each image, per reader."""

    def __init__(self, labels: list[str]) -> None:
        self.labels = labels  # the findings this part's files assess, snake_case
        self.dropped_boxes = 0
        self.unlabelled = 0  # images in the box file but not in the labels file
        self.readers: dict[str, set[str]] = {}
        self.marks: dict[str, dict[str, set[str]]] = {}  # image -> finding -> readers
        self.boxes: dict[str, dict[str, dict[str, list[list[float]]]]] = {}  # image/finding/reader

    def mark(self, image: str, reader: str, finding: str) -> None:
        self.marks.setdefault(image, {}).setdefault(finding, set()).add(reader)


def _locate(root: Path, name: str) -> Path | None:
    for candidate in (f"annotations/{name}", name):
        if (root / candidate).is_file():
            return source_file(root, candidate, source=SOURCE)
    return None


class VinDrImporter(Importer):
    """VinDr-CXR (PhysioNet's ``annotations/`` + ``train/``, ``test/``; or Kaggle's ``train.csv``).

    Options:
        readers: How the readers of a training image combine: ``union``, ``majority``, or
            one radiologist's ``rad_id`` (``R1`` .. ``R17``).
        split: ``official`` (test as published, val drawn from train), ``none``, or ``auto``
            (``official`` when the test part is present, else ``none``).
        val_fraction: Share of the official training images that become ``val``.
        seed: Seed of that draw.
    """

    display_name: ClassVar[str] = "VinDr-CXR"
    citation: ClassVar[str] = (
        "Nguyen HQ, Lam K, Le LT, et al. VinDr-CXR: An open dataset of chest X-rays with "
        "radiologist's annotations. Scientific Data 2022; 9:429"
    )
    homepage: ClassVar[str] = "https://physionet.org/content/vindr-cxr/1.0.0/"
    download: ClassVar[str] = (
        "annotations/annotations_{train,test}.csv, annotations/image_labels_{train,test}.csv, "
        "train/<image_id>.dicom, test/<image_id>.dicom (or Kaggle's train.csv + train/)"
    )
    regions: ClassVar[tuple[str, ...]] = tuple(snake(label) for label in LOCAL_LABELS)
    findings: ClassVar[tuple[str, ...]] = FINDINGS

    readers: str = "union"
    split: Literal["auto", "official", "none"] = "auto"
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    seed: int = Field(0, ge=0)

    @field_validator("readers")
    @classmethod
    def _reader_policy(cls, value: str) -> str:
        if value not in ("union", "majority") and not re.fullmatch(r"R[0-9]+", value):
            raise ValueError(
                f"{value!r}: use 'union', 'majority' or a radiologist's rad_id such as 'R9'"
            )
        return value

    def read(self, root: Path, progress: Progress) -> ImportedRows:
        """Read each official part present, combine readers, write findings and boxes."""
        imported = ImportedRows([])
        parts: dict[str, _Part] = {}
        local: tuple[str, ...]
        train_boxes = _locate(root, "annotations_train.csv")
        if train_boxes is not None:
            local = LOCAL_LABELS
            imported.notes.append("PhysioNet layout (annotations/)")
            for name in ("train", "test"):
                boxes = _locate(root, f"annotations_{name}.csv")
                if boxes is None:
                    imported.notes.append(f"no annotations_{name}.csv: the {name} part is left out")
                    continue
                labels = _locate(root, f"image_labels_{name}.csv")
                parts[name] = self._read_part(root, boxes, labels, local)
        elif (root / "train.csv").is_file():
            local = KAGGLE_LABELS
            imported.notes.append("Kaggle layout (train.csv; its test images have no labels)")
            parts["train"] = self._read_part(
                root, source_file(root, "train.csv", source=SOURCE), None, local
            )
        else:
            source_file(root, "annotations/annotations_train.csv", "train.csv", source=SOURCE)
            raise AssertionError("unreachable")  # pragma: no cover
        box_findings = [snake(label) for label in local]
        for part in parts.values():
            for per_image in part.boxes.values():
                box_findings += [f for f in per_image if f not in box_findings]
        rows = self._rows(parts, box_findings, imported)
        imported.rows = keep_present(rows, root, imported, source=SOURCE)
        if self.split == "official" and "test" not in parts:
            raise ImportLayoutError(
                f"{SOURCE}: split=official needs the official test part, "
                "annotations/annotations_test.csv, under ROOT; use -O split=none"
            )
        if self.split == "official" or (self.split == "auto" and "test" in parts):
            self._draw_val(imported.rows)
        else:
            for row in imported.rows:
                del row["split"]
        imported.notes.append(
            "patient_id is the image_id: VinDr publishes no patient identifier, so each image "
            "counts as its own patient"
        )
        return imported

    def _read_part(
        self, root: Path, boxes_path: Path, labels_path: Path | None, local: tuple[str, ...]
    ) -> _Part:
        part = _Part([*(snake(label) for label in local), "no_finding"])
        table = read_table(boxes_path, BOX_COLUMNS, root=root, source=SOURCE)
        reader_column = "rad_id" if "rad_id" in table.columns else None
        for i, row in enumerate(table.itertuples(index=False)):
            cells = dict(zip(table.columns, row, strict=True))
            image = cells["image_id"]
            if not image:
                raise ImportLayoutError(f"{SOURCE}: {boxes_path.name} row {i + 1} has no image_id")
            reader = cells[reader_column] if reader_column else "consensus"
            part.readers.setdefault(image, set()).add(reader)
            label = ALIASES.get(cells["class_name"], cells["class_name"])
            if label == NO_FINDING or not label:
                continue
            finding = snake(label)
            part.mark(image, reader, finding)
            corners = [parse_number(cells[c]) for c in BOX_COLUMNS[2:]]
            x0, y0, x1, y1 = corners
            if x0 is None or y0 is None or x1 is None or y1 is None or x1 <= x0 or y1 <= y0:
                part.dropped_boxes += 1
                continue
            per_reader = part.boxes.setdefault(image, {}).setdefault(finding, {})
            per_reader.setdefault(reader, []).append([x0, y0, x1 - x0, y1 - y0])
        if labels_path is not None:
            self._read_labels(root, labels_path, part)
        return part

    def _read_labels(self, root: Path, path: Path, part: _Part) -> None:
        table = read_table(path, ["image_id"], root=root, source=SOURCE)
        reader_column = next((c for c in table.columns if c.lower() == "rad_id"), None)
        label_columns = [c for c in table.columns if c not in ("image_id", reader_column)]
        if not label_columns:
            raise ImportLayoutError(f"{SOURCE}: {path.name} has no label column")
        part.labels = [snake(c) for c in label_columns]
        boxed = set(part.readers)
        part.marks = {}  # the labels file decides the findings; boxes stay
        part.readers = {}
        for i, row in enumerate(table.itertuples(index=False)):
            cells = dict(zip(table.columns, row, strict=True))
            image = cells["image_id"]
            reader = cells[reader_column] if reader_column else "consensus"
            part.readers.setdefault(image, set()).add(reader)
            for column in label_columns:
                value = cells[column]
                if value not in ("0", "1", "0.0", "1.0", ""):
                    raise ImportLayoutError(
                        f"{SOURCE}: {path.name} row {i + 1} column {column!r}: expected 0 or 1, "
                        f"got {value[:20]!r}"
                    )
                if value in ("1", "1.0"):
                    part.mark(image, reader, snake(column))
        part.unlabelled = len(boxed - set(part.readers))

    def _rows(
        self, parts: dict[str, _Part], box_findings: list[str], imported: ImportedRows
    ) -> list[dict[str, str]]:
        rows: list[dict[str, str]] = []
        unboxed = 0
        for name, part in parts.items():
            imported.exclude(f"not in image_labels_{name}.csv", part.unlabelled)
            if part.dropped_boxes:
                imported.notes.append(
                    f"{part.dropped_boxes} {name} box(es) without corners or with zero width or "
                    "height dropped"
                )
            one = self.readers not in ("union", "majority") and name == "train"
            for image in sorted(part.readers):
                readers = part.readers[image]
                marks = part.marks.get(image, {})
                if one:
                    if self.readers not in readers:
                        imported.exclude(f"not read by {self.readers}")
                        continue
                    readers = {self.readers}
                    marks = {f: who & readers for f, who in marks.items() if who & readers}
                positive = {f for f, who in marks.items() if self._counts(who, readers)}
                row = {
                    "image": f"{name}/{image}.dicom",
                    "patient_id": image,
                    "source_id": image,
                    "split": name,
                    "source_split": name,
                }
                findings = [f for f in part.labels if f != "no_finding"]
                findings += [f for f in marks if f not in findings and f != "no_finding"]
                for finding in findings:
                    row[finding] = "1" if finding in positive else "0"
                if "no_finding" in part.labels:
                    row["no_finding"] = "0" if positive - {"no_finding"} else "1"
                drawn = part.boxes.get(image, {})
                for finding in box_findings:
                    if finding not in positive:
                        row[f"box_{finding}"] = "[]"
                        continue
                    by_reader = drawn.get(finding, {})
                    boxes = [b for who in sorted(marks[finding]) for b in by_reader.get(who, [])]
                    if not boxes:
                        unboxed += 1
                    row[f"box_{finding}"] = box_cell(boxes) if boxes else ""
                rows.append(row)
        if unboxed:
            imported.notes.append(
                f"{unboxed} positive finding(s) without a box left empty (not annotated)"
            )
        return rows

    def _counts(self, who: Iterable[str], readers: set[str]) -> bool:
        marked = len(set(who) & readers) if readers else len(set(who))
        if self.readers != "majority":  # union, or one reader's own marks
            return marked > 0
        return 2 * marked > max(len(readers), 1)

    def _draw_val(self, rows: list[dict[str, str]]) -> None:
        train = sorted((r["source_id"], i) for i, r in enumerate(rows) if r["split"] == "train")
        n_val = round(self.val_fraction * len(train))
        order = np.random.default_rng(self.seed).permutation(len(train))
        for k in order[:n_val]:
            rows[train[int(k)][1]]["split"] = "val"
