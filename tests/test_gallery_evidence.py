"""Galleries that show the evidence, end to end: outlines, panel labels, the specific gallery.

The specific Δ of each region comes from the control regions (issue 17, item 2); here the Δ
records are given ``details.specific`` and ``details.control_delta`` by hand, so the test pins
what the explanation stage does with them whatever produces them.
"""

import json
from pathlib import Path

import pandas as pd
import pytest

from xaibench.config import resolve_config
from xaibench.engine.benchmark import run_benchmark
from xaibench.engine.runner import CellRunner

TINY = {
    "dataset": {
        "name": "phantom",
        "options": {"n_images": 60, "image_size": 32, "class_shares": [0.4, 0.3, 0.3]},
    },
    "backbones": [{"name": "test_resnet.random", "options": {"img_size": 32}}],
    "strategies": ["full"],
    "saliency": ["saliency"],
    "perturbations": ["mean", "zero"],
    "train": {"epochs": 1, "batch_size": 16},
    "max_explain_images": 6,
    "gallery_images": 2,
    "sanity": {"images": 0},
    "analysis": {"drift_grid": 0},
    "cache": False,
}

#: Planted specific Δ and off-target cost: ``mean`` is the cheaper perturbation, and under it
#: ribs (not the primary region, bone) is the region the "model needs" most.
SPECIFIC = {("mean", "ribs"): 0.30, ("zero", "spine"): 0.90}
COST = {"mean": 0.01, "zero": 0.20}


@pytest.fixture
def planted_run(components, tmp_path: Path, monkeypatch) -> Path:
    original = CellRunner._perturb

    def with_controls(self, model, base, intact, result):
        original(self, model, base, intact, result)
        for rec in result.records:
            region = rec.get("region") or ""
            if rec["metric"] == "delta_region" and not region.startswith("outside_"):
                key = (rec["perturbation"], region)
                rec["details"]["specific"] = SPECIFIC.get(key, 0.01)
                rec["details"]["control_delta"] = COST[rec["perturbation"]]

    monkeypatch.setattr(CellRunner, "_perturb", with_controls)
    config = resolve_config(components.tasks.create("osteoporosis").defaults(), TINY, {})
    run_benchmark(config, components, tmp_path / "run")
    return tmp_path / "run"


def test_galleries_outline_every_region_label_each_panel_and_rank_the_needed_region(planted_run):
    from PIL import Image

    index = json.loads((planted_run / "gallery" / "index.json").read_text())
    assert [e["kind"] for e in index] == ["best", "worst", "random", "specific"]
    predictions = pd.read_csv(planted_run / "predictions.csv", keep_default_na=False)
    test = predictions[predictions.split == "test"]
    intact = test[test.perturbation == ""].set_index("sample_id")
    perturbed = test[(test.perturbation == "mean") & (test.region == "ribs")].set_index("sample_id")
    explained = list(intact.index[:6])  # max_explain_images
    names = ["normal", "osteopenia", "osteoporosis"]
    for entry in index:
        # every explained and perturbed region outlined, the primary (bone) first, in cyan
        assert [o["region"] for o in entry["outlines"]] == ["bone", "spine", "ribs", "clavicles"]
        assert entry["outlines"][0]["colour"] == "cyan"
        assert len({o["colour"] for o in entry["outlines"]}) == 4
        ids = entry["sample_ids"]
        assert entry["positive_class"] == "osteoporosis"
        assert entry["classes"] == [names[intact.loc[i, "label"]] for i in ids]
        assert entry["p_positive"] == pytest.approx(
            [intact.loc[i, "prob_osteoporosis"] for i in ids]
        )
        calls = [str(intact.loc[i, "called_positive"]) == "True" for i in ids]
        assert entry["called"] == ["osteoporosis" if call else "not osteoporosis" for call in calls]
        with Image.open(planted_run / "gallery" / entry["file"]) as picture:
            width, height = picture.size
        assert width == 2 * 160  # two 32 px tiles enlarged to 160
        assert height > 2 * 160  # plus the label band above and the legend below
    specific = index[-1]
    assert (specific["region"], specific["perturbation"]) == ("ribs", "mean")
    assert specific["score_metric"] == "probability_drop"
    drops = (intact["prob_osteoporosis"] - perturbed["prob_osteoporosis"]).loc[explained]
    expected = drops.sort_values(ascending=False, kind="stable")
    assert specific["sample_ids"] == list(expected.index[:2])
    assert specific["scores"] == pytest.approx(list(expected.iloc[:2]))
