"""Control regions and the specific Δ (issue 17 item 2).

Known answers: control masks on the phantom's own masks have the region's area, miss the region,
stay in the body and depend only on (seed, region, draw, sample); a planted region effect gives a
specific Δ equal to the raw Δ with a CI above 0, a perturbation that breaks the model everywhere
gives a specific Δ whose CI covers 0, and the bootstrap equals a slow per-resample reference.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from xaibench.config import resolve_config
from xaibench.control_regions import (
    ControlRows,
    FieldRows,
    control_mask,
    control_masks,
    field_of_view,
)
from xaibench.data.phantom import PhantomDataset
from xaibench.errors import XaibenchError
from xaibench.metrics.base import Predictions
from xaibench.metrics.explanation import DeltaRegion, specific_delta
from xaibench.metrics.functional import delta_auc

REGIONS = ("bone", "spine", "ribs", "clavicles", "shortcut", "lungs")


@pytest.fixture(scope="module")
def phantom():
    """Twelve 64 px phantom images with a marker, their masks, ids and fields of view."""
    data = PhantomDataset(n_images=12, image_size=64, shortcut=1.0, seed=3)
    samples = [data[i] for i in range(len(data))]
    images = np.stack([s.image.numpy() for s in samples])
    masks = {r: np.stack([s.regions[r].numpy() for s in samples]) for r in REGIONS}
    ids = [s.sample_id for s in samples]
    return images, masks, ids, field_of_view(images)


# --- field of view ---------------------------------------------------------------------------


def test_field_of_view_is_the_body_and_marker_without_the_air_around_them(phantom):
    images, masks, _, fields = phantom
    assert fields.shape == images[:, 0].shape
    assert not fields[:, 0, 0].any()  # the corners are air
    assert not fields[:, -1, 0].any()
    assert fields[:, 32, 32].all()  # the mediastinum is body
    for region in ("bone", "lungs"):  # the regions lie in the field
        # (but for a stray pixel where a shoulder bone's faint tip meets the air)
        outside = (masks[region] & ~fields).sum() / masks[region].sum()
        assert outside < 0.002, (region, outside)
    # the marker's box is mostly air, but the lead marker in it is in the field
    lead = masks["shortcut"] & (images[:, 0] > images[:, 0, :1, :1] + 0.02)
    assert lead.sum() >= 12
    assert not (lead & ~fields).any()
    share = fields.mean(axis=(1, 2))
    assert ((share > 0.5) & (share < 0.95)).all(), share


def test_field_rows_equal_the_field_of_view_in_any_order(phantom):
    import torch

    images, _, _, fields = phantom
    rows = FieldRows(torch.from_numpy(images))
    for index in ([3, 1, 3], slice(0, 5), [11, 0], slice(None)):
        np.testing.assert_array_equal(rows[index].numpy(), fields[index])


def test_an_image_without_uniform_padding_is_all_field():
    rng = np.random.default_rng(0)
    noise = rng.uniform(0, 1, (2, 1, 32, 32))
    assert field_of_view(noise).all()
    flat = np.full((1, 32, 32), 0.3)  # no structure at all: padding would be everything
    assert field_of_view(flat).all()


# --- control masks on the phantom --------------------------------------------------------------


@pytest.mark.parametrize("region", REGIONS)
def test_control_masks_match_area_miss_the_region_and_stay_in_the_field(phantom, region):
    _, masks, ids, fields = phantom
    control, ratios, _ = control_masks(masks[region], fields, ids, seed=0, region=region, draw=0)
    area = masks[region].sum(axis=(1, 2))
    allowed = (fields & ~masks[region]).sum(axis=(1, 2))
    assert not (control & masks[region]).any()
    assert not (control & ~fields).any()
    enough = allowed >= area
    assert enough.any()
    np.testing.assert_array_equal(control.sum(axis=(1, 2))[enough], area[enough])
    np.testing.assert_array_equal(ratios[enough], 1.0)
    # short of room: every allowed pixel, and the ratio says how much of the area that is
    np.testing.assert_array_equal(control.sum(axis=(1, 2))[~enough], allowed[~enough])
    np.testing.assert_allclose(ratios[~enough], allowed[~enough] / area[~enough])


def test_small_regions_are_shifted_copies_and_all_bone_becomes_blobs(phantom):
    _, masks, ids, fields = phantom
    _, _, shifted = control_masks(masks["spine"], fields, ids, seed=0, region="spine", draw=0)
    assert shifted.all()  # a vertical band moved sideways into the lungs
    control, _, shifted = control_masks(
        masks["shortcut"], fields, ids, seed=0, region="shortcut", draw=0
    )
    assert shifted.all()
    from scipy.signal import correlate2d

    for i in range(len(ids)):  # at least SHIFT_FIT of the marker's box is a translated copy
        best = correlate2d(control[i].astype(int), masks["shortcut"][i].astype(int)).max()
        assert best >= 0.9 * masks["shortcut"][i].sum()
    _, _, shifted = control_masks(masks["bone"], fields, ids, seed=0, region="bone", draw=0)
    assert not shifted.any()  # no translation of all bone fits outside bone


def test_control_masks_are_deterministic_per_sample_and_differ_across_draws(phantom):
    _, masks, ids, fields = phantom
    kw = {"seed": 7, "region": "ribs"}
    first, _, _ = control_masks(masks["ribs"], fields, ids, draw=0, **kw)
    again, _, _ = control_masks(masks["ribs"], fields, ids, draw=0, **kw)
    chance = (masks["ribs"].sum() / (fields & ~masks["ribs"]).sum()).item()
    np.testing.assert_array_equal(first, again)
    # one image at a time, in reverse order: the same masks (no dependence on the batch)
    for i in reversed(range(len(ids))):
        alone, _, _ = control_masks(masks["ribs"][i : i + 1], fields[i : i + 1], ids[i : i + 1],
                                    draw=0, **kw)  # fmt: skip
        np.testing.assert_array_equal(alone[0], first[i])
    other, _, _ = control_masks(masks["ribs"], fields, ids, draw=1, **kw)
    reseeded, _, _ = control_masks(masks["ribs"], fields, ids, draw=0, seed=8, region="ribs")
    for different in (other, reseeded):
        overlap = (different & first).sum() / first.sum()  # about what independent draws share
        assert 0.5 * chance < overlap < min(1.5 * chance, 0.8), (overlap, chance)


def test_control_rows_memoise_and_summarise(phantom):
    import torch

    images, masks, ids, fields = phantom
    rows = ControlRows(
        torch.from_numpy(images), torch.from_numpy(masks["spine"]), None, ids,
        seed=0, region="spine", draw=0,
    )  # fmt: skip
    assert rows.shape == masks["spine"].shape
    summary = rows.summary(batch_size=5)
    assert summary == {"area_ratio": 1.0, "shifted": 1.0}
    direct, _, _ = control_masks(masks["spine"], fields, ids, seed=0, region="spine", draw=0)
    np.testing.assert_array_equal(rows[3:9].numpy(), direct[3:9])
    np.testing.assert_array_equal(rows[[11, 0]].numpy(), direct[[11, 0]])


def test_degenerate_regions():
    rng = np.random.default_rng(0)
    field = np.ones((16, 16), dtype=bool)
    empty, ratio, _ = control_mask(np.zeros((16, 16), bool), field, rng)
    assert not empty.any()
    assert np.isnan(ratio)
    nearly_all = np.ones((16, 16), dtype=bool)
    nearly_all[:2, :3] = False  # 6 pixels left for a 250-pixel region
    mask, ratio, _ = control_mask(nearly_all, field, rng)
    np.testing.assert_array_equal(mask, ~nearly_all)
    assert ratio == pytest.approx(6 / 250)
    mask, ratio, _ = control_mask(nearly_all, np.zeros((16, 16), bool), rng)
    assert not mask.any()
    assert ratio == 0.0


# --- specific Δ -------------------------------------------------------------------------------


def _planted(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1, 2], n // 3)
    informative = (labels == 2) * 2.5 + rng.normal(0, 1, n)  # AUC about 0.95
    return labels, informative


def _predictions(labels: np.ndarray, score: np.ndarray) -> Predictions:
    p = 1 / (1 + np.exp(-score))
    probs = np.stack([(1 - p) / 2, (1 - p) / 2, p], axis=1)
    return Predictions(labels, probs, positive_class=2)


def test_a_region_the_model_needs_has_a_specific_delta_equal_to_its_raw_delta():
    labels, informative = _planted()
    rng = np.random.default_rng(1)
    intact = _predictions(labels, informative)
    perturbed = _predictions(labels, rng.normal(0, 1, len(labels)))  # the signal is gone
    controls = [  # elsewhere: the model barely notices
        _predictions(labels, informative + rng.normal(0, 0.05, len(labels))) for _ in range(2)
    ]
    raw = DeltaRegion().compute(intact, perturbed).value
    out = specific_delta(intact, perturbed, controls)
    assert out["control_draws"] == 2
    assert len(out["control_deltas"]) == 2
    assert abs(out["control_delta"]) < 0.02
    assert out["specific"] == pytest.approx(raw - out["control_delta"])
    assert out["specific"] == pytest.approx(raw, abs=0.02)
    low, high = out["specific_ci"]
    assert 0 < low <= out["specific"] <= high
    assert out["specific_p"] < 0.01


def test_a_perturbation_that_breaks_the_model_everywhere_is_not_specific():
    labels, informative = _planted()
    rng = np.random.default_rng(2)
    intact = _predictions(labels, informative)
    broken = [_predictions(labels, informative * 0.2 + rng.normal(0, 1, len(labels)))
              for _ in range(3)]  # fmt: skip
    out = specific_delta(intact, broken[0], broken[1:])
    raw = DeltaRegion().compute(intact, broken[0])
    assert raw.ci is not None
    assert raw.ci[0] > 0.1
    assert out["control_delta"] > 0.1  # ... but the off-target cost is as large
    low, high = out["specific_ci"]
    assert low < 0 < high
    assert out["specific_p"] > 0.05


def test_specific_delta_bootstrap_equals_a_slow_paired_reference():
    labels, informative = _planted(n=48, seed=4)
    rng = np.random.default_rng(5)
    intact = _predictions(labels, informative)
    perturbed = _predictions(labels, informative * 0.5 + rng.normal(0, 1, len(labels)))
    controls = [_predictions(labels, informative + rng.normal(0, 0.7, len(labels)))
                for _ in range(2)]  # fmt: skip
    out = specific_delta(intact, perturbed, controls, resamples=200, seed=9)

    positive, negative = np.flatnonzero(labels == 2), np.flatnonzero(labels != 2)
    draw = np.random.default_rng(9)
    idx = np.concatenate(
        [
            positive[draw.integers(0, len(positive), (200, len(positive)))],
            negative[draw.integers(0, len(negative), (200, len(negative)))],
        ],
        axis=1,
    )
    values = []
    for rows in idx:  # one resample at a time, with scikit-learn's AUC
        y = labels[rows] == 2

        def auc(p, y=y, rows=rows):
            return roc_auc_score(y, p.ranking_scores[rows])

        region = delta_auc(auc(intact), auc(perturbed))
        off = np.mean([delta_auc(auc(intact), auc(c)) for c in controls])
        values.append(region - off)
    values = np.asarray(values)
    np.testing.assert_allclose(
        out["specific_ci"], [np.quantile(values, 0.025), np.quantile(values, 0.975)], atol=1e-12
    )
    assert out["specific_p"] == pytest.approx((1 + np.sum(values <= 1e-12)) / 201)


def test_specific_delta_needs_controls_and_two_of_each_class():
    labels, informative = _planted(n=30)
    intact = _predictions(labels, informative)
    with pytest.raises(ValueError, match="at least one control"):
        specific_delta(intact, intact, [])
    one = Predictions(np.array([0, 0, 0, 2]), intact.probs[:4], positive_class=2)
    out = specific_delta(one, one, [one])
    assert out["specific"] == 0.0
    assert out["specific_ci"] is None
    assert out["specific_p"] is None


# --- the run ----------------------------------------------------------------------------------


TINY = {
    "dataset": {
        "name": "phantom",
        "options": {"n_images": 60, "image_size": 32, "class_shares": [0.4, 0.3, 0.3]},
    },
    "backbones": [{"name": "test_resnet.random", "options": {"img_size": 32}}],
    "strategies": ["full"],
    "saliency": [],
    "perturbations": ["mean", "road"],
    "perturb_regions": ["spine"],
    "complement_regions": ["spine"],
    "metrics": ["auc", "delta_region"],
    "train": {"epochs": 1, "batch_size": 16, "eval_batch_size": 7},
    "sanity": {"images": 0},
    "cache": False,
}


@pytest.fixture(scope="module")
def tiny_run():
    """Built-in components, the tiny configuration and its prepared data (shared: data only)."""
    from xaibench.engine.runner import prepare_data
    from xaibench.plugins import collect_components, get_plugin_manager
    from xaibench.progress import NullProgress

    components = collect_components(get_plugin_manager())
    config = resolve_config(components.tasks.create("osteoporosis").defaults(), TINY)
    return components, config, prepare_data(config, components, NullProgress())


def _cell_result(tiny_run, **overrides):
    from xaibench.engine.grid import build_cells
    from xaibench.engine.runner import CellRunner

    components, config, data = tiny_run
    config = resolve_config(config.model_dump(mode="json"), overrides)
    runner = CellRunner(config, components, data)
    (cell,) = build_cells(config)
    result = runner(cell)
    assert result.status == "ok", result.error
    return result, runner


def test_a_run_records_specific_delta_and_control_predictions(tiny_run):
    result, _runner = _cell_result(tiny_run, controls={"draws": 2})
    deltas = {(r["perturbation"], r["region"]): r for r in result.records
              if r["metric"] == "delta_region"}  # fmt: skip
    assert set(deltas) == {(p, r) for p in ("mean", "road") for r in ("spine", "outside_spine")}
    for p in ("mean", "road"):
        d = deltas[(p, "spine")]["details"]
        assert d["control_draws"] == 2
        assert len(d["control_deltas"]) == 2
        assert d["control_area_ratio"] == 1.0
        assert d["specific"] == pytest.approx(deltas[(p, "spine")]["value"] - d["control_delta"])
        assert len(d["specific_ci"]) == 2
        assert 0 < d["specific_p"] <= 1
        outside = deltas[(p, "outside_spine")]["details"]
        assert "specific" not in outside
        assert "complement" in outside["specific_reason"]
    preds = pd.concat(result.predictions)
    groups = preds.groupby(["perturbation", "region"]).size()
    n = len(preds[preds["perturbation"] == ""])
    for p in ("mean", "road"):
        for region in ("spine", "spine#control0", "spine#control1", "outside_spine"):
            assert groups[(p, region)] == n
    # the control predictions are those the record's control Δ comes from
    intact = preds[preds["perturbation"] == ""]
    control = preds[(preds["perturbation"] == "mean") & (preds["region"] == "spine#control1")]
    auc = roc_auc_score(intact["label"] == 2, intact["prob_osteoporosis"])
    control_auc = roc_auc_score(control["label"] == 2, control["prob_osteoporosis"])
    assert deltas[("mean", "spine")]["details"]["control_deltas"][1] == pytest.approx(
        delta_auc(auc, control_auc)
    )


def _plan(tiny_run, **overrides):
    from xaibench.engine.runner import CellRunner

    components, config, data = tiny_run
    config = resolve_config(config.model_dump(mode="json"), overrides)
    return CellRunner(config, components, data)._control_plan("spine", 0)


def test_controls_off_or_impossible_are_recorded_with_a_reason(tiny_run):
    details, reason = _plan(tiny_run)
    assert reason is None
    assert details["control_field"] == "image less padding"
    assert details["control_area_ratio"] == 1.0
    details, reason = _plan(tiny_run, controls={"field": "image"})
    assert reason is None
    assert details["control_field"] == "image"
    details, reason = _plan(tiny_run, controls={"draws": 0})
    assert details == {}
    assert "controls.draws: 0" in reason
    # the field is the region itself: no pixel is left for a control
    details, reason = _plan(tiny_run, controls={"field": "spine"})
    assert details == {}
    assert "covers nearly all" in reason
    details, reason = _plan(tiny_run, controls={"field": "body"})
    assert "controls.field: region 'body'" in reason


def test_a_field_region_the_data_lacks_is_refused_before_any_work(tiny_run, tmp_path):
    from xaibench.engine.benchmark import run_benchmark

    components, config, _ = tiny_run
    config = resolve_config(config.model_dump(mode="json"), {"controls": {"field": "body"}})
    with pytest.raises(XaibenchError, match=r"controls.field: region 'body' is not annotated"):
        run_benchmark(config, components, tmp_path / "run")
    assert not (tmp_path / "run" / "run-state.json").exists()


def test_controls_keep_off_the_other_tested_regions() -> None:
    from xaibench.control_regions import control_masks, keep_off

    region = np.zeros((2, 32, 32), dtype=bool)
    region[:, 2:6, 2:6] = True  # 16 px
    field = np.ones((2, 32, 32), dtype=bool)
    other = np.zeros((2, 32, 32), dtype=bool)
    other[0, :, 8:] = True  # image 0: room left outside (a 32 x 8 strip less the region)
    other[1, :, 1:] = True  # image 1: only column 0 is left ...
    other[1, 8:, 0] = True  # ... rows 0-7 of it: 8 free pixels, a smaller control, still off it
    allowed = keep_off(field, region, other)
    assert not (allowed & other).any()
    masks, ratios, _ = control_masks(region, allowed, ["a", "b"], seed=3, region="r", draw=0)
    assert ratios[0] == 1.0
    assert masks[0].sum() == 16
    assert ratios[1] == pytest.approx(8 / 16)  # the shortfall is recorded
    assert not (masks & other).any()
    assert not (masks & region).any()


def test_a_region_outside_the_field_gets_controls_outside_it_too() -> None:
    from xaibench.control_regions import control_masks, match_zone

    field = np.zeros((2, 32, 32), dtype=bool)
    field[:, 8:, 8:] = True  # the "body"; the rest is air
    region = np.zeros((2, 32, 32), dtype=bool)
    region[0, 1:4, 1:4] = True  # image 0: a marker's box in the air
    region[1, 12:15, 12:15] = True  # image 1: anatomy inside the body
    zones = match_zone(field, region)
    assert (zones[0] == ~field[0]).all()
    assert (zones[1] == field[1]).all()
    masks, ratios, _ = control_masks(region, zones, ["a", "b"], seed=0, region="r", draw=0)
    assert (ratios == 1.0).all()
    assert not (masks[0] & field[0]).any()  # air patches for the box
    assert not (masks[1] & ~field[1]).any()  # body patches for the anatomy
