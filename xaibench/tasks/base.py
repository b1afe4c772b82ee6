"""The task contract."""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from xaibench.component import Component

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


class Task(Component):
    """A benchmark task.

    Attributes:
        class_names: Names of the classes, in label-index order.
        positive_class: The class scored one-vs-rest (AUC, Delta, saliency target).
        regions_of_interest: Regions where the signal should live; the first is the primary one.
    """

    class_names: ClassVar[tuple[str, ...]] = ()
    positive_class: ClassVar[str] = ""
    regions_of_interest: ClassVar[tuple[str, ...]] = ()

    @property
    def positive_index(self) -> int:
        """Label index of :attr:`positive_class`."""
        return self.class_names.index(self.positive_class)

    @abstractmethod
    def labels(self, table: pd.DataFrame) -> np.ndarray:
        """Map a dataset table to integer labels (one per row)."""

    @abstractmethod
    def defaults(self) -> dict[str, Any]:
        """The default run configuration (a :class:`~xaibench.config.RunConfig` as a dict)."""

    def grids(self) -> dict[str, dict[str, Any]]:
        """Named presets (``--grid NAME``): configuration layers applied over :meth:`defaults`."""
        return {}
