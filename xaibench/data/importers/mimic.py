"""MIMIC-CXR-JPG: 14 CheXpert-labeler observations per study, one row per image.

Published layout (https://physionet.org/content/mimic-cxr-jpg/2.0.0/, credentialed access),
ROOT being the version folder (``.../mimic-cxr-jpg/2.0.0/``):

* ``mimic-cxr-2.0.0-metadata.csv.gz``: one row per image, ``dicom_id, subject_id, study_id,
  PerformedProcedureStepDescription, ViewPosition, Rows, Columns, StudyDate, ...``.
  ``ViewPosition`` is ``PA``, ``AP``, ``LATERAL``, ``LL``, ``AP AXIAL``, ``PA LLD``, ... or empty.
* ``mimic-cxr-2.0.0-chexpert.csv.gz`` and ``mimic-cxr-2.0.0-negbio.csv.gz``: one row per study,
  ``subject_id, study_id`` and the 14 observations (``Atelectasis`` ... ``Support Devices``),
  cells ``1.0``/``0.0``/``-1.0``/empty as CheXpert's (both labelers read the same reports).
* ``mimic-cxr-2.0.0-split.csv.gz``: ``dicom_id, study_id, subject_id, split`` with ``train``,
  ``validate``, ``test`` (patient-disjoint).
* Images ``files/p10/p10000032/s50414267/<dicom_id>.jpg`` (``p`` + the subject id's first two
  digits, ``p`` + subject id, ``s`` + study id).

The uncompressed ``.csv`` names are accepted too. What the manifest gets, and the policy per quirk:

* Findings ``no_finding`` ... ``support_devices`` from the study's row of the ``labeler``'s file
  (``chexpert``, the default, or ``negbio``), every image of a study sharing them, after the
  ``uncertain`` policy (shared with CheXpert: :mod:`xaibench.data.importers.chexpert_labels`).
  An image whose study has no label row (the labelers skipped some reports) is excluded as
  ``study has no label row``; two label rows of one study are an error naming the row.
* ``view``: ``ViewPosition`` as published (empty where not recorded). ``views: frontal``
  (default) keeps ``PA`` and ``AP``; ``lateral`` keeps ``LATERAL``, ``LL``, ``RL``; ``all`` keeps
  everything (the oblique, decubitus and unrecorded views too); or a list of codes.
* ``studies: first`` keeps the first selected image found of each study, in the metadata
  file's order (MIMIC numbers no views); the others are counted as ``another image of the same
  study``.
* ``split``: the official split (``validate`` -> ``val``); ``split: none`` writes no split column.
  An image missing from the split file is excluded as ``not in the split file``.
* ``patient_id`` (``subject_id``), ``source_id`` (``dicom_id``). MIMIC-CXR-JPG carries no age or
  sex (those are in MIMIC-IV); dates are shifted and not written.

torchxrayvision's ``MIMIC_Dataset`` is not used: it turns ``-1`` into NaN and sets every finding
to 0 where ``No Finding`` is 1, keeps one image per patient by default, reads no split file, and
drops images whose study has no label silently through its join.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import field_validator

from xaibench.data.importers.base import (
    ImportedRows,
    Importer,
    ImportLayoutError,
    keep_present,
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

SOURCE = "mimic"
PREFIX = "mimic-cxr-2.0.0"
NO_LABEL_ROW = "study has no label row"
NOT_IN_SPLIT = "not in the split file"
SAME_STUDY = "another image of the same study"
SPLITS = {"train": "train", "validate": "val", "test": "test"}


def _published(root: Path, stem: str) -> Path:
    return source_file(root, f"{PREFIX}-{stem}.csv.gz", f"{PREFIX}-{stem}.csv", source=SOURCE)


class MimicCxrJpg(Importer):
    """MIMIC-CXR-JPG 2.0.0 (metadata, CheXpert or NegBio labels, split, ``files/``).

    Attributes:
        views: ``frontal`` (default), ``lateral``, ``all``, or a list of names and view codes.
        uncertain: ``keep`` (-1), ``ignore`` (blank), ``zeros``, ``ones``, or finding -> policy.
        labeler: Whose labels: ``chexpert`` or ``negbio``.
        studies: ``all`` images, or the ``first`` selected image of each study.
        split: ``official`` (the split file) or ``none``.
    """

    display_name: ClassVar[str] = "MIMIC-CXR-JPG"
    citation: ClassVar[str] = (
        "Johnson AEW et al. MIMIC-CXR-JPG, a large publicly available database of labeled chest "
        "radiographs. arXiv:1901.07042, 2019."
    )
    homepage: ClassVar[str] = "https://physionet.org/content/mimic-cxr-jpg/2.0.0/"
    download: ClassVar[str] = (
        "mimic-cxr-2.0.0-metadata.csv.gz, -chexpert.csv.gz (or -negbio.csv.gz), -split.csv.gz "
        "and files/pNN/pNNNNNNNN/sNNNNNNNN/<dicom_id>.jpg"
    )
    findings: ClassVar[tuple[str, ...]] = FINDINGS

    views: str | list[str] = "frontal"
    uncertain: UncertainPolicy | dict[str, UncertainPolicy] = "keep"
    labeler: Literal["chexpert", "negbio"] = "chexpert"
    studies: Literal["all", "first"] = "all"
    split: Literal["official", "none"] = "official"

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
        """Join metadata, the study labels and the split; find each image under ``files/``."""
        metadata_path = _published(root, "metadata")
        labels_path = _published(root, self.labeler)
        split_path = _published(root, "split") if self.split == "official" else None
        metadata = read_table(
            metadata_path,
            ["dicom_id", "subject_id", "study_id", "ViewPosition"],
            root=root,
            source=SOURCE,
        )
        labels = self._read_labels(labels_path, root)
        splits: dict[str, str] = {}
        if split_path is not None:
            table = read_table(split_path, ["dicom_id", "split"], root=root, source=SOURCE)
            for number, (dicom, split) in enumerate(
                table[["dicom_id", "split"]].itertuples(index=False), start=1
            ):
                if split not in SPLITS:
                    raise ImportLayoutError(
                        f"{SOURCE}: {split_path.name} row {number} (split): {split!r} is not "
                        "train, validate or test"
                    )
                splits[dicom] = SPLITS[split]
        imported = ImportedRows([])
        imported.notes.append(f"labels from {labels_path.name}")
        rows: list[dict[str, str]] = []
        for number, record in enumerate(records(metadata), start=1):
            subject, study, dicom = record["subject_id"], record["study_id"], record["dicom_id"]
            if not (subject.isdigit() and study.isdigit() and len(subject) >= 2):
                raise ImportLayoutError(
                    f"{SOURCE}: {metadata_path.name} row {number}: subject_id {subject!r} and "
                    f"study_id {study!r} must be numbers"
                )
            view = record["ViewPosition"].upper()
            if not view_selected(view, self.views):
                imported.exclude(view_reason(view))
                continue
            cells = labels.get((subject, study))
            if cells is None:
                imported.exclude(NO_LABEL_ROW)
                continue
            row = {
                "image": f"files/p{subject[:2]}/p{subject}/s{study}/{dicom}.jpg",
                "patient_id": subject,
                "source_id": dicom,
                "view": view,
                **cells,
            }
            if split_path is not None:
                if dicom not in splits:
                    imported.exclude(NOT_IN_SPLIT)
                    continue
                row["split"] = splits[dicom]
            rows.append(row)
        kept = keep_present(rows, root, imported, source=SOURCE)
        if self.studies == "first":
            first: dict[str, dict[str, str]] = {}
            for row in kept:
                first.setdefault(row["image"].rsplit("/", 2)[1], row)
            imported.exclude(SAME_STUDY, len(kept) - len(first))
            kept = list(first.values())
        imported.rows = kept
        return imported

    def _read_labels(self, path: Path, root: Path) -> dict[tuple[str, str], dict[str, str]]:
        """(subject_id, study_id) -> finding cells after the uncertain policy."""
        table = read_table(
            path, ["subject_id", "study_id", *OBSERVATIONS], root=root, source=SOURCE
        )
        labels: dict[tuple[str, str], dict[str, str]] = {}
        for number, record in enumerate(records(table), start=1):
            where = f"{SOURCE}: {path.name} row {number}"
            key = (record["subject_id"], record["study_id"])
            if key in labels:
                raise ImportLayoutError(f"{where}: study {key[1]} of subject {key[0]} listed twice")
            labels[key] = label_cells(record, OBSERVATIONS, self.uncertain, where=where)
        return labels
