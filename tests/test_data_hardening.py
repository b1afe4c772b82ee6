"""Hostile manifests and image files (issue 16, items 6, 11, 12 and 16): each is refused cheaply.

* **Bombs** (item 6): an image whose header declares more pixels than the budget is refused from
  the header, before a single pixel is decoded, for PNG, JPEG and DICOM, by ``data check`` and
  while a run loads images; the budget is an option.
* **Identity** (item 12): duplicates are found by file identity (device, inode), so a symlink
  alias counts; a multiply-linked file is refused (its other names may lie outside the folder);
  the file a run reads is the one that was checked (open once, ``fstat`` the descriptor).
* **Messages** (item 16): an empty file, a symlink loop, a directory and a FIFO each say what
  they are; a FIFO is never opened for reading; numbers are plain decimals.
* **Masks** (item 11): an empty mask file, or one covering (almost) the whole image, is flagged.
"""

from __future__ import annotations

import io
import os
import re
import threading
from pathlib import Path

import numpy as np
import pytest
from image_files import (
    clean_rows,
    save_png,
    write_blank_png,
    write_dicom,
    write_jpeg_claiming,
    write_manifest,
)
from image_files import image_row as row
from PIL import Image, ImageFile

from xaibench.cli import main
from xaibench.data import files as files_module
from xaibench.data.check import (
    FULL_MASK_FRACTION,
    Problem,
    check_manifest,
    format_problem,
    read_manifest,
)
from xaibench.data.images import DEFAULT_MAX_PIXELS, ImageReadError, decode_image, decode_mask
from xaibench.data.manifest import ManifestDataset, ManifestError
from xaibench.errors import XaibenchError
from xaibench.tasks.file_task import FileTask


def Osteoporosis() -> FileTask:  # noqa: N802 (the built-in task, as the class it replaced)
    """The built-in osteoporosis task (its task file)."""
    return FileTask(file="xaibench.tasks:osteoporosis.yaml")


needs_posix = pytest.mark.skipif(os.name != "posix", reason="symlinks, hard links and FIFOs")


# --- manifests -------------------------------------------------------------------------------


