import io

import numpy as np
import pytest

from xaibench.report.gallery import gallery_filename, render_gallery


def test_gallery_overlays_the_map_and_outlines_the_region():
    images = np.full((2, 200, 200), 0.5)
    maps = np.zeros((2, 200, 200))
    maps[:, 10, 10] = 1.0  # the hottest pixel
    masks = np.zeros((2, 200, 200), dtype=bool)
    masks[:, 50:60, 50:60] = True
    picture = np.asarray(render_gallery(images, maps, masks))
    assert picture.shape[1:] == (400, 3)
    assert picture.shape[0] > 400  # the two rows, then the colour bars
    assert tuple(picture[10, 10]) == (127, 127, 127)  # top row: the image alone
    assert tuple(picture[200 + 10, 10]) == (255, 25, 25)  # bottom row: full red at the maximum
    assert tuple(picture[200 + 50, 55]) == (0, 229, 229)  # region outline
    assert tuple(picture[200 + 55, 55]) == (127, 127, 127)  # inside the region, map zero


def test_gallery_filenames_are_safe():
    # sanitised, readable, and with a hash of the exact labels (tests/test_run_folder_names.py)
    name = gallery_filename("hf-hub:org/model", "lora", 1, "gradcam")
    assert name.startswith("hf-hub_org_model__lora__seed1__gradcam___")
    assert name.endswith(".png")


def test_picker_keeps_the_best_worst_and_a_seeded_random_draw_across_batches():
    from xaibench.report.gallery import GalleryPicker

    scores = np.array([0.5, 0.9, np.nan, 0.1, 0.9, 0.3, 0.7, 0.0, 0.2, 0.6])
    maps = np.arange(10, dtype=np.float32)[:, None, None] * np.ones((10, 4, 4), np.float32)
    picker = GalleryPicker(k=3, n=10, seed=1)
    for start in (0, 4, 8):  # three batches of 4, 4, 2
        picker.add(start, maps[start : start + 4], scores[start : start + 4])
    picks = picker.picks()
    best, best_scores, best_maps = picks["best"]
    assert best == [1, 4, 6]  # ties (0.9, 0.9) go to the earlier image
    assert best_scores == [0.9, 0.9, 0.7]
    assert [m[0, 0] for m in best_maps] == [1.0, 4.0, 6.0]  # each map is its image's
    worst, worst_scores, _ = picks["worst"]
    assert worst == [7, 3, 8]  # NaN (image 2) is never an extreme
    assert worst_scores == [0.0, 0.1, 0.2]
    chosen = picks["random"][0]
    assert len(chosen) == 3
    assert chosen == sorted(chosen)
    again = GalleryPicker(k=3, n=10, seed=1)
    again.add(0, maps, scores)
    assert again.picks()["random"][0] == chosen  # same seed, same draw, whatever the batches
    other = GalleryPicker(k=3, n=10, seed=2)
    other.add(0, maps, scores)
    assert other.picks()["random"][0] != chosen


def test_picker_without_scores_gives_only_the_random_draw():
    from xaibench.report.gallery import GalleryPicker

    picker = GalleryPicker(k=2, n=5, seed=0)
    picker.add(0, np.zeros((5, 3, 3)), None)
    assert set(picker.picks()) == {"random"}


def test_every_region_is_outlined_in_its_colour_with_labels_and_a_legend():
    from xaibench.report.gallery import REGION_COLOURS, render_gallery

    images = np.full((2, 40, 40), 0.5)
    maps = np.zeros((2, 40, 40))
    bone = np.zeros((2, 40, 40), dtype=bool)
    bone[:, 5:20, 5:20] = True
    marker = np.zeros((2, 40, 40), dtype=bool)
    marker[:, 10:30, 10:30] = True  # overlaps bone: bone (primary) is drawn on top
    labels = [["true osteoporosis", "called normal"], ["true normal", "called normal"]]
    plain = np.asarray(render_gallery(images, maps, bone))
    picture = np.asarray(render_gallery(images, maps, {"bone": bone, "marker": marker}, labels))
    scale = 4  # 40 px tiles enlarged to 160
    # no labels, no legend: the two rows, then only the colour bars' band
    assert plain.shape[1:] == (2 * 40 * scale, 3)
    assert 2 * 40 * scale < plain.shape[0] < 2 * 40 * scale + 40
    # the label band: light text over the dark band above each column, nothing in the map
    band = next(y for y in range(picture.shape[0]) if tuple(picture[y, 0]) == (127, 127, 127))
    assert band > 0
    top = band
    for column in range(2):
        text = picture[:top, column * 160 : (column + 1) * 160]
        assert (text.max(axis=2) > 150).any(), column
    cyan = tuple(int(c * 255) for c in REGION_COLOURS[0][1])
    yellow = tuple(int(c * 255) for c in REGION_COLOURS[1][1])
    map_row = top + 40 * scale  # the bottom (map) row of the picture starts here

    def at(y, x):
        return tuple(int(v) for v in picture[map_row + y * scale, x * scale])

    assert at(5, 12) == cyan  # bone's top edge
    assert at(10, 25) == yellow  # marker's top edge, outside bone
    assert at(19, 15) == cyan  # bone's bottom edge crosses the marker: primary on top
    assert at(29, 20) == yellow
    # the legend below the pictures names both colours: swatches in each colour
    legend = picture[map_row + 40 * scale :]
    assert legend.shape[0] > 0
    flat = {tuple(int(v) for v in p) for p in legend.reshape(-1, 3)}
    assert cyan in flat
    assert yellow in flat


