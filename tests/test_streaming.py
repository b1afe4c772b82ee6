"""Split arrays stream from scratch files: same values and indexing as the in-memory tensors."""

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import PrivateAttr

from xaibench.data.arrays import (
    ImageRows,
    ImageWriter,
    LazyRows,
    MappedRows,
    MaskRows,
    SplitArrays,
    materialize,
    read_ahead,
)
from xaibench.data.base import Dataset, Sample
from xaibench.data.phantom import PhantomDataset
from xaibench.errors import XaibenchError
from xaibench.metrics.binarize import align_mask


def eager(dataset: Dataset, indices) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """What the split held before streaming: every image and mask stacked in memory."""
    samples = [dataset[int(i)] for i in indices]
    images = torch.stack([s.image.float() for s in samples])
    names = [r for r in samples[0].regions if all(r in s.regions for s in samples)]
    return images, {r: torch.stack([s.regions[r].bool() for s in samples]) for r in names}


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal dtype, shape and bits (so -0.0 and 0.0 differ, and NaN equals itself)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype == torch.float32:
        return torch.equal(a.contiguous().view(torch.int32), b.contiguous().view(torch.int32))
    return torch.equal(a, b)


class ArrayDataset(Dataset):
    """Images and masks given as arrays; ``drop`` removes a region from one sample."""

    _images: np.ndarray = PrivateAttr()
    _masks: dict[str, np.ndarray] = PrivateAttr()
    _drop: tuple[int, str] | None = PrivateAttr(default=None)
    _extra: tuple[int, str] | None = PrivateAttr(default=None)

    @classmethod
    def of(cls, images, masks, drop=None, extra=None) -> "ArrayDataset":
        ds = cls()
        ds._images, ds._masks, ds._drop, ds._extra = images, masks, drop, extra
        return ds

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index: int) -> Sample:
        regions = {name: torch.from_numpy(m[index]) for name, m in self._masks.items()}
        if self._drop is not None and self._drop[0] == index:
            del regions[self._drop[1]]
        if self._extra is not None and self._extra[0] == index:
            regions[self._extra[1]] = torch.ones(self._images.shape[1:], dtype=torch.bool)
        image = torch.from_numpy(self._images[index]).unsqueeze(0)
        return Sample(f"s{index}", f"p{index}", image, regions, {})

    def table(self) -> pd.DataFrame:
        n = len(self)
        return pd.DataFrame({"sample_id": [f"s{i}" for i in range(n)], "patient_id": range(n)})

    def fingerprint(self) -> str:
        return "arrays"


def random_dataset(n=12, h=5, w=7, seed=0, **kwargs) -> ArrayDataset:
    rng = np.random.default_rng(seed)
    images = rng.random((n, h, w), dtype=np.float32)
    masks = {name: rng.random((n, h, w)) > 0.5 for name in ("a", "b", "c")}
    return ArrayDataset.of(images, masks, **kwargs)


@pytest.fixture(scope="module")
def phantom() -> tuple[SplitArrays, torch.Tensor, dict[str, torch.Tensor]]:
    ds = PhantomDataset(n_images=40, image_size=32)
    indices = list(range(3, 40, 2))
    split = materialize(ds, "test", indices, np.zeros(len(indices)))
    images, masks = eager(ds, indices)
    return split, images, masks


KEYS = [
    0,
    5,
    -1,
    np.int64(2),
    torch.tensor(4),
    slice(None),
    slice(2, 9),
    slice(None, None, 3),
    slice(-4, None),
    slice(15, 3, 2),
    slice(30, 40),
    [4, 1, 1, 7],
    np.array([3, -2, 0]),
    torch.randperm(19, generator=torch.Generator().manual_seed(0))[:8],
    torch.arange(19) % 3 == 0,
    [],
    (slice(None), None),
    ([2, 6, 9], 0),
    (3, 0, slice(4, 9)),
    (slice(1, 5), Ellipsis, 0),
    (),
]


@pytest.mark.parametrize("key", KEYS, ids=repr)
def test_phantom_split_reads_what_the_tensors_held(phantom, key):
    split, images, masks = phantom
    assert isinstance(split.images, ImageRows)
    assert split.images.stored_dtype == np.uint16  # the phantom's 16-bit codes, 4 bytes -> 2
    assert same(split.images[key], images[key])
    assert list(split.regions) == list(PhantomDataset.region_names)
    for name, mask in masks.items():
        assert isinstance(split.regions[name], MaskRows)
        assert same(split.regions[name][key], mask[key])


