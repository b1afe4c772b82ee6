"""Known answers of the whole pipeline on the phantom, whose class signal lives only in bone."""

from pathlib import Path

import pytest

from xaibench.config import resolve_config
from xaibench.engine.benchmark import run_benchmark


@pytest.mark.slow
def test_trained_cnn_learns_bone_and_loses_it_when_bone_is_perturbed(components, tmp_path: Path):
    task = components.tasks.create("osteoporosis")
    config = resolve_config(
        task.defaults(),  # the default dataset and training settings
        {
            "backbones": ["test_resnet.random"],
            "strategies": ["full"],
            "saliency": [],
            "perturbations": ["mean", "zero", "blur", "inpaint"],
            "perturb_regions": ["bone", "heart"],
            "complement_regions": [],
            "sanity": {"images": 0},
            "metrics": ["auc", "delta_region"],
        },
    )
    records = run_benchmark(config, components, tmp_path / "run").document["records"]
    value = {(r["metric"], r["perturbation"], r["region"]): r["value"] for r in records}
    assert value[("auc", None, None)] >= 0.8
    for perturbation in ("mean", "zero", "blur", "inpaint"):
        delta_bone = value[("delta_region", perturbation, "bone")]
        delta_heart = value[("delta_region", perturbation, "heart")]
        assert delta_bone > 0.2, perturbation  # the signal is in bone: removing it costs AUC
        assert abs(delta_heart) < 0.05, perturbation  # the heart carries none
