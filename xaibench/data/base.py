"""The dataset contract every source (phantom, manifest, ...) implements.

A dataset has two faces:

* :meth:`Dataset.table` — one cheap row per sample (ids and attributes such as ``t_score``), used
  for labels and patient-level splits without decoding a single image;
* :meth:`Dataset.__getitem__` — the :class:`Sample` itself: the raw image and its region masks.

Images are raw intensities in [0, 1] (the backbone adapter, not the dataset, normalises), shaped
``[1, H, W]``; masks are boolean ``[H, W]`` on the same grid.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from xaibench.component import Component

if TYPE_CHECKING:
    import pandas as pd
    import torch


@dataclass(frozen=True)
class Sample:
    """One image with its masks and attributes.

    Attributes:
        sample_id: Stable, non-identifying id, unique in the dataset (written to results).
        patient_id: Groups repeat images of one person; used for splits, never written to results.
        image: Float tensor ``[1, H, W]``, raw intensity in [0, 1].
        regions: Region name -> boolean mask ``[H, W]``.
        attributes: Per-sample values such as ``t_score``; tasks derive labels from them.
    """

    sample_id: str
    patient_id: str
    image: torch.Tensor
    regions: Mapping[str, torch.Tensor]
    attributes: Mapping[str, float | int | str]


class Dataset(Component):
    """A source of :class:`Sample` objects. Options are the pydantic fields of the subclass."""

    #: Names of the region masks every sample carries.
    region_names: ClassVar[tuple[str, ...]] = ()
    #: Regions that are unions of others (``bone`` = ``spine | ribs | clavicles | ...``).
    region_groups: ClassVar[Mapping[str, tuple[str, ...]]] = {}

    @abstractmethod
    def __len__(self) -> int:
        """Number of samples."""

    @abstractmethod
    def __getitem__(self, index: int) -> Sample:
        """Return sample ``index`` (0-based)."""

    @abstractmethod
    def table(self) -> pd.DataFrame:
        """Return one row per sample, in index order, without loading images.

        Columns: ``sample_id``, ``patient_id`` and one column per attribute.
        """

    @abstractmethod
    def fingerprint(self) -> str:
        """Return a hash that changes whenever any sample would change (for caches and results)."""
