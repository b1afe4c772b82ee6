"""``xaibench data masks``: a segmenter's masks for every image of a manifest, and a new manifest.

``write_masks(MANIFEST, segmenter, DIR)`` writes

* ``DIR/masks/<sample_id>_<region>.png``: one 8-bit PNG per image and region, 0 outside and 255
  inside, on the image's native grid (``sample_id`` is the row's non-identifying id,
  ``row00001``, so no file name or patient id reaches a new file name);
* ``DIR/manifest.csv``: the input rows with a ``mask_<region>`` column per region written, every
  path relative to the image root R (``--image-root``, default the input CSV's folder), so the
  user runs ``--data DIR/manifest.csv --image-root R``; DIR must lie inside R;
* ``DIR/manifest.json``: the sidecar (:mod:`xaibench.data.manifest_sidecar`): the segmenter's
  provenance, the regions written, and the quality-control summary. Runs copy it into
  ``results.json``.

Decisions, each also in ``docs/segmenters.md``:

* **Existing regions win.** A region that already has a source column in the input (a mask
  file, RLE, polygon or box column) keeps it and the segmenter's mask for it is not written,
  unless ``overwrite``: then the old column is dropped and ``mask_<region>`` written.
* **Native grid, batched by size.** Images are decoded at their own size
  (:meth:`~xaibench.data.manifest.ManifestDataset.native_image`) and batched with images of the
  same size only (a segmenter gets one ``[B, 1, H, W]`` tensor). At most ``batch_size`` images
  wait in memory: when that many are waiting and no size has a full batch, the largest waiting
  group is segmented as it is (a cohort where every size differs runs one image at a time).
  Which images share a batch must not change a mask (the segmenter contract: deterministic,
  batch-invariant), so a resumed run writes the same bytes.
* **Resume.** Each image's PNGs are written through a temporary file and ``os.replace``, then
  one line is appended to the journal ``DIR/.masks-progress.jsonl`` (sample id and each file's
  SHA-256) and the journal is fsynced. A rerun with the same manifest, segmenter (provenance)
  and regions skips every image whose journal line holds and whose files still have those
  hashes, and redoes the rest (an image killed halfway included). The PNGs themselves are not
  fsynced: a file the system lost in a crash fails its hash and is redone. A journal from
  another manifest, segmenter or region set is discarded. ``manifest.csv`` and ``manifest.json``
  are written last (each atomically) and the journal is then removed, so a finished folder
  holds the same bytes whether or not the run was interrupted.
* **Safety.** DIR must lie inside R (else a one-line error), ``DIR/masks`` may not be a symlink,
  nothing is written outside DIR, one process writes DIR at a time (the run folders' ``flock``,
  :func:`xaibench.run_lock.run_lock`; the kernel drops it when its holder is killed), and an
  existing ``DIR/manifest.csv`` is only replaced when this command wrote it (its sidecar or
  journal is there) — never the input manifest itself.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xaibench import failpoints
from xaibench.data.files import has_control_character
from xaibench.data.manifest_sidecar import (
    MASKS_FORMAT,
    MASKS_FORMAT_VERSION,
    read_sidecar_json,
    sidecar_path,
)
from xaibench.errors import XaibenchError
from xaibench.progress import NullProgress, Progress

if TYPE_CHECKING:
    import torch

    from xaibench.data.check import ManifestRows
    from xaibench.data.manifest import ManifestDataset
    from xaibench.segmenters.base import Segmenter

#: Names of what :func:`write_masks` writes into DIR.
MANIFEST_NAME = "manifest.csv"
MASKS_FOLDER = "masks"
JOURNAL_NAME = ".masks-progress.jsonl"
_JOURNAL_FORMAT = "xaibench-masks-progress"
_PARTIAL = ".partial"


@dataclass(frozen=True)
class MasksSummary:
    """What :func:`write_masks` did.

    Attributes:
        manifest: The new manifest (``DIR/manifest.csv``).
        sidecar: Its sidecar (``DIR/manifest.json``).
        rows: Images in the manifest.
        written: Regions whose masks were written (``mask_<region>`` columns).
        kept: Regions the segmenter provides but the input already had (kept, not written).
        segmented: Images segmented by this call.
        resumed: Images skipped because an earlier, interrupted call had finished them.
        quality: The quality-control summary recorded in the sidecar (empty when not run).
        references: Region -> (reference column, segmenter column) for ``--evaluate``.
        notes: Facts the user should see (one line each).
    """

    manifest: Path
    sidecar: Path
    rows: int
    written: tuple[str, ...]
    kept: tuple[str, ...]
    segmented: int
    resumed: int
    quality: dict[str, Any] = field(default_factory=dict)
    references: dict[str, tuple[str, str]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def write_masks(
    manifest: Path,
    segmenter: Segmenter,
    name: str,
    out: Path,
    *,
    device: torch.device,
    image_root: Path | None = None,
    allow_outside_paths: bool = False,
    batch_size: int = 8,
    regions: Sequence[str] | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    quality: Callable[[Path, Path, Progress], dict[str, Any]] | None = None,
    reference_prefix: str | None = None,
) -> MasksSummary:
    """Segment every image of ``manifest`` and write masks, a new manifest and its sidecar.

    Args:
        manifest: The input CSV.
        segmenter: The segmenter, not loaded yet (:meth:`~Segmenter.load` is called here).
        name: Its registry name (for the sidecar).
        out: DIR, inside the image root.
        device: Where the segmenter runs.
        image_root: R, the folder paths are relative to (default the CSV's folder).
        allow_outside_paths: Accept input paths outside R (``--allow-outside-paths``).
        batch_size: Images per segmenter call, at most.
        regions: The segmenter's regions to write (default all).
        overwrite: Replace the input's columns of the regions written.
        progress: Shows progress over the images.
        quality: Quality control of the new manifest ``(manifest, R, progress) -> summary``,
            run after it is written; its summary goes into the sidecar.
        reference_prefix: Keep the input's own annotation of each region written as the
            reference for ``--evaluate``: column ``<format>_<region>`` becomes
            ``<format>_<prefix><region>`` (region ``<prefix><region>``), and the segmenter's
            mask is written for every region (as with ``overwrite``);
            :attr:`MasksSummary.references` pairs them.

    Raises:
        XaibenchError: The manifest has problems, DIR lies outside R, a region is not the
            segmenter's, an image cannot be read, or the segmenter returns a wrong mask.
    """
    from xaibench.data.check import read_manifest
    from xaibench.data.manifest import ManifestDataset

    progress = progress or NullProgress()
    dataset = ManifestDataset(
        path=str(manifest),
        image_size=None,
        image_root=None if image_root is None else str(image_root),
        allow_outside_paths=allow_outside_paths,
    )
    rows, _ = read_manifest(
        manifest, allow_outside_paths=allow_outside_paths, image_root=image_root
    )
    assert rows is not None  # the dataset refused a manifest with problems
    root = rows.root
    out = _checked_out(out, root, rows.path)
    wanted = _regions(segmenter, name, regions)
    from xaibench.run_lock import run_lock

    with run_lock(out):  # one writer per DIR; a killed holder's lock dies with it
        return _write(
            rows, dataset, segmenter, name, out, wanted, device, batch_size, overwrite,
            progress, quality, reference_prefix,
        )  # fmt: skip


def _write(
    rows: ManifestRows,
    dataset: ManifestDataset,
    segmenter: Segmenter,
    name: str,
    out: Path,
    wanted: tuple[str, ...],
    device: torch.device,
    batch_size: int,
    overwrite: bool,
    progress: Progress,
    quality: Callable[[Path, Path, Progress], dict[str, Any]] | None,
    reference_prefix: str | None,
) -> MasksSummary:
    """:func:`write_masks` once DIR is checked and locked."""
    manifest, root = rows.path, rows.root
    columns = {region: source.column for region, source in rows.regions.items()}
    annotated = {r for r, source in rows.regions.items() if source.annotated.any()}
    kept = tuple(r for r in wanted if r in annotated and not overwrite and reference_prefix is None)
    written = tuple(r for r in wanted if r not in kept)
    if not written:
        raise XaibenchError(
            f"{manifest}: already has every region to write ({', '.join(kept)}); pass "
            "--overwrite to replace them with the segmenter's"
        )
    sample_ids = [str(s) for s in dataset.table()["sample_id"]]

    masks_dir = out / MASKS_FOLDER
    masks_dir.mkdir(parents=True, exist_ok=True)
    if masks_dir.is_symlink() or not masks_dir.is_dir():
        raise XaibenchError(f"{masks_dir} must be a folder, not a symlink")
    for leftover in masks_dir.glob(f".*{_PARTIAL}"):
        leftover.unlink()

    segmenter.load(device)
    provenance = {**segmenter.provenance(), "name": name}
    key = _journal_key(rows.csv_sha256, provenance, written)
    done = _resume(out / JOURNAL_NAME, key, masks_dir, sample_ids, written)
    pending = [i for i in range(len(sample_ids)) if sample_ids[i] not in done]
    advance = progress.start("segmenting images", len(sample_ids))
    for _ in range(len(done)):
        advance()
    segmented = 0
    with open(out / JOURNAL_NAME, "a", encoding="utf-8") as journal:
        for index, masks in _segment(dataset, segmenter, pending, written, batch_size, device):
            files = {
                region: _write_png(masks_dir / _file_name(sample_ids[index], region), mask)
                for region, mask in masks.items()
            }
            journal.write(json.dumps({"sample_id": sample_ids[index], "files": files}) + "\n")
            journal.flush()
            os.fsync(journal.fileno())
            failpoints.hit("masks.image_done")
            segmented += 1
            advance()

    # Columns of the regions written go (an all-empty one, or --overwrite) or are renamed to
    # references (--evaluate); mask_ ones come.
    references: dict[str, str] = {}
    if reference_prefix is not None:
        references = _reference_columns(rows.frame, columns, annotated, written, reference_prefix)
    frame = rows.frame.rename(columns={columns[r]: c for r, c in references.items()})
    frame = frame.drop(
        columns=[columns[r] for r in written if r in columns and r not in references]
    )
    folder = _relative(masks_dir, root)
    for region in written:
        frame[f"mask_{region}"] = [f"{folder}/{_file_name(s, region)}" for s in sample_ids]
    target = out / MANIFEST_NAME
    _write_atomic(target, _csv_bytes(frame))
    summary: dict[str, Any] = {}
    if quality is not None:
        summary = quality(target, root, progress)
    payload = {
        "manifest_sha256": hashlib.sha256(target.read_bytes()).hexdigest(),
        "format": MASKS_FORMAT,
        "format_version": MASKS_FORMAT_VERSION,
        "segmenter": provenance,
        "regions": list(written),
        "kept_regions": list(kept),
        "rows": len(sample_ids),
        "paths_relative_to": "the image root R (run with --image-root R)",
        "qc": summary,
    }
    sidecar = sidecar_path(target)
    _write_atomic(sidecar, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())
    (out / JOURNAL_NAME).unlink(missing_ok=True)
    return MasksSummary(
        target,
        sidecar,
        len(sample_ids),
        written,
        kept,
        segmented,
        len(done),
        summary,
        {r: (c, f"mask_{r}") for r, c in references.items()},
        _derived_notes(written, annotated),
    )


# --- where and what -------------------------------------------------------------------------


def _checked_out(out: Path, root: Path, csv: Path) -> Path:
    """DIR resolved, after checking it lies inside R and would not replace a foreign manifest."""
    resolved = out.expanduser().resolve()
    if has_control_character(str(resolved)):
        raise XaibenchError(f"--out {str(out)!r}: the path contains a control character")
    if not resolved.is_relative_to(root):
        raise XaibenchError(
            f"--out {out} must lie inside the image root {root} (the new manifest's paths are "
            "relative to it); choose a folder inside it or give another --image-root"
        )
    target = resolved / MANIFEST_NAME
    if target == csv:
        raise XaibenchError(
            f"--out {out} holds the input manifest {csv.name}; choose another folder"
        )
    if target.exists() or target.is_symlink():
        ours = (resolved / JOURNAL_NAME).is_file() or (
            (read_sidecar_json(sidecar_path(target)) or {}).get("format") == MASKS_FORMAT
        )
        if not ours:
            raise XaibenchError(
                f"{target} exists and was not written by 'xaibench data masks'; choose "
                "another --out"
            )
    return resolved


def _regions(segmenter: Segmenter, name: str, regions: Sequence[str] | None) -> tuple[str, ...]:
    """The segmenter's regions to write, in its order (``--regions`` checked)."""
    provided = tuple(segmenter.regions)
    if not provided:
        raise XaibenchError(f"segmenter {name!r} declares no regions")
    if not regions:
        return provided
    unknown = [r for r in regions if r not in provided]
    if unknown:
        raise XaibenchError(
            f"--regions: segmenter {name!r} does not provide {', '.join(unknown)} "
            f"(it provides {', '.join(provided)})"
        )
    return tuple(r for r in provided if r in regions)


def _reference_columns(
    frame: Any,
    columns: Mapping[str, str],
    annotated: set[str],
    written: Sequence[str],
    prefix: str,
) -> dict[str, str]:
    """Region -> the new name of its input column, kept as the reference (``--evaluate``)."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", prefix):
        raise XaibenchError(
            f"--evaluate {prefix!r}: the prefix must be lower-case letters, digits and '_', "
            "starting with a letter (e.g. ref_)"
        )
    renamed: dict[str, str] = {}
    for region in written:
        if region not in annotated:
            continue
        column = columns[region]
        new = f"{column[: len(column) - len(region)]}{prefix}{region}"
        if new in frame.columns:
            raise XaibenchError(f"--evaluate {prefix!r}: the manifest already has a column {new!r}")
        renamed[region] = new
    if not renamed:
        raise XaibenchError(
            f"--evaluate: the manifest has no annotation of {', '.join(written)} to compare with"
        )
    return renamed


def _derived_notes(written: Sequence[str], annotated: set[str]) -> tuple[str, ...]:
    """A note per region written that the manifest would have derived from its own parts.

    A column for the whole is used as given (``docs/data.md``), so the segmenter's ``bone``
    replaces a ``bone`` derived from, say, the manifest's ``mask_ribs``.
    """
    from xaibench.data.manifest_regions import DERIVED_REGIONS

    notes = []
    for region in written:
        parts = [p for p in DERIVED_REGIONS.get(region, ()) if p in annotated]
        if parts:
            notes.append(
                f"the segmenter's {region} replaces the {region} the manifest would derive from "
                f"its own {', '.join(parts)}; --regions can leave {region} out"
            )
    return tuple(notes)


def _file_name(sample_id: str, region: str) -> str:
    return f"{sample_id}_{region}.png"


def _relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` with ``/`` separators (``.`` becomes empty)."""
    return path.relative_to(root).as_posix()


def _csv_bytes(frame: Any) -> bytes:
    from xaibench.escape import to_csv

    return to_csv(frame).encode("utf-8")


# --- segmenting -----------------------------------------------------------------------------


def _segment(
    dataset: ManifestDataset,
    segmenter: Segmenter,
    pending: Sequence[int],
    regions: tuple[str, ...],
    batch_size: int,
    device: torch.device,
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """``(row index, {region: bool mask})`` for every pending row, batched by image size."""
    waiting: dict[tuple[int, int], list[tuple[int, np.ndarray]]] = {}
    count = 0
    for index in pending:
        image = dataset.native_image(index)
        shape = (int(image.shape[0]), int(image.shape[1]))
        waiting.setdefault(shape, []).append((index, image))
        count += 1
        if len(waiting[shape]) >= batch_size:
            flush = shape
        elif count >= batch_size:
            flush = max(waiting, key=lambda s: len(waiting[s]))
        else:
            continue
        batch = waiting.pop(flush)
        count -= len(batch)
        yield from _run(segmenter, batch, regions, device)
    for shape in list(waiting):
        yield from _run(segmenter, waiting.pop(shape), regions, device)


def _run(
    segmenter: Segmenter,
    batch: list[tuple[int, np.ndarray]],
    regions: tuple[str, ...],
    device: torch.device,
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Segment one batch of same-size images; check and return each image's masks."""
    import torch

    images = torch.from_numpy(np.stack([image for _, image in batch])).unsqueeze(1).to(device)
    with torch.no_grad():
        found = segmenter.segment(images)
    shape = (len(batch), *images.shape[2:])
    masks: dict[str, np.ndarray] = {}
    for region in regions:
        mask = found.get(region) if isinstance(found, Mapping) else None
        if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != shape:
            got = (
                "nothing" if mask is None else f"{type(mask).__name__} {getattr(mask, 'shape', '')}"
            )
            raise XaibenchError(
                f"segmenter {type(segmenter).__name__} returned {got} for region {region!r}; "
                f"expected a boolean tensor of shape {list(shape)}"
            )
        masks[region] = mask.detach().to("cpu", dtype=torch.bool).numpy()
    for b, (index, _) in enumerate(batch):
        yield index, {region: masks[region][b] for region in regions}


# --- files and journal ----------------------------------------------------------------------


def _png(mask: np.ndarray) -> bytes:
    """``mask`` as an 8-bit greyscale PNG, 0 outside and 255 inside (same bytes every time)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L").save(buffer, "PNG")
    return buffer.getvalue()


def _write_png(path: Path, mask: np.ndarray) -> str:
    """Write ``mask`` to ``path`` atomically; return the file's SHA-256."""
    data = _png(mask)
    temporary = path.with_name(f".{path.name}{_PARTIAL}")
    temporary.write_bytes(data)
    os.replace(temporary, path)
    failpoints.hit("masks.file_done")
    return hashlib.sha256(data).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a fsynced temporary file and ``os.replace``."""
    temporary = path.with_name(f".{path.name}{_PARTIAL}")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _journal_key(csv_sha256: str, provenance: Mapping[str, Any], regions: Sequence[str]) -> str:
    """What a journal's entries are valid for: the manifest, the segmenter, the regions."""
    payload = {"csv": csv_sha256, "segmenter": provenance, "regions": list(regions)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _resume(
    journal: Path, key: str, masks_dir: Path, sample_ids: Sequence[str], regions: Sequence[str]
) -> set[str]:
    """Sample ids finished by an earlier call, verified; the journal rewritten to hold just them.

    A journal of another key is discarded; a torn last line (a kill mid-write), an entry of
    an unknown sample or other regions, and an entry whose files are missing or changed are
    dropped, so their images are segmented again.
    """
    header = json.dumps({"format": _JOURNAL_FORMAT, "key": key})
    entries: list[str] = []
    done: set[str] = set()
    if journal.is_file() and not journal.is_symlink():
        lines = journal.read_bytes().decode("utf-8", errors="replace").split("\n")
        if lines and lines[0] == header:
            known = set(sample_ids)
            for line in lines[1:]:
                entry = _entry(line)
                if entry is None or entry[0] not in known or entry[0] in done:
                    continue
                sample_id, files = entry
                if set(files) == set(regions) and all(
                    _sha256(masks_dir / _file_name(sample_id, r)) == files[r] for r in regions
                ):
                    done.add(sample_id)
                    entries.append(line)
    _write_atomic(journal, "".join(f"{line}\n" for line in [header, *entries]).encode())
    return done


def _entry(line: str) -> tuple[str, dict[str, str]] | None:
    """``(sample_id, {region: sha256})`` of a journal line, or None for a torn or odd one."""
    try:
        value = json.loads(line)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    sample_id, files = value.get("sample_id"), value.get("files")
    if not isinstance(sample_id, str) or not isinstance(files, dict):
        return None
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        return None
    return sample_id, files


def _sha256(path: Path) -> str | None:
    """SHA-256 of a regular file's bytes, or None when it is missing or not a plain file."""
    try:
        if path.is_symlink() or not path.is_file():
            return None
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
