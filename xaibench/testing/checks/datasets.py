"""Dataset checks, on datasets the kit can build without the user's files.

A dataset is built with its registered options plus :data:`TINY_OVERRIDES` for the options it
has (so a synthetic source makes a few images, not a thousand), with its disk cache switched
off (``use_cache(None, enabled=False)``: nothing is written). A dataset that needs options
nobody gave (a manifest's ``path``), or whose construction raises a user error (files absent),
is skipped with the reason.
"""

from __future__ import annotations

from typing import Any

import torch

from xaibench.data.base import Dataset, Sample
from xaibench.errors import XaibenchError
from xaibench.testing.core import Subject

#: Options overridden where a dataset has them, to keep every check fast.
TINY_OVERRIDES: dict[str, Any] = {"n_images": 8}


def build_dataset(subject: Subject, name: str, options: dict[str, Any] | None = None) -> Dataset:
    """Build dataset ``name`` small and cache-free, or skip ``subject``'s check saying why."""
    registry = subject.registries().datasets
    entry = registry.get(name)
    cls = entry.load()
    fields = getattr(cls, "model_fields", {})
    merged = {**entry.options, **(options or {})}
    merged.update({k: v for k, v in TINY_OVERRIDES.items() if k in fields})
    missing = [n for n, f in fields.items() if f.is_required() and n not in merged]
    what = "it" if (subject.kind, subject.name) == ("datasets", name) else f"dataset {name!r}"
    if missing:
        subject.skip(
            f"{what} needs option(s) {', '.join(missing)} (the user's data); "
            "the kit builds datasets from their registered options only"
        )
    try:
        dataset: Dataset = registry.create(name, merged)
    except XaibenchError as exc:
        subject.skip(f"{what} cannot be built here: {exc}")
    dataset.use_cache(None, enabled=False)
    return dataset


def _dataset(subject: Subject) -> Dataset:
    return build_dataset(subject, subject.name)


def table(subject: Subject) -> None:
    """``table()`` has ``sample_id`` and ``patient_id``, one row per sample, unique ids."""
    dataset = _dataset(subject)
    frame = dataset.table()
    missing = [c for c in ("sample_id", "patient_id") if c not in frame.columns]
    if missing:
        subject.fail(f"table() lacks column(s) {missing} (has {list(frame.columns)})")
    if len(frame) != len(dataset):
        subject.fail(f"table() has {len(frame)} rows but the dataset {len(dataset)} samples")
    if len(frame) == 0:
        subject.fail("the dataset is empty")
    duplicates = frame["sample_id"][frame["sample_id"].duplicated()].tolist()
    if duplicates:
        subject.fail(f"table() has duplicate sample_id values, e.g. {duplicates[:3]}")


def _check_sample(subject: Subject, dataset: Dataset, index: int, sample_id: str) -> None:
    sample = dataset[index]
    where = f"sample {index}"
    if not isinstance(sample, Sample):
        subject.fail(f"{where} is {type(sample).__name__}, expected a Sample")
    if str(sample.sample_id) != str(sample_id):
        subject.fail(f"{where} has sample_id {sample.sample_id!r}; table() says {sample_id!r}")
    image = sample.image
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 1:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        subject.fail(f"{where} image is {shape}, expected a [1, H, W] tensor")
    if not image.is_floating_point():
        subject.fail(f"{where} image is {image.dtype}, expected floating point")
    if not torch.isfinite(image).all() or float(image.min()) < 0 or float(image.max()) > 1:
        subject.fail(
            f"{where} image has values in [{float(image.min()):.4g}, {float(image.max()):.4g}]; "
            "raw intensities must be finite and in [0, 1] (the adapter normalises, not the data)"
        )
    grid = tuple(image.shape[1:])
    names = tuple(dataset.region_names)
    absent = [r for r in names if r not in sample.regions]
    if absent:
        subject.fail(f"{where} lacks mask(s) for region_names {absent}")
    for region in names:
        mask = sample.regions[region]
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            what = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
            subject.fail(f"{where} mask {region!r} is {what}, expected a bool tensor")
        if tuple(mask.shape) != grid:
            subject.fail(f"{where} mask {region!r} is {tuple(mask.shape)}, the image {grid}")
    for group, members in dataset.region_groups.items():
        unknown = [m for m in members if m not in names]
        if unknown:
            subject.fail(f"region group {group!r} has members {unknown} not in region_names")
        if group in sample.regions and members:
            union = torch.stack([sample.regions[m] for m in members]).any(0)
            if not torch.equal(sample.regions[group], union):
                subject.fail(f"{where} mask {group!r} is not the union of {list(members)}")


def sample(subject: Subject) -> None:
    """First and last samples: float ``[1, H, W]`` image in [0, 1], a bool mask per region.

    Masks cover every name in ``region_names`` on the image's grid, and a region group's mask is
    the union of its members' (what ``region_groups`` promises).
    """
    dataset = _dataset(subject)
    frame = dataset.table()
    if len(frame) == 0:
        subject.fail("the dataset is empty")
    for index in sorted({0, len(frame) - 1}):
        _check_sample(subject, dataset, index, frame["sample_id"].iloc[index])


def fingerprint(subject: Subject) -> None:
    """Two instances with the same options have the same non-empty fingerprint.

    Caches and results key on it: a fingerprint that changes between instances (a timestamp, a
    memory address) silently defeats every cache.
    """
    first, second = _dataset(subject), _dataset(subject)
    a, b = first.fingerprint(), second.fingerprint()
    if not isinstance(a, str) or not a:
        subject.fail(f"fingerprint() returned {a!r}, expected a non-empty string")
    if a != b:
        subject.fail(f"two instances with the same options have fingerprints {a!r} and {b!r}")
