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
    assert gallery_filename("hf-hub:org/model", "lora", 1, "gradcam") == (
        "hf-hub_org_model__lora__seed1__gradcam.png"
    )
