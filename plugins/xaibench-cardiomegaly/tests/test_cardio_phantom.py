import numpy as np
import pytest
from xaibench_cardiomegaly import TASK_FILE
from xaibench_cardiomegaly.ctr import measure_ctr
from xaibench_cardiomegaly.phantom import CardiacPhantomDataset, enlarge_heart

from xaibench.data.phantom import PhantomDataset
from xaibench.data.phantom_anatomy import FIELD_CM, REGION_BITS
from xaibench.data.phantom_maps import patient_maps
from xaibench.errors import InvalidOptionsError
from xaibench.plugins import collect_components, get_plugin_manager
from xaibench.tasks.file_task import FileTask

#: Small enough for a test, big enough (about 20 patients) for both classes.
SMALL = {"n_images": 30, "image_size": 96}


def _dataset(tmp_path, **options):
    ds = CardiacPhantomDataset(**{**SMALL, **options})
    ds.use_cache(tmp_path)
    return ds


def _masks(labels):
    return (labels & REGION_BITS["heart"]) > 0, (labels & REGION_BITS["lungs"]) > 0


def test_patients_keep_the_core_phantoms_body(tmp_path):
    ours = _dataset(tmp_path, seed=3)
    core = PhantomDataset(n_images=30, image_size=96, seed=3)
    for patient in (0, 5):
        anatomy = enlarge_heart(ours.base_anatomy(patient), 1.0)
        assert anatomy == ours.base_anatomy(patient)
        theirs = core.patient_maps(patient)
        rng = np.random.default_rng([3, patient, 3])
        mine = patient_maps(anatomy, 96, rng)
        np.testing.assert_array_equal(mine.labels, theirs.labels)
        np.testing.assert_array_equal(mine.soft, theirs.soft)
        # ... and only the heart differs once it is resized.
        resized = ours.anatomy(patient)
        changed = {
            name
            for name in type(resized).__dataclass_fields__
            if getattr(resized, name) != getattr(anatomy, name)
        }
        assert changed <= {"heart_axes", "heart_half_depth"}


def test_table_labels_follow_the_measured_ctr(tmp_path):
    table = _dataset(tmp_path).table()
    for column in ("ctr", "heart_cm", "thorax_cm", "label", "bone_class", "t_score"):
        assert column in table
    assert set(table["label"]) == {"normal", "cardiomegaly"}
    assert ((table["ctr"] > 0.5) == (table["label"] == "cardiomegaly")).all()
    np.testing.assert_allclose(table["ctr"], table["heart_cm"] / table["thorax_cm"])
    labels = FileTask(file=TASK_FILE).labels(table)
    np.testing.assert_array_equal(labels, (table["ctr"] > 0.5).astype(int))


def test_measured_ctr_hits_its_target_and_class(tmp_path):
    ds = _dataset(tmp_path, n_images=40, image_size=128)
    per_patient = ds.table().groupby("patient_id")["ctr"].first()
    for patient, ctr in enumerate(per_patient.sort_index()):
        plan = ds.heart_plan(patient)
        assert abs(ctr - plan.target_ctr) < 0.02, (patient, ctr, plan)
        assert plan.enlarged == (ctr > 0.5)
        assert ds.margin <= abs(plan.target_ctr - 0.5)


def test_samples_agree_with_the_table(tmp_path):
    # The rendered (posed) masks give the table's CTR to within a pixel or two: the table and
    # the images describe the same heart.
    ds = _dataset(tmp_path)
    table = ds.table()
    for i in (0, 7, len(ds) - 1):
        sample = ds[i]
        m = measure_ctr(sample.regions["heart"].numpy(), sample.regions["lungs"].numpy())
        assert m.ctr == pytest.approx(table["ctr"].iat[i], abs=0.03)
        assert sample.attributes["ctr"] == table["ctr"].iat[i]
        assert sample.attributes["label"] == table["label"].iat[i]
        assert sample.sample_id == table["sample_id"].iat[i]


def test_deterministic_and_seeded(tmp_path):
    a, b = _dataset(tmp_path / "a"), _dataset(tmp_path / "b")
    b.use_cache(tmp_path / "b", enabled=False)
    a_table, b_table = a.table(), b.table()
    assert a_table.equals(b_table)
    for i in (0, 11):
        np.testing.assert_array_equal(a[i].image.numpy(), b[i].image.numpy())
    other = _dataset(tmp_path / "c", seed=1)
    assert not np.array_equal(other.table()["ctr"], a_table["ctr"])
    assert a.fingerprint() == b.fingerprint() != other.fingerprint()


def test_heart_size_differs_between_classes(tmp_path):
    ds = _dataset(tmp_path, n_images=40)
    table = ds.table()
    big = table["label"] == "cardiomegaly"
    assert table.loc[big, "ctr"].min() > 0.5 + ds.margin - 0.02
    assert table.loc[~big, "ctr"].max() < 0.5 - ds.margin + 0.02
    assert table.loc[big, "heart_cm"].mean() > 1.15 * table.loc[~big, "heart_cm"].mean()
    areas = np.array([ds[i].regions["heart"].sum().item() for i in range(len(ds))])
    assert areas[big.to_numpy()].mean() > 1.3 * areas[~big.to_numpy()].mean()


def test_bone_does_not_depend_on_the_label(tmp_path):
    # The cohort (T-scores, bone density) is the core phantom's, drawn before and apart from
    # the heart: changing who has cardiomegaly changes no T-score.
    few = _dataset(tmp_path, cardiomegaly_share=0.1).table()
    many = _dataset(tmp_path, cardiomegaly_share=0.9).table()
    assert (many["label"] == "cardiomegaly").sum() > (few["label"] == "cardiomegaly").sum()
    for column in ("t_score", "bmd", "image_bmd", "patient_id", "thorax_cm"):
        assert few[column].equals(many[column]), column
    core = PhantomDataset(**SMALL).table()
    assert few["t_score"].equals(core["t_score"])


