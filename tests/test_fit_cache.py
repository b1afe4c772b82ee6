"""The trained-model stage cache: a cell run again does not train again, and nothing changes."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xaibench.config import resolve_config
from xaibench.engine.benchmark import run_benchmark

RUN = {
    "task": "osteoporosis",
    "dataset": {
        "name": "phantom",
        "options": {"n_images": 60, "image_size": 32, "class_shares": [0.4, 0.3, 0.3]},
    },
    "backbones": [{"name": "test_resnet.random", "options": {"img_size": 32}}],
    "strategies": ["full", "linear_probe"],
    # SmoothGrad draws noise from torch's generator after training: the restored random
    # states must make it draw the same noise as the run that trained
    "saliency": ["smoothgrad", "random"],
    "perturbations": ["zero"],
    "train": {"epochs": 1, "batch_size": 16},
    "max_explain_images": 6,
    "gallery_images": 0,
    "sanity": {"images": 2, "steps": 2},
    "analysis": {"bootstrap": 100},
}


def _records(run_dir: Path) -> list[dict]:
    doc = json.loads((run_dir / "results.json").read_text())
    return doc["records"]


def test_a_cell_run_again_loads_its_trained_model(components, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    config = resolve_config(
        components.tasks.create("osteoporosis").defaults(), RUN, {"cache_dir": str(cache)}
    )
    first = run_benchmark(config, components, tmp_path / "first")
    assert all(r.status == "ok" for r in first.results)
    assert len(list((cache / "fits").glob("*.xbc"))) == 2  # one per cell

    calls = []

    def no_training(self, *args, **kwargs):
        calls.append(type(self).__name__)
        raise AssertionError("trained again")

    for cls in {type(components.strategies.create(n)) for n in ("full", "linear_probe")}:
        monkeypatch.setattr(cls, "fit", no_training)
    second = run_benchmark(config, components, tmp_path / "second")
    assert calls == []
    assert all(r.status == "ok" for r in second.results)
    assert _records(tmp_path / "second") == _records(tmp_path / "first")
    for name in ("predictions.csv", "explanations.csv"):
        a = (tmp_path / "first" / name).read_bytes()
        assert (tmp_path / "second" / name).read_bytes() == a, name
    assert [r.fit for r in second.results] == [r.fit for r in first.results]
    # the selection curve and the recorded log-probabilities come through the cache and the files
    full = first.results[0].fit
    assert [p["epoch"] for p in full["selection_curve"]] == list(range(full["epochs_run"]))
    assert full["selection_curve"][full["best_epoch"]]["val_loss"] == full["best_val_loss"]
    preds = pd.read_csv(tmp_path / "second" / "predictions.csv")
    for name in ("normal", "osteopenia", "osteoporosis"):
        np.testing.assert_allclose(
            np.exp(preds[f"log_prob_{name}"]), preds[f"prob_{name}"], rtol=1e-14, atol=0
        )


def test_other_training_settings_train_again(components, tmp_path):
    cache = tmp_path / "cache"
    defaults = components.tasks.create("osteoporosis").defaults()
    one = {**RUN, "strategies": ["full"], "saliency": ["saliency"], "sanity": {"images": 0}}
    config = resolve_config(defaults, one, {"cache_dir": str(cache)})
    run_benchmark(config, components, tmp_path / "a")
    longer = resolve_config(defaults, one, {"cache_dir": str(cache), "train": {"epochs": 2}})
    run_benchmark(longer, components, tmp_path / "b")
    assert len(list((cache / "fits").glob("*.xbc"))) == 2
    # without the cache nothing is read or written
    off = resolve_config(defaults, one, {"cache_dir": str(tmp_path / "off"), "cache": False})
    run_benchmark(off, components, tmp_path / "c")
    assert not (tmp_path / "off").exists()
    fits = pd.DataFrame([json.loads((tmp_path / d / "results.json").read_text())["cells"][0]["fit"]
                         for d in ("a", "b")])  # fmt: skip
    assert list(fits["epochs_run"]) == [1, 2]


def test_a_corrupt_entry_is_a_miss(components, tmp_path):
    import torch

    from xaibench.cache import prepare_cache_dir
    from xaibench.engine.fit_cache import FitCache

    prepare_cache_dir(tmp_path)  # an xaibench cache (marked), so its entries are read
    cache = FitCache(tmp_path)
    (tmp_path / "fits").mkdir()
    (tmp_path / "fits" / "k.xbc").write_bytes(b"not a cache entry")
    assert cache.load("k", torch.nn.Linear(2, 2)) is None
    assert not (tmp_path / "fits" / "k.xbc").exists()  # discarded (tests/test_cache_entries.py)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("XAIBENCH_CACHE_DIR", str(tmp_path / "default-cache"))
