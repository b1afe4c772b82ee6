"""A manifest cannot reach beyond its folder, and no file header value reaches any output.

Two rules of the ``manifest`` dataset (``docs/data.md``, "Security"):

* Image and mask paths must resolve — after ``..`` and symlinks — inside the CSV's folder, unless
  ``allow_outside_paths`` is set; ``xaibench data check`` and the dataset report every offending
  row with its column, the path and the fix.
* Decoding keeps pixels only: DICOM header values (patient name, ids, dates, institution, ...)
  and PNG text chunks never reach a sample, the dataset's table, or any file of a run.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from cli_runs import SMALL_MANIFEST_RUN, cli
from image_files import clean_rows, image_row, write_dicom, write_manifest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from xaibench.data.check import check_manifest, format_problem
from xaibench.data.manifest import ManifestDataset, ManifestError
from xaibench.data.phantom import PhantomDataset
from xaibench.errors import XaibenchError

#: T-scores of the three WHO classes (normal, osteopenia, osteoporosis).

#: DICOM header values that must never reach an output; each holds a marker no output could
#: contain by chance.
HEADER = {
    "PatientName": "ZZMARKER^SECRET",
    "PatientID": "ZZMARKERPID",
    "OtherPatientIDs": "ZZMARKEROTHERPID",
    "PatientBirthDate": "18880808",
    "PatientAddress": "ZZMARKERSTREET 1",
    "InstitutionName": "ZZMARKERHOSPITAL",
    "InstitutionAddress": "ZZMARKERTOWN",
    "ReferringPhysicianName": "ZZMARKER^DOCTOR",
    "StudyDate": "18870707",
    "StudyDescription": "ZZMARKERSTUDY",
    "SeriesDescription": "ZZMARKERSERIES",
    "AccessionNumber": "ZZMARKERACC",
    "StationName": "ZZMARKERSTATION",
    "ImageComments": "ZZMARKERCOMMENT",
}
#: Strings searched for in every output file: every header value (the person name's parts too),
#: the PNG text chunk's, and the marker in the image file names.
MARKERS = (
    *HEADER.values(),
    "ZZMARKER",
    "SECRET",
    "ZZPNGTEXT",
    "ZZFILENAME",
)


# --- writers ---------------------------------------------------------------------------------


def save_png(path: Path, array: np.ndarray, text: dict[str, str] | None = None) -> Path:
    """Save ``array`` as PNG, with optional ``tEXt`` chunks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    Image.fromarray(array).save(path, pnginfo=info)
    return path


def save_dicom(path: Path, stored: np.ndarray, *, photometric: str = "MONOCHROME2") -> Path:
    """A 16-bit DICOM whose identifying header holds the markers of :data:`HEADER`."""
    return write_dicom(path, stored, photometric=photometric, header=HEADER)


# --- containment -----------------------------------------------------------------------------


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """``tmp_path/data`` (the manifest's folder) and an image outside it: ``outside.png``."""
    data = tmp_path / "data"
    data.mkdir()
    outside = save_png(tmp_path / "outside.png", np.zeros((4, 4), np.uint8))
    return data, outside


def outside_rows(data: Path, outside: Path) -> list[dict[str, object]]:
    """Rows 1-4 escape the folder (relative, absolute, symlink, mask); rows 5-7 are clean.

    Each escaping row names another file beside ``outside`` (the same file twice would also be
    refused as listed twice): ``outside.png``, ``abs.png``, ``linked.png`` and ``mask.png``.
    """
    here = outside.parent
    save_png(here / "abs.png", np.ones((4, 4), np.uint8))
    save_png(here / "linked.png", np.full((4, 4), 2, np.uint8))
    save_png(here / "mask.png", np.eye(4, dtype=bool))
    (data / "link.png").symlink_to(here / "linked.png")
    save_png(data / "inside.png", np.zeros((4, 4), np.uint8))
    return [
        image_row("../outside.png", "A"),
        image_row(str(here / "abs.png"), "B"),
        image_row("link.png", "C"),
        image_row("inside.png", "D", mask_spine="sub/../../mask.png"),
        *clean_rows(data),
    ]


