import numpy as np
import pytest
from xaibench_cardiomegaly.ctr import CTR_THRESHOLD, ctr_class, measure_ctr


def _masks():
    """A hand-drawn chest on a 60 x 60 grid.

    Right lung (image left): columns 2-14, rows 10-50. Left lung: columns 31-49, rows 12-45, so
    the widest row of the thorax runs from column 2 to 49: 48 columns. The heart is tilted: its
    upper part spans columns 16-26 (rows 30-34) and its lower part columns 20-35 (rows 35-40,
    reaching into the left lung's column range): its widest single row is 16 columns, but its
    transverse diameter (MRD + MLD) is column 16 to 35, 20 columns. CTR = 20 / 48.
    """
    heart = np.zeros((60, 60), dtype=bool)
    lungs = np.zeros((60, 60), dtype=bool)
    lungs[10:51, 2:15] = True
    lungs[12:46, 31:50] = True
    heart[30:35, 16:27] = True
    heart[35:41, 20:36] = True
    lungs &= ~heart
    return heart, lungs


def test_known_answer():
    heart, lungs = _masks()
    m = measure_ctr(heart, lungs)
    assert m.heart_cm == 20
    assert m.thorax_cm == 48
    assert m.ctr == pytest.approx(20 / 48)


def test_pixel_size_scales_diameters_not_ratio():
    heart, lungs = _masks()
    m = measure_ctr(heart, lungs, pixel_cm=0.5)
    assert (m.heart_cm, m.thorax_cm) == (10.0, 24.0)
    assert m.ctr == pytest.approx(20 / 48)


def test_thorax_is_widest_single_row_not_bounding_box():
    # Two lungs that never share a row: the thorax is the widest row, not their joint extent.
    heart = np.zeros((40, 40), dtype=bool)
    lungs = np.zeros((40, 40), dtype=bool)
    lungs[5:15, 0:10] = True  # rows 5-14, 10 columns wide
    lungs[20:30, 25:40] = True  # rows 20-29, 15 columns wide
    heart[22:26, 15:24] = True  # rows 22-25: with the left lung, columns 15-39 = 25
    m = measure_ctr(heart, lungs)
    assert m.thorax_cm == 25
    assert m.heart_cm == 9
    assert m.ctr == pytest.approx(9 / 25)


def test_heart_beyond_the_lungs_counts_in_the_thorax():
    heart = np.zeros((20, 20), dtype=bool)
    lungs = np.zeros((20, 20), dtype=bool)
    lungs[5:15, 4:16] = True
    heart[8:12, 10:19] = True  # past the lung's border at column 15
    assert measure_ctr(heart, lungs).thorax_cm == 15  # columns 4-18


def test_empty_heart_is_undefined():
    heart, lungs = _masks()
    m = measure_ctr(np.zeros_like(heart), lungs)
    assert np.isnan(m.ctr)
    assert np.isnan(m.heart_cm)
    assert np.isnan(m.thorax_cm)


def test_masks_must_match():
    with pytest.raises(ValueError, match="one shape"):
        measure_ctr(np.zeros((4, 4), bool), np.zeros((4, 5), bool))
    with pytest.raises(ValueError, match="2-D"):
        measure_ctr(np.zeros((1, 4, 4), bool), np.zeros((1, 4, 4), bool))


def test_threshold_is_strict():
    assert CTR_THRESHOLD == 0.5
    assert ctr_class([0.3, 0.5, np.nextafter(0.5, 1), 0.7]).tolist() == [0, 0, 1, 1]
