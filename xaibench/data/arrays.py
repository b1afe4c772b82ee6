"""The images and masks of one split, written once to scratch files and read back per batch.

Every cell of a grid trains and tests on the same images, so a split is decoded (or rendered)
once per run and shared. Holding it in memory would cost ``N x H x W`` floats plus one bool
mask per region and image: gigabytes at a few thousand 256 px images, growing with the cohort.
Instead :func:`materialize` streams the samples into **scratch files** and :class:`SplitArrays`
hands out lazy row arrays (:class:`LazyRows`) that read only the rows a batch asks for, so a
run's memory does not grow with the number of images (only its per-image score tables do).

* **Where.** Unnamed temporary files (:func:`tempfile.TemporaryFile`) in ``$XAIBENCH_SCRATCH_DIR``
  or else the system's temporary folder (``$TMPDIR``): nothing is left behind however the
  process ends, and nothing is shared between processes (a remote worker builds its own).
* **How they are read.** Positioned reads into a fresh buffer per batch, not a memory map: the
  pages of a mapped file count towards the process's resident memory for as long as they stay
  mapped, and a run touches every image every epoch. Read pages sit in the kernel's page cache,
  which the kernel reclaims under pressure.
* **Images** are stored as ``uint16`` codes when every pixel of the split is exactly
  ``code / 65535`` in float32 (the phantom's 16-bit output, 8- and 16-bit PNGs), and as float32
  otherwise; either way a read returns the very float32 values the dataset produced, bit for
  bit (the encoding is checked by decoding it).
* **Masks** are bit-packed, one file per region: 1/8 byte per pixel.

Indexing follows tensors along the first dimension (``rows[3]``, ``rows[a:b]``,
``rows[index_tensor]``, ``rows[index_list, 0]``, ``len(rows)``, ``rows.shape``) and returns CPU
tensors; see :class:`LazyRows`.
"""

from __future__ import annotations

import operator
import os
import tempfile
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import torch

from xaibench.data.base import Dataset
from xaibench.errors import XaibenchError
from xaibench.progress import NullProgress, Progress

#: Environment variable naming the folder for scratch files (default: the temporary folder).
SCRATCH_ENV = "XAIBENCH_SCRATCH_DIR"

#: Bytes buffered before a scratch file is written to (a few images' worth of rows).
_WRITE_BUFFER_BYTES = 8 * 1024**2

#: The full-scale value of 16-bit image codes.
_U16_SCALE = np.float32(65535.0)


def scratch_dir() -> Path | None:
    """The folder for scratch files: ``$XAIBENCH_SCRATCH_DIR``, else None (the temp folder).

    Raises:
        XaibenchError: ``$XAIBENCH_SCRATCH_DIR`` names something that is not a folder.
    """
    value = os.environ.get(SCRATCH_ENV)
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise XaibenchError(f"{SCRATCH_ENV}={value!r} is not a folder")
    return path