def test_shape_len_and_dtype_match_the_tensors(phantom):
    split, images, masks = phantom
    assert split.images.shape == images.shape
    assert len(split.images) == len(images) == len(split)
    assert split.images.dtype == torch.float32
    assert split.images.ndim == 4
    assert split.regions["bone"].shape == masks["bone"].shape
    assert split.regions["bone"].dtype == torch.bool


def test_float_images_that_are_not_16_bit_codes_are_kept_bit_for_bit():
    # The first images are 16-bit codes (stored as such), then one is not: the file switches to
    # float32 and what was written is converted; -0.0 is kept (it is 0.0 in value only).
    ds = random_dataset(n=10)
    codes = np.random.default_rng(1).integers(0, 65536, size=(6, 5, 7), dtype=np.uint16)
    ds._images[:6] = codes.astype(np.float32) / np.float32(65535)
    ds._images[8, 0, 0] = -0.0
    split = materialize(ds, "train", range(10), np.zeros(10))
    images, masks = eager(ds, range(10))
    assert split.images.stored_dtype == np.float32
    assert same(split.images[:], images)
    assert same(split.images[[8]], images[[8]])
    assert torch.signbit(split.images[8, 0, 0, 0])
    for name in "abc":  # 35 pixels: the bit-packed rows end mid-byte
        assert same(split.regions[name][:], masks[name])


def test_16_bit_images_are_stored_as_codes():
    ds = random_dataset(n=6)
    ds._images[:] = np.round(ds._images * 255).astype(np.float32) / np.float32(255)  # 8-bit
    split = materialize(ds, "train", range(6), np.zeros(6))
    assert split.images.stored_dtype == np.uint16
    assert same(split.images[:], eager(ds, range(6))[0])


def test_regions_every_sample_carries_are_kept_in_first_sample_order():
    ds = random_dataset(drop=(4, "b"), extra=(2, "z"))
    split = materialize(ds, "val", [0, 2, 4, 6], np.zeros(4))
    assert list(split.regions) == ["a", "c"]
    _, masks = eager(ds, [0, 2, 4, 6])
    assert list(masks) == ["a", "c"]
    # a region missing only outside the split stays
    assert list(materialize(ds, "val", [0, 6], np.zeros(2)).regions) == ["a", "b", "c"]


def test_checks_name_the_sample():
    ds = random_dataset(n=4)
    ds._images[2, 1, 1] = 1.5
    with pytest.raises(XaibenchError, match=r"sample s2: image values must be finite"):
        materialize(ds, "train", range(4), np.zeros(4))
    ds = random_dataset(n=4)
    ds._masks["a"] = ds._masks["a"][:, :4]
    with pytest.raises(XaibenchError, match=r"sample s0: mask 'a' is \(4, 7\)"):
        materialize(ds, "train", range(4), np.zeros(4))
    with pytest.raises(XaibenchError, match="the train split is empty"):
        materialize(ds, "train", [], np.zeros(0))


@pytest.mark.parametrize(
    ("key", "error"),
    [
        (19, IndexError),
        (-20, IndexError),
        ([0, 19], IndexError),
        (torch.ones(5, dtype=torch.bool), IndexError),
        (slice(None, None, -1), ValueError),
        (torch.zeros(2, 2, dtype=torch.long), TypeError),
        (torch.tensor([0.5]), TypeError),
        (None, TypeError),
        (Ellipsis, TypeError),
        (True, TypeError),
        ("0", TypeError),
    ],
    ids=repr,
)
def test_bad_indices_fail_like_tensors_or_say_what_is_unsupported(phantom, key, error):
    with pytest.raises(error):
        phantom[0].images[key]


def test_mapped_rows_apply_a_row_wise_function_per_read(phantom):
    split, _, masks = phantom
    outside = MappedRows(split.regions["bone"], torch.logical_not)
    assert same(outside[2:7], ~masks["bone"][2:7])
    assert outside.shape == masks["bone"].shape
    small = MappedRows(split.regions["ribs"], lambda m: align_mask(m, (16, 16)), row_shape=(16, 16))
    assert same(small[[0, 5, 5]], align_mask(masks["ribs"], (16, 16))[[0, 5, 5]])
    assert small.shape == (len(split), 16, 16)
    over_tensor = MappedRows(masks["heart"], torch.logical_not)  # a tensor base works too
    assert same(over_tensor[:, 3], ~masks["heart"][:, 3])


def test_image_writer_appends_batches():
    rng = np.random.default_rng(0)
    batches = [rng.random((n, 6, 6), dtype=np.float32) for n in (3, 1, 4)]
    writer = ImageWriter((6, 6))
    for b in batches:
        writer.append(b)
    rows = writer.finish()
    assert writer.nbytes == 8 * 36 * 4
    assert same(rows[:], torch.from_numpy(np.concatenate(batches)).unsqueeze(1))


