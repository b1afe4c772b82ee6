"""The corpus of malformed manifests that ``tests/test_data_fuzz.py`` feeds to ``data check``.

:func:`build_case` writes one seeded case: clean rows, one to four faults from
:data:`ROW_FAULTS` on rows of their own (each saying what ``data check`` must report), sometimes
a whole-file fault from :data:`FILE_FAULTS`, sometimes flipped bytes in image files.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from image_files import save_png, write_blank_png, write_dicom, write_jpeg_claiming
from PIL import Image

#: Private-use character written into a cell and then replaced by a byte that is not UTF-8.
NOT_UTF8 = "\ue000"


@dataclass
class Case:
    """One manifest under construction: its folder, rows, and what ``data check`` must say."""

    folder: Path
    rng: np.random.Generator
    rows: list[dict[str, str]] = field(default_factory=list)
    #: (row, column, words): the output must have a line ``row R (column): ...words...``.
    expect: list[tuple[int, str, str]] = field(default_factory=list)
    #: Words of a whole-file message that replaces every row check (the file is unreadable).
    fatal: str | None = None
    #: Applied to the CSV's bytes after writing.
    rewrite: list[Callable[[bytes], bytes]] = field(default_factory=list)
    #: Applied to the manifest's path after writing (replace it by a FIFO, say).
    after: list[Callable[[Path], None]] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    files: int = 0
    #: Images of the clean rows: the only files whose bytes may be flipped.
    clean: list[str] = field(default_factory=list)

    def add(self, **cells: str) -> int:
        """Append a row of a fresh patient (class osteopenia unless given); its 1-based number."""
        row = {"patient_id": f"F{len(self.rows)}", "t_score": "-1.8", **cells}
        self.rows.append(row)
        return len(self.rows)

    def name(self, suffix: str) -> str:
        """A fresh file name in the case's folder (relative)."""
        self.files += 1
        return f"f{self.files}{suffix}"

    def good_image(self, shape: tuple[int, int] = (8, 8)) -> str:
        name = self.name(".png")
        save_png(self.folder / name, self.rng.integers(0, 256, shape, dtype=np.uint8))
        return name

    def good_mask(self, shape: tuple[int, int] = (8, 8)) -> str:
        name = self.name(".png")
        save_png(self.folder / name, np.eye(*shape, dtype=bool))
        return name

    def outside(self) -> Path:
        """A real PNG outside the manifest's folder."""
        self.files += 1
        return save_png(self.folder.parent / f"{self.folder.name}_out{self.files}.png",
                        np.zeros((8, 8), np.uint8))  # fmt: skip


# --- row-level faults: each adds its own rows and says what data check must report -----------
#
# A file fault lands in the image column or in a mask column (of a row whose image is fine).


def _file_fault(make: Callable[[Case], str], words: str) -> Callable[[Case], None]:
    def fault(case: Case) -> None:
        cell = make(case)
        if case.rng.random() < 0.5:
            row = case.add(image=cell)
            case.expect.append((row, "image", words))
        else:
            column = str(case.rng.choice(["mask_spine", "mask_lungs"]))
            row = case.add(image=case.good_image(), **{column: cell})
            case.expect.append((row, column, words))

    return fault


def _missing(case: Case) -> str:
    return case.name(".png")


def _escape_relative(case: Case) -> str:
    return f"../{case.outside().name}"


def _escape_absolute(case: Case) -> str:
    return str(case.outside())


def _escape_symlink(case: Case) -> str:
    name = case.name(".png")
    (case.folder / name).symlink_to(case.outside())
    return name


def _symlink_loop(case: Case) -> str:
    a, b = case.name(".png"), case.name(".png")
    (case.folder / a).symlink_to(case.folder / b)
    (case.folder / b).symlink_to(case.folder / a)
    return a


def _hard_link(case: Case) -> str:
    name = case.name(".png")
    os.link(case.outside(), case.folder / name)
    return name


def _fifo(case: Case) -> str:
    name = case.name(".png")
    os.mkfifo(case.folder / name)
    return name


def _directory(case: Case) -> str:
    name = case.name(".png")
    (case.folder / name).mkdir()
    return name


def _bytes_file(suffix: str, data: Callable[[Case], bytes]) -> Callable[[Case], str]:
    def make(case: Case) -> str:
        name = case.name(suffix)
        (case.folder / name).write_bytes(data(case))
        return name

    return make