class _RowFile:
    """Fixed-size rows of one numpy dtype, appended to an unnamed scratch file.

    Reads are positioned (``seek`` + ``readinto`` under a lock, portable and safe for threads)
    straight into the output array; consecutive rows are read with one call.

    Args:
        row_shape: Shape of one row.
        dtype: Numpy dtype of the stored values.
    """

    def __init__(self, row_shape: tuple[int, ...], dtype: np.dtype[Any] | type) -> None:
        self.row_shape = tuple(int(d) for d in row_shape)
        self.dtype = np.dtype(dtype)
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        self.rows = 0
        # Lives as long as this object: closed, hence deleted, when it is collected.
        self._file = tempfile.TemporaryFile(dir=scratch_dir(), buffering=0)  # noqa: SIM115
        weakref.finalize(self, self._file.close)
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError(
            "split arrays live in this process's scratch files and cannot be pickled; "
            "a worker process loads its own splits (xaibench.engine.runner.prepare_data)"
        )

    def append(self, rows: np.ndarray) -> None:
        """Append ``rows`` (``[K, *row_shape]``, converted to the file's dtype)."""
        block = np.ascontiguousarray(rows, dtype=self.dtype)
        if block.shape[1:] != self.row_shape:
            raise ValueError(f"rows of shape {block.shape[1:]} in a file of {self.row_shape}")
        self._pending.append(block.tobytes())
        self._pending_bytes += block.nbytes
        self.rows += block.shape[0]
        if self._pending_bytes >= _WRITE_BUFFER_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write buffered rows to the file."""
        if not self._pending:
            return
        data = memoryview(b"".join(self._pending))
        self._pending, self._pending_bytes = [], 0
        with self._lock:
            self._file.seek(0, os.SEEK_END)
            while data:
                written = self._file.write(data)
                if not written:
                    raise OSError("could not write to a scratch file")
                data = data[written:]

    def read(self, index: np.ndarray) -> np.ndarray:
        """Rows ``index`` (non-negative, in range, any order, repeats allowed), as a new array."""
        self.flush()
        out = np.empty((len(index), *self.row_shape), dtype=self.dtype)
        if not len(index):
            return out
        view = out.data.cast("B")
        # Runs of consecutive rows are one read each (a slice is a single run).
        starts = np.concatenate([[0], np.flatnonzero(np.diff(index) != 1) + 1, [len(index)]])
        with self._lock:
            for a, b in zip(starts[:-1].tolist(), starts[1:].tolist(), strict=True):
                self._file.seek(int(index[a]) * self.row_bytes)
                target = view[a * self.row_bytes : b * self.row_bytes]
                while target:
                    got = self._file.readinto(target)
                    if not got:
                        raise OSError("a scratch file ended early")
                    target = target[got:]
        return out


def _row_index(key: Any, n: int) -> tuple[np.ndarray, bool]:
    """Row numbers (int64, non-negative) for a first-dimension index, and whether it is scalar.

    Raises:
        IndexError: An index out of range, or a boolean index of the wrong length.
        TypeError: An index type tensors accept but these rows do not (several dimensions of
            indices, ``None``, ``...``, a bare boolean).
    """
    if isinstance(key, torch.Tensor | np.ndarray):
        array = key.detach().cpu().numpy() if isinstance(key, torch.Tensor) else key
        if array.ndim == 0 and array.dtype != np.bool_:
            return _row_index(int(array), n)
        if array.ndim != 1:
            raise TypeError(f"row index must be one-dimensional, got shape {array.shape}")
        if array.dtype == np.bool_:
            if len(array) != n:
                raise IndexError(f"boolean index of length {len(array)} for {n} rows")
            return np.flatnonzero(array).astype(np.int64), False
        if not np.issubdtype(array.dtype, np.integer):
            raise TypeError(f"row index must hold integers, got {array.dtype}")
        index = array.astype(np.int64)
    elif isinstance(key, slice):
        if key.step is not None and operator.index(key.step) <= 0:
            raise ValueError("step must be greater than zero")  # as for tensors
        return np.arange(*key.indices(n), dtype=np.int64), False
    elif isinstance(key, list | range):
        array = np.asarray(key)
        if len(key) and not np.issubdtype(array.dtype, np.integer):
            return _row_index(array, n)  # booleans, or the TypeError for anything else
        index = array.astype(np.int64).reshape(-1)
    elif isinstance(key, bool | np.bool_) or key is None or key is Ellipsis:
        raise TypeError(f"unsupported row index {key!r}")
    else:
        try:
            i = operator.index(key)
        except TypeError:
            raise TypeError(f"unsupported row index of type {type(key).__name__}") from None
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of bounds for dimension 0 with size {n}")
        return np.asarray([i % n], dtype=np.int64), True
    bad = (index < -n) | (index >= n)
    if bad.any():
        raise IndexError(
            f"index {int(index[bad][0])} is out of bounds for dimension 0 with size {n}"
        )
    return np.where(index < 0, index + n, index), False


class LazyRows(ABC):
    """A ``[N, ...]`` array whose rows are produced on demand, indexed like a tensor.

    ``rows[key]`` and ``rows[key, *rest]`` return CPU tensors equal to what the same index on
    the equivalent tensor returns. ``key`` selects rows: an int, a slice, a 1-D integer or
    boolean tensor, array or list; ``rest`` is applied to the selected rows as a tensor index.
    Only the selected rows are read.
    """

    @property
    @abstractmethod
    def shape(self) -> torch.Size:
        """Shape of the whole array, as the equivalent tensor's ``shape``."""

    @property
    @abstractmethod
    def dtype(self) -> torch.dtype:
        """Dtype of the tensors returned."""

    @abstractmethod
    def rows(self, index: np.ndarray) -> torch.Tensor:
        """Rows ``index`` (int64, non-negative, in range) stacked along a new first dimension."""

    def __len__(self) -> int:
        return int(self.shape[0])

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    def __getitem__(self, key: Any) -> torch.Tensor:
        rest: tuple[Any, ...] = ()
        if isinstance(key, tuple):
            if not key:
                key = slice(None)
            else:
                key, rest = key[0], key[1:]
        index, scalar = _row_index(key, len(self))
        out = self.rows(index)
        if scalar:
            out = out[0]
            return out[rest] if rest else out
        return out[(slice(None), *rest)] if rest else out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={tuple(self.shape)}, dtype={self.dtype})"


