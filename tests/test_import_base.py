"""The importer framework: layout errors, missing images, containment, what is written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import pandas as pd
import pytest
from cli_run import xaibench_cli

from xaibench.data.importers.base import (
    MISSING_IMAGE,
    OUTSIDE_ROOT,
    ImportedRows,
    Importer,
    ImportLayoutError,
    keep_present,
    read_table,
    source_file,
    write_import,
)
from xaibench.errors import XaibenchError
from xaibench.progress import NullProgress


class Toy(Importer):
    """Reads ``labels.csv`` (``Image``, ``Patient``, ``Finding``) under ROOT."""

    findings: ClassVar[tuple[str, ...]] = ("effusion",)
    views: str = "frontal"

    def read(self, root: Path, progress: object) -> ImportedRows:
        table = read_table(
            source_file(root, "labels.csv", "labels.csv.gz", source="toy"),
            ["Image", "Patient", "Finding"],
            root=root,
            source="toy",
        )
        imported = ImportedRows([])
        rows = [
            {
                "image": f"images/{image}",
                "patient_id": patient,
                "effusion": finding,
                "comment": "=HYPERLINK(1)",
                "box_effusion": "[[1, 2, 3, 4]]",
            }
            for image, patient, finding in table[["Image", "Patient", "Finding"]].itertuples(
                index=False
            )
        ]
        imported.rows = keep_present(rows, root, imported, source="toy")
        return imported


def _layout(root: Path, names: list[str], listed: list[str]) -> None:
    (root / "images").mkdir(parents=True)
    for name in names:
        (root / "images" / name).write_bytes(b"x")
    rows = "".join(f"{n},P{i},1\n" for i, n in enumerate(listed))
    (root / "labels.csv").write_text("Image,Patient,Finding\n" + rows)


def test_write_import_keeps_present_images_and_records_exclusions(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _layout(root, ["a.png", "b.png"], ["a.png", "b.png", "c.png", "../../etc/passwd"])
    out = tmp_path / "out"
    summary = write_import("toy", Toy(), root, out, NullProgress())
    assert summary.rows == 2
    assert summary.excluded == {MISSING_IMAGE: 1, OUTSIDE_ROOT: 1}
    frame = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    assert list(frame.columns) == ["image", "patient_id", "effusion", "box_effusion", "comment"]
    assert list(frame["image"]) == ["images/a.png", "images/b.png"]
    assert frame["comment"].iat[0] == "'=HYPERLINK(1)"  # neutralised for spreadsheets
    sidecar = json.loads((out / "manifest.json").read_text())
    assert sidecar["source"] == "toy"
    assert sidecar["rows"] == 2
    assert sidecar["options"] == {"views": "frontal"}
    assert sidecar["excluded"] == {MISSING_IMAGE: 1, OUTSIDE_ROOT: 1}
    assert sorted(p.name for p in out.iterdir()) == ["manifest.csv", "manifest.json"]
    with pytest.raises(XaibenchError, match="already exists; pass --overwrite"):
        write_import("toy", Toy(), root, out, NullProgress())
    write_import("toy", Toy(), root, out, NullProgress(), overwrite=True)


def test_layout_errors_name_the_missing_file_or_column(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(ImportLayoutError, match=r"labels\.csv \(or labels\.csv\.gz\) not found"):
        write_import("toy", Toy(), root, tmp_path / "out", NullProgress())
    (root / "labels.csv").write_text("Image,Patient\na.png,P1\n")
    with pytest.raises(ImportLayoutError, match=r"labels\.csv has no column 'Finding'"):
        write_import("toy", Toy(), root, tmp_path / "out", NullProgress())
    assert not (tmp_path / "out").exists()


def test_no_image_found_means_a_wrong_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _layout(root, [], ["a.png"])
    with pytest.raises(ImportLayoutError, match=r"none of the 1 images listed was found"):
        write_import("toy", Toy(), root, tmp_path / "out", NullProgress())


def test_cli_rejects_an_unknown_source_and_a_bad_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, output = xaibench_cli(capsys, "data", "import", "no_such_source", str(tmp_path))
    assert status != 0
    assert "unknown importer 'no_such_source'" in output
    assert "Traceback" not in output


def test_every_builtin_importer_is_documented() -> None:
    """docs/data.md has a section and a row of the regions table per built-in importer."""
    from xaibench.default_plugins.importers import IMPORTERS

    docs = (Path(__file__).resolve().parents[1] / "docs" / "data.md").read_text()
    table = docs[docs.index("### Regions these importers provide") :]
    headings = [line for line in docs.splitlines() if line.startswith("### ")]
    for name in IMPORTERS:
        assert any(f"(`{name}`)" in h for h in headings), f"no docs/data.md section for {name}"
        assert f"\n| `{name}` |" in table, f"no row for {name} in the regions table"


def test_a_folder_symlinked_out_of_root_hides_its_images(tmp_path: Path) -> None:
    """Images behind a symlinked folder leading outside ROOT are not found (never listed)."""
    from xaibench.data.importers.base import ImageFinder

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "a.png").write_bytes(b"x")
    root = tmp_path / "root"
    (root / "inside").mkdir(parents=True)
    (root / "inside" / "b.png").write_bytes(b"x")
    (root / "inside" / "linked").symlink_to(outside, target_is_directory=True)
    (root / "also_inside").symlink_to(root / "inside", target_is_directory=True)
    finder = ImageFinder(root)
    assert finder.status("inside/b.png") is None
    assert finder.status("also_inside/b.png") is None  # a symlink that stays inside is followed
    assert finder.status("inside/linked/a.png") == MISSING_IMAGE
    assert finder.status("inside/../../outside/a.png") == OUTSIDE_ROOT
