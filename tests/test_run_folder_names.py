"""File and folder names made from labels: one label, one name (issue 16, item 10).

Labels are free text (``label: res/a``), file names are not. Sanitising used to map ``res/a``
and ``res_a`` to the same gallery file, so one cell's images overwrote the other's, and a label
``.tmp-x`` made a finished checkpoint look like a half-written one, deleted on every resume.
"""

import itertools
import json
import random
import re
from pathlib import Path

import numpy as np
import pytest

from xaibench.config import ComponentRef
from xaibench.engine.checkpoints import (
    CELLS_DIR,
    checkpoint_galleries,
    load_cell,
    remove_partial,
    save_cell,
)
from xaibench.engine.grid import Cell
from xaibench.engine.results import write_run
from xaibench.engine.runner import CellResult, Gallery
from xaibench.report.gallery import gallery_filename

KEY = "k" * 64


def _cell(backbone: str, strategy: str = "linear_probe", seed: int = 0) -> Cell:
    return Cell(
        ComponentRef(name="test_vit.random", label=backbone), ComponentRef(name=strategy), seed
    )


def _result(cell: Cell, fill: float) -> CellResult:
    images = np.full((2, 8, 8), fill, dtype=np.float32)
    result = CellResult(cell)
    result.galleries = [
        Gallery("saliency", "best", ("s1", "s2"), (0.1, 0.2), "iou_region", "bone", images,
                images, None),
    ]  # fmt: skip
    return result


def test_plain_labels_keep_their_readable_names():
    assert (
        gallery_filename("test_vit.random", "linear_probe", 0, "saliency__best")
        == "test_vit.random__linear_probe__seed0__saliency__best.png"
    )
    assert (
        gallery_filename("dinov2_vitb14.lvd142m", "lora", 12, "integrated_gradients__worst")
        == "dinov2_vitb14.lvd142m__lora__seed12__integrated_gradients__worst.png"
    )


LABELS = [
    "res/a", "res_a", "res a", "res:a", "res\\a", "a_b", "a/b", "a__b", "a", "b", "b__c", "c",
    "_a", "a_", "x" * 300, "x" * 301, "hf-hub:org/model", "hf-hub_org_model", "é", "_", ".", "..",
    ".tmp-x", "CON", "res_a___0123456789ab",
]  # fmt: skip


def test_gallery_names_are_distinct_for_distinct_labels():
    seen: dict[str, tuple] = {}
    for backbone, strategy in itertools.product(LABELS, ["linear_probe", "b__c", "c"]):
        for method in ("saliency__best", "saliency_best"):
            name = gallery_filename(backbone, strategy, 0, method)
            assert re.fullmatch(r"[A-Za-z0-9._-]+\.png", name), name
            assert len(name.encode()) <= 255, name
            assert name not in seen or seen[name] == (backbone, strategy, method), (
                name,
                seen.get(name),
            )
            seen[name] = (backbone, strategy, method)


def test_no_label_reproduces_another_labels_hashed_name():
    """Feed a sanitised name's parts back in as labels: they must not make the same name."""
    rng = random.Random(0)
    alphabet = "ab_/.-: "
    for _ in range(2000):
        parts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6))) for _ in range(3)]
        name = gallery_filename(parts[0], parts[1], 0, f"{parts[2]}__best")
        stem = name.removesuffix(".png")
        pieces = stem.split("__")
        if len(pieces) >= 5:  # try the name's own pieces as labels
            again = gallery_filename(pieces[0], pieces[1], 0, "__".join(pieces[3:]))
            if (pieces[0], pieces[1], "__".join(pieces[3:])) != (
                parts[0],
                parts[1],
                f"{parts[2]}__best",
            ):
                assert again != name, (parts, pieces)


def test_two_cells_whose_labels_sanitise_alike_keep_both_galleries(tmp_path: Path):
    run = tmp_path / "run"
    cells = [_cell("res/a"), _cell("res_a")]
    galleries = []
    for i, cell in enumerate(cells):
        key = str(i) * 64  # every cell has its own key (a hash that covers its labels)
        save_cell(run, key, _result(cell, fill=0.2 + 0.5 * i))
        galleries += checkpoint_galleries(run, cell, key)
    write_run(run, {"config": {}, "environment": {}}, [], galleries)
    index = json.loads((run / "gallery" / "index.json").read_text())
    files = [entry["file"] for entry in index]
    assert len(set(files)) == 2, files
    pngs = [(run / "gallery" / f).read_bytes() for f in files]
    assert pngs[0] != pngs[1]  # each cell's own picture


def test_a_label_that_looks_like_a_temporary_name_survives_a_resume(tmp_path: Path):
    run = tmp_path / "run"
    for label in (".tmp-x", ".xaibench-tmp-1-x", "-rf"):
        cell = _cell(label)
        folder = save_cell(run, KEY, _result(cell, fill=0.5))
        assert not folder.name.startswith((".", "-")), folder.name
        remove_partial(run)  # what every resume does first
        assert load_cell(run, cell, KEY) is not None, label
    assert not [p for p in (run / CELLS_DIR).iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("label", ["x" * 300, "é" * 200])
def test_a_long_label_still_makes_a_checkpoint(tmp_path: Path, label: str):
    cell = _cell(label)
    folder = save_cell(tmp_path / "run", KEY, _result(cell, fill=0.5))
    assert len(folder.name.encode()) <= 255
    assert load_cell(tmp_path / "run", cell, KEY) is not None
    assert checkpoint_galleries(tmp_path / "run", cell, KEY)[0].path.is_file()