#: What a split's images and masks are: a tensor (built in memory) or rows read on demand.
Rows: TypeAlias = torch.Tensor | LazyRows


def _decode_u16(codes: np.ndarray) -> np.ndarray:
    """The float32 images that 16-bit ``codes`` stand for (``code / 65535``).

    Divided in place: one float32 array per batch instead of two (the same values).
    """
    images = codes.astype(np.float32)
    images /= _U16_SCALE
    return images


def _as_u16(images: np.ndarray) -> np.ndarray | None:
    """16-bit codes that decode to exactly ``images`` (float32, bit for bit), or None."""
    if not np.all((images >= 0) & (images <= 1)):  # also False for NaN
        return None
    codes = np.rint(images.astype(np.float64) * 65535.0).astype(np.uint16)
    same = np.array_equal(_decode_u16(codes).view(np.uint32), images.view(np.uint32))
    return codes if same else None


class ImageRows(LazyRows):
    """Single-channel float32 images ``[N, 1, H, W]`` in a scratch file (uint16 or float32)."""

    def __init__(self, file: _RowFile) -> None:
        self._file = file

    @property
    def shape(self) -> torch.Size:
        """``[N, 1, H, W]``."""
        return torch.Size((self._file.rows, 1, *self._file.row_shape))

    @property
    def dtype(self) -> torch.dtype:
        """Always float32."""
        return torch.float32

    @property
    def stored_dtype(self) -> np.dtype[Any]:
        """How the pixels are stored on disk: ``uint16`` codes or ``float32``."""
        return self._file.dtype

    def rows(self, index: np.ndarray) -> torch.Tensor:
        """Images ``index`` as float32 ``[K, 1, H, W]``."""
        raw = self._file.read(index)
        values = _decode_u16(raw) if raw.dtype == np.uint16 else raw
        return torch.from_numpy(values).unsqueeze(1)