def test_enlarged_hearts_stay_inside_the_thorax(tmp_path):
    ds = _dataset(tmp_path, cardiomegaly_share=1.0, ctr_range=(0.38, 0.66), n_images=40)
    for patient in range(ds.table()["patient_id"].nunique()):
        labels = ds.patient_maps(patient).labels
        heart, lungs = _masks(labels)
        rows, cols = np.flatnonzero(heart.any(1)), np.flatnonzero(heart.any(0))
        lung_rows, lung_cols = np.flatnonzero(lungs.any(1)), np.flatnonzero(lungs.any(0))
        # Inside the lung fields' lateral borders, with room to spare...
        assert lung_cols[0] + 2 <= cols[0]
        assert cols[-1] <= lung_cols[-1] - 2
        # ... below the apices and never below the lowest lung (the costophrenic angles)...
        assert lung_rows[0] + 5 <= rows[0]
        assert rows[-1] <= lung_rows[-1]
        # ... and on the diaphragm: nothing of it under the lung base in its own columns.
        for c in cols[:: max(1, len(cols) // 8)]:
            lung_here = np.flatnonzero(lungs[:, c])
            if lung_here.size and lung_here[-1] > rows[-1]:
                assert not heart[lung_here[-1] + 1 :, c].any()
        assert measure_ctr(heart, lungs, FIELD_CM / 96).ctr > 0.5


def test_caches_never_collide_with_the_core_phantom(tmp_path):
    core = PhantomDataset(**SMALL)
    core.use_cache(tmp_path)
    ours = _dataset(tmp_path)
    assert core.fingerprint() != ours.fingerprint()
    assert ours.version.startswith(PhantomDataset.version + "+cardiac.")
    core_before = core[0].regions["heart"].numpy()
    ours_heart = ours[0].regions["heart"].numpy()
    assert not np.array_equal(core_before, ours_heart)  # heart resized
    fresh_core = PhantomDataset(**SMALL)
    fresh_core.use_cache(tmp_path)
    np.testing.assert_array_equal(fresh_core[0].regions["heart"].numpy(), core_before)
    fresh_ours = _dataset(tmp_path)
    np.testing.assert_array_equal(fresh_ours[0].regions["heart"].numpy(), ours_heart)
    assert (tmp_path / "cardiac_phantom").is_dir()


def test_fingerprint_covers_the_cardiac_options(tmp_path):
    base = _dataset(tmp_path).fingerprint()
    for change in ({"cardiomegaly_share": 0.5}, {"margin": 0.05}, {"ctr_range": (0.4, 0.6)}):
        assert _dataset(tmp_path, **change).fingerprint() != base, change


def test_measurements_are_cached_and_survive_a_corrupt_file(tmp_path, caplog):
    table = _dataset(tmp_path).table()
    [file] = (tmp_path / "cardiac_phantom").iterdir()
    data = bytearray(file.read_bytes())
    at = data.index(b"[[") + 4  # the first decimal of the first patient's measured CTR
    data[at] = ord("0") + (data[at] - ord("0") + 5) % 10
    file.write_bytes(bytes(data))
    again = _dataset(tmp_path).table()
    assert again.equals(table)  # measured again, never the changed value
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert str(file) in warning
    assert "corrupt" in warning
    assert file.read_bytes() != bytes(data)  # stored again
    assert _dataset(tmp_path).table().equals(table)


def test_measurements_use_the_verified_cache_api(tmp_path):
    ds = _dataset(tmp_path)
    ds.table()
    [file] = (tmp_path / "cardiac_phantom").iterdir()
    n_patients = int(file.name.removesuffix(".xbc").rsplit("-", 1)[1])
    assert file == ds._ctr_file(n_patients)
    assert file.name.endswith(f"-ctr-{n_patients}.xbc")
    assert not [p for p in file.parent.iterdir() if p.name.endswith(".tmp")]


def test_options_are_checked():
    with pytest.raises(ValueError, match="shortcut"):
        CardiacPhantomDataset(shortcut=0.5)
    with pytest.raises(ValueError, match=r"ctr_range\[1\]"):
        CardiacPhantomDataset(ctr_range=(0.4, 0.52), margin=0.03)
    with pytest.raises(ValueError, match=r"ctr_range\[0\]"):
        CardiacPhantomDataset(ctr_range=(0.2, 0.6))
    with pytest.raises(ValueError, match="cardiomegaly_share"):
        CardiacPhantomDataset(cardiomegaly_share=1.5)


def test_registered_dataset_has_the_tasks_regions():
    components = collect_components(get_plugin_manager(load_plugins="cardiomegaly"))
    task = components.tasks.create("cardiomegaly")
    defaults = task.defaults()
    dataset = components.datasets.create(
        defaults["dataset"]["name"], {**defaults["dataset"]["options"], "n_images": 5}
    )
    assert isinstance(dataset, CardiacPhantomDataset)
    wanted = {
        *task.regions_of_interest,
        *defaults["explain_regions"],
        *defaults["perturb_regions"],
        *defaults["complement_regions"],
    }
    assert "heart" in wanted
    assert wanted <= set(dataset.region_names)
    assert {"heart", "lungs", "bone", "spine", "ribs"} <= set(dataset.region_names)
    with pytest.raises(InvalidOptionsError, match="margin"):
        components.datasets.create("cardiac_phantom", {"margin": -1})
