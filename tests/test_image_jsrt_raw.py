"""JSRT's raw ``.IMG`` radiographs: 2048 x 2048, 16-bit big-endian, 12 bits, high values dark."""

from __future__ import annotations

import numpy as np
import pytest

from xaibench.data.images import JSRT_BYTES, ImageReadError, decode_image, decode_jsrt_raw


def _raw(values: dict[tuple[int, int], int]) -> bytes:
    array = np.full((2048, 2048), 4095, dtype=">u2")
    for (row, column), value in values.items():
        array[row, column] = value
    return array.tobytes()


def test_known_answer_big_endian_and_inverted() -> None:
    data = bytearray(_raw({(0, 0): 0, (0, 1): 4095, (5, 7): 1000}))
    # Pixel (1, 0) written byte by byte: 0x01 0x02 is 258 big-endian (513 little-endian).
    offset = 2 * 2048
    data[offset : offset + 2] = b"\x01\x02"
    image = decode_image(bytes(data), "JPCLN001.IMG")
    assert image.shape == (2048, 2048)
    assert image.dtype == np.float32
    assert image[0, 0] == pytest.approx(1.0)  # 0 = lowest density = brightest (bone)
    assert image[0, 1] == pytest.approx(0.0)
    assert image[5, 7] == pytest.approx((4095 - 1000) / 4095)
    assert image[1, 0] == pytest.approx((4095 - 258) / 4095)
    assert image[2, 2] == pytest.approx(0.0)


def test_lower_case_name_is_read_too() -> None:
    image = decode_jsrt_raw(_raw({(3, 3): 4095 - 4095}), "scr/jpcnn001.img")
    assert image[3, 3] == pytest.approx(1.0)


def test_wrong_size_is_refused_with_the_file_named() -> None:
    with pytest.raises(ImageReadError, match=r"x\.IMG: .*exactly 8,388,608 bytes.*has 100 bytes"):
        decode_image(b"\x00" * 100, "x.IMG")


def test_values_above_12_bits_are_refused() -> None:
    # Little-endian data read as big-endian: 4095 = 0xFF 0x0F reads as 65295.
    array = np.full((2048, 2048), 4095, dtype="<u2").tobytes()
    assert len(array) == JSRT_BYTES
    with pytest.raises(ImageReadError, match=r"value 65295, above JSRT's 12-bit range"):
        decode_image(array, "JPCLN002.IMG")


def test_same_bytes_without_the_img_ending_are_not_guessed() -> None:
    with pytest.raises(ImageReadError, match="not a recognised image file"):
        decode_image(_raw({}), "JPCLN001.raw")