class ImageWriter:
    """Streams float32 images ``[K, H, W]`` into an :class:`ImageRows`.

    It stores 16-bit codes while every image so far is exactly representable by them, and
    converts what it wrote to float32 the first time one is not (once per split at most).

    Args:
        size: ``(H, W)`` of every image.
    """

    def __init__(self, size: tuple[int, int]) -> None:
        self._file = _RowFile(size, np.uint16)

    def append(self, images: np.ndarray) -> None:
        """Append float32 images ``[K, H, W]``."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        if self._file.dtype == np.uint16:
            codes = _as_u16(images)
            if codes is not None:
                self._file.append(codes)
                return
            self._to_float32()
        self._file.append(images)

    def _to_float32(self) -> None:
        old = self._file
        new = _RowFile(old.row_shape, np.float32)
        block = max(1, _WRITE_BUFFER_BYTES // max(1, new.row_bytes))
        for start in range(0, old.rows, block):
            new.append(_decode_u16(old.read(np.arange(start, min(start + block, old.rows)))))
        self._file = new

    @property
    def nbytes(self) -> int:
        """Bytes written so far."""
        return self._file.rows * self._file.row_bytes

    def finish(self) -> ImageRows:
        """The images written, readable."""
        self._file.flush()
        return ImageRows(self._file)


class MaskRows(LazyRows):
    """Boolean masks ``[N, H, W]`` bit-packed in a scratch file (one bit per pixel)."""

    def __init__(self, file: _RowFile, size: tuple[int, int]) -> None:
        self._file = file
        self._size = size

    @property
    def shape(self) -> torch.Size:
        """``[N, H, W]``."""
        return torch.Size((self._file.rows, *self._size))

    @property
    def dtype(self) -> torch.dtype:
        """Always bool."""
        return torch.bool

    def rows(self, index: np.ndarray) -> torch.Tensor:
        """Masks ``index`` as bool ``[K, H, W]``."""
        h, w = self._size
        bits = np.unpackbits(self._file.read(index), axis=1, count=h * w)
        return torch.from_numpy(bits.view(np.bool_).reshape(len(index), h, w))


def _mask_file(size: tuple[int, int]) -> _RowFile:
    return _RowFile((-(-size[0] * size[1] // 8),), np.uint8)


class MappedRows(LazyRows):
    """Rows of another array passed through a row-wise function, computed per access.

    ``fn`` must treat every row on its own (nearest-neighbour resizing, negation), so that
    applying it to a batch equals applying it to the whole array and then selecting the batch.

    Args:
        base: The array.
        fn: Maps a ``[K, ...]`` tensor of rows to ``[K, *row_shape]``.
        row_shape: Shape of one output row (default: one row of ``base``).
        dtype: Dtype of the output (default: ``base``'s).
    """

    def __init__(
        self,
        base: Rows,
        fn: Callable[[torch.Tensor], torch.Tensor],
        row_shape: Sequence[int] | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        self._base = base
        self._fn = fn
        self._row_shape = tuple(base.shape[1:] if row_shape is None else row_shape)
        self._dtype = base.dtype if dtype is None else dtype

    @property
    def shape(self) -> torch.Size:
        """``[N, *row_shape]``."""
        return torch.Size((len(self._base), *self._row_shape))

    @property
    def dtype(self) -> torch.dtype:
        """The output dtype."""
        return self._dtype

    def rows(self, index: np.ndarray) -> torch.Tensor:
        """``fn`` of the base's rows ``index``."""
        return self._fn(self._base[torch.from_numpy(index)])


@dataclass(frozen=True)
class SplitArrays:
    """Images, labels and masks of one split.

    Attributes:
        name: ``train``, ``val`` or ``test``.
        images: ``[N, 1, H, W]`` float32 raw intensities in [0, 1]: read on demand from scratch
            files when built by :func:`materialize`, or a tensor.
        labels: ``[N]`` int64 class indices.
        sample_ids: One non-identifying id per image.
        regions: Region name -> ``[N, H, W]`` bool masks (lazy or tensors, like ``images``).
    """

    name: str
    images: Rows
    labels: torch.Tensor
    sample_ids: tuple[str, ...]
    regions: dict[str, Rows]

    def __len__(self) -> int:
        return int(self.labels.shape[0])


class _SplitWriter:
    """Streams samples of one split into scratch files (see :func:`materialize`).

    The regions kept are those of the first sample that every later sample also carries.
    """

    def __init__(self, size: tuple[int, int], regions: Sequence[str]) -> None:
        self.size = size
        self.images = ImageWriter(size)
        self.masks: dict[str, _RowFile] = {r: _mask_file(size) for r in regions}
        self.incomplete: set[str] = set()

    def add(self, image: np.ndarray, regions: Mapping[str, torch.Tensor]) -> None:
        self.images.append(image[None])
        for region, file in self.masks.items():
            if region in self.incomplete:
                continue
            if region not in regions:
                self.incomplete.add(region)
                continue
            mask = regions[region].bool().cpu().numpy()
            file.append(np.packbits(mask.reshape(1, -1), axis=1))

    def finish(self) -> tuple[ImageRows, dict[str, Rows]]:
        regions: dict[str, Rows] = {}
        for region, file in self.masks.items():
            if region not in self.incomplete:
                file.flush()
                regions[region] = MaskRows(file, self.size)
        return self.images.finish(), regions


def materialize(
    dataset: Dataset,
    name: str,
    indices: Sequence[int] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    progress: Progress | None = None,
) -> SplitArrays:
    """Check the samples at ``indices`` and stream them into scratch files, one at a time.

    Memory stays at one sample (plus the dataset's own buffers) whatever the split's size; the
    returned arrays read rows back on demand (see the module docstring). Masks are kept for
    the regions every sample of the split carries.

    Raises:
        XaibenchError: Images of different sizes, masks that do not match their image, or an
            image outside [0, 1]; the message names the sample.
    """
    progress = progress or NullProgress()
    idx = [int(i) for i in indices]
    if not idx:
        raise XaibenchError(f"the {name} split is empty; use more images or other split fractions")
    writer: _SplitWriter | None = None
    sample_ids: list[str] = []
    shape: tuple[int, ...] | None = None
    for i in progress.track(idx, total=len(idx), description=f"loading {name} images"):
        sample = dataset[i]
        image = sample.image
        if image.ndim != 3 or image.shape[0] != 1:
            raise XaibenchError(
                f"sample {sample.sample_id}: image must be [1, H, W], got {tuple(image.shape)}"
            )
        if shape is None:
            shape = tuple(image.shape)
        elif tuple(image.shape) != shape:
            raise XaibenchError(
                f"sample {sample.sample_id}: image is {tuple(image.shape)}, "
                f"but earlier ones are {shape}"
            )
        if not torch.isfinite(image).all() or image.min() < 0 or image.max() > 1:
            raise XaibenchError(
                f"sample {sample.sample_id}: image values must be finite and in [0, 1]"
            )
        for region, mask in sample.regions.items():
            if tuple(mask.shape) != tuple(image.shape[1:]):
                raise XaibenchError(
                    f"sample {sample.sample_id}: mask {region!r} is {tuple(mask.shape)}, "
                    f"image is {tuple(image.shape[1:])}"
                )
        if writer is None:
            writer = _SplitWriter((int(shape[1]), int(shape[2])), list(sample.regions))
        writer.add(image[0].float().cpu().numpy(), sample.regions)
        sample_ids.append(sample.sample_id)
    assert writer is not None
    images, regions = writer.finish()
    return SplitArrays(
        name=name,
        images=images,
        labels=torch.as_tensor(np.asarray(labels), dtype=torch.long),
        sample_ids=tuple(sample_ids),
        regions=regions,
    )


_READER: tuple[int, ThreadPoolExecutor] | None = None
_READER_LOCK = threading.Lock()


def _reader() -> ThreadPoolExecutor:
    """The process's read-ahead thread, started on first use and again after a fork.

    One thread for the whole process: starting a thread per batch loop costs more than reading
    a small split. A forked child (a worker process) inherits the executor but not its thread,
    so the owner's process id is kept and a child starts its own.
    """
    global _READER
    with _READER_LOCK:
        if _READER is None or _READER[0] != os.getpid():
            _READER = (os.getpid(), ThreadPoolExecutor(1, thread_name_prefix="xaibench-read"))
        return _READER[1]


def read_ahead(rows: Rows, keys: Sequence[Any]) -> Iterator[torch.Tensor]:
    """``rows[key]`` for each of ``keys`` in order, the next one read while this one is used.

    Rows on scratch files are read and decoded in a background thread, so reading a batch
    overlaps with the model's work on the previous one (file reads and NumPy's decoding release
    the GIL). At most two batches are in memory. Tensors already in memory are indexed directly.
    The values are exactly ``rows[key]``: only when they are read changes. Reads are
    independent, so several of these iterators may share the thread.
    """
    if not isinstance(rows, LazyRows) or len(keys) < 2:
        for key in keys:
            yield rows[key]
        return
    pool = _reader()
    pending = pool.submit(operator.getitem, rows, keys[0])
    try:
        for key in keys[1:]:
            following = pool.submit(operator.getitem, rows, key)
            yield pending.result()
            pending = following
        yield pending.result()
    finally:
        pending.cancel()  # abandoned early: a read not yet started is not needed
