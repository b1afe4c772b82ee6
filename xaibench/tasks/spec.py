"""The task file: a YAML document validated by :class:`TaskSpec` (docs/tasks/writing-tasks.md).

A task file names the classes and the positive class (or ``one_vs_rest``), the label rule
(:mod:`xaibench.tasks.label_rules`), the regions of interest, the default run configuration
and named grids, and a description and citation. Unknown keys are problems with
did-you-mean, as in run configurations; :func:`load_spec` reads a file within the same
limits as a configuration (``yaml.safe_load``, size and nesting) and raises one
:class:`TaskFileError` listing every problem.

A file is named by a path or by a packaged resource ``package:file.yaml`` (how built-in and
plugin task files are registered): :func:`read_task_file` returns its bytes and a name that is
safe to record (the file name, never the folder: paths may hold a user's name).
"""

from __future__ import annotations

import difflib
import hashlib
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from xaibench.errors import MultipleErrors, XaibenchError
from xaibench.tasks.label_rules import LabelRule

#: Version of the task-file format; recorded with a user task file's hash.
SPEC_VERSION = "1"

#: ``positive: one_vs_rest``: one task per class, named ``<name>:<class>``.
ONE_VS_REST = "one_vs_rest"

#: Placeholder in a region name replaced by the finding (or class) of an expanded task.
FINDING_PLACEHOLDER = "{finding}"

_NAME = re.compile(r"[a-z][a-z0-9_.-]*")
_REGION = re.compile(r"[a-z][a-z0-9_]*")


class TaskFileError(MultipleErrors):
    """A task file that cannot be used; ``items`` lists every problem."""


class Region(BaseModel):
    """A region of interest; ``finding: true`` when only positive images have it (a lesion)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, description="Region name (a manifest's region column).")
    finding: bool = Field(
        False,
        description="The region exists only on positive images: an empty mask on a negative "
        "test image does not make the run skip the region's perturbation tests.",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("name")
    @classmethod
    def _pattern(cls, value: str) -> str:
        if not _REGION.fullmatch(value.replace(FINDING_PLACEHOLDER, "x")):
            raise ValueError(
                f"region {value!r}: use lower-case letters, digits and '_' "
                f"(or {FINDING_PLACEHOLDER} for the finding of an expanded task)"
            )
        return value


class Regions(BaseModel):
    """The regions of interest: the primary one (Δ and IoU headline) and the others."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    primary: Region = Field(description="The headline region.")
    others: list[Region] = Field(default_factory=list, description="Further regions.")

    @model_validator(mode="after")
    def _unique(self) -> Regions:
        names = [r.name for r in (self.primary, *self.others)]
        if len(set(names)) != len(names):
            raise ValueError("a region is listed twice")
        return self


