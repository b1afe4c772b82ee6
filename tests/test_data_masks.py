"""``xaibench data masks``: files, columns, kept regions, containment, resume after SIGKILL."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cli_run import xaibench_cli
from PIL import Image

from xaibench.data.manifest import ManifestDataset
from xaibench.data.manifest_sidecar import mask_provenance
from xaibench.errors import XaibenchError

#: A deterministic, batch-invariant segmenter: thresholds. It logs a hash of every image it
#: segments to $MASKS_TEST_LOG, each batch's shape to $MASKS_TEST_BATCHES, and sleeps
#: $MASKS_TEST_DELAY seconds per image.
SEGMENTER = '''
import hashlib
import os
import time
from typing import ClassVar

from xaibench.hookspecs import hookimpl
from xaibench.segmenters.base import Segmenter


class Threshold(Segmenter):
    """spine: brighter than level; heart: darker than level / 2."""

    regions: ClassVar[tuple[str, ...]] = ("spine", "heart")
    level: float = 0.5

    def load(self, device):
        pass

    def segment(self, images):
        batches = os.environ.get("MASKS_TEST_BATCHES")
        if batches:
            with open(batches, "a") as handle:
                handle.write(" ".join(str(n) for n in images.shape) + "\\n")
        log = os.environ.get("MASKS_TEST_LOG")
        for image in images:
            if log:
                digest = hashlib.sha256(image.cpu().numpy().tobytes()).hexdigest()
                with open(log, "a") as handle:
                    handle.write(digest + "\\n")
            time.sleep(float(os.environ.get("MASKS_TEST_DELAY", "0")))
        return {"spine": images[:, 0] > self.level, "heart": images[:, 0] < self.level / 2}

    def provenance(self):
        return {"version": "1", "options": self.options(), "weights": None}


@hookimpl
def register_segmenters(register):
    register("threshold_test", Threshold, summary="thresholds (tests)")
'''

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch) -> Path:
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "threshold_test.py").write_text(SEGMENTER)
    monkeypatch.setenv("XAIBENCH_PLUGINS_DIR", str(folder))
    monkeypatch.delenv("XAIBENCH_FAILPOINT", raising=False)
    return folder


def images_of_two_sizes(
    root: Path, extra: dict[str, list[str]] | None = None, *, n: int = 9, dark: int | None = None
) -> Path:
    """``n`` PNGs under ``root/images`` (24x32 8-bit; every third 40x20 16-bit) and their CSV.

    Image ``dark`` (0-based) is all black.
    """
    rng = np.random.default_rng(19)
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        if i % 3 == 2:
            array = rng.integers(0, 65536, size=(40, 20)).astype(np.uint16)
        else:
            array = rng.integers(0, 256, size=(24, 32)).astype(np.uint8)
        if i == dark:
            array[:] = 0
        Image.fromarray(array).save(root / "images" / f"p{i}.png")
        rows.append({"image": f"images/p{i}.png", "patient_id": f"P{i}", "t_score": f"-{i}.5"})
    for column, cells in (extra or {}).items():
        for row, cell in zip(rows, cells, strict=True):
            row[column] = cell
    path = root / "input.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def expected(root: Path, i: int) -> dict[str, np.ndarray]:
    """The threshold masks of image ``i``, from the file's pixels (by bit depth)."""
    array = np.asarray(Image.open(root / "images" / f"p{i}.png"))
    value = array / (65535.0 if array.dtype == np.uint16 else 255.0)
    return {"spine": value > 0.5, "heart": value < 0.25}


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def masks(capsys, manifest: Path, out: Path, *args: str) -> tuple[int, str]:
    return xaibench_cli(
        capsys,
        "data",
        "masks",
        str(manifest),
        "--segmenter",
        "threshold_test",
        "--out",
        str(out),
        "--quiet",
        "--device",
        "cpu",
        "--batch-size",
        "2",
        *args,
    )


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


# --- what is written ----------------------------------------------------------------------


