"""The data of a run, prepared once and shared by every cell.

The task and dataset are built, the dataset is split by patient (or by its own ``split``
column), each split is streamed to scratch files (:mod:`xaibench.data.arrays`), and the
configured regions are sorted into those the run can score and those it skips with a reason:
regions the dataset lacks, regions some test image lacks (for perturbation tests), and regions
annotated but empty (:func:`empty_regions`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xaibench.config import RunConfig
from xaibench.control_regions import check_field_setting
from xaibench.data.arrays import SplitArrays, materialize
from xaibench.data.base import Dataset
from xaibench.data.check import format_problems, normalise_split, split_problems
from xaibench.data.splits import SPLITS, patient_split
from xaibench.errors import XaibenchError
from xaibench.plugins import Components
from xaibench.progress import Progress
from xaibench.tasks.base import Task

#: The three ways a run uses regions, named as in :class:`~xaibench.config.RunConfig`.
REGION_USES: tuple[str, str, str] = ("explain_regions", "perturb_regions", "complement_regions")


@dataclass
class RunData:
    """The task, dataset and split arrays, shared by every cell.

    Attributes:
        regions: Per use (``explain_regions``, ``perturb_regions``, ``complement_regions``), the
            configured regions this run can score, in configuration order.
        skipped_regions: Per use, the configured regions it cannot score, each with the reason
            (the dataset lacks the region, or test images lack its annotation).
        split_from_dataset: The dataset's own ``split`` column made the splits (the configured
            split fractions and seed were not used).
        coverage: Per usable region, the share of each test image it covers (``[N_test]``).
        excluded: Rows the task's policy left out before splitting (label ``-1``: an uncertain
            or blank finding), counted per reason; empty when none were.
        qc_excluded: Per region, the test images a person excluded from its scores (the
            manifest's ``qc_exclude`` column), counted per reason; recorded in the details of
            the region's localisation records (:func:`qc_exclusions`).
    """

    task: Task
    dataset: Dataset
    splits: dict[str, SplitArrays]
    split_sizes: dict[str, dict[str, int]]
    regions: dict[str, list[str]] = field(default_factory=dict)
    skipped_regions: dict[str, dict[str, str]] = field(default_factory=dict)
    split_from_dataset: bool = False
    coverage: dict[str, np.ndarray] = field(default_factory=dict)
    excluded: dict[str, int] = field(default_factory=dict)
    qc_excluded: dict[str, dict[str, int]] = field(default_factory=dict)


def prepare_data(config: RunConfig, components: Components, progress: Progress) -> RunData:
    """Build the task and dataset, split by patient and stream the splits to scratch files.

    The dataset's ``split`` column, when it has one, makes the splits; otherwise
    :func:`~xaibench.data.splits.patient_split` does. Configured regions the dataset lacks, or
    whose annotation is missing where a use needs it, are skipped with a reason (see
    :func:`usable_regions`) rather than failing the run.

    Raises:
        XaibenchError: A class missing from a split, a bad ``split`` column, bad dataset options.
    """
    task: Task = components.tasks.create(config.task)
    _check_task_file(config, task)
    dataset: Dataset = components.datasets.create(config.dataset.name, config.dataset.options)
    dataset.use_cache(Path(config.cache_dir) if config.cache_dir else None, enabled=config.cache)
    table = dataset.table()
    labels = task.labels(table)
    excluded = task.excluded_counts(table) if (labels < 0).any() else {}
    kept = np.flatnonzero(labels >= 0)  # -1: excluded by the task's policy, in no split
    if "split" in table.columns:
        problems = split_problems(table["patient_id"].to_numpy(), list(table["split"]))
        if problems:
            raise XaibenchError(
                f"the split column of dataset {config.dataset.name!r} is invalid:\n"
                + format_problems(problems)
            )
        assignment = np.array([normalise_split(v) for v in table["split"]])
        assignment[labels < 0] = ""
    elif len(kept) == len(table):
        assignment = patient_split(
            table["patient_id"].to_numpy(), labels, config.split.fractions, config.split.seed
        )
    else:
        assignment = np.full(len(table), "", dtype=object)
        assignment[kept] = patient_split(
            table["patient_id"].to_numpy()[kept],
            labels[kept],
            config.split.fractions,
            config.split.seed,
        )
    if excluded:
        progress.log(
            f"excluded {len(table) - len(kept)} of {len(table)} images by the task's policy: "
            + ", ".join(f"{n} {reason}" for reason, n in sorted(excluded.items()))
        )
    splits: dict[str, SplitArrays] = {}
    sizes: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        idx = np.flatnonzero(assignment == split)
        counts = {name: int((labels[idx] == i).sum()) for i, name in enumerate(task.class_names)}
        sizes[split] = {"images": len(idx), **counts}
        if counts[task.positive_class] == 0 or counts[task.positive_class] == len(idx):
            raise XaibenchError(
                f"the {split} split has {counts[task.positive_class]} {task.positive_class} images "
                f"out of {len(idx)}; AUC needs both kinds (use more images or other class shares)"
            )
    test_idx = np.flatnonzero(assignment == "test")
    regions, skipped = usable_regions(config, dataset, test_idx)
    if dataset.fixed_regions:  # the phantom: an unknown region is a typo, not a gap in the data
        import difflib

        for reasons in skipped.values():
            for region in reasons:
                if region not in dataset.region_names:
                    close = difflib.get_close_matches(region, dataset.region_names, n=1)
                    hint = f"; did you mean {close[0]!r}?" if close else ""
                    raise XaibenchError(
                        f"region {region!r} is not provided by dataset {config.dataset.name!r}"
                        f"{hint} (it has: {', '.join(dataset.region_names)})"
                    )
    for use, reasons in skipped.items():
        for region, reason in reasons.items():
            progress.log(f"[yellow]skipping[/yellow] {use} {region!r}: {reason}")
    for split in SPLITS:
        idx = np.flatnonzero(assignment == split)
        splits[split] = materialize(dataset, split, idx, labels[idx], progress)
    check_field_setting(config.controls.field, config.controls.draws, list(splits["test"].regions))
    coverage = region_coverage(splits["test"], sorted({r for rs in regions.values() for r in rs}))
    test_positive = labels[test_idx] == task.positive_index
    for use, reasons in empty_regions(
        regions, coverage, finding_regions=task.finding_regions, positive=test_positive
    ).items():
        for region, reason in reasons.items():
            regions[use].remove(region)
            skipped.setdefault(use, {})[region] = reason
            progress.log(f"[yellow]skipping[/yellow] {use} {region!r}: {reason}")
    return RunData(
        task,
        dataset,
        splits,
        sizes,
        regions=regions,
        skipped_regions=skipped,
        split_from_dataset="split" in table.columns,
        coverage=coverage,
        excluded=excluded,
        qc_excluded=qc_exclusions(dataset, coverage, test_idx),
    )


#: Distinct ``qc_exclude`` reasons counted per region in a record's details; the rest are
#: counted under ``"(other reasons)"``.
MAX_QC_REASONS = 20


def qc_exclusions(
    dataset: Dataset, regions: Iterable[str], test_indices: np.ndarray
) -> dict[str, dict[str, int]]:
    """Per region, the test images excluded by ``qc_exclude``, counted per reason.

    Only datasets with an ``excluded(region)`` method (the manifest) have exclusions. An
    excluded image counts as not annotated (:meth:`~xaibench.data.base.Dataset.annotated`): its
    localisation scores are NaN and left out, and the region's perturbation tests are skipped
    (they need the region on every test image, and perturbing it on only some would bias Δ).
    """
    excluded = getattr(dataset, "excluded", None)
    if excluded is None:
        return {}
    test = {int(i) for i in test_indices}
    out: dict[str, dict[str, int]] = {}
    for region in regions:
        counts: dict[str, int] = {}
        for i, reason in excluded(region).items():
            if i not in test:
                continue
            key = reason if reason in counts or len(counts) < MAX_QC_REASONS else "(other reasons)"
            counts[key] = counts.get(key, 0) + 1
        if counts:
            out[region] = counts
    return out


def _check_task_file(config: RunConfig, task: Task) -> None:
    """A user's task file must still be the one the run's configuration was hashed with.

    Every process of a run (a worker of a remote executor too) reads the file again; an edit
    in between would change the task under the run's feet.
    """
    from xaibench.tasks.file_task import user_task_file

    found = user_task_file(task)
    if (
        config.task_sha256 is not None
        and found is not None
        and found["sha256"] != config.task_sha256
    ):
        raise XaibenchError(
            f"task file {found['file']!r} changed since the run started (its SHA-256 differs "
            "from the run's); start a new run, or restore the file"
        )


def region_coverage(split: SplitArrays, regions: Sequence[str]) -> dict[str, np.ndarray]:
    """Per region, the share of each image of ``split`` its mask covers (read batch by batch)."""
    out: dict[str, np.ndarray] = {}
    for region in regions:
        masks = split.regions[region]
        shares = [
            masks[s].flatten(1).double().mean(1).numpy() for s in batch_slices(len(split), 256)
        ]
        out[region] = np.concatenate(shares) if shares else np.zeros(0)
    return out


def empty_regions(
    regions: Mapping[str, Sequence[str]],
    coverage: Mapping[str, np.ndarray],
    *,
    finding_regions: Sequence[str] = (),
    positive: np.ndarray | None = None,
) -> dict[str, dict[str, str]]:
    """Per use, the usable regions whose masks are empty where the use needs them, with reasons.

    An annotated but empty mask perturbs nothing, so a Δ over it would be 0 and look like a
    real "the model does not use this region"; it is skipped like an unannotated one
    (perturbation and complement tests need the region on every test image). Localisation
    scores exclude an image with an empty mask (its score is undefined), so they only skip a
    region empty on every test image.

    A finding region (a lesion, :attr:`~xaibench.tasks.base.Task.finding_regions`) exists only
    on positive images: its perturbation tests need it on every positive test image
    (``positive``, one flag per test image), and its empty masks on negative images are
    expected.
    """
    found: dict[str, dict[str, str]] = {}
    for use, names in regions.items():
        for region in names:
            fractions = coverage.get(region)
            if fractions is None or not len(fractions):
                continue
            needed = np.ones(len(fractions), dtype=bool)
            which = "test images"
            if region in finding_regions and positive is not None:
                needed, which = np.asarray(positive, dtype=bool), "positive test images"
            empty = int(((fractions == 0) & needed).sum())
            if use == "explain_regions" and int((fractions == 0).sum()) == len(fractions):
                reason = f"region {region!r} is empty on every test image"
            elif use != "explain_regions" and empty:
                reason = (
                    f"region {region!r} is empty on {empty} of {int(needed.sum())} {which}; "
                    f"perturbation tests need it on every {which[:-1]}"
                )
            else:
                continue
            found.setdefault(use, {})[region] = reason
    return found


def usable_regions(
    config: RunConfig, dataset: Dataset, test_indices: np.ndarray
) -> tuple[dict[str, list[str]], dict[str, dict[str, str]]]:
    """Split the configured regions of each use into usable ones and skipped ones with reasons.

    A region is skipped for every use when the dataset does not provide it (a manifest without
    that ``mask_`` column). Perturbation and complement tests also need the region annotated on
    every test image: perturbing an unannotated (empty) region would leave the image intact and
    dilute the drop, and its complement would perturb the whole image. Localisation scores
    only need one annotated test image, since an empty mask makes an image's score undefined
    and it is excluded.

    Args:
        config: The run configuration.
        dataset: The dataset.
        test_indices: Dataset indices of the test split.

    Returns:
        Per use, the usable regions (configuration order) and the skipped ones with reasons.
    """
    available = dataset.region_names
    usable: dict[str, list[str]] = {}
    skipped: dict[str, dict[str, str]] = {}
    for use in REGION_USES:
        usable[use], skipped[use] = [], {}
        for region in getattr(config, use):
            if region not in available:
                skipped[use][region] = (
                    f"region {region!r} is not provided by dataset {config.dataset.name!r} "
                    f"(it has: {', '.join(available) or 'none'})"
                )
                continue
            annotated = np.asarray(dataset.annotated(region), dtype=bool)[test_indices]
            missing = int((~annotated).sum())
            if use == "explain_regions" and missing == len(test_indices):
                skipped[use][region] = f"region {region!r} is annotated on no test image"
            elif use != "explain_regions" and missing:
                qc = qc_exclusions(dataset, [region], test_indices).get(region, {})
                by_qc = f" ({sum(qc.values())} excluded by qc_exclude)" if qc else ""
                skipped[use][region] = (
                    f"region {region!r} is not annotated on {missing} of {len(test_indices)} "
                    f"test images{by_qc}; perturbation tests need it on every test image"
                )
            else:
                usable[use].append(region)
    return usable, {use: reasons for use, reasons in skipped.items() if reasons}


def batch_slices(n: int, size: int) -> Iterator[slice]:
    """Slices of ``range(n)`` in batches of ``size`` (the last may be shorter)."""
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))