def _png_bytes(case: Case) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(case.rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _jpeg_bytes(case: Case) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(case.rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def _dicom_bytes(case: Case, **header: int) -> bytes:
    path = write_dicom(case.folder / "tmp.dcm", np.zeros((4, 4), np.uint16), **header)
    data = path.read_bytes()
    path.unlink()
    return data


def _png_bomb(case: Case) -> str:
    name = case.name(".png")
    side = int(case.rng.integers(7800, 9400))  # 61-88 megapixels in a few kilobytes
    write_blank_png(case.folder / name, side, side)
    return name


def _pillow_bomb(case: Case) -> str:
    name = case.name(".png")
    write_blank_png(case.folder / name, 20000, 20000)  # over Pillow's own limit too
    return name


def _jpeg_bomb(case: Case) -> str:
    name = case.name(".jpg")
    write_jpeg_claiming(case.folder / name, 9000, 8000)
    return name


def _dicom_bomb(case: Case) -> str:
    name = case.name(".dcm")
    frames = int(case.rng.choice([1, 400]))
    rows = 9000 if frames == 1 else 400
    write_dicom(case.folder / name, np.zeros((2, 2), np.uint16), rows=rows, columns=rows,
                frames=frames if frames > 1 else None)  # fmt: skip
    return name


def _multi_frame_dicom(case: Case) -> str:
    name = case.name(".dcm")
    write_dicom(case.folder / name, np.zeros((2, 4, 4), np.uint16), rows=4, columns=4, frames=2)
    return name


def _colour_dicom(case: Case) -> str:
    from pydicom import dcmread

    name = case.name(".dcm")
    path = write_dicom(case.folder / name, np.zeros((4, 4), np.uint16))
    ds = dcmread(path)
    ds.PhotometricInterpretation = "RGB"
    ds.save_as(path)
    return name


def _animated_gif(case: Case) -> str:
    name = case.name(".gif")
    frames = [Image.fromarray(np.full((8, 8), v, np.uint8)) for v in (0, 128, 255)]
    frames[0].save(case.folder / name, save_all=True, append_images=frames[1:])
    return name


def _float_tiff(case: Case) -> str:
    name = case.name(".tif")
    Image.fromarray(np.full((8, 8), 7.5, np.float32)).save(case.folder / name)
    return name


FileMaker = Callable[[Case], str]
_FILE_FAULTS: dict[str, tuple[FileMaker, str]] = {
    "missing": (_missing, "file not found"),
    "escape_relative": (_escape_relative, "leads outside the manifest's folder"),
    "escape_absolute": (_escape_absolute, "leads outside the manifest's folder"),
    "escape_symlink": (_escape_symlink, "leads through a symlink outside"),
    "symlink_loop": (_symlink_loop, "symlink loop"),
    "hard_link": (_hard_link, "hard links"),
    "fifo": (_fifo, "not a regular file (FIFO)"),
    "directory": (_directory, "is a directory"),
    "empty_png": (_bytes_file(".png", lambda c: b""), "empty file (0 bytes)"),
    "truncated_png": (_bytes_file(".png", lambda c: _png_bytes(c)[:60]), "not a readable"),
    "truncated_jpeg": (_bytes_file(".jpg", lambda c: _jpeg_bytes(c)[:30]), "not a readable"),
    "garbage": (
        _bytes_file(".png", lambda c: c.rng.integers(1, 256, 64, dtype=np.uint8).tobytes()),
        "not a recognised image file",
    ),
    "png_bomb": (_png_bomb, "exceed the pixel budget"),
    "pillow_bomb": (_pillow_bomb, "decompression bomb"),
    "jpeg_bomb": (_jpeg_bomb, "exceed the pixel budget"),
    "animated_gif": (_animated_gif, "frames"),
    "control_character": (lambda c: f"bad\x1b[2J{c.name('.png')}", "control character"),
    "nul_in_path": (lambda c: f"nul\x00{c.name('.png')}", "control character"),
    "unknown_home": (lambda c: f"~nosuchuser_{c.files}/x.png", "file not found"),
    "long_name": (lambda c: "x" * 5000 + ".png", "File name too long"),
}


def _image_only(make: FileMaker, words: str) -> Callable[[Case], None]:
    """A fault of image files only: masks are read by Pillow, never as DICOM, and a mask of
    floating-point pixels is fine."""

    def fault(case: Case) -> None:
        case.expect.append((case.add(image=make(case)), "image", words))

    return fault


#: Region annotation faults on an 8 x 8 image: column, cells (one drawn), words.
_REGION_FAULTS: dict[str, tuple[str, list[str], str]] = {
    "box_outside": ("box_finding", ["[[6, 6, 4, 4]]", "[[-1, 0, 2, 2]]"], "outside"),
    "box_size": ("box_finding", ["[[1, 1, 0, 2]]", "[[1, 1, 2, -3]]"], "must be > 0"),
    "bad_json": ("box_finding", ["[[1, 2, 3", "[[1, 2, NaN, 4]]", "nope"], "JSON"),
    "rle_counts": ("rle_lesion", ['{"size": [8, 8], "counts": [10, 5]}'], "sum to 15"),
    "rle_size": ("rle_lesion", ['{"size": [4, 4], "counts": [16]}'], "size is 4x4"),
    "rle_string": ("rle_lesion", ['{"size": [8, 8], "counts": "9"}'], "sum to 9"),
    "polygon_points": ("polygon_nodule", ["[[[1, 1], [2, 2]]]"], "at least 3"),
    "polygon_area": ("polygon_nodule", ["[[[1, 1], [2, 2], [3, 3]]]"], "zero area"),
    "siim_pairs": ("siim_rle_pneumothorax", ["1 2 3", "1 x"], "pairs"),
    "siim_past_end": ("siim_rle_pneumothorax", ["60 10"], "past the 8x8 image"),
}


def _region_fault(column: str, cells: list[str], words: str) -> Callable[[Case], None]:
    def fault(case: Case) -> None:
        cell = str(case.rng.choice(cells))
        case.expect.append((case.add(image=case.good_image(), **{column: cell}), column, words))

    return fault


def _empty_patient(case: Case) -> None:
    row = case.add(image=case.good_image(), patient_id="")
    case.expect.append((row, "patient_id", "empty patient_id"))


def _empty_image(case: Case) -> None:
    case.expect.append((case.add(image=""), "image", "empty image path"))


def _duplicate(case: Case) -> None:
    image = case.good_image()
    case.add(image=image)
    spelling = str(case.rng.choice([image, f"./{image}", f"sub/../{image}"]))
    case.expect.append((case.add(image=spelling), "image", "same image file as row"))


def _alias(case: Case) -> None:
    image = case.good_image()
    alias = case.name(".png")
    (case.folder / alias).symlink_to(case.folder / image)
    case.add(image=image)
    case.expect.append((case.add(image=alias), "image", "same image file as row"))


def _split_leak(case: Case) -> None:
    patient = f"LEAK{len(case.rows)}"
    case.add(image=case.good_image(), patient_id=patient, split="train")
    row = case.add(image=case.good_image(), patient_id=patient, split="test")
    case.expect.append((row, "split", "more than one split"))


def _unknown_split(case: Case) -> None:
    row = case.add(image=case.good_image(), split=str(case.rng.choice(["holdout", "tst", "2"])))
    case.expect.append((row, "split", "unknown split"))


def _mask_fault(kind: str) -> Callable[[Case], None]:
    def fault(case: Case) -> None:
        column = str(case.rng.choice(["mask_spine", "mask_lungs"]))
        name = case.name(".png")
        if kind == "wrong_size":
            save_png(case.folder / name, np.eye(4, 6, dtype=bool))
            words = "mask is 4x6 pixels but its image is 8x8"
        elif kind == "empty":
            save_png(case.folder / name, np.zeros((8, 8), np.uint8))
            words = "the mask is empty"
        else:
            mask = np.full((8, 8), 255, np.uint8)
            save_png(case.folder / name, mask)
            words = "covers 100.0% of the image"
        row = case.add(image=case.good_image(), **{column: name})
        case.expect.append((row, column, words))

    return fault


def _not_utf8(case: Case) -> None:
    column = str(case.rng.choice(["patient_id", "site"]))
    row = case.add(image=case.good_image(), **{column: f"Ren{NOT_UTF8}e"})
    case.expect.append((row, column, "not UTF-8"))


def _extra_values(case: Case) -> None:
    row = case.add(image=case.good_image(), t_score="-1.8,EXTRA")  # unquoted below
    marker = b'"-1.8,EXTRA"'
    case.rewrite.append(lambda raw: raw.replace(marker, b"-1.8,EXTRA"))
    case.expect.append((row, "", "values but the header has"))


_IMAGE_FAULTS: dict[str, tuple[FileMaker, str]] = {
    "empty_dicom": (_bytes_file(".dcm", lambda c: b""), "empty file (0 bytes)"),
    "garbage_dicom": (_bytes_file(".dcm", lambda c: b"DICM" * 40), "DICOM"),
    "truncated_dicom": (_bytes_file(".dcm", lambda c: _dicom_bytes(c)[:-20]), "DICOM"),
    "dicom_bomb": (_dicom_bomb, "exceed the pixel budget"),
    "multi_frame_dicom": (_multi_frame_dicom, "multi-frame DICOM"),
    "colour_dicom": (_colour_dicom, "photometric interpretation"),
    "float_tiff": (_float_tiff, "floating-point pixels"),
}

ROW_FAULTS: dict[str, Callable[[Case], None]] = {
    **{f"file_{kind}": _file_fault(make, words) for kind, (make, words) in _FILE_FAULTS.items()},
    **{f"image_{kind}": _image_only(make, words) for kind, (make, words) in _IMAGE_FAULTS.items()},
    # Label faults (T-scores, labels, rows without a class) are the task's to find, not the
    # manifest's: tests/test_data_hardening.py checks them through the task.
    **{f"region_{kind}": _region_fault(*spec) for kind, spec in _REGION_FAULTS.items()},
    "empty_patient": _empty_patient,
    "empty_image": _empty_image,
    "duplicate": _duplicate,
    "symlink_alias": _alias,
    "split_leak": _split_leak,
    "unknown_split": _unknown_split,
    "mask_wrong_size": _mask_fault("wrong_size"),
    "mask_empty": _mask_fault("empty"),
    "mask_full": _mask_fault("full"),
    "not_utf8": _not_utf8,
    "extra_values": _extra_values,
}


# --- whole-file faults: the file cannot be read as a table ------------------------------------


def _drop_column(column: str) -> Callable[[Case], str]:
    def fault(case: Case) -> str:
        for row in case.rows:
            row.pop(column, None)
        return f"column {column}: required column is missing"

    return fault


def _rewrite(change: Callable[[bytes], bytes], words: str) -> Callable[[Case], str]:
    def fault(case: Case) -> str:
        case.rewrite.append(change)
        return words

    return fault


def _replace_manifest(case: Case, make: Callable[[Path], None], words: str) -> str:
    def replace(path: Path) -> None:
        path.unlink()
        make(path)

    case.after.append(replace)
    return f"manifest {case.folder / 'manifest.csv'} {words}"


def _open_quote(raw: bytes) -> bytes:
    header, _, rest = raw.partition(b"\n")
    return header + b'\n"' + rest


def _oversized_field(raw: bytes) -> bytes:
    header, _, rest = raw.partition(b"\n")
    first, _, others = rest.partition(b"\n")
    return header + b"\n" + first + b"\n" + b'"' + b"y" * 200_000 + b'"' + b",P,1\n" + others


FILE_FAULTS: dict[str, Callable[[Case], str]] = {
    "no_image_column": _drop_column("image"),
    "no_patient_column": _drop_column("patient_id"),
    "duplicate_column": _rewrite(
        lambda raw: raw.replace(b"patient_id", b"Image", 1), "column image: column appears twice"
    ),
    "utf16": _rewrite(lambda raw: raw.decode("utf-8", "replace").encode("utf-16"), "UTF-16 text"),
    "semicolons": _rewrite(
        lambda raw: raw.split(b"\n", 1)[0].replace(b",", b";") + b"\n", "comma-separated"
    ),
    "header_only": _rewrite(lambda raw: raw.split(b"\n", 1)[0] + b"\n", "has no rows"),
    "empty_csv": _rewrite(lambda raw: b"", "the manifest is empty"),
    "open_quote": _rewrite(_open_quote, "row 1: cannot read line"),
    "oversized_field": _rewrite(_oversized_field, "row 2: cannot read line"),
    "binary_csv": _rewrite(
        lambda raw: np.random.default_rng(len(raw)).integers(0, 256, 300, np.uint8).tobytes(), ""
    ),
    "manifest_fifo": lambda case: _replace_manifest(case, os.mkfifo, "is not a regular file"),
    "manifest_directory": lambda case: _replace_manifest(case, os.mkdir, "is a directory"),
    "reserved_column": _rewrite(
        lambda raw: raw.replace(b"patient_id", b"patient_id,sample_id", 1), "reserved"
    ),
}


# --- building and running a case ----------------------------------------------------------------


def _write_csv(case: Case) -> Path:
    if any("split" in row for row in case.rows):  # then every row needs one
        for row in case.rows:
            row.setdefault("split", "train")
    columns: list[str] = []
    for row in case.rows:
        columns += [c for c in row if c not in columns]
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=columns, quoting=csv.QUOTE_MINIMAL)
    writer.writeheader()
    writer.writerows([{c: row.get(c, "") for c in columns} for row in case.rows])
    raw = buffer.getvalue().encode("utf-8").replace(NOT_UTF8.encode(), b"\xe9")
    for change in case.rewrite:
        raw = change(raw)
    path = case.folder / "manifest.csv"
    path.write_bytes(raw)
    for change in case.after:
        change(path)
    return path


def _flip_bytes(data: bytes, rng: np.random.Generator) -> bytes:
    """``data`` with 1 to 8 random bytes set to random values."""
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        out[int(rng.integers(len(out)))] = int(rng.integers(256))
    return bytes(out)


def _mutant(case: Case) -> None:
    """A row whose image (or a clean row's image) has random bytes flipped: it may still decode,
    or fail in any way a parser can; nothing is expected but a one-line answer."""
    if case.rng.random() < 0.3:
        path = case.folder / case.clean[int(case.rng.integers(len(case.clean)))]
    else:
        kind = str(case.rng.choice(["png", "png16", "jpeg", "dicom", "gif", "tiff", "bmp"]))
        pixels = case.rng.integers(0, 256, (12, 10), dtype=np.uint8)
        path = case.folder / case.name("." + {"png16": "png", "dicom": "dcm"}.get(kind, kind))
        if kind == "dicom":
            write_dicom(path, pixels.astype(np.uint16) * 257)
        else:
            array = pixels.astype(np.uint16) * 257 if kind == "png16" else pixels
            Image.fromarray(array).save(path)
        mask = case.good_mask((12, 10)) if case.rng.random() < 0.5 else ""
        case.add(image=path.name, mask_spine=mask)
    path.write_bytes(_flip_bytes(path.read_bytes(), case.rng))
    case.faults.append(f"flipped {path.name}")


def build_case(folder: Path, seed: int) -> Case:
    """Clean rows (one per class, some with formula-looking cells) and 1-4 faults on their own
    rows, in a random order; sometimes a file with flipped bytes; every sixth case a whole-file
    fault. Every fault kind comes up within the first ``len(ROW_FAULTS)`` cases."""
    folder.mkdir(parents=True)
    case = Case(folder=folder, rng=np.random.default_rng([16, seed]))
    builders = [
        lambda c, t=t: c.add(image=_clean_image(c), t_score=t, site=str(c.rng.choice(SITES)))
        for t in ("0.5", "-1.8", "-3.0")
    ]
    kinds = sorted(ROW_FAULTS)
    names = [kinds[seed % len(kinds)]]  # every kind in turn, then others at random
    names += [str(k) for k in case.rng.choice(kinds, size=int(case.rng.integers(0, 4)))]
    case.faults += names
    builders += [ROW_FAULTS[name] for name in names]
    for index in case.rng.permutation(len(builders)):
        builders[index](case)
    if case.rng.random() < 0.3:
        _mutant(case)
    if seed % 6 == 5:  # every whole-file fault in turn
        name = sorted(FILE_FAULTS)[(seed // 6) % len(FILE_FAULTS)]
        case.faults.append(name)
        case.fatal = FILE_FAULTS[name](case)
    _write_csv(case)
    return case


def _clean_image(case: Case) -> str:
    name = case.good_image()
    case.clean.append(name)
    return name


#: Metadata values that look like spreadsheet formulas (harmless to data check).
SITES = ["A", '=HYPERLINK("http://x","y")', "+1", "-2+3", "@SUM(A1)", "\tB", "B"]