def test_masks_files_columns_and_sidecar(tmp_path: Path, plugins: Path, capsys, monkeypatch):
    manifest = images_of_two_sizes(tmp_path / "data")
    out = tmp_path / "data" / "out"
    batches = tmp_path / "batches.log"
    monkeypatch.setenv("MASKS_TEST_BATCHES", str(batches))
    code, output = masks(capsys, manifest, out)
    assert code == 0, output
    # Rows alternate 24x32, 24x32, 40x20: batches of one size, at most --batch-size 2.
    shapes = [tuple(int(n) for n in line.split()) for line in batches.read_text().splitlines()]
    assert sum(shape[0] for shape in shapes) == 9
    assert {shape[1:] for shape in shapes} == {(1, 24, 32), (1, 40, 20)}
    assert max(shape[0] for shape in shapes) == 2
    assert (2, 1, 24, 32) in shapes
    assert "segmented 9 of 9 images" in output
    assert sorted(p.name for p in out.iterdir()) == ["manifest.csv", "manifest.json", "masks"]
    for i in range(9):
        for region, mask in expected(tmp_path / "data", i).items():
            written = np.asarray(Image.open(out / "masks" / f"row{i + 1:05d}_{region}.png"))
            assert written.dtype == np.uint8
            assert set(np.unique(written)) <= {0, 255}
            np.testing.assert_array_equal(written == 255, mask)  # the native grid
    rows = read_rows(out / "manifest.csv")
    assert list(rows[0]) == ["image", "patient_id", "t_score", "mask_spine", "mask_heart"]
    assert rows[4]["image"] == "images/p4.png"
    assert rows[4]["t_score"] == "-4.5"
    assert rows[4]["mask_heart"] == "out/masks/row00005_heart.png"  # relative to R
    sidecar = json.loads((out / "manifest.json").read_text())
    assert sidecar["format"] == "xaibench-masks"
    assert sidecar["format_version"] == "1"
    assert sidecar["segmenter"]["name"] == "threshold_test"
    assert sidecar["segmenter"]["options"] == {"level": 0.5}
    assert sidecar["regions"] == ["spine", "heart"]
    assert str(tmp_path) not in (out / "manifest.json").read_text()

    dataset = ManifestDataset(
        path=str(out / "manifest.csv"), image_root=str(tmp_path / "data"), image_size=None
    )
    assert dataset.region_names == ("bone", "spine", "heart")
    sample = dataset[2]
    np.testing.assert_array_equal(
        sample.regions["spine"].numpy(), expected(tmp_path / "data", 2)["spine"]
    )
    assert dataset.mask_provenance == {
        "segmenter": sidecar["segmenter"],
        "regions": ["spine", "heart"],
        "qc": sidecar["qc"],
    }


def test_regions_subset_and_an_unknown_region(tmp_path: Path, plugins: Path, capsys):
    manifest = images_of_two_sizes(tmp_path / "data")
    out = tmp_path / "data" / "out"
    code, output = masks(capsys, manifest, out, "--regions", "heart")
    assert code == 0, output
    assert list(read_rows(out / "manifest.csv")[0])[-1] == "mask_heart"
    assert not list((out / "masks").glob("*_spine.png"))
    code, output = masks(capsys, manifest, tmp_path / "data" / "o2", "--regions", "heart,ribs")
    assert code == 2
    assert "--regions: segmenter 'threshold_test' does not provide ribs" in output


def test_existing_columns_are_kept_unless_overwrite(tmp_path: Path, plugins: Path, capsys):
    data = tmp_path / "data"
    (data / "hand").mkdir(parents=True)
    cells = []
    for i in range(9):
        shape = (40, 20) if i % 3 == 2 else (24, 32)
        hand = np.zeros(shape, dtype=np.uint8)
        hand[2:5, 3:9] = 255
        Image.fromarray(hand).save(data / "hand" / f"{i}.png")
        cells.append(f"hand/{i}.png")
    manifest = images_of_two_sizes(data, {"mask_spine": cells})
    code, output = masks(capsys, manifest, data / "kept")
    assert code == 0, output
    assert "kept the manifest's own spine" in output
    assert "note" not in output
    rows = read_rows(data / "kept" / "manifest.csv")
    assert [r["mask_spine"] for r in rows] == cells
    assert rows[0]["mask_heart"] == "kept/masks/row00001_heart.png"
    assert not list((data / "kept" / "masks").glob("*_spine.png"))
    assert json.loads((data / "kept" / "manifest.json").read_text())["regions"] == ["heart"]

    code, output = masks(capsys, manifest, data / "new", "--overwrite")
    assert code == 0, output
    rows = read_rows(data / "new" / "manifest.csv")
    assert list(rows[0]) == ["image", "patient_id", "t_score", "mask_spine", "mask_heart"]
    assert rows[0]["mask_spine"] == "new/masks/row00001_spine.png"

    # Nothing left to write without --overwrite: one line, nothing written.
    code, output = masks(capsys, manifest, data / "none", "--regions", "spine")
    assert code == 2
    assert "already has every region to write (spine)" in output
    assert "--overwrite" in output


