"""NIH ChestX-ray14: 14 text-mined findings per image and radiologists' boxes for 8 of them.

Published layout (https://nihcc.app.box.com/v/ChestXray-NIHCC, also on Kaggle), under ROOT:

* ``Data_Entry_2017_v2020.csv`` (or the original ``Data_Entry_2017.csv``): one row per image,
  ``Image Index, Finding Labels, Follow-up #, Patient ID, Patient Age, Patient Gender (the
  v2020 file may say Patient Sex), View Position, OriginalImage[Width,Height], ...``. The
  header's bracketed names hold unquoted commas, and the 2017 file ends each line with an empty
  column; neither is read. ``Finding Labels`` is ``|``-joined labels or ``No Finding``.
* ``BBox_List_2017.csv`` (optional): ``Image Index, Finding Label, Bbox [x,y,w,h]`` followed by
  empty columns; the four numbers are the box in pixels of the released 1024 x 1024 PNG
  (x, y = top-left corner). The file spells Infiltration ``Infiltrate``.
* ``train_val_list.txt`` and ``test_list.txt``: the official split, one image name per line.
* Images as ``images/<Image Index>`` (one folder, the Box archives extracted together) or as
  the 12 archives' ``images_001/images/...`` ... ``images_012/images/...`` (Kaggle's layout).

What the manifest gets, and the policy per quirk:

* One finding column per label (``atelectasis`` ... ``pneumothorax``, ``pleural_thickening``) and
  ``no_finding``, each ``1``/``0`` (NIH has no uncertain or blank label). An unknown label is an
  error naming the row.
* ``box_<finding>`` for the 8 boxed findings: a JSON list of ``[x, y, w, h]`` (several boxes of
  one finding on one image are listed together). Only the ~880 images of the box list are
  annotated: there a finding without a box is ``[]`` (annotated, absent) when the image's label
  is 0, and blank (not annotated) when the label is 1 but no box was drawn. Option
  ``negative_boxes: true`` writes ``[]`` on every image whose label is 0 (the whole collection
  as negatives of a detection task). Option ``boxes: false`` writes no box column.
* ``view``: ``PA`` or ``AP``. NIH has only frontal images, so ``views: frontal`` (the default)
  keeps every image; ``views: [PA]`` keeps PA only.
* ``split``: NIH defines ``train_val_list.txt`` and ``test_list.txt`` only (patient-disjoint).
  The manifest format needs a value on every row or no ``split`` column at all, so
  ``split: official`` (default) writes ``test`` for the test list and divides the train_val
  list into ``train`` and ``val`` **by patient** (``val_fraction`` of its patients, shuffled
  with ``seed``; this part is ours, not NIH's, and recorded in the sidecar). ``split: none``
  writes no ``split`` column (the run splits by patient) and keeps NIH's list as the metadata
  column ``source_split`` (``train_val``/``test``).
* ``patient_id`` (``Patient ID``), ``source_id`` (``Image Index``), metadata ``age``, ``sex``,
  ``follow_up``. The 2017 file has a few ages above 120 (e.g. 414): those are blanked and
  counted in the notes, never passed on as a wrong number.

torchxrayvision's ``NIH_Dataset`` is not used: it needs the image folder to exist before it
reads a label, reads its packaged CSVs unless given paths, keeps one image per patient by
default, drops the follow-up number, and scales boxes onto a square mask of its own size
rather than giving them in the image's pixel coordinates.
"""

from __future__ import annotations

import json
import math
import os
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
from xaibench.data.importers.chexpert_labels import (
    check_views,
    records,
    view_reason,
    view_selected,
)
from xaibench.progress import Progress

SOURCE = "nih"