def test_panel_lines_name_class_call_probability_and_score():
    from xaibench.report.gallery import panel_lines

    lines = panel_lines("osteoporosis", "not osteoporosis", "osteoporosis", 0.3456, "iou", 0.25)
    assert lines == [
        "true osteoporosis",
        "called not osteoporosis",
        "p(osteoporosis) 0.346",
        "iou 0.250",
    ]
    assert panel_lines("a", None, "a", None, None, None) == ["true a", "called ?", "p(a) n/a"]
    titled = panel_lines("a", "a", "a", 0.5, "IoU_bone", 0.125, sample_id="phantom-00007")
    assert titled == ["phantom-00007", "true a", "called a", "p(a) 0.500", "IoU_bone 0.125"]


def _map_strengths(picture: np.ndarray, h: int, w: int, k: int) -> np.ndarray:
    """The map row's colour strength per pixel, read back from the red over a mid-grey image."""
    rows = picture[h : 2 * h, : k * w].astype(np.float64)
    # over grey g = 127.5: green = g (1 - a) + 25.5 a, so a = (g - green) / (g - 25.5)
    return np.clip((127.5 - rows[..., 1]) / (127.5 - 25.5), 0, 1)


def test_a_faint_map_uses_the_whole_colour_range():
    from xaibench.report.gallery import map_range, map_strength

    rng = np.random.default_rng(0)
    faint = rng.uniform(0, 1e-4, size=(200, 200))  # 1e-4 of the spread set by one hot pixel
    faint[0, 0] = 1.0
    lo, hi = map_range(faint)
    assert 0 < lo < 2e-6
    assert 9.8e-5 < hi < 1e-4
    strength = map_strength(faint)
    assert strength[0, 0] == 1.0
    assert 0.45 < np.median(strength) < 0.55  # uniform values: the median mid-range
    images = np.full((1, 200, 200), 0.5)
    picture = np.asarray(render_gallery(images, faint[None], None))
    seen = _map_strengths(picture, 200, 200, 1)
    assert seen.max() > 0.99
    assert seen.min() < 0.01
    assert 0.4 < np.median(seen) < 0.6  # the bulk of the map is visible, not black
    # min-max scaling (the former rendering) would have drawn all but one pixel below 1e-4
    assert np.median((faint - faint.min()) / np.ptp(faint)) < 1e-4


def test_map_range_edge_cases():
    from xaibench.report.gallery import map_range, map_strength

    sparse = np.zeros((20, 20))
    sparse[3, 3] = 2.0  # under 1% of pixels differ: the percentiles coincide, min-max instead
    assert map_range(sparse) == (0.0, 2.0)
    assert map_strength(sparse)[3, 3] == 1.0
    flat = np.full((4, 4), 3.0)
    assert not map_strength(flat).any()
    assert map_range(np.full((2, 2), np.nan)) == (0.0, 0.0)
    nan = np.arange(16, dtype=float).reshape(4, 4)
    nan[0, 0] = np.nan
    got = map_strength(nan)
    assert got[0, 0] == 0.0
    assert np.isfinite(got).all()


def test_tiles_have_a_title_and_a_colour_bar_and_render_identically_twice():
    from xaibench.report.gallery import MAP_COLOUR

    images = np.full((2, 40, 40), 0.5)
    maps = np.stack([np.linspace(0, 1e-3, 1600).reshape(40, 40), np.eye(40)])
    labels = [["s-1", "true a"], ["s-2", "true b"]]
    first = render_gallery(images, maps, None, labels)
    png_a, png_b = io.BytesIO(), io.BytesIO()
    first.save(png_a, format="PNG")
    render_gallery(images.copy(), maps.copy(), None, labels).save(png_b, format="PNG")
    assert png_a.getvalue() == png_b.getvalue()  # deterministic bytes (resume relies on them)
    picture = np.asarray(first)
    top = next(y for y in range(picture.shape[0]) if tuple(picture[y, 0]) == (127, 127, 127))
    bars = picture[top + 2 * 160 :]
    red = tuple(int(c * 255) for c in MAP_COLOUR)
    for column in range(2):
        band = bars[:, column * 160 : (column + 1) * 160]
        colours = {tuple(int(v) for v in p) for p in band.reshape(-1, 3)}
        assert red in colours, column  # the top of the colour bar, full strength
        assert (127, 127, 127) in colours, column  # its bottom, the image alone
        assert (band.max(axis=2) > 200).sum() > 20, column  # the values written under it
        assert (picture[:top, column * 160 : (column + 1) * 160].max(axis=2) > 150).any()