def test_every_path_outside_the_folder_is_a_problem_naming_row_column_and_path(layout):
    data, outside = layout
    path = write_manifest(data, outside_rows(data, outside))
    problems = check_manifest(path)
    assert [(p.row, p.column) for p in problems] == [
        (1, "image"),
        (2, "image"),
        (3, "image"),
        (4, "mask_spine"),
    ]
    here = outside.parent.resolve()
    cells = ["../outside.png", str(outside.parent / "abs.png"), "link.png", "sub/../../mask.png"]
    targets = ["outside.png", "abs.png", "linked.png", "mask.png"]
    root = data.resolve()
    for problem, cell, target in zip(problems, cells, targets, strict=True):
        assert problem.message == (
            f"path {cell!r} leads {'through a symlink ' if cell == 'link.png' else ''}outside "
            f"the manifest's folder {root} (to {here / target}); move the file into {root} "
            "and give its path relative to the manifest, or pass --allow-outside-paths "
            "(dataset option allow_outside_paths: true) if you trust this manifest"
        )
    assert format_problem(problems[0]).startswith("row 1 (image): path '../outside.png' leads")
    # The dataset refuses the manifest listing every offending row, not only the first.
    with pytest.raises(ManifestError) as caught:
        ManifestDataset(path=str(path))
    message = str(caught.value)
    assert "has 4 problems" in message
    for row, column in ((1, "image"), (2, "image"), (3, "image"), (4, "mask_spine")):
        assert f"row {row} ({column}): path " in message
    assert message.count("--allow-outside-paths") == 4


def test_allow_outside_paths_accepts_them_all(layout):
    data, outside = layout
    path = write_manifest(data, outside_rows(data, outside))
    assert check_manifest(path, allow_outside_paths=True) == []
    dataset = ManifestDataset(path=str(path), image_size=None, allow_outside_paths=True)
    assert len(dataset) == 7
    assert dataset[1].image.max().item() == pytest.approx(1 / 255)
    assert dataset[2].image.max().item() == pytest.approx(2 / 255)
    assert dataset[3].regions["spine"].numpy().tolist() == np.eye(4, dtype=bool).tolist()
    # The option is not data: the fingerprint ignores it, while the options record it.
    strict = ManifestDataset(path=str(write_manifest(data, clean_rows(data))))
    relaxed = strict.model_copy(update={"allow_outside_paths": True})
    assert relaxed.fingerprint() == strict.fingerprint()
    assert relaxed.options()["allow_outside_paths"] is True


def test_paths_that_stay_inside_are_accepted(tmp_path: Path):
    data = tmp_path / "data"
    save_png(data / "sub" / "dir" / "a.png", np.zeros((4, 4), np.uint8))
    save_png(data / "b.png", np.zeros((4, 4), np.uint8))
    save_png(data / "c.png", np.zeros((4, 4), np.uint8))
    save_png(data / "masks" / "m.png", np.eye(4, dtype=bool))
    (data / "sub" / "link_to_c.png").symlink_to(data / "c.png")  # a symlink within the folder
    rows = [
        image_row("sub/dir/a.png", "A", mask_spine="masks/m.png"),
        image_row("sub/../b.png", "B"),  # '..' that stays inside
        image_row("sub/link_to_c.png", "C"),
        image_row(str(data / "masks" / "m.png"), "D"),  # absolute, but inside
        *clean_rows(data),
    ]
    path = write_manifest(data, rows)
    assert check_manifest(path) == []
    # The manifest's folder itself reached through a symlink is no obstacle.
    (tmp_path / "alias").symlink_to(data, target_is_directory=True)
    assert check_manifest(tmp_path / "alias" / "manifest.csv", decode=False) == []
    dataset = ManifestDataset(path=str(path), image_size=None)
    assert dataset[0].regions["spine"].numpy().tolist() == np.eye(4, dtype=bool).tolist()