class TaskSpec(BaseModel):
    """A task file (see docs/tasks/writing-tasks.md for every key)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: str = Field(description="Registry name: lower case, digits, '_', '.', '-'.")
    display_name: str = Field("", description="Human-readable name.")
    description: str = Field("", description="What the task is, for 'xaibench ls' and docs.")
    citation: str = Field("", description="Where the task comes from.")
    version: str = Field(
        "1", min_length=1, description="Bump whenever a change alters the task's numbers."
    )
    classes: list[str] | None = Field(
        None, description="Class names in label-index order (not with a findings rule)."
    )
    positive: str | None = Field(
        None, description="The positive class, or one_vs_rest (not with a findings rule)."
    )
    labels: LabelRule = Field(description="How labels come from the dataset's columns.")
    regions: Regions | None = Field(None, description="Regions of interest.")
    defaults: dict[str, Any] = Field(
        default_factory=dict, description="The default run configuration."
    )
    grids: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Named presets (--grid NAME) over the defaults."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError(
                f"task name {value!r}: start with a lower-case letter; then lower-case letters, "
                "digits, '_', '.' or '-'"
            )
        return value

    @field_validator("classes")
    @classmethod
    def _classes(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if len(value) < 2:
                raise ValueError("a task needs at least two classes")
            lowered = [c.lower() for c in value]
            if len(set(lowered)) != len(lowered):
                raise ValueError("a class is listed twice (class names are matched in any case)")
            if any(not c.strip() or c != c.strip() for c in value):
                raise ValueError("a class name may not be empty or start or end with a space")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TaskSpec:
        rule = self.labels
        if rule.findings is not None:
            if self.classes is not None or self.positive is not None:
                raise ValueError(
                    "a findings rule makes one binary task per finding (classes no_<finding> and "
                    "<finding>): leave out 'classes' and 'positive'"
                )
            return self
        if self.classes is None:
            raise ValueError("'classes' is required (unless the labels are findings)")
        if self.positive is None:
            raise ValueError(f"'positive' is required: a class or {ONE_VS_REST}")
        if self.positive != ONE_VS_REST and self.positive not in self.classes:
            raise ValueError(_positive_problem(self.positive, self.classes))
        numeric = rule.numeric
        if numeric is not None:
            unknown = [c for c in numeric.classes if c not in self.classes]
            missing = [c for c in self.classes if c not in numeric.classes]
            if unknown:
                raise ValueError(
                    f"labels.numeric.classes: {', '.join(repr(c) for c in unknown)} is not a "
                    f"class{_hint(unknown[0], self.classes)} (classes: {', '.join(self.classes)})"
                )
            if missing:
                raise ValueError(
                    f"labels.numeric.classes: no range for {', '.join(repr(c) for c in missing)}"
                )
        return self

    @property
    def expansions(self) -> list[str]:
        """The findings (or classes of ``one_vs_rest``) that each make a task; [] if none."""
        if self.labels.findings is not None:
            return list(self.labels.findings.columns)
        if self.positive == ONE_VS_REST:
            return list(self.classes or [])
        return []

    def task_names(self) -> list[str]:
        """The registry names this file defines: its name, or ``<name>:<finding>`` for each."""
        expansions = self.expansions
        return [f"{self.name}:{e}" for e in expansions] if expansions else [self.name]


def _positive_problem(positive: str, classes: list[str]) -> str:
    return (
        f"positive {positive!r} is not a class{_hint(positive, classes)} "
        f"(classes: {', '.join(classes)}; or {ONE_VS_REST})"
    )


def _hint(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


@dataclass(frozen=True)
class TaskFile:
    """A task file's bytes and where they came from.

    Attributes:
        source: As given (a path or ``package:file.yaml``); never recorded in results.
        name: The file name alone, safe to record.
        data: The file's bytes.
        packaged: A resource of an installed package (its version identifies it).
    """

    source: str
    name: str
    data: bytes
    packaged: bool

    @property
    def sha256(self) -> str:
        """SHA-256 of the bytes."""
        return hashlib.sha256(self.data).hexdigest()


def is_resource(source: str) -> bool:
    """``package.module:file.yaml`` (a packaged resource) rather than a path."""
    package, sep, name = source.partition(":")
    return (
        bool(sep)
        and bool(re.fullmatch(r"[A-Za-z_][\w.]+", package))  # not a drive letter (C:\...)
        and not any(c in name for c in "/\\")
    )


def read_task_file(source: str) -> TaskFile:
    """The bytes of a task file given by path or as ``package:file.yaml``.

    Raises:
        XaibenchError: The file or resource cannot be read, or is too large.
    """
    from xaibench.config import MAX_CONFIG_BYTES

    if is_resource(source):
        import importlib.resources

        package, _, name = source.partition(":")
        try:
            data = importlib.resources.files(package).joinpath(name).read_bytes()
        except (ModuleNotFoundError, FileNotFoundError, OSError) as exc:
            raise XaibenchError(f"cannot read task file {source!r}: {exc}") from None
        return TaskFile(source, name, data, packaged=True)
    path = Path(source).expanduser()
    try:
        with path.open("rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise XaibenchError(f"cannot read task file {source!r}: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise XaibenchError(f"task file {source!r} is larger than {MAX_CONFIG_BYTES:,} bytes")
    return TaskFile(source, path.name, data, packaged=False)


def parse_spec(file: TaskFile) -> TaskSpec:
    """Validate a task file's YAML.

    Raises:
        TaskFileError: Invalid YAML or any invalid key; ``items`` lists every problem, unknown
            keys with did-you-mean.
    """
    from xaibench.config import parse_yaml_document

    data = parse_yaml_document(file.data, f"task file {file.source!r}")
    try:
        return TaskSpec.model_validate(data)
    except ValidationError as exc:
        problems = [_problem(err) for err in exc.errors()]
        problems += [p for p in _further_problems(data, exc) if p not in problems]
        raise TaskFileError(
            f"task file {file.source!r} has {len(problems)} problem"
            f"{'s' if len(problems) != 1 else ''}",
            problems,
        ) from None


def _further_problems(data: dict[str, Any], exc: ValidationError) -> list[str]:
    """Problems hidden behind others: checks of the whole file run once every key is valid.

    So validate again without the unknown keys, and check the positive class on its own.
    """
    found = []
    classes, positive = data.get("classes"), data.get("positive")
    if (
        isinstance(classes, list)
        and all(isinstance(c, str) for c in classes)
        and isinstance(positive, str)
        and positive != ONE_VS_REST
        and positive not in classes
    ):
        found.append(_positive_problem(positive, classes))
    unknown = [err["loc"] for err in exc.errors() if err["type"] == "extra_forbidden"]
    if not unknown:
        return found
    import copy

    pruned = copy.deepcopy(data)
    for loc in unknown:
        parent: Any = pruned
        for part in loc[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if isinstance(parent, dict):
            parent.pop(loc[-1], None)
    try:
        TaskSpec.model_validate(pruned)
    except ValidationError as again:
        return [*found, *(_problem(err) for err in again.errors())]
    return found


def load_spec(source: str) -> tuple[TaskSpec, TaskFile]:
    """Read and validate a task file (a path or ``package:file.yaml``)."""
    file = read_task_file(source)
    return parse_spec(file), file


def _problem(err: Any) -> str:
    loc = tuple(p for p in err["loc"] if not str(p).startswith(("function-", "tagged-union")))
    where = ".".join(str(p) for p in loc)
    if err["type"] == "extra_forbidden":
        model = _model_at(loc[:-1])
        known = sorted(model.model_fields) if model is not None else []
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        allowed = f" (keys: {', '.join(known)})" if known else ""
        return f"{where}: unknown key{hint}{allowed}"
    if err["type"] == "missing":
        return f"{where}: required key missing"
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{where}: {msg}" if where else msg  # a check of the whole file names its keys


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model whose keys apply at ``loc`` (unwrapping optional, list and dict annotations)."""
    model: type[BaseModel] | None = TaskSpec
    for part in loc:
        if model is None:
            return None
        if isinstance(part, int) or part not in model.model_fields:
            continue  # a list index or a dict key: the element's model is already chosen
        model = _inner_model(model.model_fields[part].annotation)
    return model


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list, dict):
        for arg in typing.get_args(annotation):
            found = _inner_model(arg)
            if found is not None:
                return found
    return None