def delta(perturbation, region, specific, control, status="ok", **extra):
    details = {} if specific is None else {"specific": specific, "control_delta": control}
    return {
        "metric": "delta_region", "perturbation": perturbation, "region": region,
        "status": status, "value": 0.1, "details": {**details, **extra},
    }  # fmt: skip


def test_the_specific_region_is_the_largest_specific_delta_under_the_cheapest_perturbation():
    from xaibench.report.gallery import specific_region

    records = [
        delta("zero", "bone", 0.05, 0.30),
        delta("zero", "marker", 0.60, 0.30),  # largest, but zero's off-target cost is high
        delta("mean", "bone", 0.02, 0.04),
        delta("mean", "marker", 0.40, 0.06),
        delta("mean", "outside_bone", 0.90, 0.0, complement_of="bone"),  # complements never
        delta("mean", "ribs", 0.95, 0.05, status="failed"),  # failed records never
    ]
    chosen = specific_region(records, "bone", ["zero", "mean"])
    assert chosen is not None
    assert (chosen.perturbation, chosen.region) == ("mean", "marker")
    assert chosen.specific == 0.40
    assert chosen.off_target == np.mean([0.04, 0.06])
    # the primary region already has the best/worst galleries
    assert specific_region(records, "marker", ["zero", "mean"]) is None
    # nothing needed beyond its controls: no gallery
    assert specific_region([delta("mean", "marker", -0.01, 0.05)], "bone", ["mean"]) is None
    # results without the controls (older runs, controls off): no gallery
    assert specific_region([delta("mean", "marker", None, None)], "bone", ["mean"]) is None
    # equal off-target costs: the first configured perturbation
    tied = [delta("zero", "ribs", 0.2, 0.1), delta("mean", "marker", 0.3, 0.1)]
    assert specific_region(tied, "bone", ["zero", "mean"]).region == "ribs"
    assert specific_region(tied, "bone", ["mean", "zero"]).region == "marker"


def test_evidence_ranks_by_the_drop_in_the_positive_probability():
    import pandas as pd

    from xaibench.gallery_evidence import collect_evidence

    ids = ["a", "b", "c"]

    def frame(perturbation, region, probs, called):
        return pd.DataFrame({
            "split": "test", "sample_id": ids, "label": [0, 1, 1],
            "perturbation": perturbation, "region": region,
            "prob_neg": [1 - p for p in probs], "prob_pos": probs, "called_positive": called,
        })  # fmt: skip

    predictions = [
        frame("", "", [0.2, 0.9, 0.7], [False, True, True]),
        frame("mean", "marker", [0.1, 0.2, 0.7], [False, False, True]),
        frame("mean", "bone", [0.2, 0.9, 0.1], [False, True, False]),
    ]
    evidence = collect_evidence(
        records=[delta("mean", "marker", 0.3, 0.02), delta("mean", "bone", 0.1, 0.02)],
        predictions=predictions, sample_ids=ids, labels=np.array([0, 1, 1]),
        class_names=["neg", "pos"], positive_index=1, outlines=["bone", "marker"],
        primary="bone", perturbations=["mean"],
    )  # fmt: skip
    assert evidence.specific is not None
    assert evidence.specific.region == "marker"
    assert evidence.drops == pytest.approx([0.1, 0.7, 0.0])  # intact minus perturbed
    assert evidence.classes == ("neg", "pos", "pos")
    assert evidence.called == ("neg", "pos", "pos")  # the intact calls
    assert evidence.p_positive == pytest.approx([0.2, 0.9, 0.7])


def test_report_caption_names_labels_outlines_and_the_specific_ranking():
    from xaibench.report.build import _gallery_caption
    from xaibench.report.html import figure

    entry = {
        "kind": "specific", "sample_ids": ["s1", "s2"], "scores": [0.5, 0.25],
        "score_metric": "probability_drop", "region": "marker", "perturbation": "mean",
        "outlines": [
            {"region": "bone", "colour": "cyan"}, {"region": "marker", "colour": "yellow"},
        ],
        "classes": ["<b>pos</b>", "neg"], "called": ["<b>pos</b>", "not <b>pos</b>"],
        "p_positive": [0.9, 0.4], "positive_class": "<b>pos</b>",
    }  # fmt: skip
    caption = _gallery_caption(entry)
    assert "dropped most when marker was perturbed (mean)" in caption
    assert "s1 (true <b>pos</b>; called <b>pos</b>; p(<b>pos</b>) 0.900; 0.500)" in caption
    assert caption.endswith("Outlines: bone (cyan), marker (yellow).")
    png = io.BytesIO()
    render_gallery(np.zeros((1, 4, 4)), np.zeros((1, 4, 4)), None).save(png, format="PNG")
    html = figure(png.getvalue(), "alt", caption)
    assert "<b>" not in html  # escaped in the report
    assert "&lt;b&gt;pos&lt;/b&gt;" in html
