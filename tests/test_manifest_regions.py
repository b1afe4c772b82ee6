"""The label-agnostic manifest (issue 18, items 2 and 3): region formats, explicit empty
annotations, derived regions, ``image_root``, and what reaches the table.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from image_files import save_png, write_manifest
from pycocotools import mask as coco

from xaibench.cli import main
from xaibench.data.check import check_manifest, read_manifest
from xaibench.data.manifest import ManifestDataset, ManifestError
from xaibench.errors import XaibenchError

#: Images are 6 rows x 8 columns.
SHAPE = (6, 8)


def hand_mask(*boxes: tuple[int, int, int, int]) -> np.ndarray:
    """A mask of ``SHAPE`` with ``[r0:r1, c0:c1]`` set for each (r0, r1, c0, c1)."""
    mask = np.zeros(SHAPE, dtype=bool)
    for r0, r1, c0, c1 in boxes:
        mask[r0:r1, c0:c1] = True
    return mask


def coco_cell(mask: np.ndarray) -> str:
    counts = coco.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode("ascii")
    return json.dumps({"size": list(mask.shape), "counts": counts})


def images(folder: Path, n: int) -> list[str]:
    rng = np.random.default_rng(5)
    names = []
    for i in range(n):
        save_png(folder / "img" / f"{i}.png", rng.integers(0, 256, SHAPE, dtype=np.uint8))
        names.append(f"img/{i}.png")
    return names


LEFT_LUNG = hand_mask((1, 5, 1, 3))
HEART = hand_mask((3, 5, 3, 6))


def formats_manifest(folder: Path) -> Path:
    """One column per format: row 1 annotated, row 2 explicitly empty, row 3 not annotated."""
    save_png(folder / "heart.png", HEART)
    names = images(folder, 3)
    rows = [
        {
            "image": names[0],
            "patient_id": "A",
            "mask_heart": "heart.png",
            "rle_left_lung": coco_cell(LEFT_LUNG),
            "box_right_lung": "[[5, 1, 2, 4]]",  # columns 5-6, rows 1-4
            "siim_rle_pneumothorax": "7 2 | 25 1",  # pixels 7-8 and 25, column-major (6 rows)
            "polygon_nodule": "[[[0, 0], [2, 0], [2, 2], [0, 2]]]",  # rows 0-1, columns 0-1
        },
        {
            "image": names[1],
            "patient_id": "B",
            "mask_heart": "",
            "rle_left_lung": "[]",
            "box_right_lung": "[]",
            "siim_rle_pneumothorax": " -1",
            "polygon_nodule": "[]",
        },
        {"image": names[2], "patient_id": "C"},
    ]
    return write_manifest(folder, rows)


def test_every_region_format_on_the_native_grid_and_explicit_empty(tmp_path: Path):
    path = formats_manifest(tmp_path)
    assert check_manifest(path) == []  # no label column needed; explicit empty is no problem
    dataset = ManifestDataset(path=str(path), image_size=None)
    assert dataset.region_names == (
        "heart", "left_lung", "right_lung", "pneumothorax", "nodule", "lungs",
    )  # fmt: skip
    assert dataset.region_groups == {"lungs": ("left_lung", "right_lung")}
    first = {r: m.numpy() for r, m in dataset[0].regions.items()}
    pneumothorax = np.zeros(SHAPE, dtype=bool)
    pneumothorax[[1, 2], [1, 1]] = True  # pixels 7, 8: column 1, rows 1-2
    pneumothorax[1, 4] = True  # pixel 25: column 4, row 1
    expected = {
        "heart": HEART,
        "left_lung": LEFT_LUNG,
        "right_lung": hand_mask((1, 5, 5, 7)),
        "pneumothorax": pneumothorax,
        "nodule": hand_mask((0, 2, 0, 2)),
        "lungs": LEFT_LUNG | hand_mask((1, 5, 5, 7)),
    }
    for region, mask in expected.items():
        assert np.array_equal(first[region], mask), region
    for i in (1, 2):
        assert not any(m.any() for m in dataset[i].regions.values())
    # explicit empty is an annotation, an empty cell is not
    for region in ("left_lung", "right_lung", "pneumothorax", "nodule", "lungs"):
        assert dataset.annotated(region).tolist() == [True, True, False], region
    assert dataset.annotated("heart").tolist() == [True, False, False]


def test_an_empty_mask_file_is_a_problem_but_an_explicit_empty_annotation_is_not(tmp_path: Path):
    names = images(tmp_path, 2)
    save_png(tmp_path / "empty.png", np.zeros(SHAPE, np.uint8))
    rows = [
        {"image": names[0], "patient_id": "A", "mask_heart": "empty.png", "box_nodule": "[]"},
        {"image": names[1], "patient_id": "B", "mask_heart": "", "box_nodule": "[[0, 0, 8, 6]]"},
    ]
    problems = check_manifest(write_manifest(tmp_path, rows))
    assert [(p.row, p.column) for p in problems] == [(1, "mask_heart"), (2, "box_nodule")]
    assert "the mask is empty" in problems[0].message
    assert "covers 100.0% of the image" in problems[1].message  # full: every format


def test_derived_lungs_clavicles_and_bone(tmp_path: Path):
    names = images(tmp_path, 2)
    parts = {
        "left_clavicle": hand_mask((0, 1, 0, 3)),
        "right_clavicle": hand_mask((0, 1, 5, 8)),
        "spine": hand_mask((0, 6, 4, 5)),
    }
    for name, mask in parts.items():
        save_png(tmp_path / f"{name}.png", mask)
    rows = [
        {"image": names[0], "patient_id": "A", **{f"mask_{r}": f"{r}.png" for r in parts}},
        {"image": names[1], "patient_id": "B", "mask_spine": "spine.png",
         "mask_left_clavicle": "left_clavicle.png"},
    ]  # fmt: skip
    dataset = ManifestDataset(path=str(write_manifest(tmp_path, rows)), image_size=None)
    assert dataset.region_names == ("bone", "left_clavicle", "right_clavicle", "spine", "clavicles")
    assert dataset.region_groups == {
        "clavicles": ("left_clavicle", "right_clavicle"),
        "bone": ("spine", "clavicles"),
    }
    sample = {r: m.numpy() for r, m in dataset[0].regions.items()}
    union = parts["left_clavicle"] | parts["right_clavicle"]
    assert np.array_equal(sample["clavicles"], union)
    assert np.array_equal(sample["bone"], union | parts["spine"])
    # row 2 lacks the right clavicle: clavicles and bone are not annotated there, and empty
    assert dataset.annotated("clavicles").tolist() == [True, False]
    assert dataset.annotated("bone").tolist() == [True, False]
    second = dataset[1].regions
    assert not second["clavicles"].any()
    assert not second["bone"].any()
    assert second["spine"].any()


def test_a_given_whole_is_not_derived_and_one_source_per_region(tmp_path: Path):
    names = images(tmp_path, 1)
    save_png(tmp_path / "lungs.png", LEFT_LUNG)
    row = {"image": names[0], "patient_id": "A", "mask_lungs": "lungs.png",
           "box_left_lung": "[[1, 1, 2, 4]]"}  # fmt: skip
    dataset = ManifestDataset(path=str(write_manifest(tmp_path, [row])), image_size=None)
    assert dataset.region_names == ("lungs", "left_lung")
    assert dataset.region_groups == {}
    twice = {**row, "rle_lungs": coco_cell(LEFT_LUNG)}
    _, problems = read_manifest(write_manifest(tmp_path, [twice]))
    assert [(p.row, p.column) for p in problems] == [(None, "rle_lungs")]
    assert "region 'lungs' already comes from column 'mask_lungs'" in problems[0].message


def test_region_problems_are_named_by_row_in_data_check_and_while_loading(tmp_path: Path):
    names = images(tmp_path, 6)
    save_png(tmp_path / "half.png", np.eye(3, 4, dtype=bool))  # 6 x 8 / 2: upsampled
    save_png(tmp_path / "third.png", np.eye(2, 3, dtype=bool))  # 6 / 3 but 8 / 3: wrong
    rows = [
        {"image": names[0], "patient_id": "A", "mask_x": "half.png"},
        {"image": names[1], "patient_id": "B", "mask_x": "third.png"},
        {"image": names[2], "patient_id": "C", "box_y": "[[6, 0, 3, 1]]"},
        {"image": names[3], "patient_id": "D", "rle_z": '{"size": [8, 6], "counts": [48]}'},
        {"image": names[4], "patient_id": "E", "polygon_w": "[[[1, 1], [2, 2]]]"},
        {"image": names[5], "patient_id": "F", "box_y": "[[1, 1, 2, 2"},
    ]
    path = write_manifest(tmp_path, rows)
    found = {(p.row, p.column): p.message for p in check_manifest(path)}
    assert set(found) == {(2, "mask_x"), (3, "box_y"), (4, "rle_z"), (5, "polygon_w"),
                          (6, "box_y")}  # fmt: skip
    assert "mask is 2x3 pixels but its image is 6x8" in found[(2, "mask_x")]
    assert "box 1 [6, 0, 3, 1] is outside the 8x6 (width x height) image" in found[(3, "box_y")]
    assert "size is 8x6 (height x width) but the image is 6x8" in found[(4, "rle_z")]
    assert "needs at least 3" in found[(5, "polygon_w")]
    assert "not valid JSON" in found[(6, "box_y")]
    # cheap problems refuse the dataset; decode problems surface as a row loads
    with pytest.raises(ManifestError) as caught:
        ManifestDataset(path=str(path))
    assert {"row 5 (polygon_w)", "row 6 (box_y)"} <= {line.split(":")[0] for line in
                                                       caught.value.items}  # fmt: skip
    del rows[4:]
    dataset = ManifestDataset(path=str(write_manifest(tmp_path, rows)), image_size=None)
    assert np.array_equal(dataset[0].regions["x"].numpy(), np.kron(np.eye(3, 4), np.ones((2, 2))))
    for row, column in ((2, "mask_x"), (3, "box_y"), (4, "rle_z")):
        with pytest.raises(XaibenchError, match=rf"row {row} \({column}\): "):
            _ = dataset[row - 1]


def test_fingerprint_covers_annotation_cells(tmp_path: Path):
    path = formats_manifest(tmp_path)
    before = ManifestDataset(path=str(path)).fingerprint()
    assert ManifestDataset(path=str(path)).fingerprint() == before
    text = path.read_text()
    path.write_text(text.replace("[[5, 1, 2, 4]]", "[[5, 1, 2, 3]]"))
    assert ManifestDataset(path=str(path)).fingerprint() != before


def test_image_root_places_and_contains_the_files(tmp_path: Path, capsys):
    data = tmp_path / "data"
    names = images(data, 2)
    save_png(data / "heart.png", HEART)
    (tmp_path / "lists").mkdir()
    rows = [
        {"image": names[0], "patient_id": "A", "mask_heart": "heart.png"},
        {"image": names[1], "patient_id": "B"},
    ]
    path = write_manifest(tmp_path / "lists", rows)
    missing = check_manifest(path)
    assert [(p.row, p.column) for p in missing] == [(1, "image"), (1, "mask_heart"), (2, "image")]
    assert check_manifest(path, image_root=data) == []
    dataset = ManifestDataset(path=str(path), image_root=str(data), image_size=None)
    assert np.array_equal(dataset[0].regions["heart"].numpy(), HEART)
    # not part of the fingerprint: the same files elsewhere are the same data
    shutil.copytree(data, tmp_path / "copy")
    moved = ManifestDataset(path=str(path), image_root=str(tmp_path / "copy"), image_size=None)
    assert moved.fingerprint() == dataset.fingerprint()
    # paths must stay inside the image root (the CSV's folder is no longer the root)
    save_png(tmp_path / "secret.png", HEART)
    escaped = write_manifest(data, [{"image": "../secret.png", "patient_id": "A"}])
    problems = check_manifest(escaped, image_root=data)
    assert [(p.row, p.column) for p in problems] == [(1, "image")]
    assert "outside" in problems[0].message
    assert "is not a folder" in check_manifest(path, image_root=tmp_path / "nope")[0].message
    # the command line
    for args, status in (([], 1), (["--image-root", str(data)], 0)):
        capsys.readouterr()
        with pytest.raises(SystemExit) as done:
            main(["data", "check", str(path), *args])
        assert (done.value.code or 0) == status, capsys.readouterr().out


def test_run_passes_image_root_to_the_manifest(tmp_path: Path):
    from xaibench.cli.run_command import _resolved_config
    from xaibench.tasks.file_task import FileTask

    empty: tuple[str, ...] = ()
    config = _resolved_config(
        FileTask(file="xaibench.tasks:osteoporosis.yaml"), "osteoporosis",
        config_files=(), grid=None,
        data_path=tmp_path / "m.csv", backbones=empty, strategies=empty, saliency=empty,
        perturbations=empty, metrics=empty, seeds=(), random_init=False, epochs=None,
        max_explain_images=None, executor=None, device=None, precision=None, compile_=None,
        allow_outside_paths=False, image_root=tmp_path / "root",
    )  # fmt: skip
    assert config.dataset.name == "manifest"
    assert config.dataset.options["image_root"] == str(tmp_path / "root")


def test_the_table_is_label_agnostic(tmp_path: Path):
    names = images(tmp_path, 2)
    rows = [
        {"image": names[0], "patient_id": "A", "source_id": "00001_000.png", "split": "Train",
         "pneumothorax": "1", "label": "severe", "sex": "'=cmd()", "box_x": "[]"},
        {"image": names[1], "patient_id": "B", "source_id": "00002_000.png", "split": "test",
         "pneumothorax": "0", "label": "", "sex": "F", "box_x": ""},
    ]  # fmt: skip
    dataset = ManifestDataset(path=str(write_manifest(tmp_path, rows)))
    table = dataset.table()
    assert list(table.columns) == ["sample_id", "patient_id", "split", "pneumothorax", "label",
                                   "sex"]  # fmt: skip
    assert table["split"].tolist() == ["train", "test"]
    assert table["pneumothorax"].tolist() == [1.0, 0.0]
    assert table["label"].tolist() == ["severe", ""]  # any label: the task judges it
    assert table["sex"].tolist() == ["=cmd()", "F"]  # the formula escape is undone
    assert set(dataset.strata_columns) == {"pneumothorax", "label", "sex"}
    assert "source_id" not in dataset[0].attributes
