"""Tests of the synthetic ``phantom`` chest-radiograph dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from xaibench.component import build_component
from xaibench.data.base import Sample
from xaibench.data.phantom import PhantomDataset
from xaibench.data.who import who_class
from xaibench.errors import InvalidOptionsError

SIZE = 64


@pytest.fixture(scope="module")
def small() -> PhantomDataset:
    return PhantomDataset(n_images=40, image_size=SIZE, seed=3)


@pytest.fixture(scope="module")
def signal_samples() -> list[Sample]:
    ds = PhantomDataset(n_images=300, image_size=SIZE, seed=0)
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


def test_same_options_give_identical_samples(small: PhantomDataset) -> None:
    other = PhantomDataset(n_images=40, image_size=SIZE, seed=3)
    for i in (0, 7, 39):
        assert _same(small[i], other[i])
    assert small.fingerprint() == other.fingerprint()


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
    }
    assert len(prints) == 6
    assert all(len(p) == 64 and int(p, 16) >= 0 for p in prints)


def test_access_order_does_not_matter() -> None:
    fresh = PhantomDataset(n_images=20, image_size=SIZE, seed=5)[5]
    walked = PhantomDataset(n_images=20, image_size=SIZE, seed=5)
    for i in range(5):
        walked[i]
    assert _same(walked[5], fresh)
    backwards = PhantomDataset(n_images=20, image_size=SIZE, seed=5)
    for i in (19, 12, 6):
        backwards[i]
    assert _same(backwards[5], fresh)
    # A patient's images do not depend on how many images the dataset holds.
    assert _same(PhantomDataset(n_images=200, image_size=SIZE, seed=5)[5], fresh)


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
        assert float(s.image.std()) > 0.05  # an actual picture, not a flat field
        assert tuple(s.regions) == PhantomDataset.region_names
        for mask in s.regions.values():
            assert mask.dtype == torch.bool
            assert mask.shape == (size, size)
        assert set(s.attributes) >= {"t_score", "bmd"}


def test_bone_is_union_of_its_parts_and_every_region_present(small: PhantomDataset) -> None:
    parts = PhantomDataset.region_groups["bone"]
    assert set(parts) == {"spine", "ribs", "clavicles"}
    for i in range(len(small)):
        r = small[i].regions
        union = r[parts[0]] | r[parts[1]] | r[parts[2]]
        assert torch.equal(r["bone"], union)
        for name in PhantomDataset.region_names:
            assert int(r[name].sum()) > 0, (i, name)


def test_air_outside_body_is_dark_and_lungs_darker_than_heart(small: PhantomDataset) -> None:
    s = small[0]
    img = s.image[0]
    assert float(img[:, :2].mean()) < 0.1  # image edges are air
    lungs_only = s.regions["lungs"] & ~s.regions["bone"]
    assert float(img[lungs_only].mean()) < float(img[s.regions["heart"]].mean())
    assert float(img[lungs_only].mean()) < float(img[s.regions["spine"]].mean())


def test_repeat_patients() -> None:
    table = PhantomDataset(n_images=500).table()
    assert len(table) == 500
    counts = table["patient_id"].value_counts()
    assert (counts > 1).any()
    assert 1.25 < len(table) / len(counts) < 1.7  # mean images per patient near 1.45
    for _, rows in table.groupby("patient_id"):
        assert list(rows["visit"]) == list(range(len(rows)))
        assert float(rows["t_score"].max() - rows["t_score"].min()) < 0.2
        assert len(set(who_class(rows["t_score"].to_numpy()))) == 1


def test_table_matches_samples(small: PhantomDataset) -> None:
    table = small.table()
    assert list(table.columns) == ["sample_id", "patient_id", "t_score", "bmd", "visit"]
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
    np.testing.assert_allclose(table["bmd"], 1.05 + 0.11 * table["t_score"])
    table.loc[0, "t_score"] = 99.0  # callers get a copy, the cache stays intact
    assert small.table()["t_score"].iloc[0] != 99.0


def test_copy_with_new_options_does_not_reuse_cache(small: PhantomDataset) -> None:
    small.table()
    bigger = small.model_copy(update={"n_images": 60, "seed": 4})
    assert len(bigger.table()) == 60
    assert bigger.table().equals(PhantomDataset(n_images=60, image_size=SIZE, seed=4).table())


def test_class_shares_follow_option() -> None:
    for shares in [(0.572, 0.377, 0.051), (0.2, 0.3, 0.5)]:
        table = PhantomDataset(n_images=3000, class_shares=shares).table()
        labels = who_class(table["t_score"].to_numpy())
        observed = np.bincount(labels, minlength=3) / len(labels)
        np.testing.assert_allclose(observed, shares, atol=0.03)
        t = table["t_score"]
        assert t.min() >= -5.0
        assert t.max() <= 3.0


@pytest.mark.parametrize(
    "options",
    [
        {"class_shares": (0.5, 0.5, 0.5)},
        {"class_shares": (1.1, -0.1, 0.0)},
        {"n_images": 0},
        {"image_size": 16},
        {"images_per_patient": 0.5},
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


def _region_means(samples: list[Sample], dilation: int) -> dict[str, np.ndarray]:
    out: dict[str, list[float]] = {"spine": [], "lungs": [], "heart": []}
    for s in samples:
        img = s.image[0].numpy()
        r = {k: v.numpy() for k, v in s.regions.items()}
        near_bone = ndimage.binary_dilation(r["bone"], iterations=dilation)
        out["spine"].append(float(img[r["spine"]].mean()))
        for name in ("lungs", "heart"):
            away = r[name] & ~near_bone
            assert away.sum() >= 5, name
            out[name].append(float(img[away].mean()))
    return {k: np.asarray(v) for k, v in out.items()}


def test_class_signal_lives_only_in_bone(signal_samples: list[Sample]) -> None:
    # At 64 px the ribs are ~1.3 px thick and ~4.5 px apart, so a 2-px dilation of bone covers
    # nearly all of the lungs; the detector blur is 0.3 px there, so 1 px already removes every
    # pixel that bone can leak into (> 3 sigma).
    t = np.array([s.attributes["t_score"] for s in signal_samples])
    means = _region_means(signal_samples, dilation=1)
    assert np.corrcoef(t, means["spine"])[0, 1] > 0.5
    assert abs(np.corrcoef(t, means["lungs"])[0, 1]) < 0.2
    assert abs(np.corrcoef(t, means["heart"])[0, 1]) < 0.2


def test_t_score_changes_only_bone_pixels() -> None:
    # Counterfactual: same patient, visit and noise, different T-score.
    ds = PhantomDataset(n_images=3, image_size=SIZE, seed=2)
    low, masks = ds.render(patient=0, visit=0, t_score=-3.5)
    high, _ = ds.render(patient=0, visit=0, t_score=1.5)
    near_bone = ndimage.binary_dilation(masks["bone"], iterations=2)
    assert np.array_equal(low[~near_bone], high[~near_bone])
    assert float(high[masks["spine"]].mean()) > float(low[masks["spine"]].mean()) + 0.03
