"""The osteoporosis task file is the Python class it replaced (issue 18 acceptance).

Two references were written at commit 9fe10d2 by the Python ``Osteoporosis`` class, before it
was removed:

* ``tests/data/osteoporosis_task_reference.json``: its attributes, ``defaults()``,
  ``grids()`` and ``labels()`` of the tables built by :func:`_tables` below;
* ``tests/data/osteoporosis_tiny_run_reference.json``: the sections of ``results.json`` of a
  run of :data:`TINY_PHANTOM_RUN` that hold no number computed by a model (configuration and
  its hash, task, dataset with fingerprint and split counts, the task's provenance). Every
  number a model computes depends on the task only through these, and they are exact on any
  machine (the model's floats need not be).

Measured when the file replaced the class (same machine, same command): every file of the run
folder was byte-identical but for the timestamps (``created``, ``finished``, ``started``), the
cells' ``seconds`` and the hashes of ``results.json`` that quote them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from cli_runs import TINY_PHANTOM_RUN

from xaibench.config import resolve_config
from xaibench.data.phantom import PhantomDataset
from xaibench.engine.benchmark import run_benchmark
from xaibench.progress import NullProgress

DATA = Path(__file__).parent / "data"


def _tables() -> dict[str, pd.DataFrame]:
    phantom = PhantomDataset(n_images=60, image_size=32, class_shares=[0.4, 0.3, 0.3]).table()
    return {
        "phantom": phantom,
        "manifest_strings": pd.DataFrame(
            {
                "t_score": ["-3", "", "-1.5", "0.2", "-2.5", "-1", ""],
                "label": ["", "osteopenia", "", "Normal", "osteoporosis", "", "2"],
            }
        ),
        "floats_with_labels": pd.DataFrame(
            {
                "t_score": [-3.0, np.nan, -0.5, -2.5000001, -1.0000001],
                "label": ["", "OSTEOPOROSIS", "", "", ""],
            }
        ),
        "label_only": pd.DataFrame({"label": ["0", "1", "2.0", "normal"]}),
    }


def test_the_task_file_has_the_python_class_interface(components: Any):
    reference = json.loads((DATA / "osteoporosis_task_reference.json").read_text())
    task = components.tasks.create("osteoporosis")
    now = {
        "class_names": list(task.class_names),
        "positive_class": task.positive_class,
        "regions_of_interest": list(task.regions_of_interest),
        "display_name": task.display_name,
        "citation": task.citation,
        "version": task.version,
        "defaults": task.defaults(),
        "grids": task.grids(),
        "labels": {name: task.labels(t).tolist() for name, t in _tables().items()},
    }
    now = json.loads(json.dumps(now))
    for key, value in now.items():
        assert value == reference[key], key
    assert sum(reference["labels"]["phantom"]) > 0  # the phantom table has every class
    assert set(reference["labels"]["phantom"]) == {0, 1, 2}


def test_a_tiny_run_records_what_the_python_class_recorded(components: Any, tmp_path: Path):
    reference = json.loads((DATA / "osteoporosis_tiny_run_reference.json").read_text())
    task = components.tasks.create("osteoporosis")
    config = resolve_config(task.defaults(), TINY_PHANTOM_RUN)
    outcome = run_benchmark(config, components, tmp_path / "run", NullProgress())
    doc = outcome.document
    assert doc["config_hash"] == reference["config_hash"]
    for key in ("config", "task", "dataset"):
        assert doc[key] == reference[key], key
    provenance = dict(doc["components"]["tasks"]["osteoporosis"])
    expected = dict(reference["components"]["tasks"]["osteoporosis"])
    provenance.pop("version"), expected.pop("version")  # xaibench's own version
    assert provenance == expected
    assert "file" not in doc["task"]  # a built-in task file: identified by the package version
    assert "excluded_rows" not in doc["dataset"]
