"""In-memory tensors of one split, built once per run and shared by every cell.

Every cell of a grid trains and tests on the same images; decoding or rendering them once and
sharing the tensors is the cheapest correct thing at the scale of the default run. (Streaming from
disk for large cohorts arrives with the resumable-run work.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from xaibench.data.base import Dataset
from xaibench.errors import XaibenchError
from xaibench.progress import NullProgress, Progress


@dataclass(frozen=True)
class SplitArrays:
    """Images, labels and masks of one split.

    Attributes:
        name: ``train``, ``val`` or ``test``.
        images: ``[N, 1, H, W]`` float32 raw intensities in [0, 1].
        labels: ``[N]`` int64 class indices.
        sample_ids: One non-identifying id per image.
        regions: Region name -> ``[N, H, W]`` bool masks.
    """

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    sample_ids: tuple[str, ...]
    regions: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def materialize(
    dataset: Dataset,
    name: str,
    indices: Sequence[int] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    progress: Progress | None = None,
) -> SplitArrays:
    """Load the samples at ``indices`` into tensors.

    Raises:
        XaibenchError: Images of different sizes, masks that do not match their image, or an
            image outside [0, 1]; the message names the sample.
    """
    progress = progress or NullProgress()
    idx = [int(i) for i in indices]
    if not idx:
        raise XaibenchError(f"the {name} split is empty; use more images or other split fractions")
    images: list[torch.Tensor] = []
    masks: dict[str, list[torch.Tensor]] = {}
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
        images.append(image.float())
        sample_ids.append(sample.sample_id)
        for region, mask in sample.regions.items():
            if tuple(mask.shape) != tuple(image.shape[1:]):
                raise XaibenchError(
                    f"sample {sample.sample_id}: mask {region!r} is {tuple(mask.shape)}, "
                    f"image is {tuple(image.shape[1:])}"
                )
            masks.setdefault(region, []).append(mask.bool())
    return SplitArrays(
        name=name,
        images=torch.stack(images),
        labels=torch.as_tensor(np.asarray(labels), dtype=torch.long),
        sample_ids=tuple(sample_ids),
        regions={r: torch.stack(m) for r, m in masks.items() if len(m) == len(idx)},
    )
