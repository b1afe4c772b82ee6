import numpy as np
import pandas as pd
import pytest
from xaibench_cardiomegaly.task import Cardiomegaly

from xaibench.config import resolve_config
from xaibench.errors import XaibenchError
from xaibench.plugins import collect_components, get_plugin_manager


@pytest.fixture(scope="module")
def components():
    return collect_components(get_plugin_manager(load_plugins="cardiomegaly"))


def test_registered_through_the_entry_point(components):
    for registry, name in (
        (components.tasks, "cardiomegaly"),
        (components.datasets, "cardiac_phantom"),
        (components.datasets, "cardiac_manifest"),
    ):
        entry = registry.get(name)
        assert entry.provider.distribution == "xaibench-cardiomegaly"
        assert entry.provider.version == "0.1.0"
    task = components.tasks.create("cardiomegaly")
    assert isinstance(task, Cardiomegaly)
    assert task.class_names == ("normal", "cardiomegaly")
    assert task.positive_index == 1
    assert task.regions_of_interest[0] == "heart"


def test_labels_from_ctr_label_or_both():
    table = pd.DataFrame(
        {
            "ctr": [0.42, 0.55, np.nan, np.nan, np.nan, 0.5, np.nan],
            "label": [None, "cardiomegaly", "CardioMegaly", "normal", "1", "normal", 0.0],
        }
    )
    assert Cardiomegaly().labels(table).tolist() == [0, 1, 1, 0, 1, 0, 0]
    assert Cardiomegaly().labels(table[["ctr"]].iloc[:2]).tolist() == [0, 1]
    assert Cardiomegaly().labels(table[["label"]].iloc[1:5]).tolist() == [1, 1, 0, 1]


def test_a_table_without_either_column_is_refused():
    with pytest.raises(XaibenchError, match="needs a 'ctr' or a 'label' column"):
        Cardiomegaly().labels(pd.DataFrame({"t_score": [-1.0]}))


def test_bad_rows_are_named_one_based():
    table = pd.DataFrame(
        {
            "ctr": [0.45, np.nan, 52.0, np.nan, 0.0],
            "label": ["normal", "maybe", "cardiomegaly", None, "normal"],
        }
    )
    with pytest.raises(XaibenchError) as info:
        Cardiomegaly().labels(table)
    message = str(info.value)
    assert message.startswith("4 row(s) have no valid CTR or label: ")
    assert "row 2 (ctr=nan, label='maybe')" in message
    assert "row 3 (ctr=52.0, label='cardiomegaly')" in message  # a percentage, not a ratio
    assert "row 4 (ctr=nan, label=nan)" in message
    assert "row 5 (ctr=0.0" in message
    assert "row 1 " not in message
    assert "write 0.52, not 52" in message
    assert "normal, cardiomegaly or 0-1" in message


def test_many_bad_rows_are_summarised():
    table = pd.DataFrame({"label": ["?"] * 13})
    with pytest.raises(XaibenchError, match=r"row 10 \(label='\?'\) and 3 more\."):
        Cardiomegaly().labels(table)


def test_ctr_and_label_must_agree():
    table = pd.DataFrame({"ctr": [0.45, 0.6, 0.58], "label": ["normal", "normal", "1"]})
    with pytest.raises(XaibenchError, match=r"1 row\(s\) have a CTR and a label that disagree"):
        Cardiomegaly().labels(table)
    with pytest.raises(XaibenchError, match=r"row 2 \(ctr=0.6, label='normal'\)"):
        Cardiomegaly().labels(table)


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
    assert config.explain_regions[0] == config.perturb_regions[0] == "heart"
    for name, layer in task.grids().items():
        resolved = resolve_config(task.defaults(), layer)
        assert resolved.task == "cardiomegaly", name
