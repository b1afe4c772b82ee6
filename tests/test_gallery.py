import numpy as np

from xaibench.report.gallery import gallery_filename, render_gallery


def test_gallery_overlays_the_map_and_outlines_the_region():
    images = np.full((2, 200, 200), 0.5)
    maps = np.zeros((2, 200, 200))
    maps[:, 10, 10] = 1.0  # the hottest pixel
    masks = np.zeros((2, 200, 200), dtype=bool)
    masks[:, 50:60, 50:60] = True
    picture = np.asarray(render_gallery(images, maps, masks))
    assert picture.shape == (400, 400, 3)
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
