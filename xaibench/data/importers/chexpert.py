"""CheXpert, with CheXlocalize's radiologist segmentations of 10 pathologies where present.

Published layouts, under ROOT (either may be absent, not both):

* **CheXpert** (https://stanfordmlgroup.github.io/competitions/chexpert/): the folder
  ``CheXpert-v1.0/`` or ``CheXpert-v1.0-small/`` holding ``train.csv``, ``valid.csv``,
  ``train/`` and ``valid/`` (``patientNNNNN/studyN/viewN_frontal.jpg``). The CSVs' ``Path``
  starts with the dataset folder's name (``CheXpert-v1.0-small/train/patient00001/...``), i.e.
  is relative to the folder ABOVE it; ROOT may be that folder above or the dataset folder itself,
  and the first path component is replaced by the folder actually found. Columns: ``Path, Sex,
  Age, Frontal/Lateral, AP/PA`` and the 14 observations (``No Finding`` ... ``Support
  Devices``), cells ``1.0``/``0.0``/``-1.0`` (uncertain)/empty (not mentioned).
* **CheXlocalize** (https://stanfordaimi.azurewebsites.net/datasets/23c56a0d-15de-405b-87c8-99c30138950c,
  https://github.com/rajpurkarlab/cheXlocalize): ``CheXpert/val/``, ``CheXpert/val_labels.csv``,
  ``CheXpert/test/``, ``CheXpert/test_labels.csv``, ``CheXlocalize/gt_segmentations_val.json``
  and ``CheXlocalize/gt_segmentations_test.json`` (under ROOT, or under ``ROOT/CheXlocalize/``).
  A segmentation file maps a CXR id (``patient64541_study1_view1_frontal``: the path below the
  split folder, ``/`` -> ``_``, no extension) to each of the ten pathologies' COCO RLE
  (``{"size": [h, w], "counts": "..."}``, all zeros where the pathology is absent); it lists only
  the CXRs with at least one positive label. The test CSV has no Sex, Age or view columns.

What the manifest gets, and the policy per quirk:

* ``split``: ``train`` (CheXpert ``train.csv``), ``val`` (CheXpert ``valid.csv`` = CheXlocalize
  val), ``test`` (CheXlocalize test, whose labels are the radiologists' majority vote). Both are
  official.
* The 14 observations as ``no_finding`` ... ``support_devices`` (``1``/``0``/``-1``/blank) after
  the ``uncertain`` policy (:mod:`xaibench.data.importers.chexpert_labels`). The CSV name
  ``Airspace Opacity`` is read as ``Lung Opacity``.
* ``rle_<region>`` (option ``chexlocalize``: ``auto`` = when a segmentation file is there)
  for the ten regions, each named after the finding column it localises, so a findings task's
  ``{finding}`` region is its segmentation: ``enlarged_cardiomediastinum``,
  ``cardiomegaly``, ``lung_lesion``, ``lung_opacity`` (CheXlocalize's "Airspace Opacity"),
  ``edema``, ``consolidation``, ``atelectasis``, ``pneumothorax``, ``pleural_effusion``,
  ``support_devices``. On CheXlocalize images: the RLE as published, ``[]`` (annotated, absent)
  where it is all zeros, and ``[]`` for every region of an image the file does not list (no
  positive label) -- except where that image's label of the pathology is 1 (one published test
  image, ``patient65086_study1_view1_frontal``, has positive labels and no segmentation): blank,
  counted in the notes. Train images have no ``rle_`` cell (not annotated). A segmentation drawn
  on an image of another size (the ``-small`` images are about 320 px) is left out: the image
  gets blank ``rle_`` cells, counted in the notes. Val images are read from CheXlocalize's copy
  (``CheXpert/val/``) when annotations are used and it is there, else from CheXpert's ``valid/``.
* ``view``: ``PA``/``AP`` (frontal), ``LATERAL``, or ``FRONTAL`` where the projection is not
  recorded. ``views: frontal`` (default) keeps frontal images; ``lateral``, ``all`` or a list of
  codes as the option says. A row whose ``Frontal/Lateral`` is ``Frontal`` but whose ``AP/PA``
  is ``LL`` or ``RL`` (17 in ``train.csv``) contradicts itself and is kept only by
  ``views: all``.
* ``studies``: ``all`` (default) or ``first``: the selected image of lowest view number of each
  study among those found; the others are counted as ``another image of the same study``.
* ``patient_id`` (``patientNNNNN`` from the path), ``source_id`` (the CXR id), metadata ``sex``
  (``Unknown`` -> blank) and ``age`` (``0`` marks an unknown age in CheXpert -> blank, counted).

torchxrayvision's ``CheX_Dataset`` and ``CheXlocalize_Dataset`` are not used: they turn ``-1``
into NaN (uncertain and blank become one), overwrite findings with 0 where ``No Finding`` is 1,
keep one image per patient by default, need the CSV path to contain ``train``/``valid``, and
decode every mask to decide presence; the CXR id rule and the ``Airspace Opacity`` naming are
the facts taken from them and from CheXlocalize's README.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import field_validator

from xaibench.data.importers.base import (
    ImageFinder,
    ImportedRows,
    Importer,
    ImportLayoutError,
    keep_present,
    read_json,
    read_table,
    source_file,
)
from xaibench.data.importers.chexpert_labels import (
    FINDINGS,
    OBSERVATIONS,
    UncertainPolicy,
    check_uncertain,
    check_views,
    label_cells,
    records,
    view_reason,
    view_selected,
)
from xaibench.progress import Progress

SOURCE = "chexpert"

#: CheXlocalize's pathology keys -> (region name, the finding column whose label it localises).
LOCALIZED: dict[str, tuple[str, str]] = {
    "Enlarged Cardiomediastinum": ("enlarged_cardiomediastinum", "enlarged_cardiomediastinum"),
    "Cardiomegaly": ("cardiomegaly", "cardiomegaly"),
    "Lung Lesion": ("lung_lesion", "lung_lesion"),
    "Airspace Opacity": ("lung_opacity", "lung_opacity"),
    "Edema": ("edema", "edema"),
    "Consolidation": ("consolidation", "consolidation"),
    "Atelectasis": ("atelectasis", "atelectasis"),
    "Pneumothorax": ("pneumothorax", "pneumothorax"),
    "Pleural Effusion": ("pleural_effusion", "pleural_effusion"),
    "Support Devices": ("support_devices", "support_devices"),
}

DATASET_FOLDERS = ("CheXpert-v1.0", "CheXpert-v1.0-small")
CHEXLOCALIZE_BASES = ("", "CheXlocalize")
SAME_STUDY = "another image of the same study"
VIEW_CONFLICT = "Frontal/Lateral and AP/PA disagree"
_RELEASE_PREFIX = re.compile(r"^CheXpert-v1\.0[^/]*/")


class CheXpert(Importer):
    """CheXpert ``train.csv``/``valid.csv`` and CheXlocalize's val/test labels and segmentations.

    Attributes:
        views: ``frontal`` (default), ``lateral``, ``all``, or a list of names and view codes.
        uncertain: ``keep`` (-1), ``ignore`` (blank), ``zeros``, ``ones``, or finding -> policy.
        studies: ``all`` images, or the ``first`` selected image of each study.
        chexlocalize: Add CheXlocalize's segmentations and test set: ``auto`` (when present),
            true (required) or false.
    """

    display_name: ClassVar[str] = "CheXpert + CheXlocalize"
    citation: ClassVar[str] = (
        "Irvin J et al. CheXpert: A Large Chest Radiograph Dataset with Uncertainty Labels and "
        "Expert Comparison. AAAI 2019. Saporta A et al. Benchmarking saliency methods for chest "
        "X-ray interpretation. Nature Machine Intelligence 2022."
    )
    homepage: ClassVar[str] = "https://stanfordmlgroup.github.io/competitions/chexpert/"
    download: ClassVar[str] = (
        "CheXpert-v1.0/ (or -small) with train.csv, valid.csv and the images; CheXlocalize's "
        "CheXpert/ and CheXlocalize/ folders for the segmentations and the test set"
    )
    regions: ClassVar[tuple[str, ...]] = tuple(r for r, _ in LOCALIZED.values())
    findings: ClassVar[tuple[str, ...]] = FINDINGS

    views: str | list[str] = "frontal"
    uncertain: UncertainPolicy | dict[str, UncertainPolicy] = "keep"
    studies: Literal["all", "first"] = "all"
    chexlocalize: bool | Literal["auto"] = "auto"

    @field_validator("views")
    @classmethod
    def _views(cls, value: str | list[str]) -> str | list[str]:
        check_views(value)
        return value

    @field_validator("uncertain")
    @classmethod
    def _uncertain(cls, value: str | dict[str, str]) -> str | dict[str, str]:
        check_uncertain(value)
        return value

    def read(self, root: Path, progress: Progress) -> ImportedRows:
        """Read every CSV present; add CheXlocalize's segmentations; find the images."""
        imported = ImportedRows([])
        release = _release_folder(root)
        if release is not None:
            others = [d for d in DATASET_FOLDERS if (root / d).is_dir() and root / d != release]
            imported.notes.append(
                f"CheXpert from {release.relative_to(root).as_posix()}/"
                + (f" ({', '.join(others)} not used)" if others else "")
            )
        local = None if self.chexlocalize is False else _chexlocalize_base(root)
        if self.chexlocalize is True and local is None:
            source_file(root, "CheXlocalize/gt_segmentations_val.json", source=SOURCE)
        if release is None and local is None:
            source_file(root, *(f"{d}/train.csv" for d in DATASET_FOLDERS), "train.csv",
                        source=SOURCE)  # fmt: skip
        rows: list[dict[str, str]] = []
        finder = ImageFinder(root)
        segmentations: dict[str, dict[str, Any]] = {}
        if local is not None:
            segmentations = self._read_segmentations(root, local, imported)
        if release is not None:
            folder = release.relative_to(root).as_posix()
            prefix = "" if folder == "." else f"{folder}/"
            rows += self._read_csv(release / "train.csv", root, "train", prefix, imported)
            val = self._read_csv(release / "valid.csv", root, "val", prefix, imported)
            if local is not None:
                copy = f"{local}CheXpert/"
                for row in val:
                    moved = copy + "val/" + row["image"][len(prefix) + len("valid/") :]
                    if finder.status(moved) is None:
                        row["image"] = moved
            rows += val
        if local is not None:
            for split in ("val", "test") if release is None else ("test",):
                labels = root / f"{local}CheXpert/{split}_labels.csv"
                if labels.is_file():
                    rows += self._read_csv(
                        labels, root, split, f"{local}CheXpert/", imported, local=True
                    )
                else:
                    shown = labels.relative_to(root).as_posix()
                    imported.notes.append(f"{shown} not found: no CheXlocalize {split} images")
        rows = self._select(rows, imported)
        kept = keep_present(rows, root, imported, source=SOURCE)
        if self.studies == "first":
            kept = _first_per_study(kept, imported)
        if local is not None:
            self._add_segmentations(kept, segmentations, root, imported)
        for row in kept:
            row.pop("_study")
            row.pop("_view_number")
        imported.rows = kept
        return imported

    def _read_csv(
        self,
        path: Path,
        root: Path,
        split: str,
        prefix: str,
        imported: ImportedRows,
        *,
        local: bool = False,
    ) -> list[dict[str, str]]:
        """Rows of one label CSV; ``prefix`` is the folder (relative to ROOT) its paths start in."""
        required = ["Path"] if local else ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA"]
        table = read_table(path, required, root=root, source=SOURCE)
        if "Lung Opacity" not in table.columns and "Airspace Opacity" in table.columns:
            table = table.rename(columns={"Airspace Opacity": "Lung Opacity"})
        present = {c: f for c, f in OBSERVATIONS.items() if c in table.columns}
        missing = [c for c in OBSERVATIONS if c not in present]
        shown = path.relative_to(root).as_posix()
        if missing and not local:
            raise ImportLayoutError(f"{SOURCE}: {shown} has no column {missing[0]!r}")
        if missing:
            imported.notes.append(f"{shown} has no column {', '.join(missing)} (left blank)")
        rows: list[dict[str, str]] = []
        unknown_age = 0
        for number, record in enumerate(records(table), start=1):
            where = f"{SOURCE}: {shown} row {number}"
            relative = _RELEASE_PREFIX.sub("", record["Path"].replace("\\", "/"))
            if local:
                relative = re.sub(r"^valid/", "val/", relative)
            match = re.search(r"(patient\d+)/(study\d+)/view(\d+)_(frontal|lateral)", relative)
            if match is None:
                raise ImportLayoutError(
                    f"{where} (Path): {record['Path']!r} is not .../patientN/studyN/viewN_"
                    "frontal|lateral.jpg"
                )
            patient, study, number_text, kind = match.groups()
            view = _view(record, kind)
            age = record.get("Age", "")
            if age in ("0", "0.0"):
                unknown_age += 1
                age = ""
            sex = record.get("Sex", "")
            rows.append(
                {
                    "image": prefix + relative,
                    "patient_id": patient,
                    "source_id": "_".join(Path(relative).with_suffix("").parts[1:]),
                    "view": view,
                    "split": split,
                    **dict.fromkeys(FINDINGS, ""),
                    **label_cells(record, present, self.uncertain, where=where),
                    "sex": "" if sex == "Unknown" else sex,
                    "age": age,
                    "_study": f"{patient}/{study}",
                    "_view_number": number_text,
                }
            )
        if unknown_age:
            imported.notes.append(f"{shown}: {unknown_age} ages of 0 (unknown) left blank")
        return rows

    def _select(self, rows: list[dict[str, str]], imported: ImportedRows) -> list[dict[str, str]]:
        """Apply ``views``."""
        selected = []
        for row in rows:
            if row["view"] == VIEW_CONFLICT:
                if not view_selected("", self.views):  # only ``all`` admits any view
                    imported.exclude(VIEW_CONFLICT)
                    continue
                row["view"] = ""
            elif not view_selected(row["view"], self.views):
                imported.exclude(view_reason(row["view"]))
                continue
            selected.append(row)
        return selected

    def _read_segmentations(
        self, root: Path, local: str, imported: ImportedRows
    ) -> dict[str, dict[str, Any]]:
        """CXR id -> pathology -> RLE, from both segmentation files present (checked)."""
        merged: dict[str, dict[str, Any]] = {}
        for split in ("val", "test"):
            path = root / f"{local}CheXlocalize/gt_segmentations_{split}.json"
            if not path.is_file():
                continue
            shown = path.relative_to(root).as_posix()
            data = read_json(path, root=root, source=SOURCE)
            if not isinstance(data, dict):
                raise ImportLayoutError(f"{SOURCE}: {shown} is not an object of CXR ids")
            for cxr, entry in data.items():
                if not isinstance(entry, dict):
                    raise ImportLayoutError(f"{SOURCE}: {shown} [{cxr}] is not an object")
                for pathology, rle in entry.items():
                    if pathology in LOCALIZED and not _is_rle(rle):
                        raise ImportLayoutError(
                            f"{SOURCE}: {shown} [{cxr}][{pathology}] is not a COCO RLE "
                            '({"size": [h, w], "counts": "..."})'
                        )
                merged[cxr] = entry
            imported.notes.append(f"{len(data)} annotated CXRs from {shown}")
        return merged

    def _add_segmentations(
        self,
        rows: list[dict[str, str]],
        segmentations: Mapping[str, Mapping[str, Any]],
        root: Path,
        imported: ImportedRows,
    ) -> None:
        """Fill ``rle_<region>`` on val/test rows (see the module docstring for the policy)."""
        from PIL import Image
        from pycocotools import mask as coco_mask

        unsegmented = wrong_size = 0
        seen: set[str] = set()
        for row in rows:
            if row["split"] == "train":
                continue
            entry = segmentations.get(row["source_id"])
            seen.add(row["source_id"])
            cells: dict[str, str] = {}
            for pathology, (region, finding) in LOCALIZED.items():
                rle = entry.get(pathology) if entry is not None else None
                if rle is None:
                    cells[region] = "" if row[finding] == "1" else "[]"
                    unsegmented += row[finding] == "1"
                elif coco_mask.area({**rle, "counts": rle["counts"].encode()}) == 0:
                    cells[region] = "[]"
                else:
                    cells[region] = json.dumps({"size": rle["size"], "counts": rle["counts"]})
            sizes = {tuple(rle["size"]) for rle in (entry or {}).values() if _is_rle(rle)}
            if sizes:
                try:
                    with Image.open(root / row["image"]) as image:
                        native: tuple[int, int] | None = (image.height, image.width)
                except (OSError, ValueError, Image.DecompressionBombError):
                    native = None  # `data check` names the file
                if native is not None and sizes != {native}:
                    wrong_size += 1
                    cells = dict.fromkeys(cells, "")
            row.update({f"rle_{r}": c for r, c in cells.items()})
        if unsegmented:
            imported.notes.append(
                f"{unsegmented} positive labels without a CheXlocalize segmentation left blank"
            )
        if wrong_size:
            imported.notes.append(
                f"{wrong_size} images differ in size from their segmentation (the -small "
                "images?); their rle_ cells are blank: use CheXpert-v1.0 or CheXlocalize's images"
            )
        unused = len(set(segmentations) - seen)
        if unused:
            imported.notes.append(f"{unused} segmented CXRs are not among the images kept")