#: Published label -> finding column, in the order of the paper's table.
LABELS: dict[str, str] = {
    "Atelectasis": "atelectasis",
    "Cardiomegaly": "cardiomegaly",
    "Effusion": "effusion",
    "Infiltration": "infiltration",
    "Mass": "mass",
    "Nodule": "nodule",
    "Pneumonia": "pneumonia",
    "Pneumothorax": "pneumothorax",
    "Consolidation": "consolidation",
    "Edema": "edema",
    "Emphysema": "emphysema",
    "Fibrosis": "fibrosis",
    "Pleural_Thickening": "pleural_thickening",
    "Hernia": "hernia",
}
NO_FINDING = "No Finding"

#: The findings the box list covers (BBox_List_2017.csv says ``Infiltrate``).
BOXED: tuple[str, ...] = (
    "atelectasis",
    "cardiomegaly",
    "effusion",
    "infiltration",
    "mass",
    "nodule",
    "pneumonia",
    "pneumothorax",
)
_BOX_LABELS = {**LABELS, "Infiltrate": "infiltration"}

#: Oldest plausible age; NIH's 2017 file has typos such as 414.
MAX_AGE = 120

NOT_IN_SPLIT_LISTS = "not in train_val_list.txt or test_list.txt"


class NIHChestXray14(Importer):
    """NIH ChestX-ray14 (``Data_Entry_2017*.csv``, ``BBox_List_2017.csv``, the split lists).

    Attributes:
        views: ``frontal`` (every NIH image), ``all``, or a list of view codes (``[PA]``).
        boxes: Write ``box_<finding>`` columns from ``BBox_List_2017.csv``: ``auto`` (when the
            file is there), true (the file is required) or false.
        negative_boxes: Write ``[]`` (annotated, no box) on every image whose label of a boxed
            finding is 0, not only on the images of the box list.
        split: ``official`` (test list -> test; train_val list -> train/val by patient) or
            ``none`` (no split column; ``source_split`` metadata).
        val_fraction: Share of the train_val list's patients put in ``val`` (split official).
        seed: Seed of that draw.
    """

    display_name: ClassVar[str] = "NIH ChestX-ray14"
    citation: ClassVar[str] = (
        "Wang X, Peng Y, Lu L, Lu Z, Bagheri M, Summers RM. ChestX-ray8: Hospital-scale Chest "
        "X-ray Database and Benchmarks on Weakly-Supervised Classification and Localization of "
        "Common Thorax Diseases. CVPR 2017."
    )
    homepage: ClassVar[str] = "https://nihcc.app.box.com/v/ChestXray-NIHCC"
    download: ClassVar[str] = (
        "Data_Entry_2017_v2020.csv (or Data_Entry_2017.csv), BBox_List_2017.csv, "
        "train_val_list.txt, test_list.txt and the images in images/ or images_NNN/images/"
    )
    regions: ClassVar[tuple[str, ...]] = BOXED
    findings: ClassVar[tuple[str, ...]] = (*LABELS.values(), "no_finding")

    views: str | list[str] = "frontal"
    boxes: bool | Literal["auto"] = "auto"
    negative_boxes: bool = False
    split: Literal["official", "none"] = "official"
    val_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    seed: int = Field(default=0, ge=0)

    @field_validator("views")
    @classmethod
    def _views(cls, value: str | list[str]) -> str | list[str]:
        check_views(value)
        return value

    def read(self, root: Path, progress: Progress) -> ImportedRows:
        """Read the label file, the box list and the split lists; find each image."""
        entries = source_file(
            root, "Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv", source=SOURCE
        )
        box_file = None
        if self.boxes is not False:
            try:
                box_file = source_file(root, "BBox_List_2017.csv", source=SOURCE)
            except ImportLayoutError:
                if self.boxes is True:
                    raise
        try:
            lists: tuple[Path, Path] | None = (
                source_file(root, "train_val_list.txt", source=SOURCE),
                source_file(root, "test_list.txt", source=SOURCE),
            )
        except ImportLayoutError:
            if self.split == "official":
                raise
            lists = None
        table = read_table(
            entries,
            [
                "Image Index",
                "Finding Labels",
                "Follow-up #",
                "Patient ID",
                "Patient Age",
                "View Position",
            ],
            root=root,
            source=SOURCE,
        )
        sex_column = next((c for c in ("Patient Gender", "Patient Sex") if c in table), None)
        if sex_column is None:
            raise ImportLayoutError(f"{SOURCE}: {entries.name} has no column 'Patient Gender'")
        imported = ImportedRows([])
        imported.notes.append(f"labels from {entries.name}")
        boxes = self._read_boxes(box_file, root, imported) if box_file else None
        source_split = self._read_lists(lists, root) if lists else None
        folders = _image_folders(root, imported)
        rows: list[dict[str, str]] = []
        bad_ages = 0
        for number, record in enumerate(records(table), start=1):
            where = f"{SOURCE}: {entries.name} row {number}"
            name = record["Image Index"]
            view = record["View Position"].upper()
            if not view_selected(view, self.views):
                imported.exclude(view_reason(view))
                continue
            row = {
                "image": f"{folders.get(name, 'images')}/{name}",
                "patient_id": record["Patient ID"],
                "source_id": name,
                "view": view,
                **_finding_cells(record["Finding Labels"], where),
            }
            age = record["Patient Age"]
            if age and not (age.isdigit() and int(age) <= MAX_AGE):
                bad_ages += 1
                age = ""
            row["age"] = age
            row["sex"] = record[sex_column]
            row["follow_up"] = record["Follow-up #"]
            if source_split is not None:
                listed = source_split.get(name)
                if self.split == "none":
                    row["source_split"] = listed or ""
                elif listed is None:
                    imported.exclude(NOT_IN_SPLIT_LISTS)
                    continue
                else:
                    row["split"] = listed
            rows.append(row)
        if bad_ages:
            imported.notes.append(f"{bad_ages} ages above {MAX_AGE} (typos) left blank")
        if boxes is not None:
            self._add_boxes(rows, boxes, imported)
        kept = keep_present(rows, root, imported, source=SOURCE)
        if self.split == "official":
            self._draw_val(kept)
            imported.notes.append(
                f"split: test from test_list.txt; train_val_list.txt divided by patient, "
                f"{self.val_fraction:g} of its patients to val (seed {self.seed})"
            )
        imported.rows = kept
        return imported

    def _read_boxes(
        self, path: Path, root: Path, imported: ImportedRows
    ) -> dict[str, dict[str, list[list[float]]]]:
        """Image name -> finding -> boxes, from the box list (read by column position)."""
        table = read_table(path, ["Image Index", "Finding Label"], root=root, source=SOURCE)
        header = list(table.columns)
        if len(header) < 6 or not header[2].lower().startswith("bbox"):
            raise ImportLayoutError(
                f"{SOURCE}: {path.name} needs the columns Image Index, Finding Label, "
                f"Bbox [x,y,w,h] (found: {', '.join(header[:6])})"
            )
        boxes: dict[str, dict[str, list[list[float]]]] = {}
        for number, values in enumerate(table.iloc[:, :6].itertuples(index=False), start=1):
            name, label, *numbers = (str(v) for v in values)
            where = f"{SOURCE}: {path.name} row {number}"
            finding = _BOX_LABELS.get(label)
            if finding is None:
                raise ImportLayoutError(f"{where}: unknown finding {label!r}")
            try:
                box = [float(v) for v in numbers]
            except ValueError:
                raise ImportLayoutError(
                    f"{where}: the box {', '.join(numbers)} is not four numbers"
                ) from None
            if not all(math.isfinite(v) for v in box) or box[2] <= 0 or box[3] <= 0:
                raise ImportLayoutError(
                    f"{where}: the box {', '.join(numbers)} needs finite numbers and a positive "
                    "width and height"
                )
            boxes.setdefault(name, {}).setdefault(finding, []).append(box)
        imported.notes.append(f"{len(table)} boxes on {len(boxes)} images from {path.name}")
        return boxes

    def _add_boxes(
        self,
        rows: list[dict[str, str]],
        boxes: dict[str, dict[str, list[list[float]]]],
        imported: ImportedRows,
    ) -> None:
        """Fill ``box_<finding>`` on every row (see the module docstring for the policy)."""
        unlabelled = 0
        listed = {row["source_id"] for row in rows}
        for row in rows:
            drawn = boxes.get(row["source_id"])
            for finding in BOXED:
                cell = ""
                if drawn is not None and finding in drawn:
                    cell = json.dumps(drawn[finding])
                    unlabelled += row[finding] != "1"
                elif row[finding] == "0" and (drawn is not None or self.negative_boxes):
                    cell = "[]"
                row[f"box_{finding}"] = cell
        orphans = len(set(boxes) - listed)
        if unlabelled:
            imported.notes.append(
                f"{unlabelled} box findings on images whose Finding Labels lack them (kept)"
            )
        if orphans:
            imported.notes.append(
                f"{orphans} images of the box list are not among the images kept (ignored)"
            )

    def _read_lists(self, paths: tuple[Path, Path], root: Path) -> dict[str, str]:
        """Image name -> ``train_val`` or ``test`` from the two official lists."""
        listed: dict[str, str] = {}
        for path, name in zip(paths, ("train_val", "test"), strict=True):
            try:
                lines = path.read_text(encoding="utf-8-sig").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise ImportLayoutError(f"{SOURCE}: {path.name} cannot be read: {exc}") from None
            for number, line in enumerate(lines, start=1):
                image = line.strip()
                if not image:
                    continue
                if listed.get(image, name) != name:
                    raise ImportLayoutError(
                        f"{SOURCE}: {path.name} line {number}: {image} is also in "
                        "train_val_list.txt"
                    )
                listed[image] = name
        return listed

    def _draw_val(self, rows: list[dict[str, str]]) -> None:
        """Turn ``train_val`` into ``train``/``val`` by patient (seeded, largest share to train)."""
        patients = sorted({r["patient_id"] for r in rows if r["split"] == "train_val"})
        order = np.random.default_rng(self.seed).permutation(len(patients))
        n_val = round(self.val_fraction * len(patients))
        val = {patients[i] for i in order[:n_val]}
        for row in rows:
            if row["split"] == "train_val":
                row["split"] = "val" if row["patient_id"] in val else "train"