def test_lazy_rows_do_not_pickle(phantom):
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(phantom[0].images)


def test_scratch_folder_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("XAIBENCH_SCRATCH_DIR", str(tmp_path))
    rows = ImageWriter((2, 2))
    rows.append(np.zeros((1, 2, 2), dtype=np.float32))
    assert isinstance(rows.finish(), LazyRows)
    monkeypatch.setenv("XAIBENCH_SCRATCH_DIR", str(tmp_path / "missing"))
    with pytest.raises(XaibenchError, match="XAIBENCH_SCRATCH_DIR"):
        ImageWriter((2, 2))


def test_perturbed_images_kept_on_disk_give_the_same_predictions(components, monkeypatch):
    """Two cells share perturbed test images through scratch disk, or recompute them: the same
    predictions either way (and as with no sharing at all)."""
    import xaibench.engine.runner as runner_module
    from xaibench.config import resolve_config
    from xaibench.engine.grid import build_cells
    from xaibench.engine.runner import CellRunner, prepare_data
    from xaibench.progress import NullProgress

    config = resolve_config(
        components.tasks.create("osteoporosis").defaults(),
        {
            "dataset": {
                "name": "phantom",
                "options": {"n_images": 60, "image_size": 32, "class_shares": [0.4, 0.3, 0.3]},
            },
            "backbones": [{"name": "test_resnet.random", "options": {"img_size": 32}}],
            "strategies": ["linear_probe", "full"],
            "saliency": ["saliency"],
            "perturbations": ["mean", "zero"],
            "perturb_regions": ["bone"],
            "complement_regions": ["bone"],
            "metrics": ["auc", "delta_region"],
            "train": {"epochs": 1, "batch_size": 16, "eval_batch_size": 5},
            "max_explain_images": 4,
            "sanity": {"images": 0},
            "cache": False,
        },
    )
    data = prepare_data(config, components, NullProgress())

    def predictions(budget: int) -> tuple[pd.DataFrame, CellRunner]:
        monkeypatch.setattr(runner_module, "PERTURBED_CACHE_BYTES", budget)
        runner = CellRunner(config, components, data)
        results = [runner(cell) for cell in build_cells(config)]
        assert all(r.status == "ok" for r in results), [r.error for r in results]
        return pd.concat([f for r in results for f in r.predictions]), runner

    shared, runner = predictions(2**40)
    # 2 perturbations x (bone, outside bone, 1 control draw of bone): controls are cached too
    assert len(runner._perturbed) == 6
    assert all(isinstance(rows, ImageRows) for rows in runner._perturbed.values())
    recomputed, runner = predictions(0)
    assert not runner._perturbed
    pd.testing.assert_frame_equal(shared, recomputed)


def test_read_ahead_yields_each_batch_as_indexing_would(phantom):
    split, images, _ = phantom
    keys = [slice(0, 7), torch.tensor([9, 2, 2, 5]), slice(7, 19), [0]]
    got = list(read_ahead(split.images, keys))
    assert len(got) == len(keys)
    for batch, key in zip(got, keys, strict=True):
        assert same(batch, images[key])
    in_memory = list(read_ahead(images, keys))  # a tensor is indexed directly, no thread
    assert all(same(a, images[k]) for a, k in zip(in_memory, keys, strict=True))
    assert list(read_ahead(split.images, [])) == []


def test_read_ahead_raises_a_read_error_when_its_batch_is_reached(phantom):
    split, images, _ = phantom
    batches = read_ahead(split.images, [slice(0, 4), [99], slice(4, 8)])
    assert same(next(batches), images[0:4])  # the failing read ahead does not raise early
    with pytest.raises(IndexError):
        next(batches)


def test_read_ahead_works_in_a_forked_child_after_the_parent_used_it(phantom):
    # The parent's read thread does not exist in a forked child (a worker process): the child
    # must start its own instead of waiting forever on the parent's.
    import multiprocessing

    split, images, _ = phantom
    keys = [slice(0, 5), slice(5, 10), slice(10, 19)]

    def read_all() -> bool:
        got = read_ahead(split.images, keys)
        return all(same(a, images[k]) for a, k in zip(got, keys, strict=True))

    assert read_all()

    def child() -> None:
        raise SystemExit(0 if read_all() else 3)

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join(timeout=60)
    if process.is_alive():
        process.kill()
    assert process.exitcode == 0
