"""``cardiac_manifest``: your own radiographs with cardiomegaly labels, from a CSV.

The core ``manifest`` dataset (``--data manifest.csv``) validates ``label`` cells against the
osteoporosis task's WHO classes and needs every one of them to have images, so a manifest
labelled ``normal`` / ``cardiomegaly`` is refused before any task sees it. This dataset is the core
manifest with the cardiomegaly classes instead: the same CSV format, path containment, decoding,
resizing, privacy rules and fingerprint (see xaibench's ``docs/data.md``), read with
``xaibench.data.check.read_manifest(path, class_names=("normal", "cardiomegaly"))``, plus:

* ``label`` (``normal``/``cardiomegaly``, any case, or 0/1) is required on every row — the core
  reader needs a label or a T-score per row, and a T-score means nothing here, so a ``t_score``
  column is refused;
* an optional ``ctr`` column (the cardiothoracic ratio, a number in (0, 1]) must agree with the
  label on every row that has one (CTR > 0.5 is cardiomegaly); it is kept in the table (the task
  reads it) but never used as a stratification variable, since it defines the label;
* the heart mask is an ordinary ``mask_heart`` column (and ``mask_lungs`` for the lungs).

Run it with a configuration file (``--data`` always picks the core ``manifest``)::

    dataset: {name: cardiac_manifest, options: {path: my-data/manifest.csv, image_size: 256}}

Everything but reading the CSV is inherited. Reading it goes through one override of the core
class's internal ``_manifest`` method (there is no public way to give the core manifest other
class names); the tests exercise it, so a change in the core shows up there first.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from xaibench.data.check import (
    ManifestRows,
    Problem,
    check_manifest,
    format_problems,
    parse_decimal,
    read_manifest,
)
from xaibench.data.manifest import (
    MAX_LISTED_PROBLEMS,
    ManifestDataset,
    ManifestError,
    _region_layout,
)
from xaibench_cardiomegaly.ctr import CLASS_NAMES, CTR_THRESHOLD

#: The optional column with each image's cardiothoracic ratio.
CTR_COLUMN = "ctr"


def _header(path: Path) -> list[str]:
    """The CSV's column names as the core reads them (stripped, lower case); [] if unreadable."""
    try:
        frame = pd.read_csv(path, nrows=0, dtype=str, encoding="utf-8-sig")
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError):
        return []  # read_manifest reports it properly
    return [str(c).strip().lower() for c in frame.columns]


def _ctr_problems(rows: ManifestRows) -> list[Problem]:
    """Every ``ctr`` cell must be empty or a number in (0, 1] that agrees with the label."""
    if CTR_COLUMN not in rows.frame.columns or rows.label is None:
        return []
    problems = []
    for i, (cell, label) in enumerate(zip(rows.frame[CTR_COLUMN], rows.label, strict=True)):
        if not cell:
            continue
        ctr = parse_decimal(cell)  # plain decimals only: float() also reads 0_5 as 5
        if ctr is None:
            problems.append(Problem(i + 1, CTR_COLUMN, f"not a number: {cell!r}"))
            continue
        if not (np.isfinite(ctr) and 0 < ctr <= 1):
            problems.append(
                Problem(
                    i + 1,
                    CTR_COLUMN,
                    f"{cell!r} is not a ratio in (0, 1] (write 0.52, not 52)",
                )
            )
        elif label and (ctr > CTR_THRESHOLD) != (label == "cardiomegaly"):
            problems.append(
                Problem(
                    i + 1,
                    CTR_COLUMN,
                    f"ctr {cell} disagrees with label {label!r} (CTR > {CTR_THRESHOLD} is "
                    "cardiomegaly); give one or make them agree",
                )
            )
    return problems


def read_cardiac_manifest(
    path: str | Path, *, allow_outside_paths: bool = False
) -> tuple[ManifestRows | None, list[Problem]]:
    """Read and check a cardiomegaly manifest without decoding any image.

    The core reader's checks with the cardiomegaly classes, plus the ``t_score`` and ``ctr`` rules
    of the module docstring.

    Args:
        path: The CSV; image and mask paths in it are relative to its folder.
        allow_outside_paths: Accept paths that resolve outside the CSV's folder.

    Returns:
        The parsed manifest (None when unusable) and every problem found.
    """
    if "t_score" in _header(Path(path).expanduser()):
        return None, [
            Problem(
                None,
                "t_score",
                "a T-score says nothing about the heart; drop or rename the column and give "
                "each row a 'label' (normal or cardiomegaly) and optionally a 'ctr'",
            )
        ]
    rows, problems = read_manifest(path, CLASS_NAMES, allow_outside_paths=allow_outside_paths)
    if rows is not None:
        problems = sorted(
            [*problems, *_ctr_problems(rows)], key=lambda p: (p.row is not None, p.row or 0)
        )
    return rows, problems


def check_cardiac_manifest(
    path: str | Path, *, decode: bool = True, allow_outside_paths: bool = False
) -> list[Problem]:
    """Check a cardiomegaly manifest completely (``xaibench data check`` with these classes).

    Args:
        path: The CSV.
        decode: Also read every image and mask.
        allow_outside_paths: Accept paths that resolve outside the CSV's folder.

    Returns:
        Every problem, whole-file ones first; empty when the manifest is fit to run.
    """
    rows, problems = read_cardiac_manifest(path, allow_outside_paths=allow_outside_paths)
    if rows is None or problems or not decode:
        return problems
    return check_manifest(
        path, class_names=CLASS_NAMES, allow_outside_paths=allow_outside_paths, decode=True
    )


class CardiacManifestDataset(ManifestDataset):
    """Your own chest radiographs labelled normal/cardiomegaly (optionally with a CTR), from a CSV.

    The core manifest with the cardiomegaly classes; see the module docstring for the format.
    """

    display_name: ClassVar[str] = "Your images with cardiomegaly labels (CSV manifest)"
    version: ClassVar[str] = f"{ManifestDataset.version}+cardiac.1"

    def _manifest(self) -> ManifestRows:
        # Mirrors ManifestDataset._manifest (its caching by options included) with another
        # reader; keep in step with the core.
        key = (self.path, self.allow_outside_paths)
        if self._rows is None or self._key != key:
            rows, problems = read_cardiac_manifest(
                self.path, allow_outside_paths=self.allow_outside_paths
            )
            if problems or rows is None:
                raise ManifestError(
                    f"manifest {self.path} has {len(problems)} problem"
                    f"{'s' if len(problems) != 1 else ''} (rows are 1-based CSV data rows; "
                    "xaibench_cardiomegaly.manifest.check_cardiac_manifest lists them all)",
                    format_problems(problems, MAX_LISTED_PROBLEMS).splitlines(),
                )
            self._rows, self._key = rows, key
            self._regions = _region_layout(rows)
            self._digests.clear()
        return self._rows

    @property
    def strata_columns(self) -> tuple[str, ...]:
        """The manifest's metadata columns but ``ctr``, which defines the label."""
        return tuple(c for c in super().strata_columns if c != CTR_COLUMN)
