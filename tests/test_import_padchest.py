"""The PadChest importer on a fixture in the collection's published layout."""

from __future__ import annotations

import csv
import gzip
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_run import xaibench_cli
from image_files import save_png

from xaibench.data.importers.base import MISSING_IMAGE, write_import
from xaibench.data.importers.padchest import (
    CSV_NAME,
    FINDING_KEYWORDS,
    FLAG_EXCLUDE,
    FLAG_SUBOPTIMAL,
    NO_LABELS,
    UNREADABLE,
    PadChestImporter,
    parse_labels,
)
from xaibench.progress import NullProgress

#: The published header (an unnamed index column first).
HEADER = [
    "",
    "ImageID",
    "ImageDir",
    "StudyDate_DICOM",
    "StudyID",
    "PatientID",
    "PatientBirth",
    "PatientSex_DICOM",
    "ViewPosition_DICOM",
    "Projection",
    "MethodProjection",
    "Pediatric",
    "Modality_DICOM",
    "Manufacturer_DICOM",
    "PhotometricInterpretation_DICOM",
    "PixelRepresentation_DICOM",
    "PixelAspectRatio_DICOM",
    "SpatialResolution_DICOM",
    "BitsStored_DICOM",
    "WindowCenter_DICOM",
    "WindowWidth_DICOM",
    "Rows_DICOM",
    "Columns_DICOM",
    "XRayTubeCurrent_DICOM",
    "Exposure_DICOM",
    "ExposureInuAs_DICOM",
    "ExposureTime",
    "RelativeXRayExposure_DICOM",
    "ReportID",
    "Report",
    "MethodLabel",
    "Labels",
    "Localizations",
    "LabelsLocalizationsBySentence",
    "labelCUIS",
    "LocalizationsCUIS",
]


def _image_id(k: int) -> str:
    return f"2168401113669640{k:04d}1234567890123456_{k:02d}-{k:03d}-0{k:02d}.png"


