"""Segmenter checks: declarations, masks on the input grid, determinism, raw range, provenance.

The images are raw phantom radiographs (:data:`BATCH` of them, rendered at
:data:`PHANTOM_SIZE` pixels without touching the disk cache), cropped to :data:`GRID` — not
square, and smaller than any network's input — so a segmenter that returns masks on its
network's grid, or transposed, fails. A segmenter whose ``load()`` raises an
:class:`~xaibench.errors.XaibenchError` (its weights are not here; the message names the file to
place and where) is skipped with that message, as a backbone without weights is. A segmenter
that needs options its registration does not preset is skipped too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from xaibench.errors import InputRangeError, XaibenchError
from xaibench.segmenters.base import Segmenter
from xaibench.testing.checks._support import seed_all
from xaibench.testing.core import Subject

#: Images per batch.
BATCH = 2
#: Side of the rendered phantom images.
PHANTOM_SIZE = 64
#: ``(H, W)`` of the images the segmenter receives (a crop of the phantom images).
GRID = (64, 48)

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: Strings that look like an absolute path (POSIX, Windows drive, UNC) or a home folder.
_ABSOLUTE = re.compile(r"(^|[\s'\"=(])(/[^/\s]|[A-Za-z]:[\\/]|\\\\|~[/\\])")


def phantom_images(subject: Subject) -> torch.Tensor:
    """The raw test images ``[BATCH, 1, *GRID]`` (rendered once per kit run)."""
    key = "segmenters:images"
    if key not in subject.shared:
        from xaibench.data.phantom import PhantomDataset

        dataset = PhantomDataset(n_images=BATCH, image_size=PHANTOM_SIZE, seed=0)
        dataset.use_cache(None, enabled=False)
        rendered, _ = dataset.generate(range(BATCH))
        h, w = GRID
        left = (PHANTOM_SIZE - w) // 2
        raw = rendered[:, :h, left : left + w].astype(np.float32) / np.float32(65535.0)
        subject.shared[key] = torch.from_numpy(np.ascontiguousarray(raw)).unsqueeze(1)
    images: torch.Tensor = subject.shared[key]
    return images.clone()


def _segmenter_class(subject: Subject) -> type[Segmenter]:
    cls = subject.component_class()
    if not (isinstance(cls, type) and issubclass(cls, Segmenter)):
        subject.fail(f"{cls!r} is not a Segmenter")
    return cls


def loaded(subject: Subject, *, fresh: bool = False) -> Segmenter:
    """The segmenter loaded on the CPU, or a skip naming why it cannot be loaded here.

    One instance serves the checks of a kit run (a network segmenter takes seconds to load);
    ``fresh`` builds and loads another one.
    """
    key = f"segmenters:loaded:{subject.name}"
    if fresh or key not in subject.shared:
        segmenter = subject.create()
        if not isinstance(segmenter, Segmenter):
            subject.fail(f"{type(segmenter).__name__} is not a Segmenter")
        try:
            segmenter.load(torch.device("cpu"))
        except XaibenchError as exc:
            subject.shared[key] = f"cannot be loaded here: {exc}"
        else:
            if fresh:
                return segmenter
            subject.shared[key] = segmenter
    found = subject.shared[key]
    if isinstance(found, str):
        subject.skip(found)
    result: Segmenter = found
    return result


def declarations(subject: Subject) -> None:
    """``regions`` is a non-empty tuple of distinct snake_case names; ``weights_hint`` is set."""
    cls = _segmenter_class(subject)
    regions = cls.regions
    if not isinstance(regions, tuple) or not regions:
        subject.fail(f"`regions` must be a non-empty tuple of names, got {regions!r}")
    bad = [r for r in regions if not (isinstance(r, str) and _NAME.match(r))]
    if bad:
        subject.fail(f"`regions` holds names that are not snake_case: {bad}")
    if len(set(regions)) != len(regions):
        twice = sorted({r for r in regions if regions.count(r) > 1})
        subject.fail(f"`regions` lists {twice} more than once")
    hint = cls.weights_hint
    if not isinstance(hint, str) or not hint.strip():
        subject.fail(
            "declares no `weights_hint` (where the weights come from and where to place them; "
            "'none: ...' for a segmenter without weights)"
        )


def _check_masks(subject: Subject, masks: Any, images: torch.Tensor, what: str) -> None:
    expected_regions = _segmenter_class(subject).regions
    if not isinstance(masks, dict):
        subject.fail(f"segment() returned {type(masks).__name__} for {what}, expected a dict")
    missing = [r for r in expected_regions if r not in masks]
    extra = [r for r in masks if r not in expected_regions]
    if missing or extra:
        subject.fail(
            f"segment() returned regions {list(masks)} for {what}; expected exactly the "
            f"declared {list(expected_regions)} (missing {missing}, undeclared {extra})"
        )
    b, _, h, w = images.shape
    for region in expected_regions:
        mask = masks[region]
        if not isinstance(mask, torch.Tensor):
            subject.fail(f"mask {region!r} is {type(mask).__name__}, expected a torch.Tensor")
        if mask.dtype != torch.bool:
            subject.fail(f"mask {region!r} has dtype {mask.dtype}, expected torch.bool")
        if tuple(mask.shape) != (b, h, w):
            subject.fail(
                f"mask {region!r} has shape {tuple(mask.shape)} for images "
                f"{tuple(images.shape)}; expected [{b}, {h}, {w}] (the images' own grid: "
                "resize the network's output back, nearest neighbour)"
            )
        if mask.device != images.device:
            subject.fail(f"mask {region!r} is on {mask.device}, the images on {images.device}")


def _segment(subject: Subject, segmenter: Segmenter, images: torch.Tensor) -> dict[str, Any]:
    with torch.no_grad():
        masks: dict[str, Any] = segmenter.segment(images)
    return masks


def load_and_shape(subject: Subject) -> None:
    """Loaded on the CPU, ``segment()`` gives one bool ``[B, H, W]`` mask per declared region.

    On the images' grid and device, nothing but the declared regions, and the images are left
    as they were.
    """
    segmenter = loaded(subject)
    images = phantom_images(subject)
    before = images.clone()
    masks = _segment(subject, segmenter, images)
    _check_masks(subject, masks, images, f"{BATCH} images of {GRID[0]} x {GRID[1]} px")
    if not torch.equal(images, before):
        subject.fail("segment() modified the images in place")
    single = _segment(subject, segmenter, images[:1])
    _check_masks(subject, single, images[:1], "a batch of one image")


def deterministic(subject: Subject) -> None:
    """The same images give equal masks: twice from one instance, and from a second instance.

    The global generators are seeded differently before each call, so a segmenter that draws
    random numbers (dropout left on, sampling) fails.
    """
    images = phantom_images(subject)
    first = loaded(subject)
    runs = []
    for seed, segmenter in ((1, first), (2, first), (3, loaded(subject, fresh=True))):
        seed_all(seed)
        masks = _segment(subject, segmenter, images)
        _check_masks(subject, masks, images, f"{BATCH} images")
        runs.append(masks)
    for which, masks in (("a second call", runs[1]), ("a second instance", runs[2])):
        differ = [r for r in runs[0] if not torch.equal(runs[0][r], masks[r])]
        if differ:
            counts = ", ".join(f"{r}: {int((runs[0][r] ^ masks[r]).sum())} px" for r in differ[:3])
            subject.fail(f"{which} on the same images gives different masks ({counts})")


def raw_range(subject: Subject) -> None:
    """Images scaled to 0-255, below 0, or containing NaN raise InputRangeError.

    A segmenter fed 0-255 or already-normalised images still returns confident masks; only an
    error keeps them out of a manifest (``xaibench.segmenters.base.check_raw`` does it).
    """
    segmenter = loaded(subject)
    good = phantom_images(subject)
    cases = {
        "scaled to 0-255": good * 255.0 + 1.0,
        "below 0 (normalised)": good - 0.5,
        "containing NaN": good.clone().index_fill_(2, torch.tensor([0]), float("nan")),
    }
    for what, images in cases.items():
        try:
            _segment(subject, segmenter, images)
        except InputRangeError:
            continue
        except Exception as exc:
            subject.fail(
                f"segment() on images {what} raised {type(exc).__name__}: {exc}; expected "
                "InputRangeError (call xaibench.segmenters.base.check_raw first)"
            )
        subject.fail(
            f"segment() accepted images {what}; call xaibench.segmenters.base.check_raw "
            "first so they raise InputRangeError"
        )


def _strings(value: Any, where: str = "provenance") -> Iterator[tuple[str, str]]:
    """Every string in ``value`` (keys too), with where it is."""
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield f"{where} key", str(key)
            yield from _strings(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _strings(item, f"{where}[{i}]")


def _sha256_values(value: Any) -> Iterator[tuple[str, Any]]:
    """``(key, value)`` of every key naming a SHA-256 (``sha256``, ``weights_sha256``, ...)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and "sha256" in key.lower():
                yield key, item
            yield from _sha256_values(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _sha256_values(item)


def provenance(subject: Subject) -> None:
    """``provenance()`` after loading: a JSON-able dict, the same twice, with a weights hash.

    It must name the weights by SHA-256 (a key containing ``sha256`` whose value is 64 lowercase
    hex digits) or say it used none (``"weights": null``), and hold no absolute path: it goes
    into the manifest's sidecar and every results file made with the masks.
    """
    segmenter = loaded(subject)
    record = segmenter.provenance()
    if not isinstance(record, dict):
        subject.fail(f"provenance() returned {type(record).__name__}, expected a dict")
    try:
        text = json.dumps(record, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        subject.fail(f"provenance() is not JSON-able: {exc}")
    if json.dumps(segmenter.provenance(), sort_keys=True, allow_nan=False) != text:
        subject.fail("provenance() differs between two calls")
    for where, string in _strings(record):
        if _ABSOLUTE.search(string):
            subject.fail(
                f"provenance() holds what looks like an absolute path at {where}: {string!r}; "
                "record the weights' file name and SHA-256, never their folder"
            )
    hashes = list(_sha256_values(record))
    bad = [(k, v) for k, v in hashes if not (isinstance(v, str) and _SHA256.match(v))]
    if bad:
        subject.fail(f"provenance() has {bad[0][0]!r} = {bad[0][1]!r}, not 64 lowercase hex digits")
    if not hashes and not ("weights" in record and record["weights"] is None):
        subject.fail(
            "provenance() names no weights hash (a key such as 'sha256' with the weight file's "
            "SHA-256) and does not say it used no weights ('weights': null)"
        )