def xaibench(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Run the ``xaibench`` command line in-process: its exit status and its output."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(list(args))
    captured = capsys.readouterr()
    return int(done.value.code or 0), captured.out + captured.err


def by_row(problems: list[Problem]) -> dict[tuple[int | None, str | None], str]:
    return {(p.row, p.column): p.message for p in problems}


@pytest.fixture
def pillow_decodes(monkeypatch) -> list[tuple[int, int]]:
    """Every Pillow decode (``ImageFile.load``) by image size; one larger than 1000 x 1000 fails.

    The bombs in these tests are far larger, so a decode of one is recorded and stopped at once
    instead of taking seconds and hundreds of megabytes.
    """
    sizes: list[tuple[int, int]] = []
    original = ImageFile.ImageFile.load

    def load(self):  # type: ignore[no-untyped-def]
        sizes.append(self.size)
        if self.size[0] * self.size[1] > 1_000_000:
            raise AssertionError(f"a {self.size} image was decoded")
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    return sizes


# --- item 6: decompression bombs -------------------------------------------------------------


def test_default_budget_admits_the_largest_radiographs():
    assert DEFAULT_MAX_PIXELS >= 4300 * 4300 * 3  # the largest chest radiographs, as colour
    assert DEFAULT_MAX_PIXELS >= 4800 * 6000  # large-detector mammograms
    assert DEFAULT_MAX_PIXELS < 13375 * 13375  # the bomb


def test_a_colour_pixel_counts_three_times(tmp_path: Path):
    grey = io.BytesIO()
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(grey, "PNG")
    colour = io.BytesIO()
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(colour, "PNG")
    assert decode_image(grey.getvalue(), "grey.png", max_pixels=100).shape == (10, 10)
    assert decode_image(colour.getvalue(), "rgb.png", max_pixels=300).shape == (10, 10)
    with pytest.raises(ImageReadError, match=r"rgb\.png: 10x10 pixels x 3 channels \(300\) exceed"):
        decode_image(colour.getvalue(), "rgb.png", max_pixels=299)
    with pytest.raises(ImageReadError, match=r"10x10 pixels x 3 channels"):
        decode_mask(colour.getvalue(), "rgb.png", max_pixels=299)


def test_a_png_bomb_is_refused_from_its_header_before_decoding(tmp_path: Path, pillow_decodes):
    bomb = write_blank_png(tmp_path / "bomb.png", 9000, 9000)
    assert bomb.stat().st_size < 20_000  # 81 megapixels in a few kilobytes
    with pytest.raises(ImageReadError) as caught:
        decode_image(bomb.read_bytes(), "data/bomb.png")
    message = str(caught.value)
    assert message.startswith("data/bomb.png: 9000x9000 pixels (81,000,000) exceed the pixel ")
    assert f"budget of {DEFAULT_MAX_PIXELS:,}" in message
    assert "--max-pixels" in message
    assert "max_pixels" in message
    with pytest.raises(ImageReadError, match=r"mask\.png: 9000x9000 pixels"):
        decode_mask(bomb.read_bytes(), "mask.png")
    assert pillow_decodes == []


def test_jpeg_and_dicom_bombs_are_refused_from_the_header(
    tmp_path: Path, pillow_decodes, monkeypatch
):
    jpeg = write_jpeg_claiming(tmp_path / "bomb.jpg", 9000, 8000)
    with pytest.raises(ImageReadError, match=r"bomb\.jpg: 8000x9000 pixels \(72,000,000\)"):
        decode_image(jpeg.read_bytes(), "bomb.jpg")
    assert pillow_decodes == []
    import pydicom.dataset

    decoded: list[object] = []
    monkeypatch.setattr(
        pydicom.dataset.Dataset,
        "pixel_array",
        property(lambda self: decoded.append(self) or np.zeros((2, 2))),
    )
    dicom = write_dicom(tmp_path / "bomb.dcm", np.zeros((2, 2)), rows=9000, columns=9000)
    with pytest.raises(ImageReadError, match=r"bomb\.dcm: 9000x9000 pixels \(81,000,000\)"):
        decode_image(dicom.read_bytes(), "bomb.dcm")
    # Rows x Columns x frames: 31 frames of 2000 x 1000 pixels are 62 megapixels.
    frames = write_dicom(
        tmp_path / "cine.dcm", np.zeros((2, 2)), rows=2000, columns=1000, frames=31
    )
    with pytest.raises(ImageReadError, match=r"2000x1000 pixels x 31 frames \(62,000,000\)"):
        decode_image(frames.read_bytes(), "cine.dcm")
    assert decoded == []


def test_the_budget_is_an_option_of_data_check_and_of_the_dataset(tmp_path: Path, capsys):
    save_png(tmp_path / "big.png", np.zeros((20, 30), np.uint8))  # 600 pixels
    path = write_manifest(tmp_path, [row("big.png", "A"), *clean_rows(tmp_path)])
    assert check_manifest(path, max_pixels=600) == []
    problems = check_manifest(path, max_pixels=599)
    assert [(p.row, p.column) for p in problems] == [(1, "image")]
    assert "20x30 pixels (600) exceed the pixel budget of 599" in problems[0].message
    assert str(tmp_path / "big.png") in problems[0].message
    status, output = xaibench(capsys, "data", "check", str(path), "--max-pixels", "599")
    assert status == 1, output
    assert "row 1 (image): " in output
    assert "budget of 599" in output
    status, output = xaibench(capsys, "data", "check", str(path), "--max-pixels", "600")
    assert status == 0, output
    # In a run: the dataset option, named in the message.
    dataset = ManifestDataset(path=str(path), max_pixels=599)
    with pytest.raises(XaibenchError, match=r"row 1 \(image\): .*budget of 599.*max_pixels"):
        _ = dataset[0]
    assert ManifestDataset(path=str(path), max_pixels=600)[0].image.shape == (1, 256, 256)
    # The budget is no data: the fingerprint ignores it.
    assert dataset.fingerprint() == ManifestDataset(path=str(path)).fingerprint()


def test_a_bomb_in_a_manifest_is_refused_by_data_check_and_by_a_run(tmp_path: Path, pillow_decodes):
    write_blank_png(tmp_path / "bomb.png", 9000, 9000)
    write_blank_png(tmp_path / "bomb_mask.png", 9000, 9000)
    save_png(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    rows = [row("bomb.png", "A"), row("a.png", "B", mask_spine="bomb_mask.png")]
    path = write_manifest(tmp_path, [*rows, *clean_rows(tmp_path)])
    found = by_row(check_manifest(path))
    assert set(found) == {(1, "image"), (2, "mask_spine")}
    assert "9000x9000 pixels (81,000,000) exceed the pixel budget" in found[(1, "image")]
    assert "9000x9000 pixels (81,000,000) exceed the pixel budget" in found[(2, "mask_spine")]
    dataset = ManifestDataset(path=str(path))
    with pytest.raises(XaibenchError, match=r"row 1 \(image\): .*bomb\.png: 9000x9000 pixels"):
        _ = dataset[0]
    with pytest.raises(XaibenchError, match=r"row 2 \(mask_spine\): .*9000x9000 pixels"):
        _ = dataset[1]
    assert all(w * h <= 16 for w, h in pillow_decodes)


# --- item 12: identity, hard links, reading what was checked ---------------------------------


@needs_posix
def test_a_symlink_alias_of_another_image_is_a_duplicate(tmp_path: Path):
    save_png(tmp_path / "images" / "a.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "alias.png").symlink_to(tmp_path / "images" / "a.png")
    rows = [row("images/a.png", "A"), row("alias.png", "B")]
    problems = check_manifest(write_manifest(tmp_path, [*rows, *clean_rows(tmp_path)]))
    assert [(p.row, p.column) for p in problems] == [(2, "image")]
    assert "same image file as row 1" in problems[0].message


@needs_posix
def test_a_hard_link_is_refused_unless_outside_paths_are_allowed(tmp_path: Path):
    data = tmp_path / "data"
    outside = save_png(tmp_path / "secret.png", np.full((4, 4), 7, np.uint8))
    data.mkdir()
    os.link(outside, data / "linked.png")
    save_png(data / "m.png", np.eye(4, dtype=bool))
    os.link(data / "m.png", data / "m2.png")  # both names inside: still refused (unknowable)
    save_png(data / "b.png", np.zeros((4, 4), np.uint8))
    rows = [row("linked.png", "A"), row("b.png", "B", mask_spine="m2.png")]
    path = write_manifest(data, [*rows, *clean_rows(data)])
    found = by_row(check_manifest(path))
    assert set(found) == {(1, "image"), (2, "mask_spine")}
    message = found[(1, "image")]
    assert message.startswith(f"{data / 'linked.png'} has 2 hard links")
    assert "copy the file" in message
    assert "--allow-outside-paths" in message
    with pytest.raises(ManifestError, match=r"row 1 \(image\): .*hard links"):
        ManifestDataset(path=str(path))
    assert check_manifest(path, allow_outside_paths=True) == []
    dataset = ManifestDataset(path=str(path), image_size=None, allow_outside_paths=True)
    assert dataset[0].image.max().item() == pytest.approx(7 / 255)


@needs_posix
def test_a_hard_link_swapped_in_after_the_check_is_refused_when_read(tmp_path: Path):
    data = tmp_path / "data"
    outside = save_png(tmp_path / "secret.png", np.full((4, 4), 7, np.uint8))
    save_png(data / "a.png", np.zeros((4, 4), np.uint8))
    dataset = ManifestDataset(
        path=str(write_manifest(data, [row("a.png", "A"), *clean_rows(data)]))
    )
    (data / "a.png").unlink()
    os.link(outside, data / "a.png")
    with pytest.raises(XaibenchError, match=r"row 1 \(image\): .*a\.png has 2 hard links"):
        _ = dataset[0]
    with pytest.raises(XaibenchError, match=r"row 1 \(image\): .*hard links"):
        dataset.fingerprint()


@needs_posix
def test_the_file_read_is_the_file_checked(tmp_path: Path, monkeypatch):
    """A symlink swapped between opening and checking: the open descriptor is what counts.

    The swap is simulated by opening the outside file when ``a.png`` is asked for, while the
    path itself still leads inside; the identity check (fstat of the descriptor against the
    resolved path) refuses it.
    """
    data = tmp_path / "data"
    outside = save_png(tmp_path / "secret.png", np.full((4, 4), 7, np.uint8))
    save_png(data / "a.png", np.zeros((4, 4), np.uint8))
    dataset = ManifestDataset(
        path=str(write_manifest(data, [row("a.png", "A"), *clean_rows(data)]))
    )
    real_open = os.open

    def swapped_open(path, flags, *args, **kwargs):  # type: ignore[no-untyped-def]
        if os.fspath(path).endswith("a.png"):
            path = outside
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(files_module.os, "open", swapped_open)
    with pytest.raises(XaibenchError, match=r"row 1 \(image\): .*changed while it was opened"):
        _ = dataset[0]
    problems = check_manifest(data / "manifest.csv")
    assert [(p.row, p.column) for p in problems] == [(1, "image")]
    assert "changed while it was opened" in problems[0].message


@needs_posix
def test_a_fifo_is_named_and_never_opened(tmp_path: Path):
    data = tmp_path / "data"
    save_png(data / "a.png", np.zeros((4, 4), np.uint8))
    os.mkfifo(data / "pipe.png")
    (data / "folder.png").mkdir()
    rows = [row("pipe.png", "A"), row("folder.png", "B"), row("a.png", "C")]
    path = write_manifest(data, [*rows, *clean_rows(data)])
    found = by_row(check_manifest(path))
    assert found == {
        (1, "image"): f"{data / 'pipe.png'} is not a regular file (FIFO)",
        (2, "image"): f"{data / 'folder.png'} is a directory",
    }
    # Swapped in after the dataset checked the manifest: refused when read, without blocking.
    path = write_manifest(data, [row("a.png", "C"), *clean_rows(data)])
    dataset = ManifestDataset(path=str(path))
    (data / "a.png").unlink()
    os.mkfifo(data / "a.png")
    outcome: list[BaseException | None] = []

    def read() -> None:
        try:
            _ = dataset[0]
            outcome.append(None)
        except BaseException as exc:  # reported below
            outcome.append(exc)

    worker = threading.Thread(target=read, daemon=True)
    worker.start()
    worker.join(timeout=20)
    if worker.is_alive():  # blocked opening the FIFO: release it, then fail
        os.close(os.open(data / "a.png", os.O_WRONLY | os.O_NONBLOCK))
        worker.join(timeout=5)
        pytest.fail("reading a FIFO blocked")
    assert isinstance(outcome[0], XaibenchError), outcome
    assert re.search(r"row 1 \(image\): .*a\.png is not a regular file \(FIFO\)", str(outcome[0]))


# --- item 16: what each fault is called -------------------------------------------------------


def test_an_empty_file_is_named_not_a_bytes_buffer(tmp_path: Path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    save_png(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "empty_mask.png").write_bytes(b"")
    rows = [
        row("empty.png", "A"),
        row("junk.png", "B"),
        row("a.png", "C", mask_ribs="empty_mask.png"),
    ]
    found = by_row(check_manifest(write_manifest(tmp_path, [*rows, *clean_rows(tmp_path)])))
    assert found == {
        (1, "image"): f"{tmp_path / 'empty.png'}: empty file (0 bytes)",
        (2, "image"): f"{tmp_path / 'junk.png'}: not a recognised image file (neither a "
        "format Pillow reads, such as PNG or JPEG, nor DICOM)",
        (3, "mask_ribs"): f"{tmp_path / 'empty_mask.png'}: empty file (0 bytes)",
    }
    with pytest.raises(ImageReadError) as caught:
        decode_image(b"", "x.dcm")
    assert str(caught.value) == "x.dcm: empty file (0 bytes)"


@needs_posix
def test_a_symlink_loop_is_called_a_symlink_loop(tmp_path: Path):
    (tmp_path / "x.png").symlink_to(tmp_path / "y.png")
    (tmp_path / "y.png").symlink_to(tmp_path / "x.png")
    path = write_manifest(tmp_path, [row("x.png", "A"), *clean_rows(tmp_path)])
    for allow in (False, True):
        problems = check_manifest(path, allow_outside_paths=allow)
        assert [(p.row, p.column) for p in problems] == [(1, "image")]
        assert problems[0].message == f"path 'x.png' is a symlink loop (at {tmp_path / 'x.png'})"


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("1_0", "not a number: '1_0'"),
        ("-2_5", "not a number: '-2_5'"),
        ("\u0661", "not a number: '\u0661'"),  # Arabic-Indic digit one
        ("\uff11", "not a number: '\uff11'"),  # full-width digit one
        ("0x10", "not a number: '0x10'"),
        ("1,5", "not a number: '1,5'"),
        ("nan", "not a finite number: 'nan'"),
        ("inf", "not a finite number: 'inf'"),
        ("-Infinity", "not a finite number: '-Infinity'"),
    ],
)
def test_t_scores_are_plain_decimals(tmp_path: Path, cell: str, message: str):
    save_png(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    path = write_manifest(tmp_path, [row("a.png", "A", t_score=cell), *clean_rows(tmp_path)])
    # the manifest knows no class; the task finds the T-score, as `run --data` does
    _, problems = read_manifest(path)
    assert problems == []
    assert task_problems(path) == [f"row 1 (t_score): {message}"]


def task_problems(path: Path) -> list[str]:
    """The osteoporosis task's problems with the labels of manifest ``path`` (one per row)."""
    table = ManifestDataset(path=str(path)).table()
    return [format_problem(p) for p in Osteoporosis().check_labels(table)]


def test_plain_decimal_spellings_are_accepted(tmp_path: Path):
    cells = ["-2.5", "+0.5", " -1.80 ", ".5", "-3.", "-2.5e0", "1E-1"]
    rows = []
    for i, cell in enumerate(cells):
        save_png(tmp_path / f"x{i}.png", np.zeros((4, 4), np.uint8))
        rows.append(row(f"x{i}.png", f"X{i}", t_score=cell))
    path = write_manifest(tmp_path, [*rows, *clean_rows(tmp_path)])
    table = ManifestDataset(path=str(path)).table()
    assert table["t_score"].tolist()[:7] == [-2.5, 0.5, -1.8, 0.5, -3.0, -2.5, 0.1]
    assert Osteoporosis().labels(table).tolist()[:7] == [2, 0, 1, 0, 2, 2, 0]


@pytest.mark.parametrize("cell", ["\u0662", "1_0", "0x1", "2.5"])
def test_labels_are_names_or_plain_indices(tmp_path: Path, cell: str):
    rows = [{"image": "ok/0.png", "patient_id": "A", "label": cell}]
    save_png(tmp_path / "ok" / "0.png", np.zeros((4, 4), np.uint8))
    path = write_manifest(tmp_path, rows)
    assert read_manifest(path)[1] == []  # labels are the task's
    assert task_problems(path) == [
        f"row 1 (label): unknown label {cell!r}; use one of normal, osteopenia, osteoporosis or 0-2"
    ]


def test_control_characters_never_reach_the_terminal(tmp_path: Path):
    save_png(tmp_path / "ok" / "0.png", np.zeros((4, 4), np.uint8))
    rows = [
        row("evil\x1b[2J.png", "A"),
        row("nul\x00.png", "B"),
        row("ok/0.png", "C", t_score="\x1b]0;title\x07"),
    ]
    path = write_manifest(tmp_path, [*rows, *clean_rows(tmp_path)])
    problems = check_manifest(path)
    found = by_row(problems)
    assert set(found) >= {(1, "image"), (2, "image")}
    lines = [format_problem(problem) for problem in problems]
    assert "control character" in found[(2, "image")]
    # the T-score is the task's to refuse, with the cell escaped as well
    del rows[:2]
    save_png(tmp_path / "ok" / "x.png", np.zeros((4, 4), np.uint8))
    rows[0]["image"] = "ok/x.png"
    lines += task_problems(write_manifest(tmp_path, [*rows, *clean_rows(tmp_path)]))
    assert lines[-1].startswith("row 1 (t_score): not a number")
    for line in lines:
        assert not any(ord(ch) < 32 or ord(ch) == 127 for ch in line), line


def test_a_non_utf8_manifest_names_its_rows(tmp_path: Path):
    save_png(tmp_path / "ok" / "0.png", np.zeros((4, 4), np.uint8))
    text = "image,patient_id,t_score\nok/0.png,Ren\xe9e,-1.8\n"
    (tmp_path / "manifest.csv").write_bytes(text.encode("latin-1"))
    problems = check_manifest(tmp_path / "manifest.csv", decode=False)
    assert (1, "patient_id") in by_row(problems)
    assert "not UTF-8" in by_row(problems)[(1, "patient_id")]
    (tmp_path / "manifest.csv").write_bytes(text.encode("utf-16"))
    problems = check_manifest(tmp_path / "manifest.csv", decode=False)
    assert [p.message for p in problems] == [
        "the manifest is UTF-16 text; save it as UTF-8 (CSV UTF-8 in Excel)"
    ]


# --- item 11: empty and full masks ------------------------------------------------------------


def test_empty_and_full_masks_are_problems(tmp_path: Path, capsys):
    assert FULL_MASK_FRACTION == 0.99
    save_png(tmp_path / "a.png", np.zeros((10, 10), np.uint8))
    empty = np.zeros((10, 10), np.uint8)
    full = np.full((10, 10), 255, np.uint8)
    almost = full.copy()
    almost[0, 0] = 0  # 99 % inside: flagged
    fine = full.copy()
    fine[0, :2] = 0  # 98 % inside: a very large region, still plausible
    for name, mask in (("empty", empty), ("full", full), ("almost", almost), ("fine", fine)):
        save_png(tmp_path / f"{name}.png", mask)
    rows = [
        row("a.png", "A", mask_spine="empty.png", mask_lungs="fine.png", mask_heart=""),
        row("a.png", "A", mask_spine="full.png", mask_lungs="almost.png"),
    ]
    rows[1]["image"] = "b.png"
    save_png(tmp_path / "b.png", np.zeros((10, 10), np.uint8))
    found = by_row(check_manifest(write_manifest(tmp_path, [*rows, *clean_rows(tmp_path)])))
    assert set(found) == {(1, "mask_spine"), (2, "mask_spine"), (2, "mask_lungs")}
    assert found[(1, "mask_spine")] == (
        f"{tmp_path / 'empty.png'}: the mask is empty (no pixel inside); leave the cell empty "
        "if the image has no annotation of spine"
    )
    assert found[(2, "mask_spine")].startswith(
        f"{tmp_path / 'full.png'}: the mask covers 100.0% of the image"
    )
    assert "inverted" in found[(2, "mask_spine")]
    assert "covers 99.0% of the image" in found[(2, "mask_lungs")]
    status, output = xaibench(capsys, "data", "check", str(tmp_path / "manifest.csv"))
    assert status == 1
    assert "row 1 (mask_spine): " in output
    assert "the mask is empty" in output


# --- the strict CSV reader reads what pandas read ---------------------------------------------


def test_well_formed_manifests_parse_as_pandas_parsed_them():
    """Same columns and cells as ``pandas.read_csv`` (the reader before), for any valid CSV.

    Quoting, doubled quotes, commas and newlines inside quotes, spaces after commas, CRLF or CR
    line ends, blank lines, a byte-order mark, empty cells and short rows: a manifest that ran
    before reads the same now, so its results do not change.
    """
    import pandas as pd

    from xaibench.data.csvtext import parse_csv

    rng = np.random.default_rng(16)
    alphabet = [*'ab1.-_/ é,"\n', "", " ", "x y", "Ünï", "-2.5", "1e3"]
    for _ in range(300):
        width = int(rng.integers(1, 6))
        header = [f"Col{k}" if rng.random() < 0.8 else f" c{k} " for k in range(width)]
        lines = []
        for record in [header] + [
            [
                "".join(rng.choice(alphabet, size=int(rng.integers(0, 4))))
                for _ in range(int(rng.integers(1, width + 1)))
            ]
            for _ in range(int(rng.integers(1, 6)))
        ]:
            cells = []
            for cell in record:
                if any(ch in cell for ch in ',"\n') or rng.random() < 0.2:
                    cell = '"' + cell.replace('"', '""') + '"'
                cells.append((" " if rng.random() < 0.2 else "") + cell)
            line = ",".join(cells)
            if line.strip() == "":
                line = '""' if width == 1 else ","  # an all-empty record, not a blank line
            lines.append(line)
            if rng.random() < 0.1:
                lines.append("")  # a blank line between records
        ending = str(rng.choice(["\n", "\r\n", "\r"]))
        if ending == "\r":  # pandas drops an all-empty record after a blank line here
            lines = [line for line in lines if line]
        raw = ending.join(lines).encode() + (ending.encode() if rng.random() < 0.7 else b"")
        if rng.random() < 0.2:
            raw = b"\xef\xbb\xbf" + raw
        frame = pd.read_csv(
            io.BytesIO(raw),
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            skipinitialspace=True,
            encoding="utf-8-sig",
        )
        parsed = parse_csv(raw)
        assert not parsed.findings, raw
        ours = pd.DataFrame(parsed.rows, columns=pd.Index(parsed.header, dtype=object), dtype=str)
        assert list(ours.columns) == [str(c) for c in frame.columns], raw
        assert ours.to_numpy().tolist() == frame.to_numpy().tolist(), raw


def test_parser_warnings_never_reach_the_terminal(tmp_path: Path):
    """pydicom and Pillow warn about odd header values, quoting them; data check stays quiet.

    Run as a subprocess: the suite turns warnings into errors, a user's Python prints them.
    """
    import subprocess
    import sys

    dicom = write_dicom(tmp_path / "odd.dcm", np.zeros((4, 4), np.uint16))
    # An invalid transfer syntax UID: pydicom warns, quoting it, when it reads the file meta.
    syntax = b"1.2.840.10008.1.2.1\x00"
    dicom.write_bytes(dicom.read_bytes().replace(syntax, b"1.2.840.10008.\x1b.2.1\x00"))
    rows = [row("odd.dcm", "A")]
    path = write_manifest(tmp_path, [*rows, *clean_rows(tmp_path)])
    proc = subprocess.run(
        [sys.executable, "-m", "xaibench", "data", "check", str(path)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "row 1 (image): " in proc.stdout
    assert "no decoder for transfer syntax 1.2.840.10008.\\x1b.2.1" in proc.stdout
    assert "Warning" not in proc.stderr, proc.stderr
    assert "\x1b" not in proc.stdout + proc.stderr


def test_the_task_page_describes_the_default_grid_the_code_runs():
    """docs/tasks/osteoporosis.md names every component of the task file's ``defaults``."""
    from xaibench.tasks.file_task import FileTask

    page = (Path(__file__).parents[1] / "docs" / "tasks" / "osteoporosis.md").read_text()
    section = page.split("## Default grid", 1)[1].split("\n## ", 1)[0]
    defaults = FileTask(file="xaibench.tasks:osteoporosis.yaml").defaults()
    names = [
        *defaults["backbones"],
        *defaults["strategies"],
        *defaults["saliency"],
        *defaults["perturbations"],
        *defaults["metrics"],
        *defaults["perturb_regions"],
        *(f"outside_{region}" for region in defaults["complement_regions"]),
    ]
    for name in names:
        assert f"`{name}`" in section, name
    options = defaults["dataset"]["options"]
    assert f"{options['n_images']:,} images at {options['image_size']} px" in section
    assert f"{defaults['train']['epochs']} epochs" in section
    cells = len(defaults["backbones"]) * len(defaults["strategies"]) * len(defaults["seeds"])
    assert f"**{cells} cells**" in section
    deltas = len(defaults["perturbations"]) * (
        len(defaults["perturb_regions"]) + len(defaults["complement_regions"])
    )
    assert f"{deltas} Δ per cell" in section


def test_a_column_named_twice_and_a_row_with_extra_values_are_problems(tmp_path: Path):
    """pandas renamed a second ``image`` column to ``image.1`` (metadata) and turned the first
    values of a row with extra values into an index, shifting its columns; both are problems."""
    save_png(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "twice.csv").write_text("image,patient_id,t_score,image\na.png,A,-1.8,b.png\n")
    problems = check_manifest(tmp_path / "twice.csv", decode=False)
    assert [format_problem(p) for p in problems] == [
        "column image: column appears twice (names ignore case)"
    ]
    (tmp_path / "extra.csv").write_text("image,patient_id,t_score\nx.png,a.png,A,-1.8\n")
    rows = [format_problem(p) for p in check_manifest(tmp_path / "extra.csv", decode=False)]
    assert any(
        line.startswith("row 1: 4 values but the header has 3 columns (an unquoted comma")
        for line in rows
    ), rows
