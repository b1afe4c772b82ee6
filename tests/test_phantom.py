"""Tests of the synthetic ``phantom`` chest-radiograph dataset (v2) and its physics."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import ndimage

from xaibench.component import build_component
from xaibench.data import phantom_physics as physics
from xaibench.data.base import Sample
from xaibench.data.phantom import PhantomDataset
from xaibench.data.phantom_cohort import (
    CLASS_T_RANGES,
    STUDY_CLASS_SHARES,
    bmd_of_t_score,
    t_score_of_bmd,
)
from xaibench.data.who import who_class
from xaibench.errors import InvalidOptionsError

SIZE = 64
BONE_GROUPS = ("spine", "ribs", "clavicles", "scapulae", "sternum")


@pytest.fixture(scope="module")
def small() -> PhantomDataset:
    return PhantomDataset(n_images=40, image_size=SIZE, seed=3)


@pytest.fixture(scope="module")
def signal_samples() -> list[Sample]:
    # 128 px: at 64 px the ribs leave almost no lung pixel 2 px away from bone.
    ds = PhantomDataset(n_images=240, image_size=128, seed=0)
    return [ds[i] for i in range(len(ds))]


def _same(a: Sample, b: Sample) -> bool:
    return (
        a.sample_id == b.sample_id
        and a.patient_id == b.patient_id
        and torch.equal(a.image, b.image)
        and a.regions.keys() == b.regions.keys()
        and all(torch.equal(a.regions[k], b.regions[k]) for k in a.regions)
        and dict(a.attributes) == dict(b.attributes)
    )


# --- determinism, options, table ---------------------------------------------------------------


def test_same_options_give_identical_samples(small: PhantomDataset) -> None:
    other = PhantomDataset(n_images=40, image_size=SIZE, seed=3)
    for i in (0, 7, 39):
        assert _same(small[i], other[i])
    assert small.fingerprint() == other.fingerprint()
    # Bit-exact without the disk cache too: rendering is deterministic, not just cached.
    images, labels = other.generate([0, 7, 39])
    assert np.array_equal(images[1].astype(np.float32) / 65535, small[7].image[0].numpy())
    assert np.array_equal(other.masks_of(labels[2])["ribs"], small[39].regions["ribs"].numpy())


def test_different_seed_gives_different_samples(small: PhantomDataset) -> None:
    other = PhantomDataset(n_images=40, image_size=SIZE, seed=4)
    assert not torch.equal(small[0].image, other[0].image)
    assert not torch.equal(small[0].regions["ribs"], other[0].regions["ribs"])
    assert small.fingerprint() != other.fingerprint()
    assert not np.allclose(small.table()["t_score"], other.table()["t_score"])


def test_fingerprint_tracks_every_option() -> None:
    base = PhantomDataset(n_images=10)
    prints = {
        base.fingerprint(),
        PhantomDataset(n_images=11).fingerprint(),
        PhantomDataset(n_images=10, image_size=96).fingerprint(),
        PhantomDataset(n_images=10, seed=1).fingerprint(),
        PhantomDataset(n_images=10, images_per_patient=2.0).fingerprint(),
        PhantomDataset(n_images=10, class_shares=(0.5, 0.3, 0.2)).fingerprint(),
        PhantomDataset(n_images=10, shortcut=0.5).fingerprint(),
        PhantomDataset(n_images=10, bone_signal=False).fingerprint(),
    }
    assert len(prints) == 8
    assert all(len(p) == 64 for p in prints)
    assert PhantomDataset.version == "2"


def test_access_order_and_dataset_size_do_not_matter() -> None:
    fresh = PhantomDataset(n_images=80, image_size=SIZE, seed=5)[70]
    backwards = PhantomDataset(n_images=80, image_size=SIZE, seed=5)
    for i in (79, 12, 6):
        backwards[i]
    assert _same(backwards[70], fresh)
    # A patient's images do not depend on how many images the dataset holds.
    assert _same(PhantomDataset(n_images=200, image_size=SIZE, seed=5)[70], fresh)


def test_indexing(small: PhantomDataset) -> None:
    assert len(small) == 40
    assert _same(small[-1], small[39])
    assert _same(small[np.int64(2)], small[2])
    with pytest.raises(IndexError):
        small[40]
    with pytest.raises(IndexError):
        small[-41]


@pytest.mark.parametrize("size", [32, 64, 128])
def test_shapes_dtypes_range(size: int) -> None:
    ds = PhantomDataset(n_images=4, image_size=size)
    for i in range(len(ds)):
        s = ds[i]
        assert s.image.shape == (1, size, size)
        assert s.image.dtype == torch.float32
        assert float(s.image.min()) >= 0.0
        assert float(s.image.max()) <= 1.0
        assert float(s.image.std()) > 0.1  # an actual picture, not a flat field
        assert tuple(s.regions) == PhantomDataset.region_names
        for mask in s.regions.values():
            assert mask.dtype == torch.bool
            assert mask.shape == (size, size)
        assert set(s.attributes) >= {"t_score", "bmd", "visit", "image_bmd", "marker"}


def test_table_matches_samples(small: PhantomDataset) -> None:
    table = small.table()
    assert list(table.columns) == [
        "sample_id",
        "patient_id",
        "t_score",
        "bmd",
        "visit",
        "image_bmd",
        "marker",
    ]
    assert table["sample_id"].is_unique
    assert table["sample_id"].iloc[0] == "phantom-00000"
    assert table["patient_id"].iloc[0] == "P00000"
    for i in (0, 1, 2, 17, 39):
        s = small[i]
        row = table.iloc[i]
        assert s.sample_id == row["sample_id"]
        assert s.patient_id == row["patient_id"]
        assert s.attributes["t_score"] == pytest.approx(row["t_score"], abs=1e-12)
        assert s.attributes["bmd"] == pytest.approx(row["bmd"], abs=1e-12)
        assert s.attributes["visit"] == row["visit"]
    # The NHANES III young-adult femoral-neck reference (Looker et al. 1998).
    np.testing.assert_allclose(table["bmd"], 0.858 + 0.120 * table["t_score"])
    np.testing.assert_allclose(t_score_of_bmd(bmd_of_t_score(table["t_score"])), table["t_score"])
    np.testing.assert_allclose(table["image_bmd"], table["bmd"])  # bone_signal on
    assert (table["marker"] == 0).all()  # shortcut off
    table.loc[0, "t_score"] = 99.0  # callers get a copy, the cache stays intact
    assert small.table()["t_score"].iloc[0] != 99.0


def test_copy_with_new_options_does_not_reuse_cache(small: PhantomDataset) -> None:
    small.table()
    small[0]
    bigger = small.model_copy(update={"n_images": 60, "seed": 4})
    assert len(bigger.table()) == 60
    assert bigger.table().equals(PhantomDataset(n_images=60, image_size=SIZE, seed=4).table())
    assert _same(bigger[0], PhantomDataset(n_images=60, image_size=SIZE, seed=4)[0])


def test_repeat_patients() -> None:
    table = PhantomDataset(n_images=500).table()
    counts = table["patient_id"].value_counts()
    assert (counts > 1).any()
    assert 1.25 < len(table) / len(counts) < 1.7  # mean images per patient near 1.45
    for _, rows in table.groupby("patient_id"):
        assert list(rows["visit"]) == list(range(len(rows)))
        assert float(rows["t_score"].max() - rows["t_score"].min()) < 0.2
        assert len(set(who_class(rows["t_score"].to_numpy()))) == 1


def test_repeat_images_are_more_alike_than_other_patients() -> None:
    ds = PhantomDataset(n_images=120, image_size=SIZE, seed=1)
    table = ds.table()
    images, _ = ds.generate(range(len(ds)))
    images = images.astype(np.float64) / 65535
    firsts = table.index[table["visit"] == 0].to_numpy()
    seconds = table.index[table["visit"] == 1].to_numpy()
    assert len(seconds) >= 10
    same = [np.abs(images[i] - images[i - 1]).mean() for i in seconds]  # visit 1 follows visit 0
    other = [np.abs(images[a] - images[b]).mean() for a, b in itertools.pairwise(firsts)]
    assert max(same) < np.median(other)
    assert np.mean(same) < 0.5 * np.mean(other)


# --- class shares and WHO classes ------------------------------------------------------------


def test_default_class_shares_are_the_studys() -> None:
    assert PhantomDataset().class_shares == STUDY_CLASS_SHARES == (0.572, 0.377, 0.051)


@pytest.mark.parametrize(
    ("shares", "expected"),
    [
        ((0.572, 0.377, 0.051), (0.572, 0.377, 0.051)),
        ((0.2, 0.3, 0.5), (0.2, 0.3, 0.5)),
        ("balanced", (1 / 3, 1 / 3, 1 / 3)),
    ],
)
def test_class_shares_follow_option(shares: object, expected: tuple[float, ...]) -> None:
    ds = build_component(PhantomDataset, {"n_images": 3000, "class_shares": shares}, label="x")
    assert isinstance(ds, PhantomDataset)
    table = ds.table()
    labels = who_class(table["t_score"].to_numpy())
    observed = np.bincount(labels, minlength=3) / len(labels)
    np.testing.assert_allclose(observed, expected, atol=0.03)
    assert table["t_score"].min() >= -5.0
    assert table["t_score"].max() <= 3.0


def test_t_score_classes_follow_the_who_thresholds() -> None:
    for label, (low, high) in enumerate(CLASS_T_RANGES):
        assert list(who_class(np.array([low, high]))) == [label, label]
    assert list(who_class(np.array([-1.0, -1.0001, -2.4999, -2.5]))) == [0, 1, 1, 2]
    table = PhantomDataset(n_images=400, class_shares="balanced").table()  # type: ignore[arg-type]
    labels = who_class(table["t_score"].to_numpy())
    t = table["t_score"].to_numpy()
    assert (t[labels == 0] >= -1.0).all()
    assert ((t[labels == 1] > -2.5) & (t[labels == 1] < -1.0)).all()
    assert (t[labels == 2] <= -2.5).all()


@pytest.mark.parametrize(
    "options",
    [
        {"class_shares": (0.5, 0.5, 0.5)},
        {"class_shares": (1.1, -0.1, 0.0)},
        {"class_shares": "skewed"},
        {"n_images": 0},
        {"image_size": 16},
        {"images_per_patient": 0.5},
        {"shortcut": 1.5},
        {"colour": "red"},
    ],
)
def test_bad_options_are_user_errors(options: dict[str, object]) -> None:
    with pytest.raises(InvalidOptionsError, match="dataset 'phantom'") as info:
        build_component(PhantomDataset, options, label="dataset 'phantom'")
    assert next(iter(options)) in str(info.value)


def test_class_shares_message_is_clear() -> None:
    with pytest.raises(InvalidOptionsError, match="summing to 1"):
        build_component(PhantomDataset, {"class_shares": (0.6, 0.6, 0.1)}, label="dataset 'x'")


# --- masks and anatomy -----------------------------------------------------------------------


def test_masks_are_exact_nested_and_disjoint_where_anatomy_is(small: PhantomDataset) -> None:
    assert PhantomDataset.region_groups == {"bone": BONE_GROUPS}
    assert set(PhantomDataset.region_names) == {"bone", *BONE_GROUPS, "lungs", "heart", "shortcut"}
    for i in range(len(small)):
        r = {k: v.numpy() for k, v in small[i].regions.items()}
        union = np.zeros_like(r["bone"])
        for group in BONE_GROUPS:
            union |= r[group]
        assert np.array_equal(r["bone"], union)
        for name in PhantomDataset.region_names:
            assert r[name].any(), (i, name)
        assert not (r["lungs"] & r["heart"]).any()  # the heart displaces lung
        for other in ("bone", "lungs", "heart"):
            assert not (r["shortcut"] & r[other]).any()  # the marker box is outside the body


def test_reads_like_a_chest_film(small: PhantomDataset) -> None:
    for i in (0, 5, 11):
        s = small[i]
        img, r = s.image[0].numpy(), {k: v.numpy() for k, v in s.regions.items()}
        assert img[:, :2].mean() < 0.1  # air at the image edges
        lungs_only = r["lungs"] & ~r["bone"]
        assert img[lungs_only].mean() < img[r["heart"]].mean()  # air is dark, soft tissue bright
        assert img[lungs_only].mean() < img[r["spine"]].mean()


# --- the class signal ------------------------------------------------------------------------


def _region_means(
    samples: list[Sample], regions: tuple[str, ...] = ("spine", "lungs", "heart")
) -> dict[str, np.ndarray]:
    """Mean intensity of the spine, and of lungs and heart more than 2 px away from any bone.

    Bone reaches at most 2 px beyond its mask (1 px of bilinear posing, 1 px of detector blur).
    """
    out: dict[str, list[float]] = {name: [] for name in regions}
    for s in samples:
        img = s.image[0].numpy()
        r = {k: v.numpy() for k, v in s.regions.items()}
        away_from_bone = ndimage.distance_transform_edt(~r["bone"]) > 2.0
        for name in regions:
            pixels = r[name] if name == "spine" else r[name] & away_from_bone
            assert pixels.sum() >= 5, name
            out[name].append(float(img[pixels].mean()))
    return {k: np.asarray(v) for k, v in out.items()}


def test_class_signal_lives_only_in_bone(signal_samples: list[Sample]) -> None:
    t = np.array([s.attributes["t_score"] for s in signal_samples])
    means = _region_means(signal_samples)
    assert np.corrcoef(t, means["spine"])[0, 1] > 0.3
    assert abs(np.corrcoef(t, means["lungs"])[0, 1]) < 0.15
    assert abs(np.corrcoef(t, means["heart"])[0, 1]) < 0.15


def test_t_score_changes_only_bone_pixels_and_higher_bmd_is_brighter() -> None:
    # Counterfactual: same patient, acquisition and noise, different T-score.
    ds = PhantomDataset(n_images=3, image_size=SIZE, seed=2)
    low, masks = ds.render(patient=0, visit=0, t_score=-3.5)
    high, _ = ds.render(patient=0, visit=0, t_score=1.5)
    # Bilinear posing and the detector blur each spread bone by at most one pixel.
    near_bone = ndimage.binary_dilation(masks["bone"], np.ones((3, 3), bool), iterations=2)
    assert np.array_equal(low[~near_bone], high[~near_bone])
    assert float(high[masks["spine"]].mean()) > float(low[masks["spine"]].mean()) + 0.01


def test_bone_brightness_rises_with_bmd_all_else_fixed() -> None:
    ds = PhantomDataset(n_images=3, image_size=SIZE, seed=7)
    for patient in range(4):
        bone_means = []
        for t in (-4.0, -2.5, -1.0, 0.5, 2.0):
            image, masks = ds.render(patient=patient, visit=0, t_score=t)
            bone_means.append(float(image[masks["bone"]].mean()))
        assert np.all(np.diff(bone_means) > 0), (patient, bone_means)


# --- physics ---------------------------------------------------------------------------------


def test_beer_lambert_doubling_a_tissue_multiplies_intensity() -> None:
    mu = physics.attenuation_coefficients(60.0)
    base = {"soft_tissue": np.array([10.0, 20.0]), "cortical_bone": np.array([0.5, 1.0])}
    i0 = 1e5
    before = physics.transmitted_intensity(i0, base, mu)
    doubled = physics.transmitted_intensity(
        i0, {**base, "cortical_bone": 2 * base["cortical_bone"]}, mu
    )
    bone = mu["cortical_bone"] * base["cortical_bone"]
    np.testing.assert_allclose(doubled / before, np.exp(-bone))
    np.testing.assert_allclose(
        before, i0 * np.exp(-(mu["soft_tissue"] * base["soft_tissue"] + bone))
    )
    # The log transform recovers the line integral exactly.
    np.testing.assert_allclose(
        physics.log_transform(before, i0), physics.line_integral(base, mu), rtol=1e-12
    )


def test_attenuation_coefficients_follow_the_nist_table() -> None:
    for k, energy in enumerate(physics.TABLE_ENERGIES_KEV):
        mu = physics.attenuation_coefficients(energy)
        for tissue, values in physics.MU_TABLE.items():
            assert mu[tissue] == pytest.approx(values[k], rel=1e-9)
    mu = physics.attenuation_coefficients(55.0)
    assert 0.2171 < mu["soft_tissue"] < 0.2400  # between the 50 and 60 keV values
    assert mu["cortical_bone"] > 2.5 * mu["soft_tissue"] > 10 * mu["lung"]


def test_quantum_noise_is_poisson_like_and_display_is_monotone() -> None:
    rng = np.random.default_rng(0)
    expected = np.full(200_000, 400.0)
    counts = physics.quantum_noise(expected, rng.standard_normal(expected.shape))
    assert counts.mean() == pytest.approx(400.0, rel=0.005)
    assert counts.var() == pytest.approx(400.0, rel=0.02)  # Poisson: variance = mean
    p = np.linspace(0.0, 6.0, 50)
    shown = physics.display_window(p, level=3.0, width=1.0)
    assert np.all(np.diff(shown) > 0)
    assert shown.min() > 0.0
    assert shown.max() < 1.0
    assert physics.display_window(np.array(3.0), 3.0, 1.0) == pytest.approx(0.5)


# --- disk cache ------------------------------------------------------------------------------


def test_cache_hit_returns_identical_samples(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XAIBENCH_CACHE_DIR", str(tmp_path))
    first = PhantomDataset(n_images=70, image_size=SIZE, seed=11)
    generated = [first[i] for i in (3, 65)]
    files = sorted((tmp_path / "phantom").glob("*.xbc"))
    assert len(files) == 2  # two chunks of 64 images
    assert not list((tmp_path / "phantom").glob(".*tmp"))  # written atomically

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cache hit must not render")

    with monkeypatch.context() as patch:
        patch.setattr(PhantomDataset, "generate", fail)
        second = PhantomDataset(n_images=70, image_size=SIZE, seed=11)
        assert all(_same(a, second[i]) for a, i in zip(generated, (3, 65), strict=True))

    files[0].write_bytes(b"not a cache entry")  # a corrupt entry is re-rendered (and logged)
    third = PhantomDataset(n_images=70, image_size=SIZE, seed=11)
    assert _same(generated[0], third[3])


# --- known-answer controls -------------------------------------------------------------------


def _marker_stat(ds: PhantomDataset) -> tuple[np.ndarray, np.ndarray]:
    """Brightest pixel of the shortcut box per image, and the WHO class."""
    images, labels = ds.generate(range(len(ds)))
    box = (labels & 128) > 0
    stat = np.array([img[m].max() / 65535 for img, m in zip(images, box, strict=True)])
    return stat, who_class(ds.table()["t_score"].to_numpy())


def test_shortcut_zero_has_no_cue_and_one_is_perfectly_predictive() -> None:
    options = {"n_images": 300, "image_size": SIZE, "class_shares": (0.4, 0.3, 0.3)}
    clean = PhantomDataset(**options)
    cued = PhantomDataset(**options, shortcut=1.0)
    stat0, y = _marker_stat(clean)
    stat1, _ = _marker_stat(cued)
    assert (clean.table()["marker"] == 0).all()
    assert (cued.table()["marker"] == 1).all()
    # No cue: the box is empty air whatever the class.
    assert stat0.max() < 0.1
    assert abs(np.corrcoef(stat0, y)[0, 1]) < 0.15
    # Full cue: marker brightness separates the three classes without a single error.
    assert stat1[y == 0].max() < stat1[y == 1].min()
    assert stat1[y == 1].max() < stat1[y == 2].min()
    # The marker changes nothing outside its box (blur halo included).
    a, masks = clean.render(0, 0, float(clean.table()["t_score"][0]))
    b, _ = cued.render(0, 0, float(clean.table()["t_score"][0]))
    assert np.array_equal(a[~masks["shortcut"]], b[~masks["shortcut"]])


def test_shortcut_strength_is_the_share_of_marked_images() -> None:
    marked = PhantomDataset(n_images=2000, shortcut=0.3).table()["marker"]
    assert marked.mean() == pytest.approx(0.3, abs=0.03)
    more = PhantomDataset(n_images=2000, shortcut=0.6).table()["marker"]
    assert (more >= marked).all()  # raising the strength only adds markers


def test_bone_signal_off_removes_the_class_from_bone() -> None:
    ds = PhantomDataset(n_images=300, image_size=SIZE, seed=0, bone_signal=False)
    table = ds.table()
    assert abs(np.corrcoef(table["t_score"], table["image_bmd"])[0, 1]) < 0.15
    means = _region_means([ds[i] for i in range(len(ds))], regions=("spine",))
    assert abs(np.corrcoef(table["t_score"], means["spine"])[0, 1]) < 0.15
    # The rendered image does not depend on the label's T-score at all.
    low, _ = ds.render(patient=0, visit=0, t_score=-4.0)
    high, _ = ds.render(patient=0, visit=0, t_score=2.0)
    assert np.array_equal(low, high)


def test_run_cache_settings_reach_the_phantom(tmp_path):
    """`cache: false` writes nothing; `cache_dir` is where the chunks go."""
    off = PhantomDataset(n_images=4, image_size=32, seed=11)
    off.use_cache(tmp_path / "off", enabled=False)
    first = off[0].image
    assert not (tmp_path / "off").exists()
    on = PhantomDataset(n_images=4, image_size=32, seed=11)
    on.use_cache(tmp_path / "on")
    assert torch.equal(on[0].image, first)
    assert list((tmp_path / "on" / "phantom").glob("*.xbc"))
