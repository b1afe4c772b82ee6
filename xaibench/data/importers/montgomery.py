"""Montgomery County chest X-ray set (NLM): tuberculosis labels and manual lung masks.

**Download** the Montgomery County CXR set from the NLM
(https://data.lhncbc.nlm.nih.gov/public/Tuberculosis-Chest-X-ray-Datasets/): ``MontgomerySet``
with ``CXR_png/MCUCXR_0001_0.png`` ... (138 PA radiographs, 80 normal and 58 tuberculosis),
``ClinicalReadings/MCUCXR_0001_0.txt`` and ``ManualMask/leftMask/MCUCXR_0001_0.png`` and
``ManualMask/rightMask/...`` (one lung per file, at the image's size). ROOT is ``MontgomerySet``
or a folder holding it.

**Rows**: one per ``CXR_png`` file named ``MCUCXR_NNNN_L.png`` (others counted and left out);
``tuberculosis`` is ``L``; ``sex``/``age`` from the reading (:mod:`.nlm_tb`); ``mask_left_lung``
and ``mask_right_lung`` from ``leftMask``/``rightMask`` as the set names them (the NLM ReadMe
does not say whose left; the masks are written as published), an empty cell where the file is
missing (counted in the notes). Each image is its own patient (no patient id is published).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from xaibench.data.importers.base import ImageFinder, ImportedRows, Importer, keep_present
from xaibench.data.importers.nlm_tb import find_folder, list_images, require_readings, tb_rows
from xaibench.progress import Progress

SOURCE = "montgomery"

#: Where the set may sit under ROOT.
FOLDERS: tuple[str, ...] = ("", "MontgomerySet", "NLM-MontgomeryCXRSet/MontgomerySet")

#: Mask folder (under ``ManualMask``) -> region.
MASKS: dict[str, str] = {"leftMask": "left_lung", "rightMask": "right_lung"}


class MontgomeryImporter(Importer):
    """Montgomery County: 138 PA radiographs, tuberculosis 1/0, manual left/right lung masks."""

    display_name: ClassVar[str] = "Montgomery County (NLM)"
    homepage: ClassVar[str] = (
        "https://data.lhncbc.nlm.nih.gov/public/Tuberculosis-Chest-X-ray-Datasets/"
    )
    download: ClassVar[str] = "MontgomerySet: CXR_png/, ClinicalReadings/, ManualMask/"
    regions: ClassVar[tuple[str, ...]] = tuple(MASKS.values())
    findings: ClassVar[tuple[str, ...]] = ("tuberculosis",)

    def read(self, root: Path, progress: Progress) -> ImportedRows:
        """Read ``CXR_png``, the readings and ``ManualMask``; see the module docstring."""
        imported = ImportedRows([])
        folder = find_folder(root, FOLDERS, SOURCE)
        require_readings(root, folder, SOURCE)
        images = list_images(root, folder, "MCUCXR", imported, SOURCE)
        rows = tb_rows(root, folder, images, imported)
        masks = Path(folder) / "ManualMask" if folder else Path("ManualMask")
        finder, missing = ImageFinder(root), 0
        for row in progress.track(rows, total=len(rows), description="Montgomery"):
            for sub, region in MASKS.items():
                relative = (masks / sub / f"{row['source_id']}.png").as_posix()
                present = finder.status(relative) is None  # a regular file inside ROOT
                row[f"mask_{region}"] = relative if present else ""
                missing += not present
        if missing:
            imported.notes.append(f"{missing} lung masks missing in ManualMask: cells empty")
        imported.rows = keep_present(rows, root, imported, source=SOURCE)
        return imported
