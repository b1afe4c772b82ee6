"""Shenzhen Hospital chest X-ray set (NLM): tuberculosis labels, lung masks from a separate set.

**Download** the Shenzhen Hospital CXR set from the NLM
(https://data.lhncbc.nlm.nih.gov/public/Tuberculosis-Chest-X-ray-Datasets/): ``ChinaSet_AllFiles``
with ``CXR_png/CHNCXR_0001_0.png`` ... (662 PA radiographs, 326 normal and 336 tuberculosis) and
``ClinicalReadings/CHNCXR_0001_0.txt``. The NLM set has no masks. Lung masks (both lungs in one
file) were published separately by Stirenko et al. (2018, Igor Sikorsky Kyiv Polytechnic
Institute; Mendeley Data doi:10.17632/8gf9vpkhgy, mirrored on Kaggle as ``yoctoman/shcxr-lung-
mask``): ``mask/CHNCXR_0001_0_mask.png``, 566 of the 662 images. ROOT is ``ChinaSet_AllFiles`` or
a folder holding it; the masks folder must be inside ROOT too (``mask/``,
``shcxr-lung-mask/mask/`` or the Kaggle copy's ``shcxr-lung-mask/mask/mask/``, or option
``masks_folder``).

**Rows**: one per ``CXR_png`` file named ``CHNCXR_NNNN_L.png`` (others counted and left out);
``tuberculosis`` is ``L``; ``sex``/``age`` from the reading (:mod:`.nlm_tb`); ``mask_lungs`` from
``<id>_mask.png``, an empty cell for the images the mask set does not cover (counted in the
notes). Each image is its own patient (no patient id is published).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from xaibench.data.importers.base import (
    ImageFinder,
    ImportedRows,
    Importer,
    ImportLayoutError,
    keep_present,
)
from xaibench.data.importers.nlm_tb import find_folder, list_images, require_readings, tb_rows
from xaibench.progress import Progress

SOURCE = "shenzhen"

#: Where the set may sit under ROOT.
FOLDERS: tuple[str, ...] = ("", "ChinaSet_AllFiles", "ChinaSet_AllFiles/ChinaSet_AllFiles")

#: Where the mask set may sit under ROOT, tried in order.
MASK_FOLDERS: tuple[str, ...] = (
    "mask",
    "shcxr-lung-mask/mask/mask",
    "shcxr-lung-mask/mask",
    "ChinaSet_AllFiles/mask",
)


class ShenzhenImporter(Importer):
    """Shenzhen: 662 PA radiographs, tuberculosis 1/0, lung masks where Stirenko et al. drew them.

    Attributes:
        masks_folder: Folder (relative to ROOT) holding ``<id>_mask.png``; ``None`` looks for
            the published names and imports without masks (a note says so) when none exists.
    """

    display_name: ClassVar[str] = "Shenzhen Hospital (NLM)"
    homepage: ClassVar[str] = (
        "https://data.lhncbc.nlm.nih.gov/public/Tuberculosis-Chest-X-ray-Datasets/"
    )
    download: ClassVar[str] = (
        "ChinaSet_AllFiles: CXR_png/, ClinicalReadings/; lung masks: shcxr-lung-mask/mask/"
    )
    regions: ClassVar[tuple[str, ...]] = ("lungs",)
    findings: ClassVar[tuple[str, ...]] = ("tuberculosis",)

    masks_folder: str | None = None

    def read(self, root: Path, progress: Progress) -> ImportedRows:
        """Read ``CXR_png``, the readings and the mask set; see the module docstring."""
        imported = ImportedRows([])
        folder = find_folder(root, FOLDERS, SOURCE)
        require_readings(root, folder, SOURCE)
        images = list_images(root, folder, "CHNCXR", imported, SOURCE)
        rows = tb_rows(root, folder, images, imported)
        masks = self._mask_folder(root, imported)
        finder, uncovered = ImageFinder(root), 0
        for row in progress.track(rows, total=len(rows), description="Shenzhen"):
            cell = ""
            if masks is not None:
                relative = f"{masks}/{row['source_id']}_mask.png"
                cell = relative if finder.status(relative) is None else ""
            row["mask_lungs"] = cell
            uncovered += not cell
        if masks is not None and uncovered:
            imported.notes.append(f"{uncovered} images have no lung mask in {masks}: cells empty")
        imported.rows = keep_present(rows, root, imported, source=SOURCE)
        return imported

    def _mask_folder(self, root: Path, imported: ImportedRows) -> str | None:
        """The mask folder relative to ROOT (``None``: none, noted)."""
        base = root.resolve()
        if self.masks_folder is not None:
            path = root / self.masks_folder
            if not path.is_dir() or not path.resolve().is_relative_to(base):
                raise ImportLayoutError(
                    f"{SOURCE}: masks_folder {self.masks_folder!r} is not a folder inside {root}"
                )
            return Path(self.masks_folder).as_posix().rstrip("/")
        for candidate in MASK_FOLDERS:
            path = root / candidate
            if path.is_dir() and path.resolve().is_relative_to(base):
                return candidate
        imported.notes.append(
            "no lung mask folder found (mask/ or shcxr-lung-mask/mask/): mask_lungs is empty"
        )
        return None
