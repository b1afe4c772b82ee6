"""MIMIC-CXR-JPG importer on a fixture in the published layout (synthetic values)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_run import xaibench_cli
from PIL import Image

from xaibench.data.importers.base import MISSING_IMAGE, ImportLayoutError, write_import
from xaibench.data.importers.mimic import NO_LABEL_ROW, NOT_IN_SPLIT, SAME_STUDY, MimicCxrJpg
from xaibench.progress import NullProgress

META_HEADER = (
    "dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns,"
    "StudyDate,StudyTime,ProcedureCodeSequence_CodeMeaning,ViewCodeSequence_CodeMeaning,"
    "PatientOrientationCodeSequence_CodeMeaning\n"
)
LABEL_HEADER = (
    "subject_id,study_id,Atelectasis,Cardiomegaly,Consolidation,Edema,Enlarged Cardiomediastinum,"
    "Fracture,Lung Lesion,Lung Opacity,No Finding,Pleural Effusion,Pleural Other,Pneumonia,"
    "Pneumothorax,Support Devices\n"
)


def _dicom(i: int) -> str:
    return f"{i:08x}-0a1b2c3d-4e5f6071-8293a4b5-c6d7e8f{i % 10}"


# dicom, subject, study, view, on disk, in split file (split)
IMAGES = [
    (_dicom(1), "10000032", "50414267", "PA", True, "train"),
    (_dicom(2), "10000032", "50414267", "LATERAL", True, "train"),
    (_dicom(3), "10000032", "53189527", "AP", True, "train"),
    (_dicom(4), "10000764", "57375967", "AP", True, "validate"),
    (_dicom(5), "10000764", "57375967", "PA", True, "validate"),
    (_dicom(6), "11000011", "51029426", "", True, "test"),  # view not recorded
    (_dicom(7), "10000898", "50771383", "PA", True, "test"),  # study without a label row
    (_dicom(8), "10000935", "51178377", "PA", False, "test"),  # listed, image missing
    (_dicom(9), "10000980", "54577367", "AP", True, None),  # not in the split file
]
# 14 cells in the labeler's column order: atelectasis, cardiomegaly, consolidation, edema,
# enlarged cardiomediastinum, fracture, lung lesion, lung opacity, no finding, effusion,
# pleural other, pneumonia, pneumothorax, support devices
CHEXPERT = {
    ("10000032", "50414267"): ",,,,,,,,1.0,,,,,",
    ("10000032", "53189527"): "-1.0,1.0,,0.0,,,,1.0,,-1.0,,,0.0,1.0",
    ("10000764", "57375967"): ",,1.0,,,,,,,,,-1.0,,",
    ("11000011", "51029426"): ",,,,,,,,1.0,,,,,",
    ("10000935", "51178377"): ",,,,,,,,1.0,,,,,",
    ("10000980", "54577367"): ",1.0,,,,,,,,,,,,",
}
NEGBIO = {**CHEXPERT, ("10000032", "53189527"): "1.0,1.0,,0.0,,,,1.0,,0.0,,,0.0,1.0"}


def _gz(path: Path, text: str) -> None:
    path.write_bytes(gzip.compress(text.encode()))


def _layout(root: Path) -> Path:
    root.mkdir(parents=True)
    meta = [
        f"{d},{s},{st},CHEST (PA AND LAT),{v},12,16,21800506,213014.531,"
        f"CHEST (PA AND LAT),postero-anterior,Erect\n"
        for d, s, st, v, _, _ in IMAGES
    ]
    _gz(root / "mimic-cxr-2.0.0-metadata.csv.gz", META_HEADER + "".join(meta))
    for name, labels in (("chexpert", CHEXPERT), ("negbio", NEGBIO)):
        rows = [f"{s},{st},{cells}\n" for (s, st), cells in labels.items()]
        _gz(root / f"mimic-cxr-2.0.0-{name}.csv.gz", LABEL_HEADER + "".join(rows))
    split = [f"{d},{st},{s},{sp}\n" for d, s, st, _, _, sp in IMAGES if sp]
    _gz(
        root / "mimic-cxr-2.0.0-split.csv.gz",
        "dicom_id,study_id,subject_id,split\n" + "".join(split),
    )
    for dicom, subject, study, _, present, _ in IMAGES:
        if present:
            folder = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((12, 16), 70, np.uint8)).save(folder / f"{dicom}.jpg")
    return root


def _import(tmp_path: Path, root: Path, **options: object) -> tuple[pd.DataFrame, dict]:
    out = tmp_path / "out"
    write_import("mimic", MimicCxrJpg(**options), root, out, NullProgress(), overwrite=True)
    frame = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    return frame.set_index("source_id", drop=False), json.loads((out / "manifest.json").read_text())


def test_mimic_labels_views_split(tmp_path: Path) -> None:
    root = _layout(tmp_path / "mimic-cxr-jpg" / "2.0.0")
    frame, sidecar = _import(tmp_path, root)
    assert list(frame.columns[:5]) == ["image", "patient_id", "source_id", "view", "split"]
    assert list(frame.columns[5:]) == list(MimicCxrJpg.findings)
    assert list(frame.index) == [_dicom(1), _dicom(3), _dicom(4), _dicom(5)]
    row = frame.loc[_dicom(3)]
    assert row["image"] == f"files/p10/p10000032/s53189527/{_dicom(3)}.jpg"
    assert (row["patient_id"], row["view"], row["split"]) == ("10000032", "AP", "train")
    assert (row["atelectasis"], row["cardiomegaly"], row["consolidation"], row["edema"]) == (
        "-1", "1", "", "0"
    )  # fmt: skip
    assert (row["pleural_effusion"], row["pneumothorax"], row["support_devices"]) == (
        "-1", "0", "1"
    )  # fmt: skip
    assert frame.loc[_dicom(1), "no_finding"] == "1"
    # Every image of a study shares its labels; validate -> val.
    assert frame.loc[_dicom(4), "pneumonia"] == frame.loc[_dicom(5), "pneumonia"] == "-1"
    assert set(frame.loc[[_dicom(4), _dicom(5)], "split"]) == {"val"}
    assert sidecar["excluded"] == {
        "view LATERAL not selected": 1,
        "view not recorded": 1,
        NO_LABEL_ROW: 1,
        NOT_IN_SPLIT: 1,
        MISSING_IMAGE: 1,
    }
    assert sidecar["options"] == {
        "views": "frontal",
        "uncertain": "keep",
        "labeler": "chexpert",
        "studies": "all",
        "split": "official",
    }


def test_mimic_options_change_what_is_written(tmp_path: Path) -> None:
    root = _layout(tmp_path / "mimic")
    negbio, sidecar = _import(tmp_path, root, labeler="negbio")
    assert negbio.loc[_dicom(3), "atelectasis"] == "1"
    assert negbio.loc[_dicom(3), "pleural_effusion"] == "0"
    assert "mimic-cxr-2.0.0-negbio.csv.gz" in sidecar["notes"][0]
    ones, _ = _import(tmp_path, root, uncertain="ones")
    assert ones.loc[_dicom(3), "atelectasis"] == "1"
    assert ones.loc[_dicom(4), "pneumonia"] == "1"
    ignored, _ = _import(tmp_path, root, uncertain={"pneumonia": "ignore"})
    assert ignored.loc[_dicom(4), "pneumonia"] == ""
    assert ignored.loc[_dicom(3), "atelectasis"] == "-1"
    everything, sidecar = _import(tmp_path, root, views="all", split="none")
    assert "split" not in everything.columns
    assert everything.loc[_dicom(6), "view"] == ""
    assert everything.loc[_dicom(2), "view"] == "LATERAL"
    assert _dicom(9) in everything.index  # no split file needed
    assert sidecar["excluded"] == {NO_LABEL_ROW: 1, MISSING_IMAGE: 1}
    lateral, _ = _import(tmp_path, root, views="lateral")
    assert list(lateral.index) == [_dicom(2)]
    first, sidecar = _import(tmp_path, root, studies="first")
    assert list(first.index) == [_dicom(1), _dicom(3), _dicom(4)]
    assert sidecar["excluded"][SAME_STUDY] == 1
    pa, _ = _import(tmp_path, root, views=["pa"])
    assert set(pa["view"]) == {"PA"}


def test_mimic_bad_cells_name_file_and_row(tmp_path: Path) -> None:
    root = _layout(tmp_path / "mimic")
    labels = root / "mimic-cxr-2.0.0-chexpert.csv.gz"
    text = gzip.decompress(labels.read_bytes()).decode()
    _gz(labels, text.replace("-1.0,1.0,,0.0", "-1.0,yes,,0.0"))
    with pytest.raises(ImportLayoutError, match=r"chexpert\.csv\.gz row 2 \(Cardiomegaly\): 'yes'"):
        _import(tmp_path, root)
    _gz(labels, text + text.splitlines()[1] + "\n")
    with pytest.raises(ImportLayoutError, match=r"row 7: study 50414267 .* listed twice"):
        _import(tmp_path, root)


def test_mimic_wrong_layout_fails_on_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _layout(tmp_path / "mimic")
    (root / "mimic-cxr-2.0.0-split.csv.gz").unlink()
    out = str(tmp_path / "out")
    status, output = xaibench_cli(capsys, "data", "import", "mimic", str(root), "--out", out)
    assert status != 0
    assert "mimic-cxr-2.0.0-split.csv.gz (or mimic-cxr-2.0.0-split.csv) not found" in output
    assert "Traceback" not in output
    _gz(root / "mimic-cxr-2.0.0-metadata.csv.gz", "dicom_id,subject_id,study_id\n")
    status, output = xaibench_cli(
        capsys, "data", "import", "mimic", str(root), "--out", out, "-O", "split=none"
    )
    assert status != 0
    assert "mimic-cxr-2.0.0-metadata.csv.gz has no column 'ViewPosition'" in output
    assert "Traceback" not in output


def test_mimic_manifest_loads(tmp_path: Path) -> None:
    """Needs the label-agnostic manifest (K1, helper "manifest")."""
    from xaibench.data.check import check_manifest

    root = _layout(tmp_path / "mimic")
    out = tmp_path / "out"
    write_import("mimic", MimicCxrJpg(), root, out, NullProgress())
    problems = check_manifest(out / "manifest.csv", image_root=root)  # type: ignore[call-arg]
    assert problems == []
