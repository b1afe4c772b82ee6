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
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from xaibench.component import Component

if TYPE_CHECKING:
    from pathlib import Path

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
    """A source of :class:`Sample` objects. Options are the pydantic fields of the subclass.

    :attr:`region_names` and :attr:`region_groups` are read on the instance. A dataset whose
    regions are fixed declares them as class variables of the same names (as the phantom does);
    one whose regions depend on its files (a manifest's ``mask_`` columns) overrides the
    properties.
    """

    #: Whether the region set is fixed by the dataset's code (the phantom): a configured region
    #: it lacks is then a typo and an error; for datasets whose regions come from their files
    #: (manifests) it is skipped with a recorded reason.
    fixed_regions: ClassVar[bool] = True

    @property
    def region_names(self) -> tuple[str, ...]:
        """Names of the region masks every sample carries."""
        return ()

    @property
    def region_groups(self) -> Mapping[str, tuple[str, ...]]:
        """Regions that are unions of others (``bone`` = ``spine | ribs | clavicles | ...``)."""
        return {}

    @property
    def strata_columns(self) -> tuple[str, ...]:
        """Columns of :meth:`table` that results may be stratified by (age band, site, view).

        Only aggregates per stratum are written (with a minimum stratum size), never the
        per-image values, so no metadata leaves the dataset sample by sample. Columns that
        identify a person (``patient_id``) never belong here, nor should columns that define the
        label (``t_score``); a dataset that cannot tell them from metadata (the label-agnostic
        ``manifest``) lists them, and the run leaves out the task's ``label_columns``.
        """
        return ()

    @property
    def mask_provenance(self) -> dict[str, Any] | None:
        """What made the region masks when a segmenter did (``xaibench data masks``), or None.

        Recorded in ``results.json`` (``dataset.mask_provenance``) when not None.
        """
        return None

    def use_cache(self, directory: Path | None, *, enabled: bool = True) -> None:
        """Follow the run's ``cache`` and ``cache_dir`` settings; datasets without one ignore it.

        Args:
            directory: The run's cache folder (``None``: the default, ``$XAIBENCH_CACHE_DIR``).
            enabled: False when the run says ``cache: false``: nothing is read from or written
                to disk.
        """

    def annotated(self, region: str) -> np.ndarray:
        """Per sample, whether ``region`` is annotated: its mask is known, not just empty.

        Every sample carries a mask for every region; where a dataset has no annotation of a
        region for an image (an empty mask cell in a manifest), the mask is empty and this is
        False. Localisation scores are undefined on an empty mask anyway, but perturbing an
        empty region (or everything outside it) would silently test the wrong thing, so the
        runner skips a region's perturbation tests unless every test image is annotated.
        The default: every sample is annotated for every region.
        """
        return np.ones(len(self), dtype=bool)

    @abstractmethod
    def __len__(self) -> int:
        """Number of samples."""
        raise NotImplementedError(f"{type(self).__name__} must implement __len__()")

    @abstractmethod
    def __getitem__(self, index: int) -> Sample:
        """Return sample ``index`` (0-based)."""
        raise NotImplementedError(f"{type(self).__name__} must implement __getitem__()")

    @abstractmethod
    def table(self) -> pd.DataFrame:
        """Return one row per sample, in index order, without loading images.

        Columns: ``sample_id``, ``patient_id`` and one column per attribute.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement table()")

    @abstractmethod
    def fingerprint(self) -> str:
        """Return a hash that changes whenever any sample would change (for caches and results)."""
        raise NotImplementedError(f"{type(self).__name__} must implement fingerprint()")