def test_an_outside_file_is_never_opened(layout, monkeypatch):
    """Not read, and not even tested for existence: the message must not probe the disk.

    (Resolving a path looks at its components' metadata, as symlinks must be followed; what the
    user is told is the same whether the file exists or not.)
    """
    import os
    import sys

    from xaibench.data import files as files_module

    data, outside = layout
    rows = [image_row("../does-not-exist.png", "A"), image_row("../outside.png", "B")]
    path = write_manifest(data, [*rows, *clean_rows(data)])
    touched: list[Path] = []
    for name in ("is_file", "exists", "read_bytes", "open"):
        original = getattr(Path, name)

        def spy(self: Path, *args, __original=original, **kwargs):
            touched.append(self)
            return __original(self, *args, **kwargs)

        monkeypatch.setattr(Path, name, spy)
    for name in ("stat", "open"):  # how xaibench.data.files tests and opens files
        original = getattr(os, name)

        def os_spy(target, *args, __original=original, **kwargs):
            # Only xaibench's own calls: Path.resolve stats what it resolved, internally.
            if sys._getframe(1).f_code.co_filename == files_module.__file__:
                touched.append(Path(os.fsdecode(target)))
            return __original(target, *args, **kwargs)

        monkeypatch.setattr(os, name, os_spy)
    problems = check_manifest(path)
    monkeypatch.undo()
    assert [p.row for p in problems] == [1, 2]
    assert all("file not found" not in p.message for p in problems)
    assert all("leads outside" in p.message for p in problems)
    assert any(t.name == "0.png" for t in touched)  # the spy saw the clean rows' files
    assert not [t for t in touched if not t.resolve().is_relative_to(data.resolve())]
    assert outside.is_file()


def test_a_symlink_swapped_in_after_the_check_is_refused_when_read(layout):
    data, outside = layout
    save_png(data / "a.png", np.zeros((4, 4), np.uint8))
    dataset = ManifestDataset(
        path=str(write_manifest(data, [image_row("a.png", "A"), *clean_rows(data)]))
    )
    (data / "a.png").unlink()
    (data / "a.png").symlink_to(outside)
    with pytest.raises(XaibenchError, match=r"row 1 \(image\): path 'a.png' leads through a sym"):
        _ = dataset[0]


def test_backslashes_and_home_are_no_way_out(layout, monkeypatch):
    data, outside = layout
    monkeypatch.setenv("HOME", str(outside.parent))
    rows = [image_row("..\\outside.png", "A"), image_row("~/elsewhere.png", "B")]
    problems = check_manifest(write_manifest(data, [*rows, *clean_rows(data)]), decode=False)
    assert [(p.row, p.column) for p in problems] == [(1, "image"), (2, "image")]
    assert f"(to {outside.resolve()})" in problems[0].message
    assert f"(to {outside.parent.resolve() / 'elsewhere.png'})" in problems[1].message


def test_a_symlink_loop_is_a_problem_named_as_such(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "x.png").symlink_to(data / "y.png")
    (data / "y.png").symlink_to(data / "x.png")
    problems = check_manifest(write_manifest(data, [image_row("x.png", "A"), *clean_rows(data)]))
    assert [(p.row, p.column) for p in problems] == [(1, "image")]
    assert problems[0].message == f"path 'x.png' is a symlink loop (at {data / 'x.png'})"


def test_data_check_command_reports_outside_paths(layout):
    data, outside = layout
    path = write_manifest(data, outside_rows(data, outside))
    proc = cli("data", "check", str(path), "--quick", cwd=data)
    assert proc.returncode == 1, proc.stderr
    assert "row 1 (image): path '../outside.png' leads outside the manifest's folder" in proc.stdout
    assert "row 3 (image): path 'link.png' leads through a symlink outside" in proc.stdout
    assert "4 problems" in proc.stdout


# --- headers ---------------------------------------------------------------------------------


