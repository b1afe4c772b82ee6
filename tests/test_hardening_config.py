"""Issue 16, item 7: values `validate` used to accept and a run then crashed on are refused up
front with a message naming the key; the analysis stages never lose a run's results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_runs import TINY_PHANTOM_RUN, cli

from xaibench.config import resolve_config
from xaibench.errors import InvalidOptionsError, XaibenchError

BASE: dict[str, Any] = {
    "task": "osteoporosis",
    "dataset": "phantom",
    "backbones": ["test_resnet.random"],
    "strategies": ["linear_probe"],
    "metrics": ["auc"],
}


@pytest.mark.parametrize(
    ("layer", "where"),
    [
        ({"seeds": [-1]}, "seeds.0"),
        ({"seeds": [1e23]}, "seeds.0"),
        ({"seeds": [2**32]}, "seeds.0"),
        ({"split": {"seed": -5}}, "split.seed"),
        ({"train": {"lr": float("inf")}}, "train.lr"),
        ({"train": {"weight_decay": float("nan")}}, "train.weight_decay"),
        ({"train": {"epochs": 10**12}}, "train.epochs"),
        ({"train": {"eval_batch_size": 10**9}}, "train.eval_batch_size"),
        ({"analysis": {"bootstrap": 10**12}}, "analysis.bootstrap"),
        ({"max_explain_images": 10**12}, "max_explain_images"),
        ({"sanity": {"threshold": float("nan")}}, "sanity.threshold"),
    ],
)
def test_out_of_range_settings_are_refused_naming_the_key(layer: dict[str, Any], where: str):
    with pytest.raises(InvalidOptionsError) as info:
        resolve_config(BASE, layer)
    assert any(p.startswith(f"{where}:") for p in info.value.problems), info.value.problems


def test_the_largest_seed_is_accepted():
    assert resolve_config(BASE, {"seeds": [0, 2**32 - 1]}).seeds == [0, 2**32 - 1]


@pytest.mark.parametrize(
    ("options", "where"),
    [({"n_images": 10**12}, "n_images"), ({"seed": -1}, "seed"), ({"seed": 1e23}, "seed")],
)
def test_phantom_options_out_of_range_are_refused(components, options, where):
    with pytest.raises(XaibenchError, match=rf"phantom'?: {where}: "):
        components.datasets.create("phantom", options)


def test_component_options_refuse_inf_and_nan(components):
    with pytest.raises(XaibenchError, match="sigma"):
        components.perturbations.create("blur", {"sigma": float("inf")})


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"seeds": [-1, 1e23]}, ["seeds.0", "seeds.1"]),
        ({"dataset": {"name": "phantom", "options": {"n_images": 10**12}}}, ["n_images"]),
    ],
)
def test_validate_lists_range_problems_with_exit_2(
    tmp_path: Path, config: dict[str, Any], expected: list[str]
):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"task": "osteoporosis", **config}))
    proc = cli("validate", str(path), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    for key in expected:
        assert key in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_failing_analysis_never_loses_the_run(tmp_path: Path, components, monkeypatch):
    """Before: an analysis that raised ended the run without results.json, and so did --resume."""
    import json

    import xaibench.engine.benchmark as benchmark

    def broken(*args: object, **kwargs: object) -> object:
        raise ValueError("expected non-negative integer")

    monkeypatch.setattr(benchmark, "performance_explanation_correlation", broken)
    config = resolve_config(
        TINY_PHANTOM_RUN,
        {
            "saliency": ["saliency"],
            "perturbations": ["zero"],
            "metrics": ["auc", "delta_region", "iou_region"],
            "explain_regions": ["bone"],
            "perturb_regions": ["bone"],
        },
    )
    for _ in range(2):  # the run, then a resume of the same folder
        outcome = benchmark.run_benchmark(config, components, tmp_path / "run")
        document = json.loads((tmp_path / "run" / "results.json").read_text())
        assert document["analysis_failures"] == {
            "performance_explanation_correlation": "ValueError: expected non-negative integer"
        }
        assert "perturbation_rank_agreement" in document["analysis"]
        assert any(r["metric"] == "auc" for r in document["records"])
        assert not outcome.failed


@pytest.mark.parametrize("label", ["two\nlines", "tab\there", "bell\x07", " padded", "rtl\u202e"])
def test_labels_with_control_characters_are_refused(label: str):
    with pytest.raises(InvalidOptionsError, match="label"):
        resolve_config(BASE, {"backbones": [{"name": "test_resnet.random", "label": label}]})


def test_ordinary_labels_are_fine():
    for label in ("res/a", "res_a", "LoRA r=8 (alpha 16)", "=HYPERLINK(x)"):
        config = resolve_config(
            BASE, {"backbones": [{"name": "test_resnet.random", "label": label}]}
        )
        assert config.backbones[0].key == label
