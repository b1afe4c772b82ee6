"""Label rules of task files: a class column, a numeric column with cuts, or findings.

A task file's labels come from a dataset's columns by one of three rules: a class column, a
numeric column with cut points, or one binary column per finding.

Each rule is a pydantic model (a part of :class:`~xaibench.tasks.spec.TaskSpec`) whose
:meth:`~ClassColumn.apply` reads a dataset table and returns a :class:`LabelOutcome`: one int64
label per row, where ``-1`` is a row the task's policy excludes (an uncertain or blank finding)
or a row with a problem, every problem with its 1-based row, and the excluded rows counted per
reason. A task's ``labels()`` raises one error listing every problem; ``xaibench data check``
and ``xaibench validate`` list them.

Cells arrive as numbers (the phantom's table, a manifest column that is numeric throughout) or
as text (a manifest's other columns). Text numbers must be plain decimals
(:func:`~xaibench.data.values.parse_decimal`): ``1_0`` or ``0x10`` is a problem, not a value.
An empty cell, ``None`` or NaN is blank.

Written here rather than taken from a library: the rules are the task file's format, and the
messages name xaibench's rows and columns.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from xaibench.data.values import Problem, parse_decimal

if TYPE_CHECKING:
    import pandas as pd

#: What an uncertain (``-1``) or blank finding becomes: left out of the run, or a class.
Policy = Literal["exclude", "positive", "negative"]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


@dataclass
class LabelOutcome:
    """Labels of a table by a rule.

    Attributes:
        labels: One class index per row; ``-1`` where the row is excluded or has a problem.
        problems: Every bad cell, with its 1-based row (``None`` for a whole-table problem).
        excluded: Rows excluded by the task's policy, counted per reason (``uncertain``,
            ``blank``).
    """

    labels: np.ndarray
    problems: list[Problem] = field(default_factory=list)
    excluded: dict[str, int] = field(default_factory=dict)


def is_blank(value: object) -> bool:
    """An empty or whitespace cell, ``None`` or NaN."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, float | np.floating):
        return bool(np.isnan(value))
    return False


