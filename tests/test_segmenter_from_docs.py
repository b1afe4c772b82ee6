"""The segmenter plugin of ``docs/segmenters.md``, built from the page's code alone.

The page marks every file of its example package with ``file=PATH`` on the code fence (as the
plugin tutorial does). These tests write exactly those files, register the package as a plugin
(in process on a fresh plugin manager; in a subprocess through ``PYTHONPATH`` and a
``--plugins-dir`` file, as a user without packaging would), and check that

* the page's segmenter passes every check of the conformance kit, and finds the phantom's lungs
  roughly (it is a threshold, not a model);
* an "oracle" — the docs' class with two methods changed, declaring the phantom's regions and
  returning the phantom's own masks — run by ``xaibench data masks`` over the phantom written as
  16-bit PNG files reproduces the phantom's masks exactly (Dice 1.0), read back both from the
  written PNG files and through the manifest dataset a run would use.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from xaibench.data.images import decode_mask
from xaibench.data.phantom import PhantomDataset
from xaibench.errors import XaibenchError
from xaibench.plugins import get_plugin_manager
from xaibench.testing import ConformanceSkip, conformance_checks

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "segmenters.md"
FENCE = re.compile(r"^```\w+ file=(\S+)\n(.*?)^```$", re.M | re.S)
PACKAGE = "xaibench-lung-threshold"

#: The phantom cohort the oracle knows, and its regions (``shortcut`` is off: never drawn).
N_IMAGES, SIZE = 4, 64
REGIONS = ("bone", "spine", "ribs", "clavicles", "scapulae", "sternum", "lungs", "heart")

ORACLE = f'''
"""The docs' lung segmenter, changed to return the phantom's own masks (a test's oracle)."""

from typing import ClassVar

import numpy as np
from pydantic import PrivateAttr

from xaibench.data.phantom import PhantomDataset
from xaibench.errors import XaibenchError
from xaibench.hookspecs import hookimpl
from xaibench_lung_threshold.segmenter import LungThreshold


class PhantomOracle(LungThreshold):
    """Looks each image up among the phantom's renders and returns that image's masks."""

    regions: ClassVar[tuple[str, ...]] = {REGIONS!r}

    _known: dict = PrivateAttr(default_factory=dict)

    def load(self, device):
        dataset = PhantomDataset(n_images={N_IMAGES}, image_size={SIZE}, seed=0)
        dataset.use_cache(None, enabled=False)
        images, labels = dataset.generate(range({N_IMAGES}))
        for image, label in zip(images, labels):
            masks = dataset.masks_of(label)
            self._known[image.tobytes()] = {{r: masks[r] for r in self.regions}}

    def masks_of(self, image):
        key = np.rint(image.astype(np.float64) * 65535.0).astype(np.uint16).tobytes()
        if key not in self._known:
            raise XaibenchError("phantom_oracle: an image the phantom did not render")
        return self._known[key]

    def provenance(self):
        return {{**super().provenance(), "segmenter": "phantom_oracle"}}


@hookimpl
def register_segmenters(register):
    register("phantom_oracle", PhantomOracle, summary="the phantom's own masks")
'''


def page_files() -> dict[str, str]:
    """``{relative path: content}`` of every ``file=`` code block of the page."""
    return {m.group(1): m.group(2) for m in FENCE.finditer(PAGE.read_text())}


def write_package(folder: Path) -> Path:
    """Write the page's package under ``folder``; return the folder to put on ``sys.path``."""
    for rel, text in page_files().items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder / PACKAGE


def test_the_page_names_its_files():
    files = page_files()
    assert set(files) == {
        f"{PACKAGE}/pyproject.toml",
        f"{PACKAGE}/xaibench_lung_threshold/__init__.py",
        f"{PACKAGE}/xaibench_lung_threshold/segmenter.py",
    }
    for path, text in files.items():
        if path.endswith(".py"):
            compile(text, path, "exec")  # every Python block is complete
    assert 'lung_threshold = "xaibench_lung_threshold"' in files[f"{PACKAGE}/pyproject.toml"]


@pytest.fixture
def docs_plugin(tmp_path, monkeypatch):
    """The page's package importable, and a fresh plugin manager with it registered."""
    monkeypatch.syspath_prepend(str(write_package(tmp_path)))
    for name in [m for m in sys.modules if m.startswith("xaibench_lung_threshold")]:
        monkeypatch.delitem(sys.modules, name)
    module = importlib.import_module("xaibench_lung_threshold")
    pm = get_plugin_manager(entry_points=False)
    pm.register(module, name="lung_threshold")
    return pm


def test_the_docs_segmenter_passes_the_conformance_kit(docs_plugin):
    checks = conformance_checks(["lung_threshold"], plugin_manager=docs_plugin)
    assert [c.check for c in checks] == [
        "declarations",
        "load_and_shape",
        "deterministic",
        "raw_range",
        "provenance",
    ]
    for check in checks:
        try:
            check.run()
        except ConformanceSkip as exc:  # pragma: no cover - a skip is a failure here
            pytest.fail(f"{check.id} skipped: {exc.reason}")


def _subprocess_env(site: Path, plugins: Path) -> dict[str, str]:
    """This environment, with the page's package importable and ``plugins`` as plugins folder."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("XAIBENCH_LOAD", "XAIBENCH_DISABLE", "XAIBENCH_PLUGINS"))
    }
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT), env.get("PYTHONPATH", "")])
    env["XAIBENCH_PLUGINS_DIR"] = str(plugins)
    return env


def test_the_kit_passes_it_under_pytest_as_the_page_says(tmp_path):
    """``pytest --xaibench-component lung_threshold``, the plugin loaded from a plugins folder."""
    site = write_package(tmp_path / "src")
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "lung_threshold.py").write_text(
        "from xaibench_lung_threshold import register_segmenters  # noqa: F401\n"
    )
    empty = tmp_path / "no_tests_here"
    empty.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
         "--xaibench-component", "lung_threshold"],
        capture_output=True, text=True, env=_subprocess_env(site, plugins), cwd=empty,
        timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert re.search(r"\b5 passed\b", proc.stdout), proc.stdout
    assert "skipped" not in proc.stdout


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def test_the_docs_segmenter_finds_the_phantom_lungs_roughly(docs_plugin):
    from xaibench.plugins import collect_components

    segmenter = collect_components(docs_plugin).segmenters.create("lung_threshold")
    segmenter.load(torch.device("cpu"))
    dataset = PhantomDataset(n_images=N_IMAGES, image_size=SIZE, seed=0)
    dataset.use_cache(None, enabled=False)
    samples = [dataset[i] for i in range(N_IMAGES)]
    masks = segmenter.segment(torch.stack([s.image for s in samples]))["lungs"].numpy()
    # A threshold is no model: about 0.74 on these images (measured), far above chance; the
    # bound guards against an example that no longer segments anything lung-like.
    dice = [_dice(m, s.regions["lungs"].numpy()) for m, s in zip(masks, samples, strict=True)]
    assert min(dice) > 0.6, dice


def _has_data_masks() -> bool:
    from xaibench.cli.data_commands import data

    return "masks" in data.commands


def _write_phantom(root: Path) -> tuple[Path, dict[str, dict[str, np.ndarray]]]:
    """The phantom as 16-bit PNGs with a manifest in ``root``; image path -> its masks."""
    dataset = PhantomDataset(n_images=N_IMAGES, image_size=SIZE, seed=0)
    dataset.use_cache(None, enabled=False)
    images, labels = dataset.generate(range(N_IMAGES))
    table = dataset.table()
    truth: dict[str, dict[str, np.ndarray]] = {}
    rows = ["image,patient_id,t_score"]
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        rel = f"images/{table['sample_id'][i]}.png"
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / rel)  # uint16: a 16-bit greyscale PNG
        masks = dataset.masks_of(label)
        truth[rel] = {r: masks[r] for r in REGIONS}
        rows.append(f"{rel},{table['patient_id'][i]},{table['t_score'][i]:.3f}")
    manifest = root / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest, truth


def _load_oracle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The oracle plugin module, written from :data:`ORACLE` and imported."""
    monkeypatch.syspath_prepend(str(write_package(tmp_path / "src")))
    for name in [m for m in sys.modules if m.startswith("xaibench_lung_threshold")]:
        monkeypatch.delitem(sys.modules, name)
    path = tmp_path / "phantom_oracle.py"
    path.write_text(ORACLE)
    spec = importlib.util.spec_from_file_location("phantom_oracle_test", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_oracle_returns_the_phantom_masks_of_images_read_from_png(tmp_path, monkeypatch):
    """The oracle's half of the acceptance, without ``data masks``: PNG -> manifest -> masks."""
    from xaibench.data.manifest import ManifestDataset

    oracle = _load_oracle(tmp_path, monkeypatch).PhantomOracle()
    manifest, truth = _write_phantom(tmp_path / "data")
    dataset = ManifestDataset(path=str(manifest), image_size=None)
    dataset.use_cache(None, enabled=False)
    images = torch.stack([dataset[i].image for i in range(len(dataset))])
    oracle.load(torch.device("cpu"))
    masks = oracle.segment(images)
    assert tuple(masks) == REGIONS
    for i, rel in enumerate(truth):
        for region in REGIONS:
            assert np.array_equal(masks[region][i].numpy(), truth[rel][region]), (rel, region)
    assert all(masks[r].any() for r in REGIONS)  # every region is drawn somewhere
    with pytest.raises(XaibenchError, match="did not render"):
        oracle.segment(images.flip(-1))  # not a phantom image: no guessing


@pytest.mark.skipif(
    not _has_data_masks(), reason="`xaibench data masks` not merged yet (issue 19 item 3)"
)
def test_data_masks_with_the_docs_oracle_reproduces_the_phantom_masks(tmp_path):
    site = write_package(tmp_path / "src")
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "phantom_oracle.py").write_text(ORACLE)
    root = tmp_path / "data"
    manifest, truth = _write_phantom(root)
    env = _subprocess_env(site, plugins)
    out = root / "masks"
    proc = subprocess.run(
        [sys.executable, "-m", "xaibench", "data", "masks", str(manifest),
         "--segmenter", "phantom_oracle", "--out", str(out)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # The new manifest names one mask file per region per image, relative to the image root.
    import pandas as pd

    written = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    assert list(written["image"]) == list(truth)
    for region in REGIONS:
        assert f"mask_{region}" in written.columns, list(written.columns)
    for _, row in written.iterrows():
        for region in REGIONS:
            path = root / row[f"mask_{region}"]
            assert path.resolve().is_relative_to(out.resolve()), path
            mask = decode_mask(path.read_bytes(), path.name)
            expected = truth[row["image"]][region]
            assert mask.shape == expected.shape == (SIZE, SIZE)
            assert _dice(mask, expected) == 1.0, (row["image"], region)
            assert np.array_equal(mask, expected), (row["image"], region)
            assert set(np.unique(np.asarray(Image.open(path)))) <= {0, 255}

    sidecar = json.loads((out / "manifest.json").read_text())
    assert sidecar["format"] == "xaibench-masks"
    assert sidecar["segmenter"]["segmenter"] == "phantom_oracle"
    assert sidecar["segmenter"]["weights"] is None
    assert sorted(sidecar["regions"]) == sorted(REGIONS)
    assert str(tmp_path) not in json.dumps(sidecar)  # no absolute path

    # What a run would read: the manifest dataset on the native grid, masks equal the phantom's.
    from xaibench.data.manifest import ManifestDataset

    dataset = ManifestDataset(path=str(out / "manifest.csv"), image_root=str(root), image_size=None)
    dataset.use_cache(None, enabled=False)
    for i, rel in enumerate(truth):
        sample = dataset[i]
        for region in REGIONS:
            got = sample.regions[region].numpy()
            assert np.array_equal(got, truth[rel][region]), (rel, region)