def marker_dataset(folder: Path, n_images: int) -> Path:
    """The phantom's images as DICOM (markers in the header) and, every third, as a PNG with a
    marker text chunk; file names carry a marker too, patient ids are ``ZZPATIENT<i>``."""
    phantom = PhantomDataset(n_images=n_images, image_size=32, class_shares=(0.4, 0.3, 0.3))
    table = phantom.table()
    rows: list[dict[str, object]] = []
    for i in range(len(phantom)):
        sample = phantom[i]
        pixels = np.round(sample.image[0].numpy().astype(np.float64) * 65535).astype(np.uint16)
        stem = folder / "images" / f"ZZFILENAME_{i}"
        if i % 3 == 2:
            image = save_png(stem.with_suffix(".png"), pixels, {"Author": "ZZPNGTEXT"})
        elif i % 3 == 1:
            image = save_dicom(stem.with_suffix(".dcm"), 65535 - pixels, photometric="MONOCHROME1")
        else:
            image = save_dicom(stem.with_suffix(".dcm"), pixels)
        row: dict[str, object] = {
            "image": image.relative_to(folder).as_posix(),
            "patient_id": f"ZZPATIENT{table['patient_id'][i]}",
            "t_score": repr(float(table["t_score"][i])),
            "site": "A" if i % 2 else "B",
        }
        for region in ("spine", "ribs", "clavicles", "lungs"):
            mask = save_png(folder / "masks" / f"{i}_{region}.png", sample.regions[region].numpy())
            row[f"mask_{region}"] = mask.relative_to(folder).as_posix()
        rows.append(row)
    return write_manifest(folder, rows)


def test_samples_and_table_hold_no_header_value(tmp_path: Path):
    path = marker_dataset(tmp_path, 9)
    dataset = ManifestDataset(path=str(path), image_size=32)
    kept = dataset.table().to_csv() + "".join(
        repr(dataset[i].attributes) + dataset[i].sample_id for i in range(len(dataset))
    )
    for marker in (*HEADER.values(), "ZZMARKER", "ZZPNGTEXT", "ZZFILENAME"):
        assert marker not in kept, marker


def test_no_header_value_file_name_or_patient_id_reaches_any_file_of_a_run(tmp_path: Path):
    data = tmp_path / "data"
    path = marker_dataset(data, 36)
    with path.open() as handle:
        patients = {row["patient_id"] for row in csv.DictReader(handle)}
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({**SMALL_MANIFEST_RUN, "gallery_images": 2}))
    run = tmp_path / "run"
    run_proc = cli(
        "run", "osteoporosis", "--data", str(path), "--config", str(config),
        "--out", str(run), "--quiet", cwd=tmp_path,
    )  # fmt: skip
    assert run_proc.returncode == 0, run_proc.stderr
    report_proc = cli("report", str(run), cwd=tmp_path)
    assert report_proc.returncode == 0, report_proc.stderr
    # The run really wrote the outputs the rule is about.
    names = {p.name for p in run.rglob("*") if p.is_file()}
    for expected in ("results.json", "predictions.csv", "explanations.csv", "report.html"):
        assert expected in names, sorted(names)
    assert any(n.startswith("strata_") for n in names), sorted(names)
    assert any(p.parent.name == "gallery" for p in run.rglob("*.png")), sorted(names)
    assert json.loads((run / "results.json").read_text())["dataset"]["name"] == "manifest"
    leaks = []
    for file in sorted(p for p in run.rglob("*") if p.is_file()):
        content = file.read_bytes()
        leaks += [(file.name, m) for m in MARKERS if m.encode() in content]
        leaks += [(file.name, p) for p in sorted(patients) if p.encode() in content]
    assert not leaks
    # What the commands print is output too (a user may paste it into an issue).
    printed = run_proc.stdout + run_proc.stderr + report_proc.stdout + report_proc.stderr
    assert not [m for m in (*MARKERS, *patients) if m in printed]


def test_the_cli_flag_lets_a_trusted_manifest_through(layout):
    data, outside = layout
    path = write_manifest(data, outside_rows(data, outside))
    proc = cli("data", "check", str(path), "--quick", "--allow-outside-paths", cwd=data)
    assert "leads outside" not in proc.stdout
    assert "through a symlink" not in proc.stdout
    # `run --allow-outside-paths` passes the option to the manifest dataset: the run gets past
    # the path check (and fails later for another reason: no output directory is refused here)
    proc = cli("run", "osteoporosis", "--data", str(path), "--epochs", "1", "--out", "x", cwd=data)
    assert proc.returncode == 2
    assert "leads outside the manifest's folder" in proc.stderr
    proc = cli(
        "run", "osteoporosis", "--data", str(path), "--allow-outside-paths", "--quiet",
        "--out", "y", cwd=data,
    )  # fmt: skip
    assert "leads outside the manifest's folder" not in proc.stderr