def _plain(value: object) -> object:
    """A numpy scalar as the Python value it holds, so messages read ``nan``, not ``np.float64``."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def read_number(value: object) -> tuple[float | None, str | None]:
    """``(number, None)``, ``(None, None)`` for a blank cell, or ``(None, problem)``.

    Numbers (the phantom's floats) are taken as they are; text must be a plain decimal.
    """
    if is_blank(value):
        return None, None
    if isinstance(value, bool | np.bool_):
        return None, f"not a number: {_plain(value)!r}"
    if isinstance(value, int | float | np.integer | np.floating):
        number = float(value)
    else:
        text = str(value).strip()
        parsed = parse_decimal(text)
        if parsed is None:
            lowered = text.lower().lstrip("+-")
            finite = "a finite " if lowered in ("nan", "inf", "infinity") else "a "
            return None, f"not {finite}number: {text!r}"
        number = parsed
    if not math.isfinite(number):
        return None, f"not a finite number: {_plain(value)!r}"
    return number, None


def class_index(value: object, class_names: Sequence[str]) -> int | None:
    """The class of a cell: a class name (any case) or its 0-based index, else None.

    Integers written as floats (``2.0``, as spreadsheets and numeric columns give them) count.
    """
    if is_blank(value) or isinstance(value, bool | np.bool_):
        return None
    lowered = [name.lower() for name in class_names]
    text = str(_plain(value)).strip()
    if text.lower() in lowered:
        return lowered.index(text.lower())
    number, _ = read_number(value)
    if number is not None and number.is_integer() and 0 <= number < len(class_names):
        return int(number)
    return None


def _cell(value: object) -> str:
    """A cell as quoted in messages: ``'2.5'`` whether it came as text or as a number."""
    return repr(str(_plain(value)).strip())


def _unknown_class(value: object, class_names: Sequence[str]) -> str:
    return (
        f"unknown label {_cell(value)}; use one of {', '.join(class_names)} "
        f"or 0-{len(class_names) - 1}"
    )


class Interval(_Strict):
    """A range of numbers: ``min``/``max`` include their bound, ``above``/``below`` exclude it.

    ``{above: 0, max: 1}`` is (0, 1]; a bound left out is unbounded.
    """

    min: float | None = Field(None, description="Lowest value, included.")
    above: float | None = Field(None, description="Values must be greater than this.")
    max: float | None = Field(None, description="Highest value, included.")
    below: float | None = Field(None, description="Values must be less than this.")

    @model_validator(mode="after")
    def _consistent(self) -> Interval:
        if self.min is not None and self.above is not None:
            raise ValueError("give 'min' (included) or 'above' (excluded), not both")
        if self.max is not None and self.below is not None:
            raise ValueError("give 'max' (included) or 'below' (excluded), not both")
        low, high = self.lower, self.upper
        if (
            low is not None
            and high is not None
            and (low[0] > high[0] or (low[0] == high[0] and not (low[1] and high[1])))
        ):
            raise ValueError(f"the range {self.describe()} is empty")
        return self

    @property
    def lower(self) -> tuple[float, bool] | None:
        """The lower bound and whether it is included."""
        if self.min is not None:
            return self.min, True
        return (self.above, False) if self.above is not None else None

    @property
    def upper(self) -> tuple[float, bool] | None:
        """The upper bound and whether it is included."""
        if self.max is not None:
            return self.max, True
        return (self.below, False) if self.below is not None else None

    def contains(self, x: float) -> bool:
        """Whether ``x`` lies in the interval."""
        low, high = self.lower, self.upper
        if low is not None and (x < low[0] or (x == low[0] and not low[1])):
            return False
        return not (high is not None and (x > high[0] or (x == high[0] and not high[1])))

    def describe(self) -> str:
        """``[-10, 10]``, ``(0, 1]``, ``(-inf, -2.5]``."""
        low, high = self.lower, self.upper
        left = "(-inf" if low is None else ("[" if low[1] else "(") + f"{low[0]:g}"
        right = "inf)" if high is None else f"{high[0]:g}" + ("]" if high[1] else ")")
        return f"{left}, {right}"

    def overlaps(self, other: Interval) -> bool:
        """Whether some number lies in both intervals."""

        def before(a: tuple[float, bool] | None, b: tuple[float, bool] | None) -> bool:
            # a (an upper bound) lies strictly below b (a lower bound): no number in both.
            if a is None or b is None:
                return False
            return a[0] < b[0] or (a[0] == b[0] and not (a[1] and b[1]))

        return not (before(self.upper, other.lower) or before(other.upper, self.lower))


class ClassColumn(_Strict):
    """Labels from one column of class names (any case) or 0-based class indexes."""

    name: str = Field("label", min_length=1, description="The column with the class.")

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns that define the label."""
        return (self.name,)

    def apply(self, table: pd.DataFrame, class_names: Sequence[str], task: str) -> LabelOutcome:
        """Every row needs a known class; see the module docstring."""
        n = len(table)
        labels = np.full(n, -1, dtype=np.int64)
        if self.name not in table.columns:
            return LabelOutcome(
                labels, [Problem(None, None, f"task {task!r} needs a {self.name!r} column")]
            )
        problems = []
        for i, cell in enumerate(table[self.name].tolist()):
            if is_blank(cell):
                problems.append(Problem(i + 1, self.name, f"no class: the row needs a {self.name}"))
                continue
            index = class_index(cell, class_names)
            if index is None:
                problems.append(Problem(i + 1, self.name, _unknown_class(cell, class_names)))
            else:
                labels[i] = index
        return LabelOutcome(labels, problems)


class NumericColumn(_Strict):
    """Labels from a number and cut points, each class a range (as the WHO T-score classes).

    A row whose number is blank takes its class from the ``fallback`` class column, if there is
    one. Where a row has both, they must agree (``agree: true``), or the number wins.
    """

    column: str = Field(min_length=1, description="The numeric column.")
    valid: Interval | None = Field(None, description="Values outside this range are problems.")
    hint: str = Field("", description="Added to the message of a value outside 'valid'.")
    classes: dict[str, Interval] = Field(description="Each class's range; ranges may not overlap.")
    fallback: str | None = Field(
        None, min_length=1, description="Class column read where the number is blank."
    )
    agree: bool = Field(True, description="A row's number and fallback class must agree.")

    @field_validator("classes")
    @classmethod
    def _disjoint(cls, value: dict[str, Interval]) -> dict[str, Interval]:
        items = list(value.items())
        for i, (a, ra) in enumerate(items):
            for b, rb in items[i + 1 :]:
                if ra.overlaps(rb):
                    raise ValueError(
                        f"the ranges of {a!r} {ra.describe()} and {b!r} {rb.describe()} overlap"
                    )
        return value

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns that define the label."""
        return (self.column,) if self.fallback is None else (self.column, self.fallback)

    def apply(self, table: pd.DataFrame, class_names: Sequence[str], task: str) -> LabelOutcome:
        """See the class docstring; each bad cell is a problem naming its row."""
        n = len(table)
        labels = np.full(n, -1, dtype=np.int64)
        has_number = self.column in table.columns
        has_class = self.fallback is not None and self.fallback in table.columns
        if not (has_number or has_class):
            wanted = " or a ".join(repr(c) for c in self.columns)
            return LabelOutcome(
                labels, [Problem(None, None, f"task {task!r} needs a {wanted} column")]
            )
        numbers = table[self.column].tolist() if has_number else [None] * n
        fallback = table[self.fallback].tolist() if has_class and self.fallback else [None] * n
        problems: list[Problem] = []
        for i, (cell, given) in enumerate(zip(numbers, fallback, strict=True)):
            from_number, bad = self._number_class(cell, class_names, i, problems)
            from_label = -1
            if not is_blank(given):
                index = class_index(given, class_names)
                if index is None:
                    problems.append(
                        Problem(i + 1, self.fallback, _unknown_class(given, class_names))
                    )
                    bad = True
                else:
                    from_label = index
            if bad:
                continue
            if from_number < 0 and from_label < 0:
                present = [c for c in self.columns if c in table.columns]
                problems.append(
                    Problem(
                        i + 1,
                        " / ".join(present),
                        f"no class: the row needs a {' or a '.join(present)}",
                    )
                )
            elif from_number >= 0 and from_label >= 0 and from_number != from_label and self.agree:
                problems.append(
                    Problem(
                        i + 1,
                        self.fallback,
                        f"{self.fallback} {_cell(given)} disagrees with {self.column} "
                        f"{_plain(cell)} ({class_names[from_number]}); give one or make them agree",
                    )
                )
            else:
                labels[i] = from_number if from_number >= 0 else from_label
        return LabelOutcome(labels, problems)

    def _number_class(
        self, cell: object, class_names: Sequence[str], i: int, problems: list[Problem]
    ) -> tuple[int, bool]:
        """The class of a number cell (-1 if blank) and whether the cell is a problem."""
        number, problem = read_number(cell)
        if problem is not None:
            problems.append(Problem(i + 1, self.column, problem))
            return -1, True
        if number is None:
            return -1, False
        if self.valid is not None and not self.valid.contains(number):
            hint = f"; {self.hint}" if self.hint else ""
            problems.append(
                Problem(i + 1, self.column, f"{number:g} is outside {self.valid.describe()}{hint}")
            )
            return -1, True
        for name, interval in self.classes.items():
            if interval.contains(number):
                return class_names.index(name), False
        problems.append(
            Problem(i + 1, self.column, f"{number:g} falls in no class's range ({self._ranges()})")
        )
        return -1, True

    def _ranges(self) -> str:
        return ", ".join(f"{name} {r.describe()}" for name, r in self.classes.items())


class Findings(_Strict):
    """One binary column per finding (multi-label data): each finding is its own binary task.

    Cells: ``1`` (present), ``0`` (absent), ``-1`` (uncertain) or blank; ``uncertain`` and
    ``blank`` say what the last two become: ``exclude`` (the row leaves the run, counted in the
    results), ``positive`` or ``negative``.
    """

    columns: list[str] = Field(min_length=1, description="The finding columns, one per finding.")
    uncertain: Policy = Field("exclude", description="What a -1 cell becomes.")
    blank: Policy = Field("exclude", description="What an empty cell becomes.")

    @field_validator("columns")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        import re

        for name in value:
            if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
                raise ValueError(
                    f"finding {name!r}: use lower-case letters, digits and '_' (snake_case)"
                )
        if len(set(value)) != len(value):
            raise ValueError("a finding is listed twice")
        return value

    def apply_finding(self, table: pd.DataFrame, finding: str, task: str) -> LabelOutcome:
        """Binary labels (0 ``no_<finding>``, 1 ``<finding>``) of one finding's column."""
        n = len(table)
        labels = np.full(n, -1, dtype=np.int64)
        if finding not in table.columns:
            return LabelOutcome(
                labels, [Problem(None, None, f"task {task!r} needs a {finding!r} column")]
            )
        problems: list[Problem] = []
        excluded: dict[str, int] = {}
        policy_value = {"positive": 1, "negative": 0, "exclude": -1}
        for i, cell in enumerate(table[finding].tolist()):
            if is_blank(cell):
                reason, policy = "blank", self.blank
            else:
                number, _ = read_number(cell)
                if number in (0.0, 1.0):
                    labels[i] = int(number)
                    continue
                if number != -1.0:
                    problems.append(
                        Problem(i + 1, finding, f"not 1, 0, -1 or blank: {_cell(cell)}")
                    )
                    continue
                reason, policy = "uncertain", self.uncertain
            labels[i] = policy_value[policy]
            if policy == "exclude":
                excluded[reason] = excluded.get(reason, 0) + 1
        return LabelOutcome(labels, problems, excluded)


class LabelRule(_Strict):
    """Exactly one of ``column``, ``numeric`` or ``findings``."""

    column: ClassColumn | None = Field(None, description="A class column.")
    numeric: NumericColumn | None = Field(None, description="A numeric column with cut points.")
    findings: Findings | None = Field(None, description="One binary column per finding.")

    @model_validator(mode="before")
    @classmethod
    def _column_shorthand(cls, value: Any) -> Any:
        if isinstance(value, dict) and isinstance(value.get("column"), str):
            value = {**value, "column": {"name": value["column"]}}
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> LabelRule:
        given = [k for k in ("column", "numeric", "findings") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one label rule: column, numeric or findings"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column that defines a label (never a stratum)."""
        if self.column is not None:
            return self.column.columns
        if self.numeric is not None:
            return self.numeric.columns
        assert self.findings is not None
        return tuple(self.findings.columns)
