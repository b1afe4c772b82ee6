"""The task contract."""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from xaibench.component import Component

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from xaibench.data.values import Problem


class Task(Component):
    """A benchmark task.

    Attributes:
        class_names: Names of the classes, in label-index order.
        positive_class: The class scored one-vs-rest (AUC, Delta, saliency target).
        regions_of_interest: Regions where the signal should live; the first is the primary one.
        label_columns: Dataset columns that define the label; never used as strata (a
            breakdown by the label's own column would only restate the label).
        finding_regions: Regions that exist only on positive images (a lesion): an empty mask
            on a negative test image does not make the run skip their perturbation tests.
    """

    class_names: ClassVar[tuple[str, ...]] = ()
    positive_class: ClassVar[str] = ""
    regions_of_interest: ClassVar[tuple[str, ...]] = ()
    label_columns: ClassVar[tuple[str, ...]] = ()
    finding_regions: ClassVar[tuple[str, ...]] = ()

    @property
    def positive_index(self) -> int:
        """Label index of :attr:`positive_class`."""
        return self.class_names.index(self.positive_class)

    @abstractmethod
    def labels(self, table: pd.DataFrame) -> np.ndarray:
        """Map a dataset table to integer labels (one per row).

        ``-1`` marks a row the task's policy excludes (an uncertain or blank finding): the run
        drops it before splitting and counts it per reason (:meth:`excluded_counts`).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement labels()")

    def excluded_counts(self, table: pd.DataFrame) -> dict[str, int]:
        """Rows of ``table`` that :meth:`labels` excludes, counted per reason; {} if none."""
        return {}

    def check_labels(self, table: pd.DataFrame) -> list[Problem]:
        """Every label problem of ``table``, with 1-based rows where they apply.

        The default runs :meth:`labels` and reports its error as one problem.
        """
        from xaibench.data.values import Problem
        from xaibench.errors import XaibenchError

        try:
            self.labels(table)
        except XaibenchError as exc:
            return [Problem(None, None, str(exc))]
        return []

    @abstractmethod
    def defaults(self) -> dict[str, Any]:
        """The default run configuration (a :class:`~xaibench.config.RunConfig` as a dict)."""
        raise NotImplementedError(f"{type(self).__name__} must implement defaults()")

    def grids(self) -> dict[str, dict[str, Any]]:
        """Named presets (``--grid NAME``): configuration layers applied over :meth:`defaults`."""
        return {}
