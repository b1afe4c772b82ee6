"""PadChest: 160,000 radiographs of Hospital San Juan (Alicante) with report-derived labels.

Layout read (ROOT is the folder the collection was downloaded and unzipped to):

* ``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv`` (or ``.csv.gz``): one row per
  image with ``ImageID``, ``ImageDir``, ``StudyDate_DICOM``, ``StudyID``, ``PatientID``,
  ``PatientBirth``, ``PatientSex_DICOM``, ``ViewPosition_DICOM``, ``Projection``,
  ``MethodLabel``, ``Labels``, ... (an unnamed index column first).
* Images: 16-bit PNGs ``<ImageDir>/<ImageID>`` (the zip archives ``0.zip`` .. ``54.zip``
  unzipped into folders named by ``ImageDir``), or all in ROOT itself (``layout: flat``, as
  torchxrayvision's ``flat_dir``); ``layout: auto`` (default) takes the folder path when that
  file exists, else the flat one.

``Labels`` is a Python-list-like string (``"['pleural effusion', ' cardiomegaly']"``): parsed
with :func:`ast.literal_eval` (literals only, never code). Entries keep their stray leading
spaces for matching (see below), empty entries are ignored.

Findings (``1``/``0``; PadChest has no uncertain label): torchxrayvision's ``PC_Dataset`` set
of 27 labels plus ``tube``, with its synonyms, so that labels agree with that widely used
reader (the test checks it against ``PC_Dataset`` itself). A finding is positive when one of
its keywords occurs in one of the image's label entries, case-sensitively (PadChest's terms
are lower case); a keyword ending in ``'`` (``tube'``, ``stent'``) must end an entry. So
``nodule`` is positive for ``multiple nodules`` and ``pseudonodule`` and ``effusion`` for
``loculated fissural effusion``, as in ``PC_Dataset``. The keywords per column are in
:data:`FINDING_KEYWORDS`. ``normal`` (added here) is positive when an entry is exactly
``normal``.

Policies (options; each exclusion counted in ``manifest.json``):

* ``views``: ``Projection`` values kept, default the frontal ones ``PA``, ``AP`` and
  ``AP_horizontal`` (supine); ``all`` keeps every row (laterals ``L``, ``COSTAL`` rib views,
  ``EXCLUDE``, ``UNK``). Excluded rows are counted as ``view <Projection>``.
* ``flagged_exclude``: rows whose labels contain ``exclude`` (the reporting radiologist's mark
  for an image to leave out): ``drop`` (default) or ``keep``.
* ``suboptimal``: rows labelled ``suboptimal study``: ``keep`` (default; they are read and
  labelled) or ``drop``.
* Rows with no labels (an empty cell, ``[]``) or an unreadable ``Labels`` cell are excluded
  (torchxrayvision drops null labels too).

Other columns: ``patient_id`` = ``PatientID``; ``source_id`` = ``ImageID``; ``view`` =
``Projection``; ``sex`` = ``PatientSex_DICOM`` (``M``/``F``; other codes left empty); ``age``
= study year minus birth year (whole years, ±1; birth dates are never copied);
``label_method`` = ``physician`` or ``rnn`` (``MethodLabel``: about a quarter of the labels
were read by radiologists, the rest extracted by a neural network from the reports: a
stratum worth looking at).

torchxrayvision's ``PC_Dataset`` is not used as the reader: it drops children (``2019 -
PatientBirth > 10``), keeps one image per patient by default, hard-codes a list of
unreadable files and needs the images to serve them; here those are options or the manifest
checker's job (``xaibench data check`` reports unreadable PNGs by row).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import field_validator

from xaibench.data.importers.base import (
    ImageFinder,
    ImportedRows,
    Importer,
    ImportLayoutError,
    keep_present,
    read_table,
    source_file,
)
from xaibench.progress import Progress

SOURCE = "padchest"
CSV_NAME = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
REQUIRED = ["ImageID", "ImageDir", "PatientID", "Projection", "Labels"]
FRONTAL: tuple[str, ...] = ("PA", "AP", "AP_horizontal")
NO_LABELS = "no labels"
UNREADABLE = "Labels cell unreadable"
FLAG_EXCLUDE = "labelled 'exclude'"
FLAG_SUBOPTIMAL = "labelled 'suboptimal study'"
#: Longest ``Labels`` cell parsed (the published ones have at most a few hundred characters).
MAX_LABELS_CELL = 10_000

#: Column -> keywords, following torchxrayvision's ``PC_Dataset`` (its label name in lower
#: case, then its synonyms). A keyword ending in ``'`` must end the entry.
FINDING_KEYWORDS: dict[str, tuple[str, ...]] = {
    "air_trapping": ("air trapping",),
    "aortic_atheromatosis": ("aortic atheromatosis",),
    "aortic_elongation": ("aortic elongation",),
    "atelectasis": ("atelectasis",),
    "bronchiectasis": ("bronchiectasis",),
    "cardiomegaly": ("cardiomegaly",),
    "consolidation": ("consolidation", "air bronchogram"),
    "costophrenic_angle_blunting": ("costophrenic angle blunting",),
    "edema": ("edema",),
    "effusion": ("effusion",),
    "emphysema": ("emphysema",),
    "fibrosis": ("fibrosis",),
    "flattened_diaphragm": ("flattened diaphragm",),
    "fracture": ("fracture",),
    "granuloma": ("granuloma",),
    "hemidiaphragm_elevation": ("hemidiaphragm elevation",),
    "hernia": ("hernia",),
    "hilar_enlargement": ("hilar enlargement", "adenopathy", "pulmonary artery enlargement"),
    "infiltration": (
        "infiltration",
        "infiltrates",
        "interstitial pattern",
        "ground glass pattern",
        "reticular interstitial pattern",
        "reticulonodular interstitial pattern",
        "alveolar pattern",
        "consolidation",
        "air bronchogram",
    ),
    "mass": ("mass",),
    "nodule": ("nodule",),
    "pleural_thickening": ("pleural thickening",),
    "pneumonia": ("pneumonia",),
    "pneumothorax": ("pneumothorax",),
    "scoliosis": ("scoliosis",),
    "support_devices": ("support devices", "device", "pacemaker"),
    "tuberculosis": ("tuberculosis",),
    "tube": ("tube'", "stent'"),
}


def parse_labels(cell: str) -> list[str] | None:
    """The entries of a ``Labels`` cell (stray spaces kept, empty ones dropped).

    Returns:
        The entries; None when the cell is not a list of strings.
    """
    if not cell or cell in ("nan", "None"):
        return []
    if len(cell) > MAX_LABELS_CELL:  # no published cell comes near; parsing it would cost
        return None
    try:
        value = ast.literal_eval(cell)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None
    return [v for v in value if v.strip()]


def finding_present(keywords: tuple[str, ...], entries: list[str]) -> bool:
    """Whether any keyword occurs in any entry (a trailing ``'`` anchors it at the end)."""
    for keyword in keywords:
        if keyword.endswith("'"):
            if any(entry.endswith(keyword[:-1]) for entry in entries):
                return True
        elif any(keyword in entry for entry in entries):
            return True
    return False


def _age(study_date: str, birth: str) -> str:
    try:
        years = int(study_date[:4]) - int(float(birth))
    except ValueError:
        return ""
    return str(years) if 0 <= years <= 120 else ""


def _findings(cell: str) -> tuple[list[str] | None, dict[str, str]]:
    """A ``Labels`` cell's entries (None: unreadable) and its finding cells."""
    entries = parse_labels(cell)
    if not entries:
        return entries, {}
    cells = {
        column: "1" if finding_present(keywords, entries) else "0"
        for column, keywords in FINDING_KEYWORDS.items()
    }
    cells["normal"] = "1" if "normal" in {e.strip() for e in entries} else "0"
    return entries, cells


def _metadata(cells: dict[str, str]) -> dict[str, str]:
    """``sex``, ``age`` and ``label_method`` from one row's optional published cells."""
    sex = cells["PatientSex_DICOM"]
    method = cells["MethodLabel"].lower()
    return {
        "sex": sex if sex in ("M", "F") else "",
        "age": _age(cells["StudyDate_DICOM"], cells["PatientBirth"]),
        "label_method": {"physician": "physician", "rnn_model": "rnn"}.get(method, ""),
    }


class PadChestImporter(Importer):
    """PadChest (``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv`` + image folders).

    Options:
        views: ``Projection`` values kept (default the frontal ones) or ``all``.
        flagged_exclude: Rows labelled ``exclude``: ``drop`` or ``keep``.
        suboptimal: Rows labelled ``suboptimal study``: ``keep`` or ``drop``.
        layout: Where the images are: ``auto``, ``folders`` (``<ImageDir>/<ImageID>``) or
            ``flat`` (``<ImageID>`` in ROOT).
    """

    display_name: ClassVar[str] = "PadChest"
    citation: ClassVar[str] = (
        "Bustos A, Pertusa A, Salinas JM, de la Iglesia-Vayá M. PadChest: A large chest x-ray "
        "image dataset with multi-label annotated reports. Medical Image Analysis 2020; "
        "66:101797"
    )
    homepage: ClassVar[str] = "https://bimcv.cipf.es/bimcv-projects/padchest/"
    download: ClassVar[str] = (
        f"{CSV_NAME} (or .csv.gz) and the image archives unzipped into folders 0 .. 54"
    )
    regions: ClassVar[tuple[str, ...]] = ()
    findings: ClassVar[tuple[str, ...]] = (*FINDING_KEYWORDS, "normal")

    views: list[str] | Literal["all"] = list(FRONTAL)
    flagged_exclude: Literal["drop", "keep"] = "drop"
    suboptimal: Literal["keep", "drop"] = "keep"
    layout: Literal["auto", "folders", "flat"] = "auto"

    @field_validator("views", mode="before")
    @classmethod
    def _one_view(cls, value: object) -> object:
        """``-O views=PA`` means the list ``[PA]``."""
        return [value] if isinstance(value, str) and value != "all" else value

    def read(self, root: Path, progress: Progress) -> ImportedRows:
        """Parse each row's labels, apply the view and flag policies, locate the images."""
        path = source_file(root, CSV_NAME, f"{CSV_NAME}.gz", source=SOURCE)
        table = read_table(path, REQUIRED, root=root, source=SOURCE)
        if table.empty:
            raise ImportLayoutError(f"{SOURCE}: {path.name} lists no image")
        imported = ImportedRows([])
        finder = ImageFinder(root)
        column = {c: table[c].tolist() for c in REQUIRED}
        optional = {
            c: table[c].tolist() if c in table.columns else [""] * len(table)
            for c in ("StudyDate_DICOM", "PatientBirth", "PatientSex_DICOM", "MethodLabel")
        }
        parsed: dict[str, tuple[list[str] | None, dict[str, str]]] = {}  # Labels cell -> cells
        rows: list[dict[str, str]] = []
        for i in progress.track(range(len(table)), total=len(table), description="PadChest rows"):
            projection = column["Projection"][i]
            if self.views != "all" and projection not in self.views:
                imported.exclude(f"view {projection or '(none)'}")
                continue
            cell = column["Labels"][i]
            if cell not in parsed:  # a few thousand distinct cells among 160,000 rows
                parsed[cell] = _findings(cell)
            entries, findings = parsed[cell]
            if entries is None:
                imported.exclude(UNREADABLE)
                continue
            if not entries:
                imported.exclude(NO_LABELS)
                continue
            stripped = {e.strip() for e in entries}
            if "exclude" in stripped and self.flagged_exclude == "drop":
                imported.exclude(FLAG_EXCLUDE)
                continue
            if "suboptimal study" in stripped and self.suboptimal == "drop":
                imported.exclude(FLAG_SUBOPTIMAL)
                continue
            image = column["ImageID"][i]
            row = {
                "image": self._image_path(finder, column["ImageDir"][i], image),
                "patient_id": column["PatientID"][i],
                "source_id": image,
                "view": projection,
                **findings,
            }
            row.update(_metadata({name: values[i] for name, values in optional.items()}))
            rows.append(row)
        imported.rows = keep_present(rows, root, imported, source=SOURCE)
        return imported

    def _image_path(self, finder: ImageFinder, folder: str, image: str) -> str:
        nested = f"{folder}/{image}" if folder.isdigit() else image
        if self.layout == "folders":
            return nested
        if self.layout == "flat":
            return image
        if finder.status(nested) is None or finder.status(image) is not None:
            return nested
        return image
