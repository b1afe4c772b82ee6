"""The ``cardiomegaly`` task: a task file shipped in the package, read by xaibench's FileTask."""

import importlib.metadata

import numpy as np
import pandas as pd
import pytest
from xaibench_cardiomegaly import TASK_FILE

from xaibench.config import resolve_config
from xaibench.data.values import format_problem
from xaibench.errors import XaibenchError
from xaibench.plugins import collect_components, get_plugin_manager
from xaibench.tasks.file_task import FileTask


@pytest.fixture(scope="module")
def components():
    return collect_components(get_plugin_manager(load_plugins="cardiomegaly"))


def _task() -> FileTask:
    return FileTask(file=TASK_FILE)


def test_registered_through_the_entry_point(components):
    installed = importlib.metadata.version("xaibench-cardiomegaly")
    for registry, name in (
        (components.tasks, "cardiomegaly"),
        (components.datasets, "cardiac_phantom"),
    ):
        entry = registry.get(name)
        assert entry.provider.distribution == "xaibench-cardiomegaly"
        assert entry.provider.version == installed
    assert "cardiac_manifest" not in components.datasets  # --data uses the core manifest
    entry = components.tasks.get("cardiomegaly")
    assert entry.target == "xaibench.tasks.file_task:FileTask"
    task = components.tasks.create("cardiomegaly")
    assert isinstance(task, FileTask)
    assert task.class_names == ("normal", "cardiomegaly")
    assert task.positive_index == 1
    assert task.regions_of_interest == ("heart", "lungs")
    assert task.label_columns == ("ctr", "label")  # never strata
    assert task.display_name == "Cardiomegaly (cardiothoracic ratio)"
    assert task.version == "1"


def test_labels_from_ctr_label_or_both():
    table = pd.DataFrame(
        {
            "ctr": [0.42, 0.55, np.nan, np.nan, np.nan, 0.5, np.nan],
            "label": [None, "cardiomegaly", "CardioMegaly", "normal", "1", "normal", 0.0],
        }
    )
    assert _task().labels(table).tolist() == [0, 1, 1, 0, 1, 0, 0]
    assert _task().labels(table[["ctr"]].iloc[:2]).tolist() == [0, 1]
    assert _task().labels(table[["label"]].iloc[1:5]).tolist() == [1, 1, 0, 1]
    # As a manifest gives them: text cells.
    text = pd.DataFrame({"ctr": ["0.5", "0.5001", "", "1"], "label": ["", "", "cardiomegaly", ""]})
    assert _task().labels(text).tolist() == [0, 1, 1, 1]


def test_a_table_without_either_column_is_refused():
    with pytest.raises(XaibenchError, match="needs a 'ctr' or a 'label' column"):
        _task().labels(pd.DataFrame({"t_score": [-1.0]}))


def test_bad_rows_are_named_one_based():
    table = pd.DataFrame(
        {
            "ctr": [0.45, np.nan, 52.0, np.nan, 0.0, "0_5", "0.6"],
            "label": ["normal", "maybe", "cardiomegaly", None, "normal", "", "normal"],
        }
    )
    lines = [format_problem(p) for p in _task().check_labels(table)]
    assert lines == [
        "row 2 (label): unknown label 'maybe'; use one of normal, cardiomegaly or 0-1",
        "row 3 (ctr): 52 is outside (0, 1]; a CTR is a ratio: write 0.52, not 52",
        "row 4 (ctr / label): no class: the row needs a ctr or a label",
        "row 5 (ctr): 0 is outside (0, 1]; a CTR is a ratio: write 0.52, not 52",
        "row 6 (ctr): not a number: '0_5'",
        "row 7 (label): label 'normal' disagrees with ctr 0.6 (cardiomegaly); give one or make "
        "them agree",
    ]
    with pytest.raises(XaibenchError) as info:
        _task().labels(table)
    assert str(info.value).startswith("task 'cardiomegaly': 6 label problems")


def test_many_bad_rows_are_summarised():
    table = pd.DataFrame({"label": ["?"] * 13})
    with pytest.raises(XaibenchError, match=r"row 10 \(label\): .*\.\.\. and 3 more problems"):
        _task().labels(table)


def test_defaults_and_grids_resolve(components):
    task = components.tasks.create("cardiomegaly")
    config = resolve_config(task.defaults())
    assert config.task == "cardiomegaly"
    assert config.dataset.name == "cardiac_phantom"
    assert len(config.backbones) * len(config.strategies) == 12
    metrics = [ref.name for ref in config.metrics]
    assert "macro_auc" not in metrics  # equal to the AUC with two classes
    assert {"auc", "delta_region", "iou_region", "pointing_game", "relevance_mass"} <= set(metrics)
    for ref in config.metrics:
        components.metrics.get(ref.name)
    for ref in [*config.saliency, *config.perturbations, *config.backbones, *config.strategies]:
        assert ref.name in {
            *components.saliency.names(),
            *components.perturbations.names(),
            *components.backbones.names(),
            *components.strategies.names(),
        }
    assert config.explain_regions == config.perturb_regions == ["heart", "lungs", "clavicles"]
    assert set(task.grids()) == {"quick", "encoders"}
    for name, layer in task.grids().items():
        resolved = resolve_config(task.defaults(), layer)
        assert resolved.task == "cardiomegaly", name