def test_out_outside_the_image_root_is_refused(tmp_path: Path, plugins: Path, capsys):
    manifest = images_of_two_sizes(tmp_path / "data")
    code, output = masks(capsys, manifest, tmp_path / "elsewhere")
    assert code == 2
    assert "must lie inside the image root" in output
    assert len(output.strip().splitlines()) == 1
    assert not (tmp_path / "elsewhere").exists()
    code, output = masks(capsys, manifest, tmp_path / "data")  # DIR = R itself is inside R
    assert code == 0, output
    assert read_rows(tmp_path / "data" / "manifest.csv")[0]["mask_spine"] == (
        "masks/row00001_spine.png"
    )
    assert (tmp_path / "data" / "input.csv").read_text().startswith("image,patient_id,t_score\n")


def test_out_holding_a_manifest_not_written_here_is_refused(tmp_path: Path, plugins, capsys):
    manifest = images_of_two_sizes(tmp_path / "data")
    shutil.copy(manifest, tmp_path / "data" / "manifest.csv")  # e.g. data import's
    code, output = masks(capsys, manifest, tmp_path / "data")
    assert code == 2
    assert "was not written by 'xaibench data masks'" in output
    code, output = masks(capsys, tmp_path / "data" / "manifest.csv", tmp_path / "data")
    assert code == 2
    assert "holds the input manifest" in output


def test_sidecar_of_another_format_is_ignored_and_a_broken_one_refused(tmp_path: Path):
    manifest = images_of_two_sizes(tmp_path)
    sidecar = manifest.with_suffix(".json")
    sidecar.write_text(json.dumps({"format": "xaibench-import", "source": "nih"}))
    assert mask_provenance(manifest) is None
    sidecar.write_text("not json")
    assert mask_provenance(manifest) is None
    sidecar.write_text(json.dumps({"format": "xaibench-masks", "format_version": "1"}))
    with pytest.raises(XaibenchError, match=r"input\.json: not a valid xaibench-masks sidecar"):
        ManifestDataset(path=str(manifest))


# --- resume -------------------------------------------------------------------------------


def _command(manifest: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "xaibench",
        "data",
        "masks",
        str(manifest),
        "--segmenter",
        "threshold_test",
        "--out",
        str(out),
        "--quiet",
        "--device",
        "cpu",
        "--batch-size",
        "2",
    ]


def _image_hashes(manifest: Path) -> dict[str, str]:
    dataset = ManifestDataset(path=str(manifest), image_size=None)
    table = dataset.table()
    return {
        hashlib.sha256(dataset.native_image(i).tobytes()).hexdigest(): table["sample_id"][i]
        for i in range(len(dataset))
    }


def _finished(out: Path) -> set[str]:
    """Sample ids the journal of a killed run lists with files that match."""
    journal = out / ".masks-progress.jsonl"
    done = set()
    for line in journal.read_text().splitlines()[1:]:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        files = entry["files"]
        if all(
            hashlib.sha256(
                (out / "masks" / f"{entry['sample_id']}_{r}.png").read_bytes()
            ).hexdigest()
            == sha
            for r, sha in files.items()
        ):
            done.add(entry["sample_id"])
    return done


def _reference(tmp_path: Path, capsys) -> dict[str, bytes]:
    manifest = images_of_two_sizes(tmp_path / "reference")
    code, output = masks(capsys, manifest, tmp_path / "reference" / "out")
    assert code == 0, output
    return folder_bytes(tmp_path / "reference" / "out")


