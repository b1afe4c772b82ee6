from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from xaibench_cardiomegaly.ctr import measure_ctr
from xaibench_cardiomegaly.manifest import (
    CardiacManifestDataset,
    check_cardiac_manifest,
    read_cardiac_manifest,
)
from xaibench_cardiomegaly.task import Cardiomegaly

from xaibench.config import resolve_config
from xaibench.data.manifest import ManifestDataset, ManifestError
from xaibench.plugins import collect_components, get_plugin_manager
from xaibench.progress import NullProgress
from xaibench.runner import prepare_data

SIZE = 32


def _write_case(folder: Path, index: int, heart_half: int) -> dict[str, str]:
    """A 32 x 32 'radiograph': two dark lung fields and a bright heart of the given half-width."""
    lungs = np.zeros((SIZE, SIZE), dtype=bool)
    lungs[6:28, 3:29] = True
    heart = np.zeros((SIZE, SIZE), dtype=bool)
    heart[14:26, 16 - heart_half : 16 + heart_half] = True
    lungs &= ~heart
    lungs[:, 15:17] &= heart[:, 15:17]  # a mediastinum between the lungs
    image = np.full((SIZE, SIZE), 180, dtype=np.uint8)
    image[lungs] = 60
    image[heart] = 200
    names = {"image": f"img/{index}.png", "mask_heart": f"masks/{index}_heart.png"}
    names["mask_lungs"] = f"masks/{index}_lungs.png"
    Image.fromarray(image).save(folder / names["image"])
    Image.fromarray(heart.astype(np.uint8) * 255).save(folder / names["mask_heart"])
    Image.fromarray(lungs.astype(np.uint8) * 255).save(folder / names["mask_lungs"])
    ctr = measure_ctr(heart, lungs).ctr
    return {**names, "ctr": f"{ctr:.4f}", "label": "cardiomegaly" if ctr > 0.5 else "normal"}


@pytest.fixture
def manifest(tmp_path) -> Path:
    """24 images of 12 patients, half with cardiomegaly, with a split column."""
    (tmp_path / "img").mkdir()
    (tmp_path / "masks").mkdir()
    rows = []
    for i in range(24):
        patient = i // 2
        row = _write_case(tmp_path, i, heart_half=5 if patient % 2 == 0 else 9)
        split = "train" if patient < 6 else "val" if patient < 8 else "test"
        rows.append({"patient_id": f"patient{patient}", "split": split, "age": 50 + i, **row})
    path = tmp_path / "manifest.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_reads_a_cardiomegaly_manifest_with_a_heart_mask(manifest):
    ds = CardiacManifestDataset(path=str(manifest), image_size=SIZE)
    assert set(ds.region_names) == {"heart", "lungs"}
    table = ds.table()
    assert set(table["label"]) == {"normal", "cardiomegaly"}
    assert "ctr" in table
    assert "age" in table
    assert "ctr" not in ds.strata_columns
    assert "age" in ds.strata_columns
    labels = Cardiomegaly().labels(table)
    np.testing.assert_array_equal(labels, (table["label"] == "cardiomegaly").astype(int))
    sample = ds[1]
    assert sample.regions["heart"].any()
    m = measure_ctr(sample.regions["heart"].numpy(), sample.regions["lungs"].numpy())
    assert m.ctr == pytest.approx(float(table["ctr"].iat[1]), abs=1e-3)
    assert CardiacManifestDataset.version.startswith(ManifestDataset.version + "+cardiac.")
    again = CardiacManifestDataset(path=str(manifest), image_size=SIZE)
    assert ds.fingerprint() == again.fingerprint()


def test_the_core_manifest_refuses_cardiomegaly_labels(manifest):
    # Why the plugin has its own manifest dataset: the core one only knows the WHO classes.
    with pytest.raises(ManifestError, match="unknown label 'cardiomegaly'"):
        ManifestDataset(path=str(manifest), image_size=SIZE)


def test_runner_prepares_the_manifest_for_the_task(manifest):
    # The runner's own data stage: labels from the task, splits from the manifest, regions.
    components = collect_components(get_plugin_manager(load_plugins="cardiomegaly"))
    config = resolve_config(
        components.tasks.create("cardiomegaly").defaults(),
        {
            "dataset": {
                "name": "cardiac_manifest",
                "options": {"path": str(manifest), "image_size": SIZE},
            },
            "cache": False,
        },
    )
    data = prepare_data(config, components, NullProgress())
    assert data.split_from_dataset
    assert data.split_sizes["test"] == {"images": 8, "normal": 4, "cardiomegaly": 4}
    assert data.regions["explain_regions"][:2] == ["heart", "lungs"]
    assert data.regions["perturb_regions"][:2] == ["heart", "lungs"]
    assert "clavicles" in data.skipped_regions["perturb_regions"]  # not in this manifest


def _edit(manifest: Path, **columns) -> Path:
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    for name, values in columns.items():
        frame[name] = values
    frame.to_csv(manifest, index=False)
    return manifest


def test_bad_ctr_cells_are_problems_named_by_row(manifest):
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    ctr = list(frame["ctr"])
    ctr[0], ctr[2], ctr[4] = "52", "abc", "0.8"  # a percentage, junk, and one that disagrees
    _edit(manifest, ctr=ctr)
    _, problems = read_cardiac_manifest(manifest)
    found = {(p.row, p.column): p.message for p in problems}
    assert set(found) == {(1, "ctr"), (3, "ctr"), (5, "ctr")}
    assert "write 0.52, not 52" in found[(1, "ctr")]
    assert "not a number" in found[(3, "ctr")]
    assert "disagrees with label 'normal'" in found[(5, "ctr")]
    with pytest.raises(ManifestError, match="3 problems"):
        CardiacManifestDataset(path=str(manifest))


@pytest.mark.parametrize("cell", ["0_5", "\u0660.\u0665", "nan", "0x1"])
def test_ctr_cells_are_plain_decimals(manifest, cell):
    """Python's float() reads these (0_5 as 5, Arabic-Indic digits as 0.5): not numbers here."""
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    _edit(manifest, ctr=[cell, *list(frame["ctr"])[1:]])
    _, problems = read_cardiac_manifest(manifest)
    assert [(p.row, p.message) for p in problems] == [(1, f"not a number: {cell!r}")]


def test_a_t_score_column_is_refused(manifest):
    _edit(manifest, t_score=["-1.0"] * 24)
    problems = check_cardiac_manifest(manifest)
    assert len(problems) == 1
    assert problems[0].column == "t_score"
    assert "says nothing about the heart" in problems[0].message


def test_a_clean_manifest_decodes_without_problems(manifest):
    assert check_cardiac_manifest(manifest) == []
    assert check_cardiac_manifest(manifest, decode=False) == []
