"""``FileTask``: a task defined by a task file (YAML, :mod:`xaibench.tasks.spec`), no Python.

Registered like any task, with the file as a preset option (``register_tasks``)::

    register("cardiomegaly", "xaibench.tasks.file_task:FileTask",
             options={"file": "xaibench_cardiomegaly:cardiomegaly.yaml"})

A file whose label rule is ``findings`` (or whose ``positive`` is ``one_vs_rest``) defines one
task per finding (class), registered as ``<name>:<finding>`` with the option ``finding``.
"""

from __future__ import annotations

import copy
import difflib
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field, PrivateAttr

from xaibench.data.values import format_problems
from xaibench.errors import XaibenchError
from xaibench.tasks.base import Task
from xaibench.tasks.label_rules import LabelOutcome
from xaibench.tasks.spec import (
    FINDING_PLACEHOLDER,
    SPEC_VERSION,
    TaskFile,
    TaskSpec,
    load_spec,
)

if TYPE_CHECKING:
    import pandas as pd

    from xaibench.data.values import Problem

#: Label problems named in the message of :meth:`FileTask.labels` before "and N more".
MAX_LISTED_PROBLEMS = 10


class FileTask(Task):
    """A task read from a task file; see the module docstring."""

    file: str = Field(
        min_length=1, description="The task file: a path or a packaged resource 'package:x.yaml'."
    )
    finding: str | None = Field(
        None,
        min_length=1,
        description="The finding (findings rule) or class (one_vs_rest) of an expanded task.",
    )

    _spec: TaskSpec = PrivateAttr()
    _source: TaskFile = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        """Read and validate the file; check ``finding`` against it."""
        spec, source = load_spec(self.file)
        expansions = spec.expansions
        if expansions and self.finding is None:
            raise XaibenchError(
                f"task file {source.name!r} defines one task per "
                f"{'finding' if spec.labels.findings else 'class'}; run one of: "
                + ", ".join(spec.task_names())
            )
        if self.finding is not None and self.finding not in expansions:
            close = difflib.get_close_matches(self.finding, expansions, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise XaibenchError(
                f"task file {source.name!r} has no finding or class {self.finding!r}{hint} "
                f"(tasks: {', '.join(spec.task_names()) or spec.name})"
            )
        if not expansions and spec.regions is not None:
            for region in (spec.regions.primary, *spec.regions.others):
                if FINDING_PLACEHOLDER in region.name:
                    raise XaibenchError(
                        f"task file {source.name!r}: region {region.name!r} uses "
                        f"{FINDING_PLACEHOLDER}, but the file defines no findings"
                    )
        self._spec, self._source = spec, source

    # -- what the file says -------------------------------------------------------------------

    @property
    def spec(self) -> TaskSpec:
        """The validated task file."""
        return self._spec

    @property
    def task_name(self) -> str:
        """The registry name: the file's ``name``, or ``<name>:<finding>``."""
        return self._spec.name if self.finding is None else f"{self._spec.name}:{self.finding}"

    @property
    def class_names(self) -> tuple[str, ...]:  # type: ignore[override]
        """The file's classes, or ``no_<finding>``, ``<finding>`` for a finding's task."""
        if self._spec.labels.findings is not None:
            assert self.finding is not None
            return (f"no_{self.finding}", self.finding)
        return tuple(self._spec.classes or ())

    @property
    def positive_class(self) -> str:  # type: ignore[override]
        """The file's positive class; the finding (class) of an expanded task."""
        if self.finding is not None:
            return self.finding
        return str(self._spec.positive)

    @property
    def regions_of_interest(self) -> tuple[str, ...]:  # type: ignore[override]
        """The primary region, then the others."""
        regions = self._spec.regions
        if regions is None:
            return ()
        return tuple(self._fill(r.name) for r in (regions.primary, *regions.others))

    @property
    def finding_regions(self) -> tuple[str, ...]:  # type: ignore[override]
        """The regions marked ``finding: true``."""
        regions = self._spec.regions
        if regions is None:
            return ()
        return tuple(self._fill(r.name) for r in (regions.primary, *regions.others) if r.finding)

    @property
    def label_columns(self) -> tuple[str, ...]:  # type: ignore[override]
        """The columns of the label rule (a finding's task: its column)."""
        if self._spec.labels.findings is not None:
            return (str(self.finding),)
        return self._spec.labels.columns

    @property
    def display_name(self) -> str:  # type: ignore[override]
        """The file's ``display_name`` (with the finding of an expanded task)."""
        name = self._spec.display_name or self._spec.name
        return name if self.finding is None else f"{name}: {self.finding}"

    @property
    def citation(self) -> str:  # type: ignore[override]
        """The file's ``citation``."""
        return self._spec.citation

    @property
    def version(self) -> str:  # type: ignore[override]
        """The file's ``version``."""
        return self._spec.version

    @property
    def description(self) -> str:
        """The file's ``description``."""
        return self._spec.description

    def provenance(self) -> dict[str, Any]:
        """What identifies the file in results: its name, SHA-256 and the format version.

        Never the folder (paths may hold a user's name). A packaged file (a built-in or a
        plugin's task) is identified by its package's version, recorded with every component.
        """
        return {
            "file": self._source.name,
            "sha256": self._source.sha256,
            "spec_version": SPEC_VERSION,
            "packaged": self._source.packaged,
        }

    # -- labels -------------------------------------------------------------------------------

    def label_outcome(self, table: pd.DataFrame) -> LabelOutcome:
        """Labels, problems and exclusions of ``table`` by the file's rule."""
        rule = self._spec.labels
        if rule.findings is not None:
            assert self.finding is not None
            return rule.findings.apply_finding(table, self.finding, self.task_name)
        if rule.numeric is not None:
            return rule.numeric.apply(table, self.class_names, self.task_name)
        assert rule.column is not None
        return rule.column.apply(table, self.class_names, self.task_name)

    def check_labels(self, table: pd.DataFrame) -> list[Problem]:
        """Every label problem, 1-based rows (``xaibench data check --task``)."""
        return self.label_outcome(table).problems

    def excluded_counts(self, table: pd.DataFrame) -> dict[str, int]:
        """Rows excluded by the file's ``uncertain``/``blank`` policies, per reason."""
        return self.label_outcome(table).excluded

    def labels(self, table: pd.DataFrame) -> np.ndarray:
        """One class index per row; -1 where the policy excludes the row.

        Raises:
            XaibenchError: Some cells are bad; the message lists them with their 1-based rows.
        """
        outcome = self.label_outcome(table)
        if outcome.problems:
            n = len(outcome.problems)
            listed = format_problems(outcome.problems, MAX_LISTED_PROBLEMS).replace("\n", "; ")
            raise XaibenchError(
                f"task {self.task_name!r}: {n} label problem{'s' if n != 1 else ''} "
                f"(rows are 1-based data rows): {listed}"
            )
        return outcome.labels

    # -- run configuration --------------------------------------------------------------------

    def defaults(self) -> dict[str, Any]:
        """The file's ``defaults``, with ``task`` set to this task."""
        return {"task": self.task_name, **self._fill_all(self._spec.defaults)}

    def grids(self) -> dict[str, dict[str, Any]]:
        """The file's ``grids``."""
        return {name: self._fill_all(layer) for name, layer in self._spec.grids.items()}

    def _fill(self, text: str) -> str:
        return text.replace(FINDING_PLACEHOLDER, self.finding) if self.finding else text

    def _fill_all(self, value: Any) -> Any:
        """A deep copy of ``value`` with ``{finding}`` filled in every string."""
        if isinstance(value, dict):
            return {k: self._fill_all(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._fill_all(v) for v in value]
        if isinstance(value, str):
            return self._fill(value)
        return copy.deepcopy(value)


def user_task_file(task: object) -> dict[str, Any] | None:
    """File name, SHA-256 and format version of ``task``'s file when it is a user's file.

    None for a task in Python or a packaged task file (its package version identifies it).
    """
    if isinstance(task, FileTask):
        found = task.provenance()
        if not found.pop("packaged"):
            return found
    return None