@pytest.mark.parametrize(
    ("failpoint", "finished"),
    [("masks.image_done:3", 3), ("masks.file_done:5", 2)],  # 5th file: image 3 half written
)
def test_failpoint_kill_then_rerun_segments_the_rest_into_identical_files(
    tmp_path: Path, plugins: Path, capsys, monkeypatch, failpoint: str, finished: int
):
    reference = _reference(tmp_path, capsys)
    manifest = images_of_two_sizes(tmp_path / "data")
    out = tmp_path / "data" / "out"
    env = {**os.environ, "XAIBENCH_FAILPOINT": failpoint, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(_command(manifest, out), env=env, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    done = _finished(out)
    assert len(done) == finished
    assert not (out / "manifest.csv").exists()

    log = tmp_path / "rerun.log"
    monkeypatch.setenv("MASKS_TEST_LOG", str(log))
    code, output = masks(capsys, manifest, out)
    assert code == 0, output
    assert f"segmented {9 - finished} of 9 images, {finished} finished before" in output
    again = {_image_hashes(manifest)[h] for h in log.read_text().split()}
    assert len(again) == 9 - finished
    assert not again & done
    assert folder_bytes(out) == reference  # journal and temporary files gone too


def test_sigkill_from_outside_then_rerun_gives_identical_files(
    tmp_path: Path, plugins: Path, capsys, monkeypatch
):
    reference = _reference(tmp_path, capsys)
    manifest = images_of_two_sizes(tmp_path / "data")
    out = tmp_path / "data" / "out"
    first = tmp_path / "first.log"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MASKS_TEST_LOG": str(first),
        "MASKS_TEST_DELAY": "0.3",
    }
    errors = tmp_path / "stderr.txt"
    with errors.open("wb") as stderr:
        proc = subprocess.Popen(_command(manifest, out), env=env, stderr=stderr)
    try:
        while proc.poll() is None and (not first.exists() or len(first.read_text().split()) < 4):
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, errors.read_text()
    done = _finished(out)
    assert len(done) < 9

    log = tmp_path / "rerun.log"
    monkeypatch.setenv("MASKS_TEST_LOG", str(log))
    code, output = masks(capsys, manifest, out)
    assert code == 0, output
    hashes = _image_hashes(manifest)
    again = {hashes[h] for h in log.read_text().split()}
    assert not again & done
    assert again | done == set(hashes.values())
    assert folder_bytes(out) == reference


def test_a_journal_of_another_segmenter_setting_is_discarded(
    tmp_path: Path, plugins: Path, capsys, monkeypatch
):
    manifest = images_of_two_sizes(tmp_path / "data")
    out = tmp_path / "data" / "out"
    env = {**os.environ, "XAIBENCH_FAILPOINT": "masks.image_done:4", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(_command(manifest, out), env=env, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    log = tmp_path / "rerun.log"
    monkeypatch.setenv("MASKS_TEST_LOG", str(log))
    code, output = masks(capsys, manifest, out, "-O", "level=0.4")
    assert code == 0, output
    assert len(log.read_text().split()) == 9  # other masks: every image again
    value = np.asarray(Image.open(tmp_path / "data" / "images" / "p0.png")) / 255.0
    written = np.asarray(Image.open(out / "masks" / "row00001_spine.png"))
    np.testing.assert_array_equal(written == 255, value > 0.4)


# --- the run side -------------------------------------------------------------------------


def test_a_run_on_the_new_manifest_records_the_mask_provenance(
    tmp_path: Path, plugins: Path, capsys, components
):
    from xaibench.config import resolve_config
    from xaibench.data.phantom import PhantomDataset
    from xaibench.engine.benchmark import run_benchmark
    from xaibench.engine.results import _mask_provenance

    phantom = PhantomDataset(n_images=48, image_size=32, class_shares=(0.4, 0.3, 0.3))
    table = phantom.table()
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    with (data / "input.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "patient_id", "t_score"])
        for i in range(len(phantom)):
            pixels = np.round(phantom[i].image[0].numpy().astype(np.float64) * 65535)
            Image.fromarray(pixels.astype(np.uint16)).save(data / "images" / f"{i}.png")
            writer.writerow([f"images/{i}.png", table["patient_id"][i], table["t_score"][i]])
    assert _mask_provenance(ManifestDataset(path=str(data / "input.csv"))) == {}
    code, output = masks(capsys, data / "input.csv", data / "masked")
    assert code == 0, output
    sidecar = json.loads((data / "masked" / "manifest.json").read_text())

    config = resolve_config(
        components.tasks.create("osteoporosis").defaults(),
        {
            "dataset": {
                "name": "manifest",
                "options": {
                    "path": str(data / "masked" / "manifest.csv"),
                    "image_root": str(data),
                    "image_size": 32,
                },
            },
            "backbones": [{"name": "test_resnet.random", "options": {"img_size": 32}}],
            "strategies": ["linear_probe"],
            "saliency": [],
            "perturbations": [],
            "train": {"epochs": 1, "batch_size": 16},
            "sanity": {"images": 0},
            "gallery_images": 0,
        },
    )
    outcome = run_benchmark(config, components, tmp_path / "run")
    assert not outcome.failed, outcome.failed[0].error
    written = json.loads((tmp_path / "run" / "results.json").read_text())
    assert written["dataset"]["mask_provenance"] == {
        "segmenter": sidecar["segmenter"],
        "regions": ["spine", "heart"],
        "qc": sidecar["qc"],
    }


def test_evaluate_keeps_the_manifest_own_masks_as_references(tmp_path: Path, plugins, capsys):
    data = tmp_path / "data"
    (data / "hand").mkdir(parents=True)
    cells = []
    for i in range(9):
        hand = np.zeros((40, 20) if i % 3 == 2 else (24, 32), dtype=np.uint8)
        hand[1:4, 2:6] = 255
        Image.fromarray(hand).save(data / "hand" / f"{i}.png")
        cells.append(f"hand/{i}.png")
    manifest = images_of_two_sizes(data, {"mask_spine": cells})
    code, output = masks(capsys, manifest, data / "out", "--evaluate", "ref_")
    assert code == 0, output
    rows = read_rows(data / "out" / "manifest.csv")
    assert list(rows[0]) == [
        "image",
        "patient_id",
        "t_score",
        "mask_ref_spine",
        "mask_spine",
        "mask_heart",
    ]
    assert [r["mask_ref_spine"] for r in rows] == cells
    assert rows[0]["mask_spine"] == "out/masks/row00001_spine.png"
    code, output = masks(capsys, manifest, data / "o2", "--evaluate", "Ref-")
    assert code == 2
    assert "--evaluate 'Ref-': the prefix must be lower-case letters" in output


def test_an_edited_manifest_keeps_its_provenance_marked_changed(tmp_path, plugins, capsys):
    manifest = images_of_two_sizes(tmp_path / "data")
    out = tmp_path / "data" / "out"
    code, output = masks(capsys, manifest, out)
    assert code == 0, output
    new = out / "manifest.csv"
    assert "manifest_changed" not in mask_provenance(
        new, hashlib.sha256(new.read_bytes()).hexdigest()
    )
    lines = new.read_text().splitlines(keepends=True)
    new.write_text("".join(lines[:-1]))  # the last row removed
    dataset = ManifestDataset(path=str(new), image_root=str(tmp_path / "data"))
    assert dataset.mask_provenance["manifest_changed"] is True
    assert dataset.mask_provenance["regions"] == ["spine", "heart"]


def test_torn_forged_and_stale_journal_lines_are_redone(
    tmp_path: Path, plugins: Path, capsys, monkeypatch
):
    """A torn last line, an unknown sample, a wrong hash and a deleted file: those are redone."""
    reference = _reference(tmp_path, capsys)
    manifest = images_of_two_sizes(tmp_path / "data")
    out = tmp_path / "data" / "out"
    env = {**os.environ, "XAIBENCH_FAILPOINT": "masks.image_done:6", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(_command(manifest, out), env=env, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    journal = out / ".masks-progress.jsonl"
    header, *entries = journal.read_text().splitlines()
    assert len(entries) == 6
    first, second, third, fourth = (json.loads(line) for line in entries[:4])
    (out / "masks" / f"{first['sample_id']}_heart.png").unlink()
    second["files"]["spine"] = "0" * 64
    forged = {"sample_id": "../../etc/passwd", "files": first["files"]}
    lines = [header, entries[0], json.dumps(second), *entries[2:], json.dumps(forged)]
    journal.write_text("\n".join(lines) + "\n" + entries[2][:17])  # ends torn
    (out / "masks" / ".row00001_spine.png.partial").write_bytes(b"half")

    log = tmp_path / "rerun.log"
    monkeypatch.setenv("MASKS_TEST_LOG", str(log))
    code, output = masks(capsys, manifest, out)
    assert code == 0, output
    again = {_image_hashes(manifest)[h] for h in log.read_text().split()}
    assert {first["sample_id"], second["sample_id"]} <= again
    assert not again & {third["sample_id"], fourth["sample_id"]}
    assert len(again) == 5  # 3 never finished + 2 spoilt
    assert folder_bytes(out) == reference


# --- quality control and agreement (xaibench.segmenters.quality / agreement) ---------------


def test_quality_control_flags_a_planted_fault_by_row(tmp_path: Path, plugins: Path, capsys):
    manifest = images_of_two_sizes(tmp_path / "data", n=12, dark=6)  # row 7: no spine at all
    out = tmp_path / "data" / "out"
    code, output = masks(capsys, manifest, out)
    assert code == 0, output
    assert "row 7 (spine, area_fraction)" in output
    qc = json.loads((out / "manifest.json").read_text())["qc"]
    assert qc["flagged_rows"] == [7]
    assert qc["images"] == 12
    assert qc["contact_sheet"] == "quality.png"
    assert (out / "quality.png").is_file()
    dataset = ManifestDataset(path=str(out / "manifest.csv"), image_root=str(tmp_path / "data"))
    assert dataset.mask_provenance["qc"]["flagged_rows"] == [7]


def test_evaluate_against_masks_equal_to_the_segmenter_gives_dice_one(
    tmp_path: Path, plugins: Path, capsys
):
    data = tmp_path / "data"
    (data / "reference").mkdir(parents=True)
    manifest = images_of_two_sizes(data)
    cells = []
    for i in range(9):
        mask = expected(data, i)["spine"]
        Image.fromarray(mask.astype(np.uint8) * 255).save(data / "reference" / f"{i}.png")
        cells.append(f"reference/{i}.png")
    manifest = images_of_two_sizes(tmp_path / "data2", {"mask_spine": cells})
    shutil.copytree(data / "reference", tmp_path / "data2" / "reference")
    code, output = masks(capsys, manifest, tmp_path / "data2" / "out", "--evaluate", "ref_")
    assert code == 0, output
    assert "spine: mask_ref_spine vs mask_spine" in output
    table = read_rows(tmp_path / "data2" / "out" / "agreement.csv")
    dice = next(r for r in table if r["region"] == "spine" and r["measure"] == "dice")
    assert float(dice["mean"]) == 1.0
    assert int(dice["n"]) == 9


def test_one_writer_per_folder(tmp_path: Path, plugins: Path, capsys):
    from xaibench.run_lock import run_lock

    manifest = images_of_two_sizes(tmp_path / "data")
    out = tmp_path / "data" / "out"
    with run_lock(out):  # another data masks (or run) writing DIR
        code, output = masks(capsys, manifest, out)
    assert code == 2
    assert "is in use by" in output
    assert not (out / "masks").exists()
    code, output = masks(capsys, manifest, out)
    assert code == 0, output
    assert not (out / ".xaibench.lock").exists()


def test_a_whole_the_manifest_would_derive_is_noted(tmp_path: Path, plugins: Path, capsys):
    """Writing mask_bone over a manifest with mask_ribs: bone no longer holds the ribs."""
    plugin = plugins / "threshold_test.py"
    code = plugin.read_text().replace('("spine", "heart")', '("spine", "heart", "bone")')
    plain = '"heart": images[:, 0] < self.level / 2}'
    plugin.write_text(code.replace(plain, plain[:-1] + ', "bone": images[:, 0] > self.level}'))
    data = tmp_path / "data"
    (data / "hand").mkdir(parents=True)
    cells = []
    for i in range(9):
        hand = np.zeros((40, 20) if i % 3 == 2 else (24, 32), dtype=np.uint8)
        hand[1:4, 2:6] = 255
        Image.fromarray(hand).save(data / "hand" / f"{i}.png")
        cells.append(f"hand/{i}.png")
    manifest = images_of_two_sizes(data, {"mask_ribs": cells})
    status, output = masks(capsys, manifest, data / "out")
    assert status == 0, output
    note = (
        "note: the segmenter's bone replaces the bone the manifest would derive from its own ribs"
    )
    assert note in " ".join(output.split())