def _finding_cells(labels: str, where: str) -> dict[str, str]:
    """``Finding Labels`` (``A|B`` or ``No Finding``) -> one ``1``/``0`` cell per finding."""
    names = [n.strip() for n in labels.split("|") if n.strip()]
    unknown = [n for n in names if n not in LABELS and n != NO_FINDING]
    if unknown or not names:
        raise ImportLayoutError(
            f"{where} (Finding Labels): unknown finding {unknown[0] if unknown else labels!r}"
        )
    if NO_FINDING in names and len(names) > 1:
        raise ImportLayoutError(f"{where} (Finding Labels): {labels!r} has No Finding and findings")
    cells = {finding: "1" if label in names else "0" for label, finding in LABELS.items()}
    cells["no_finding"] = "1" if NO_FINDING in names else "0"
    return cells


def _image_folders(root: Path, imported: ImportedRows) -> dict[str, str]:
    """Image name -> its folder relative to ROOT (``images`` or ``images_NNN/images``)."""
    archives = sorted(
        f"{entry.name}/images"
        for entry in os.scandir(root)
        if entry.name.startswith("images_") and entry.is_dir()
    )
    candidates = ["images", *archives]
    where: dict[str, str] = {}
    duplicates = 0
    for folder in candidates:
        path = root / folder
        if not path.is_dir() or not path.resolve().is_relative_to(root.resolve()):
            continue
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.name in where:
                    duplicates += 1
                else:
                    where[entry.name] = folder
    if duplicates:
        imported.notes.append(f"{duplicates} image names found in two folders; the first is used")
    return where
