"""Region annotations in a manifest cell (issue 18, item 3): known answers for every decoder.

Each format is checked on masks computed by hand, then against an independent reference:
pycocotools' own encoder and rasteriser for COCO RLE, polygons and boxes, and for SIIM-ACR's RLE a
decoder written here from the challenge's published description (relative starts, column-major,
``rle2mask(...).T``).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from pycocotools import mask as coco

from xaibench.data.region_formats import (
    Annotation,
    AnnotationError,
    coco_string_counts,
    fit_mask,
    parse_annotation,
    rasterise,
    region_column,
)

#: A 4 x 5 mask (height x width): rows 1-2, columns 2-3. Column-major: 9 background pixels
#: (columns 0 and 1, then row 0 of column 2), 2 inside, 2 out, 2 inside, 5 out.
HAND = np.zeros((4, 5), dtype=bool)
HAND[1:3, 2:4] = True
HAND_COUNTS = [9, 2, 2, 2, 5]


def decode(fmt: str, cell: str, shape: tuple[int, int]) -> np.ndarray:
    return rasterise(parse_annotation(fmt, cell), shape)


def coco_decode(rle: object) -> np.ndarray:
    """pycocotools' decode, without its numpy-2 DeprecationWarning (``__array__`` and copy)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return coco.decode(rle).astype(bool)


