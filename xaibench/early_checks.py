"""Checks of a run that need neither torch nor any component class: names and files.

``xaibench run`` and ``xaibench calibrate`` call these before anything heavy is imported, so a
misspelt component name or a missing file is rejected in well under a second with the same
one-line message (did-you-mean) that the later, full checks give
(:func:`xaibench.engine.grid.check_components`). Names are looked up in the registries only (their
targets are lazy ``"module:Attr"`` strings, never imported here); files are only ``stat``-ed.

Everything here imports nothing beyond the configuration model, the registries and the standard
library; ``tests/test_early_checks.py`` asserts that torch stays unloaded.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from xaibench.errors import XaibenchError

#: Options of the manifest dataset that name a file and a folder (``--data``, ``--image-root``).
_MANIFEST = "manifest"


def _expand(path: Path) -> Path:
    """``path`` with ``~`` expanded where it can be (an unknown user leaves it as written)."""
    try:
        return path.expanduser()
    except RuntimeError:
        return path


def _stat(path: Path) -> os.stat_result | None:
    try:
        return os.stat(_expand(path))
    except (OSError, ValueError):
        return None


def check_file(path: Path, option: str, what: str) -> None:
    """Raise unless ``path`` is an existing regular file (or a link to one).

    Args:
        path: The path as the user gave it.
        option: The option or key that gave it, e.g. ``"--data"``, named in the message.
        what: What the file is, e.g. ``"manifest"``.

    Raises:
        XaibenchError: One line naming the option and the path.
    """
    found = _stat(path)
    if found is None:
        raise XaibenchError(f"{option}: {what} not found: {path}")
    if stat.S_ISDIR(found.st_mode):
        raise XaibenchError(f"{option}: {path} is a folder, not a {what} file")
    if not stat.S_ISREG(found.st_mode):
        raise XaibenchError(f"{option}: {path} is not a regular file")


def check_folder(path: Path, option: str, what: str) -> None:
    """Raise unless ``path`` is an existing folder.

    Raises:
        XaibenchError: One line naming the option and the path.
    """
    found = _stat(path)
    if found is None:
        raise XaibenchError(f"{option}: {what} not found: {path}")
    if not stat.S_ISDIR(found.st_mode):
        raise XaibenchError(f"{option}: {path} is not a folder")


def check_run_files(
    *,
    data_path: Path | None = None,
    image_root: Path | None = None,
    calibration_file: Path | None = None,
) -> None:
    """The files and folders of ``xaibench run``'s options exist (each only ``stat``-ed).

    (``--config`` files are read before anything heavy is imported anyway, by
    :func:`xaibench.config.load_config_file`, whose message names them.)

    Raises:
        XaibenchError: The first missing one, in one line naming its option.
    """
    if data_path is not None:
        check_file(data_path, "--data", "manifest")
    if image_root is not None:
        check_folder(image_root, "--image-root", "image folder")
    if calibration_file is not None:
        found = _stat(calibration_file)
        if found is not None and stat.S_ISDIR(found.st_mode):
            check_file(Path(calibration_file) / "calibration.json", "--calibration", "calibration")
        else:
            check_file(calibration_file, "--calibration", "calibration")


def component_refs(config: Any) -> Iterator[tuple[str, str, Any]]:
    """Every component reference of a run configuration: ``(registry, key path, ref)``.

    The key path names the entry as the configuration does (``saliency[1]``, ``dataset``).
    """
    for kind in ("backbones", "strategies", "saliency", "perturbations", "metrics"):
        for i, ref in enumerate(getattr(config, kind)):
            yield kind, f"{kind}[{i}]", ref
    yield "datasets", "dataset", config.dataset
    yield "executors", "executor", config.executor


def check_names(config: Any, components: Any) -> None:
    """Every component ``config`` names is registered; no component class is imported.

    Raises:
        UnknownComponentError: The first unknown name, with did-you-mean suggestions (the
            message :func:`xaibench.engine.grid.check_components` gives).
    """
    components.tasks.get(config.task)
    for kind, _, ref in component_refs(config):
        components[kind].get(ref.name)


def check_config_files(config: Any) -> None:
    """The manifest a configuration names (``dataset.options.path``) exists.

    A manifest given in a ``--config`` file is checked as ``--data`` is; other datasets' options
    are theirs to check.

    Raises:
        XaibenchError: The manifest or its image root is missing, one line naming the key.
    """
    if config.dataset.name != _MANIFEST:
        return
    options = config.dataset.options
    path = options.get("path")
    if isinstance(path, str) and path:
        check_file(Path(path), "dataset.options.path", "manifest")
    root = options.get("image_root")
    if isinstance(root, str) and root:
        check_folder(Path(root), "dataset.options.image_root", "image folder")