def _first_per_study(rows: list[dict[str, str]], imported: ImportedRows) -> list[dict[str, str]]:
    """The image of lowest view number of each study (among those selected and found)."""
    first: dict[tuple[str, str], dict[str, str]] = {}
    for row in rows:
        key = (row["split"], row["_study"])
        if key not in first or int(row["_view_number"]) < int(first[key]["_view_number"]):
            first[key] = row
    keep = {id(r) for r in first.values()}
    imported.exclude(SAME_STUDY, len(rows) - len(keep))
    return [r for r in rows if id(r) in keep]


def _view(record: Mapping[str, str], kind: str) -> str:
    """The view code of a CSV row (``kind`` is the path's ``frontal``/``lateral``)."""
    side = record.get("Frontal/Lateral", kind.capitalize())
    projection = record.get("AP/PA", "").upper()
    if side == "Lateral":
        return "LATERAL"
    if projection in ("LL", "RL"):
        return VIEW_CONFLICT
    return projection if projection in ("AP", "PA") else "FRONTAL"


def _is_rle(value: object) -> bool:
    """Whether ``value`` is ``{"size": [h, w], "counts": "<compressed string>"}``."""
    if not isinstance(value, dict) or not isinstance(value.get("counts"), str):
        return False
    size = value.get("size")
    return (
        isinstance(size, list)
        and len(size) == 2
        and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in size)
    )


def _release_folder(root: Path) -> Path | None:
    """The CheXpert dataset folder: ROOT itself or ``CheXpert-v1.0[-small]`` under it."""
    base = root.resolve()
    for folder in (root, *(root / d for d in DATASET_FOLDERS)):
        if (folder / "train.csv").is_file() or (folder / "valid.csv").is_file():
            if not folder.resolve().is_relative_to(base):
                continue
            for name in ("train.csv", "valid.csv"):
                source_file(root, (folder / name).relative_to(root).as_posix(), source=SOURCE)
            return folder
    return None


def _chexlocalize_base(root: Path) -> str | None:
    """The folder (``""`` or ``"CheXlocalize/"``) holding CheXlocalize's two subfolders."""
    for base in CHEXLOCALIZE_BASES:
        prefix = f"{base}/" if base else ""
        for split in ("val", "test"):
            path = root / f"{prefix}CheXlocalize/gt_segmentations_{split}.json"
            if path.is_file() and path.resolve().is_relative_to(root.resolve()):
                return prefix
    return None