def run_lengths(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed counts of ``mask``, computed with numpy (column-major, 0 first)."""
    flat = mask.T.ravel().astype(np.int8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate(([0], edges, [flat.size]))
    runs = np.diff(bounds).tolist()
    return ([0] if flat[0] else []) + runs


def siim_reference(text: str, height: int, width: int) -> np.ndarray:
    """SIIM's published decoding, in numpy: relative starts, then ``reshape(w, h).T``."""
    flat = np.zeros(width * height, dtype=bool)
    values = [int(v) for v in text.split()]
    position = 0
    for start, length in zip(values[0::2], values[1::2], strict=True):
        position += start
        flat[position : position + length] = True
        position += length
    return flat.reshape(width, height).T


def siim_encode(mask: np.ndarray) -> str:
    """SIIM's relative RLE of ``mask``, as the challenge's encoder writes it."""
    counts = run_lengths(mask)
    pairs = counts[: len(counts) - (len(counts) % 2 == 1)]
    return " ".join(str(v) for v in pairs) if pairs else "-1"


# --- COCO RLE ------------------------------------------------------------------------------


def test_coco_rle_known_answer_compressed_and_list():
    assert run_lengths(HAND) == HAND_COUNTS
    # "92203": 9, 2, 2, then 0 and 3 as differences to the count two before (2 + 0, 2 + 3).
    assert coco_string_counts("92203").tolist() == HAND_COUNTS
    assert coco.encode(np.asfortranarray(HAND.astype(np.uint8)))["counts"] == b"92203"
    for counts in ('"92203"', json.dumps(HAND_COUNTS)):
        cell = f'{{"size": [4, 5], "counts": {counts}}}'
        assert np.array_equal(decode("rle", cell, (4, 5)), HAND)


@pytest.mark.parametrize("seed", range(6))
def test_coco_rle_round_trips_through_pycocotools_encode(seed: int):
    rng = np.random.default_rng(seed)
    height, width = (int(v) for v in rng.integers(1, 300, 2))
    # blobs with long runs (multi-character and negative-difference counts) and speckle
    mask = rng.random((height, width)) < rng.uniform(0.05, 0.95)
    mask[: height // 2, : width // 3] = True
    encoded = coco.encode(np.asfortranarray(mask.astype(np.uint8)))
    text = encoded["counts"].decode("ascii")
    assert coco_string_counts(text).tolist() == run_lengths(mask)
    cell = json.dumps({"size": [height, width], "counts": text})
    assert np.array_equal(decode("rle", cell, (height, width)), mask)
    listed = json.dumps({"size": [height, width], "counts": run_lengths(mask)})
    assert np.array_equal(decode("rle", listed, (height, width)), mask)


def test_a_list_of_rles_is_their_union_and_an_empty_list_is_explicitly_empty():
    other = np.zeros((4, 5), dtype=bool)
    other[0, 0] = True
    cells = [
        {"size": [4, 5], "counts": coco.encode(np.asfortranarray(m.astype(np.uint8)))["counts"]}
        for m in (HAND, other)
    ]
    cell = json.dumps([{**c, "counts": c["counts"].decode()} for c in cells])
    assert np.array_equal(decode("rle", cell, (4, 5)), HAND | other)
    empty = parse_annotation("rle", "[]")
    assert empty.parts == ()
    assert not rasterise(empty, (4, 5)).any()


@pytest.mark.parametrize(
    ("cell", "words"),
    [
        ('{"size": [4, 5], "counts": [9, 2]}', "sum to 11, not height x width = 20"),
        ('{"size": [4, 5], "counts": [9, -2, 13]}', "non-negative"),
        ('{"size": [4], "counts": "92203"}', "[height, width]"),
        ('{"size": [4, 5], "counts": "92 203"}', "not a compressed COCO RLE string"),
        ('{"size": [4, 5], "counts": 7}', "a string or a list"),
        ('{"size": [4, 5]}', "missing 'size' or 'counts'"),
        ('{"size": [4, 5], "counts": [20], "id": 1}', "unknown key 'id'"),
        ('{"size": [4, 5], "counts": [20]', "not valid JSON"),
        ("[1]", "expected a JSON object"),
    ],
)
def test_malformed_rle_cells_say_how(cell: str, words: str):
    with pytest.raises(AnnotationError, match=None) as caught:
        parse_annotation("rle", cell)
    assert words in str(caught.value)


def test_rle_checks_that_need_the_image():
    with pytest.raises(AnnotationError, match=r"size is 4x5 .* image is 5x4"):
        decode("rle", '{"size": [4, 5], "counts": "92203"}', (5, 4))
    # compressed counts are checked before pycocotools decodes them (it trusts them)
    with pytest.raises(AnnotationError, match="sum to 13, not height x width = 20"):
        decode("rle", '{"size": [4, 5], "counts": "922"}', (4, 5))
    with pytest.raises(AnnotationError, match="ends inside a count"):
        coco_string_counts("9P")


# --- SIIM-ACR RLE --------------------------------------------------------------------------


def test_siim_rle_known_answers():
    # 3 x 3: start 1 -> pixels 1-2 (column 0, rows 1-2); then 4 past pixel 3 -> pixel 7
    # (column 2, row 1).
    expected = np.array([[0, 0, 0], [1, 0, 1], [1, 0, 0]], dtype=bool)
    assert np.array_equal(decode("siim_rle", "1 2 4 1", (3, 3)), expected)
    # 2 rows x 3 columns: pixel 0 (r0 c0), then 2 past pixel 1 -> pixels 3, 4 (r1 c1, r0 c2)
    expected = np.array([[1, 0, 1], [0, 1, 0]], dtype=bool)
    assert np.array_equal(decode("siim_rle", "0 1 2 2", (2, 3)), expected)


@pytest.mark.parametrize("seed", range(4))
def test_siim_rle_matches_the_published_decoder_and_round_trips(seed: int):
    rng = np.random.default_rng(100 + seed)
    side = int(rng.integers(8, 128))
    mask = np.zeros((side, side), dtype=bool)
    for _ in range(3):
        r, c = (int(v) for v in rng.integers(0, side - 4, 2))
        mask[r : r + int(rng.integers(1, 20)), c : c + int(rng.integers(1, 20))] = True
    text = siim_encode(mask)
    assert np.array_equal(siim_reference(text, side, side), mask)
    assert np.array_equal(decode("siim_rle", text, (side, side)), mask)


def test_siim_empty_and_several_instances():
    for cell in ("-1", " -1", "-1 "):
        annotation = parse_annotation("siim_rle", cell)
        assert annotation.parts == ()
        assert not rasterise(annotation, (3, 3)).any()
    union = decode("siim_rle", "0 1 | 7 1|-1", (3, 3))
    assert np.flatnonzero(union.T.ravel()).tolist() == [0, 7]  # each from pixel 0


@pytest.mark.parametrize(
    ("cell", "words"),
    [
        ("1 2 3", "odd number of values"),
        ("1 x", "space-separated non-negative integers"),
        ("1 -2", "space-separated non-negative integers"),
        ("1 0", "length 0"),
        ("", "expected '-1'"),
    ],
)
def test_malformed_siim_cells_say_how(cell: str, words: str):
    with pytest.raises(AnnotationError) as caught:
        parse_annotation("siim_rle", cell)
    assert words in str(caught.value)


def test_siim_runs_past_the_image_are_refused():
    with pytest.raises(AnnotationError, match="runs end at pixel 10, past the 3x3 image"):
        decode("siim_rle", "8 2", (3, 3))


# --- polygons ------------------------------------------------------------------------------


def test_polygon_known_answer_and_pycocotools_convention():
    # The square with corners (1, 1) and (3, 3): the 2 x 2 pixels whose centres it holds.
    cell = "[[[1, 1], [3, 1], [3, 3], [1, 3]]]"
    expected = np.zeros((4, 5), dtype=bool)
    expected[1:3, 1:3] = True
    assert np.array_equal(decode("polygon", cell, (4, 5)), expected)
    # two polygons: their union, the same as pycocotools' own rasterisation and merge
    rng = np.random.default_rng(3)
    polygons = [rng.uniform(0, 30, (5, 2)).round(1) for _ in range(2)]
    merged = coco.merge(coco.frPyObjects([p.ravel().tolist() for p in polygons], 30, 40))
    reference = coco_decode(merged)
    ours = decode("polygon", json.dumps([p.tolist() for p in polygons]), (30, 40))
    assert np.array_equal(ours, reference)
    assert ours.any()


@pytest.mark.parametrize(
    ("cell", "words"),
    [
        ("[[[1, 1], [2, 2]]]", "2 point(s); a polygon needs at least 3"),
        ("[[[1, 1], [2, 2], [3, 3]]]", "zero area"),
        ("[[1, 1, 2, 2, 3, 1]]", "list of [x, y] points"),
        ('{"points": []}', "expected a JSON list of polygons"),
        ("[[[1, 1], [2, NaN], [3, 1]]]", "not a number JSON allows"),
    ],
)
def test_malformed_polygons_say_how(cell: str, words: str):
    with pytest.raises(AnnotationError) as caught:
        parse_annotation("polygon", cell)
    assert words in str(caught.value)


def test_polygons_outside_the_image_and_explicit_empty():
    with pytest.raises(AnnotationError, match="polygon 1 has points outside the 5x4"):
        decode("polygon", "[[[1, 1], [6, 1], [3, 3]]]", (4, 5))
    assert not decode("polygon", "[]", (4, 5)).any()


# --- boxes ---------------------------------------------------------------------------------


def test_box_known_answers_by_pixel_centre():
    box = decode("box", "[[1, 1, 2, 2]]", (4, 5))
    expected = np.zeros((4, 5), dtype=bool)
    expected[1:3, 1:3] = True
    assert np.array_equal(box, expected)
    # fractional: centres 1.5 in (0.6, 1.6], 2.5 not; rows: 0.5 not in (0.5, 1.5], 1.5 is
    box = decode("box", "[[0.6, 0.5, 1.0, 1.0]]", (4, 5))
    assert np.argwhere(box).tolist() == [[1, 1]]
    # a centre on the left edge is out, on the right edge in (as pycocotools decides ties)
    assert np.argwhere(decode("box", "[[0.5, 0.5, 1, 1]]", (4, 5))).tolist() == [[1, 1]]
    assert decode("box", "[[0, 0, 5, 4]]", (4, 5)).all()
    # several boxes: the union; an empty list: annotated, nothing inside
    union = decode("box", "[[0, 0, 1, 1], [4, 3, 1, 1]]", (4, 5))
    assert np.argwhere(union).tolist() == [[0, 0], [3, 4]]
    assert not decode("box", "[]", (4, 5)).any()


def test_boxes_on_a_half_pixel_grid_match_pycocotools():
    rng = np.random.default_rng(11)
    checked = 0
    while checked < 200:
        height, width = (int(v) for v in rng.integers(2, 30, 2))
        x, y = rng.integers(0, 2 * width) / 2, rng.integers(0, 2 * height) / 2
        w, h = rng.integers(1, 2 * width) / 2, rng.integers(1, 2 * height) / 2
        if x + w > width or y + h > height:
            continue
        reference = coco_decode(coco.frPyObjects(np.array([[x, y, w, h]]), height, width))
        ours = decode("box", json.dumps([[x, y, w, h]]), (height, width))
        assert np.array_equal(ours, reference[..., 0]), (x, y, w, h)
        checked += 1


@pytest.mark.parametrize(
    ("cell", "words"),
    [
        ("[[1, 1, 0, 2]]", "width and height must be > 0"),
        ("[[1, 1, 2, -1]]", "width and height must be > 0"),
        ("[[1, 1, 2]]", "expected [x, y, w, h]"),
        ("[[1, true, 2, 2]]", "expected [x, y, w, h]"),
        ("[1, 1, 2, 2]", "box 1: expected [x, y, w, h]"),
        ("[[1, 1, 2, 2]", "not valid JSON"),
    ],
)
def test_malformed_boxes_say_how(cell: str, words: str):
    with pytest.raises(AnnotationError) as caught:
        parse_annotation("box", cell)
    assert words in str(caught.value)


@pytest.mark.parametrize("cell", ["[[4, 0, 2, 1]]", "[[-1, 0, 2, 1]]", "[[0, 3, 1, 2]]"])
def test_boxes_outside_the_image_are_refused(cell: str):
    with pytest.raises(AnnotationError, match=r"outside the 5x4 \(width x height\) image"):
        decode("box", cell, (4, 5))


# --- mask files and columns ----------------------------------------------------------------


def test_masks_at_an_integer_fraction_of_the_image_are_upsampled():
    small = np.array([[1, 0], [0, 1]], dtype=bool)
    big = fit_mask(small, (4, 4))
    assert big is not None
    assert big.tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]
    assert fit_mask(small, (2, 2)) is small
    assert fit_mask(np.ones((2, 3), bool), (4, 6)) is not None
    assert fit_mask(small, (4, 6)) is None  # another aspect ratio
    assert fit_mask(small, (5, 5)) is None  # not a multiple
    assert fit_mask(np.ones((4, 4), bool), (2, 2)) is None  # larger than the image


def test_region_columns_by_prefix():
    assert region_column("mask_spine") == ("mask", "spine")
    assert region_column("rle_left_lung") == ("rle", "left_lung")
    assert region_column("siim_rle_pneumothorax") == ("siim_rle", "pneumothorax")
    assert region_column("polygon_nodule") == ("polygon", "nodule")
    assert region_column("box_cardiomegaly") == ("box", "cardiomegaly")
    assert region_column("age") is None
    assert Annotation("box", ()).parts == ()