def _write(root: Path, rows: list[dict[str, str]], *, gz: bool = False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / (CSV_NAME + (".gz" if gz else ""))
    lines: list[list[str]] = [HEADER]
    for k, cells in enumerate(rows):
        full = dict.fromkeys(HEADER, "")
        full.update(
            {
                "": str(k),
                "StudyDate_DICOM": "20140915",
                "StudyID": f"S{k}",
                "PatientBirth": "1930.0",
                "PatientSex_DICOM": "F",
                "MethodLabel": "Physician",
                "Report": " sin hallazg patolog .",
            }
        )
        full.update(cells)
        lines.append([full[c] for c in HEADER])

    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(lines)
    data = buffer.getvalue().encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def _png(root: Path, relative: str) -> None:
    save_png(root / relative, np.full((8, 8), 30000, np.uint16))


def _fixture(root: Path, *, gz: bool = False) -> list[dict[str, str]]:
    def row(k: int, projection: str, labels: str, **extra: str) -> dict[str, str]:
        return {
            "ImageID": _image_id(k),
            "ImageDir": str(k % 3),
            "PatientID": f"P{k // 2}",
            "Projection": projection,
            "Labels": labels,
            **extra,
        }

    rows = [
        row(0, "PA", "['normal']"),
        row(1, "L", "['normal']"),  # lateral of the same study
        row(2, "AP_horizontal", "['pleural effusion', ' cardiomegaly', '']"),
        row(3, "AP", "['NSG tube', 'pseudonodule', 'suboptimal study']", MethodLabel="RNN_model"),
        row(4, "PA", "['exclude']"),
        row(5, "PA", ""),  # no labels
        row(6, "PA", "['pleural effusion'"),  # unreadable
        row(7, "COSTAL", "['callus rib fracture']"),
        row(8, "PA", "['loculated fissural effusion', 'pacemaker']", PatientSex_DICOM="O"),
        row(9, "PA", "['normal']"),  # no image file
        row(10, "PA", "[' infiltrates', 'hilar congestion']", PatientBirth=""),
    ]
    _write(root, rows, gz=gz)
    for k in (0, 1, 2, 3, 4, 7, 8, 10):
        _png(root, f"{k % 3}/{_image_id(k)}")
    return rows


def _frame(out: Path) -> pd.DataFrame:
    frame = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    return frame.set_index("source_id")


def test_frontal_rows_with_labels_and_policies(tmp_path: Path) -> None:
    root, out = tmp_path / "padchest", tmp_path / "out"
    _fixture(root)
    summary = write_import("padchest", PadChestImporter(), root, out, NullProgress())
    assert summary.excluded == {
        "view L": 1,
        "view COSTAL": 1,
        FLAG_EXCLUDE: 1,
        NO_LABELS: 1,
        UNREADABLE: 1,
        MISSING_IMAGE: 1,
    }
    frame = _frame(out)
    kept = [_image_id(k) for k in (0, 2, 3, 8, 10)]
    assert list(frame.index) == kept
    assert frame.at[kept[0], "image"] == f"0/{kept[0]}"
    assert list(frame["patient_id"]) == ["P0", "P1", "P1", "P4", "P5"]
    assert list(frame["view"]) == ["PA", "AP_horizontal", "AP", "PA", "PA"]
    assert list(frame["normal"]) == ["1", "0", "0", "0", "0"]
    assert list(frame["effusion"]) == ["0", "1", "0", "1", "0"]
    assert list(frame["cardiomegaly"]) == ["0", "1", "0", "0", "0"]  # ' cardiomegaly'
    assert list(frame["tube"]) == ["0", "0", "1", "0", "0"]  # 'NSG tube' ends with tube
    assert list(frame["nodule"]) == ["0", "0", "1", "0", "0"]  # 'pseudonodule', as xrv
    assert list(frame["support_devices"]) == ["0", "0", "0", "1", "0"]  # pacemaker
    assert list(frame["infiltration"]) == ["0", "0", "0", "0", "1"]  # ' infiltrates'
    assert list(frame["sex"]) == ["F", "F", "F", "", "F"]
    assert list(frame["age"]) == ["84", "84", "84", "84", ""]
    assert list(frame["label_method"]) == [
        "physician",
        "physician",
        "rnn",
        "physician",
        "physician",
    ]
    columns = list(pd.read_csv(out / "manifest.csv", nrows=0).columns)
    assert columns[:4] == ["image", "patient_id", "source_id", "view"]
    assert columns[4 : 4 + len(FINDING_KEYWORDS) + 1] == [*FINDING_KEYWORDS, "normal"]
    assert "PatientBirth" not in columns
    assert "Report" not in columns
    sidecar = json.loads((out / "manifest.json").read_text())
    assert sidecar["options"] == {
        "views": ["PA", "AP", "AP_horizontal"],
        "flagged_exclude": "drop",
        "suboptimal": "keep",
        "layout": "auto",
    }


def test_policy_options_change_what_is_kept(tmp_path: Path) -> None:
    root = tmp_path / "padchest"
    _fixture(root, gz=True)  # the .csv.gz the collection also ships
    cases = {
        "all": ({"views": "all"}, [0, 1, 2, 3, 7, 8, 10]),
        "pa": ({"views": "PA"}, [0, 8, 10]),
        "keep_exclude": ({"flagged_exclude": "keep"}, [0, 2, 3, 4, 8, 10]),
        "drop_suboptimal": ({"suboptimal": "drop"}, [0, 2, 8, 10]),
    }
    for name, (options, kept) in cases.items():
        out = tmp_path / name
        summary = write_import("padchest", PadChestImporter(**options), root, out, NullProgress())
        assert list(_frame(out).index) == [_image_id(k) for k in kept], name
        if name == "drop_suboptimal":
            assert summary.excluded[FLAG_SUBOPTIMAL] == 1


def test_labels_cells_are_parsed_as_literals_only() -> None:
    assert parse_labels("['normal']") == ["normal"]
    assert parse_labels("['pleural effusion', ' cardiomegaly', '']") == [
        "pleural effusion",
        " cardiomegaly",
    ]
    assert parse_labels("") == []
    assert parse_labels("nan") == []
    assert parse_labels("[]") == []
    assert parse_labels("['normal', 3]") is None
    assert parse_labels("__import__('os').getcwd()") is None  # never evaluated
    assert parse_labels("['normal'") is None
    assert parse_labels("[" * 5000) is None  # too deep for the parser: unreadable
    assert parse_labels("[" * 100_000) is None  # too long: not parsed at all


def test_flat_layout(tmp_path: Path) -> None:
    root, out = tmp_path / "padchest", tmp_path / "out"
    _write(root, [{"ImageID": _image_id(0), "ImageDir": "0", "PatientID": "P", "Projection": "PA",
                   "Labels": "['normal']"}])  # fmt: skip
    _png(root, _image_id(0))
    write_import("padchest", PadChestImporter(), root, out, NullProgress())
    assert list(_frame(out)["image"]) == [_image_id(0)]
    with pytest.raises(Exception, match="none of the 1 images listed was found"):
        write_import(
            "padchest",
            PadChestImporter(layout="folders"),
            root,
            out,
            NullProgress(),
            overwrite=True,
        )


def test_labels_match_torchxrayvision_pc_dataset(tmp_path: Path) -> None:
    """Every finding column equals torchxrayvision's PC_Dataset label on random label lists."""
    import torchxrayvision as xrv

    terms = [
        "normal", "pleural effusion", "loculated pleural effusion", "cardiomegaly", "nodule",
        "pseudonodule", "multiple nodules", "NSG tube", "endotracheal tube", "chest drain tube",
        "tracheostomy tube", "stent", "aortic stent", "pacemaker", "dual chamber device",
        "pulmonary mass", "soft tissue mass", "infiltrates", "interstitial pattern",
        "alveolar pattern", "air bronchogram", "consolidation", "adenopathy", "hilar enlargement",
        "vascular hilar enlargement", "pulmonary artery enlargement", "pleural thickening",
        "apical pleural thickening", "emphysema", "subcutaneous emphysema", "pulmonary fibrosis",
        "atelectasis", "laminar atelectasis", "pneumonia", "atypical pneumonia", "pneumothorax",
        "hiatal hernia", "rib fracture", "calcified granuloma", "flattened diaphragm",
        "bronchiectasis", "aortic elongation", "scoliosis", "tuberculosis sequelae",
        "air trapping", "costophrenic angle blunting", "aortic atheromatosis",
        "hemidiaphragm elevation", "pulmonary edema", "COPD signs", "kyphosis",
    ]  # fmt: skip
    rng = np.random.default_rng(0)
    rows = []
    for k in range(200):
        chosen = rng.choice(terms, size=int(rng.integers(1, 5)), replace=False)
        entries = [(" " if rng.random() < 0.3 else "") + str(t) for t in chosen]
        rows.append(
            {
                "ImageID": _image_id(k),
                "ImageDir": "0",
                "PatientID": f"P{k}",
                "Projection": "PA",
                "Labels": repr(entries),
            }
        )
    root, out = tmp_path / "padchest", tmp_path / "out"
    csv_path = _write(root, rows)
    for k in range(200):
        _png(root, f"0/{_image_id(k)}")
    write_import("padchest", PadChestImporter(), root, out, NullProgress())
    ours = _frame(out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = xrv.datasets.PC_Dataset(
            imgpath=str(root), csvpath=str(csv_path), views=["*"], unique_patients=False
        )
    assert len(reference) == 200
    columns = {
        name: name.lower().replace(" ", "_") for name in reference.pathologies
    }  # "Pleural_Thickening" -> pleural_thickening, "Tube" -> tube
    assert set(columns.values()) == set(FINDING_KEYWORDS)
    theirs = reference.csv["ImageID"].tolist()
    for j, name in enumerate(reference.pathologies):
        expected = reference.labels[:, j].astype(int).astype(str)
        assert list(ours.loc[theirs, columns[name]]) == list(expected), name


def test_wrong_layouts_fail_naming_the_file_or_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, out = tmp_path / "padchest", str(tmp_path / "out")
    root.mkdir()
    status, output = xaibench_cli(capsys, "data", "import", "padchest", str(root), "--out", out)
    assert status != 0
    assert f"{CSV_NAME} (or {CSV_NAME}.gz) not found" in output
    assert "Traceback" not in output
    (root / CSV_NAME).write_text("ImageID,ImageDir,PatientID,Labels\na.png,0,P,['normal']\n")
    status, output = xaibench_cli(capsys, "data", "import", "padchest", str(root), "--out", out)
    assert status != 0
    assert f"{CSV_NAME} has no column 'Projection'" in output
    assert len(output.strip().splitlines()) == 1


def test_padchest_manifest_loads(tmp_path: Path) -> None:
    """Needs the label-agnostic manifest and image_root (issue 18, K1)."""
    from xaibench.data.check import check_manifest

    root, out = tmp_path / "padchest", tmp_path / "out"
    _fixture(root)
    write_import("padchest", PadChestImporter(), root, out, NullProgress())
    assert check_manifest(out / "manifest.csv", image_root=root) == []  # type: ignore[call-arg]
