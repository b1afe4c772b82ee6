"""What the NLM tuberculosis sets (Shenzhen, Montgomery) share: file names, labels, readings.

The U.S. National Library of Medicine published two chest X-ray sets for tuberculosis screening
(Jaeger et al., Quant Imaging Med Surg 2014;4(6):475-477), in one layout:

* ``CXR_png/<PREFIX>_<NNNN>_<L>.png``: the radiographs (PA), ``<L>`` the label, ``0`` normal and
  ``1`` tuberculosis (NLM's convention, also torchxrayvision's).
* ``ClinicalReadings/<PREFIX>_<NNNN>_<L>.txt``: the radiologist's reading with sex and age.
  Shenzhen writes them on the first line, ``male 35yrs`` (variants seen in the files: ``female``
  misspelt ``femal``, a comma, ``yr``, no unit), then the finding (``normal``, ``PTB in the left
  upper field``, ...). Montgomery writes ``Patient's Sex: M`` and ``Patient's Age: 040Y`` lines,
  then the finding. Ages in months (``M``/``month``) or days (``D``/``day``) become years with
  two decimals. A reading that gives no sex or age leaves the cell empty (counted in the notes).
  The finding text is free text and is not written.

No patient identifier is published: each image is treated as its own patient (``patient_id`` is
the image id), so two images of one person, if any, could fall in different splits.

torchxrayvision's ``NLMTB_Dataset`` lists the same ``CXR_png`` folder and takes the label from the
same digit; it is not used because it reseeds NumPy's global generator when built
(``np.random.seed``), fails on any ``.png`` whose name does not end in a digit, and reads neither
the readings nor the masks. This module applies the same rule to a strict file-name pattern and
counts the names that do not match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from xaibench.data.importers.base import ImportedRows, ImportLayoutError

#: Why an image was left out.
BAD_NAME = "file name not in the collection's pattern"

#: A reading's age with its unit (years when none is given).
_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*(years?|yrs?|y|months?|m|days?|d)?\b", re.IGNORECASE)


@dataclass(frozen=True)
class NlmImage:
    """One radiograph of a set: its id, label and path relative to ROOT."""

    image_id: str
    label: str
    image: str


def find_folder(root: Path, candidates: tuple[str, ...], source: str) -> str:
    """The first candidate (relative to ROOT, ``""`` = ROOT) holding ``CXR_png/``.

    Raises:
        ImportLayoutError: None does; the message names the expected folder.
    """
    base = root.resolve()
    for candidate in candidates:
        folder = root / candidate / "CXR_png" if candidate else root / "CXR_png"
        if folder.is_dir() and folder.resolve().is_relative_to(base):
            return candidate
    shown = ", ".join(f"{c}/CXR_png" if c else "CXR_png" for c in candidates)
    raise ImportLayoutError(
        f"{source}: folder CXR_png not found under {root} (looked for {shown}); is ROOT the "
        "folder the set was downloaded to?"
    )


def list_images(
    root: Path, folder: str, prefix: str, imported: ImportedRows, source: str
) -> list[NlmImage]:
    """The set's radiographs in ``folder/CXR_png``, sorted; other ``.png`` names are counted.

    Raises:
        ImportLayoutError: No file matches ``<prefix>_NNNN_L.png``.
    """
    pattern = re.compile(rf"({re.escape(prefix)}_\d{{4}}_([01]))\.png")
    images: list[NlmImage] = []
    base = Path(folder) / "CXR_png" if folder else Path("CXR_png")
    for entry in sorted((root / base).iterdir()):
        if not entry.name.lower().endswith(".png"):
            continue  # Thumbs.db, readme files
        match = pattern.fullmatch(entry.name)
        if match is None:
            imported.exclude(BAD_NAME)
            continue
        images.append(NlmImage(match.group(1), match.group(2), (base / entry.name).as_posix()))
    if not images:
        raise ImportLayoutError(
            f"{source}: {base.as_posix()} holds no {prefix}_NNNN_0.png / _1.png file"
        )
    return images


def read_reading(root: Path, relative: str) -> str | None:
    """A reading's text (``None`` when the file is missing or leads outside ROOT)."""
    path = root / relative
    if not path.is_file() or not path.resolve().is_relative_to(root.resolve()):
        return None
    return path.read_bytes().decode("utf-8", errors="replace")


def parse_sex(text: str) -> str:
    """``M``/``F`` from a reading, or ``""`` when it names none."""
    labelled = re.search(r"sex\s*:\s*([a-z]+)", text, re.IGNORECASE)
    word = labelled.group(1) if labelled else ""
    if not word:
        first_line = text.split("\n", 1)[0]
        first = re.match(r"\s*(female|femal|male|f|m)(?![a-z])", first_line, re.IGNORECASE)
        word = first.group(1) if first else ""
    word = word.lower()
    if word in ("m", "male"):
        return "M"
    if word in ("f", "female", "femal"):
        return "F"
    return ""


def parse_age(text: str) -> str:
    """Age in years from a reading (``040Y`` -> ``40``, ``6 months`` -> ``0.5``), or ``""``."""
    labelled = re.search(r"age\s*:\s*([^\n]*)", text, re.IGNORECASE)
    where = labelled.group(1) if labelled else text.split("\n", 1)[0]
    where = re.sub(
        r"^\s*(female|femal|male|f|m)(?![a-z])\s*,?", "", where.strip(), flags=re.IGNORECASE
    )
    match = _AGE.match(where.strip())
    if match is None:
        return ""
    value = float(match.group(1))
    unit = (match.group(2) or "y").lower()
    if unit.startswith("m"):
        return _decimal(value / 12)
    if unit.startswith("d"):
        return _decimal(value / 365.25)
    return _decimal(value)


def _decimal(value: float) -> str:
    rounded = round(value, 2)
    return str(int(rounded)) if rounded == int(rounded) else f"{rounded:.2f}".rstrip("0")


def tb_rows(
    root: Path,
    folder: str,
    images: list[NlmImage],
    imported: ImportedRows,
) -> list[dict[str, str]]:
    """Leading cells, the label and sex/age from each image's reading (counted when absent)."""
    readings = Path(folder) / "ClinicalReadings" if folder else Path("ClinicalReadings")
    missing = unparsed = 0
    rows: list[dict[str, str]] = []
    for item in images:
        text = read_reading(root, (readings / f"{item.image_id}.txt").as_posix())
        sex = age = ""
        if text is None:
            missing += 1
        else:
            sex, age = parse_sex(text), parse_age(text)
            unparsed += not (sex and age)
        rows.append(
            {
                "image": item.image,
                "patient_id": item.image_id,
                "source_id": item.image_id,
                "view": "PA",
                "tuberculosis": item.label,
                "sex": sex,
                "age": age,
            }
        )
    if missing:
        imported.notes.append(f"{missing} images have no clinical reading: sex and age empty")
    if unparsed:
        imported.notes.append(f"{unparsed} readings give no sex or no age: those cells empty")
    return rows


def require_readings(root: Path, folder: str, source: str) -> None:
    """Raise :class:`ImportLayoutError` when ``ClinicalReadings/`` is missing."""
    path = root / folder / "ClinicalReadings" if folder else root / "ClinicalReadings"
    if not path.is_dir():
        shown = f"{folder}/ClinicalReadings" if folder else "ClinicalReadings"
        raise ImportLayoutError(f"{source}: folder {shown} not found under {root}")
