"""The Python API (issue 20 item 1): ``docs/python-api.md`` runs, and agrees with the CLI.

The page's examples run in a fresh interpreter in an empty folder (with the page's ``tiny.yaml``);
the run they make must hold the numbers of the page's ``xaibench run`` command, run by the CLI.
``explain`` and ``score`` are checked against answers worked out by hand on linear models.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import xaibench
from xaibench.escape import csv_frame_back

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "python-api.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True, text=True, cwd=cwd, timeout=600, check=False,
        env={**_env(), "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("XAIBENCH_")}


@pytest.fixture(scope="module")
def doc_runs(tmp_path_factory):
    """The page's examples and its CLI command, each run in the same fresh folder."""
    folder = tmp_path_factory.mktemp("python-api")
    (yaml_block,) = _blocks("yaml")
    (folder / "tiny.yaml").write_text(yaml_block)
    examples = _python("\n".join(_blocks("python")), folder)
    assert examples.returncode == 0, examples.stderr[-3000:]
    (command,) = [
        line for b in _blocks("bash") for line in b.splitlines() if "xaibench run" in line
    ]
    args = shlex.split(command)
    assert args[0] == "xaibench"
    cli = subprocess.run(
        [sys.executable, "-m", "xaibench", *args[1:], "--quiet"],
        capture_output=True, text=True, cwd=folder, timeout=600, check=False,
        env={**_env(), "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr[-3000:]
    return folder, examples.stdout


@pytest.mark.slow
def test_docs_examples_give_the_numbers_of_the_cli(doc_runs):
    folder, _ = doc_runs
    api, cli = folder / "runs" / "api", folder / "runs" / "cli"
    for name in ("predictions.csv", "explanations.csv", "leaderboard_performance.csv"):
        assert (api / name).read_bytes() == (cli / name).read_bytes(), name
    docs = [json.loads((d / "results.json").read_text()) for d in (api, cli)]
    assert docs[0]["config_hash"] == docs[1]["config_hash"]
    assert docs[0]["records"] == docs[1]["records"]
    aucs = [r for r in docs[0]["records"] if r["metric"] == "auc" and r["perturbation"] is None]
    assert len(aucs) == 1
    assert 0 <= aucs[0]["value"] <= 1


@pytest.mark.slow
def test_run_reads_back_typed_frames_with_the_files_numbers(doc_runs):
    folder, stdout = doc_runs
    run = xaibench.load(folder / "runs" / "api")
    records = run.records
    assert records["seed"].dtype == "Int64"
    assert records["value"].dtype == "float64"
    assert records["metric"].dtype == "string"
    assert records["higher_is_better"].dtype == "boolean"
    document = json.loads((run.path / "results.json").read_text())
    assert len(records) == len(document["records"])
    expected = [r["value"] for r in document["records"]]
    assert np.allclose(records["value"].to_numpy(float), np.array(expected, float), equal_nan=True)
    # the AUC row the page prints, printed with the CLI's value
    auc = records[(records["metric"] == "auc") & records["perturbation"].isna()]
    assert f"{auc['value'].iloc[0]:.6f}"[:6] in stdout
    predictions = run.predictions
    assert predictions["prob_osteoporosis"].dtype == "float64"
    raw = csv_frame_back(pd.read_csv(run.path / "predictions.csv", keep_default_na=False))
    assert len(predictions) == len(raw)
    assert np.array_equal(predictions["prob_osteoporosis"].to_numpy(), raw["prob_osteoporosis"])
    assert run.explanations["value"].dtype == "float64"
    for which in ("performance", "explainability"):
        board = run.leaderboard(which)
        csv = pd.read_csv(run.path / f"leaderboard_{which}.csv")
        assert list(board.columns) == list(csv.columns)
        for column in board.columns:
            if pd.api.types.is_float_dtype(board[column]):
                assert np.allclose(board[column].round(6), csv[column], equal_nan=True), column
    with pytest.raises(xaibench.XaibenchError, match="did you mean 'performance'"):
        run.leaderboard("perfomance")
    assert run.cells[["backbone", "strategy", "seed", "status"]].values.tolist() == [
        ["test_resnet.random", "linear_probe", 0, "ok"]
    ]
    assert run.config["task"] == "osteoporosis"
    assert run.config["saliency"][0]["name"] == "gradcam"
    assert run.task["positive_class"] == "osteoporosis"


@pytest.mark.slow
def test_compare_aligns_records_and_refuses_other_tasks(doc_runs, tmp_path):
    folder, _ = doc_runs
    a, b = xaibench.load(folder / "runs" / "api"), xaibench.load(folder / "runs" / "cli")
    diff = a.compare(b)
    assert len(diff) == len(a.records)
    assert diff["difference"].dropna().eq(0).all()
    # another task: a copy of the run whose results name another task
    other = tmp_path / "other"
    import shutil

    shutil.copytree(folder / "runs" / "cli", other)
    document = json.loads((other / "results.json").read_text())
    document["task"]["name"] = "cardiomegaly"
    document["records"][0]["value"] = 0.123
    (other / "results.json").write_text(json.dumps(document))
    with pytest.raises(xaibench.XaibenchError, match="different tasks"):
        a.compare(xaibench.load(other))


@pytest.mark.slow
def test_notebook_display_escapes_names(doc_runs, tmp_path):
    folder, _ = doc_runs
    html = xaibench.load(folder / "runs" / "api")._repr_html_()
    assert "Performance leaderboard" in html
    assert "Explainability leaderboard" in html
    assert html.count("<img") == 3
    assert "data:image/png;base64," in html
    import shutil

    copy = tmp_path / "copy<script>"
    shutil.copytree(folder / "runs" / "api", copy)
    (copy / "leaderboard.json").unlink()
    html = xaibench.load(copy)._repr_html_()
    assert "copy<script>" not in html
    assert "copy&lt;script&gt;" in html


def test_import_does_no_work_and_imports_no_torch():
    code = (
        "import sys, xaibench; "
        "assert 'torch' not in sys.modules, 'torch'; "
        "assert 'pandas' not in sys.modules, 'pandas'; "
        "assert 'xaibench.plugins' not in sys.modules, 'plugins'; "
        "assert xaibench.__version__; "
        "assert 'torch' not in sys.modules; "
        "assert set(xaibench.__all__) <= set(dir(xaibench))"
    )
    proc = _python(code, ROOT)
    assert proc.returncode == 0, proc.stderr


def test_every_public_name_has_a_section_and_every_section_a_name():
    headings = re.findall(r"^## `xaibench\.(\w+)", DOC.read_text(), flags=re.M)
    assert sorted(headings) == sorted(xaibench.__all__)
    for name in xaibench.__all__:
        assert getattr(xaibench, name) is not None
    with pytest.raises(AttributeError):
        _ = xaibench.no_such_name


def _linear_model(weight: torch.Tensor) -> nn.Module:
    """logits = W x (flattened image), no bias."""
    classes, pixels = weight.shape
    linear = nn.Linear(pixels, classes, bias=False)
    with torch.no_grad():
        linear.weight.copy_(weight)
    return nn.Sequential(nn.Flatten(), linear)


def test_explain_gradient_methods_on_a_linear_model_give_the_weights():
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(2, 36, generator=generator)
    model = _linear_model(weight)
    images = torch.rand(3, 1, 6, 6, generator=generator)
    targets = [1, 0, 1]
    maps = xaibench.explain(model, images, targets, method="saliency")
    expected = torch.stack([weight[t].abs().view(6, 6) for t in targets])
    assert torch.allclose(maps, expected)
    ixg = xaibench.explain(model, images, targets, method="input_x_gradient")
    assert torch.allclose(ixg, torch.stack([weight[t].view(6, 6) for t in targets]) * images[:, 0])
    assert model.training  # the caller's mode is restored


def test_explain_gradcam_with_a_target_layer_by_hand():
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 2, 1)
    head = nn.Linear(2, 2)
    model = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)
    images = torch.rand(2, 1, 5, 5)
    maps = xaibench.explain(model, images, [0, 1], method="gradcam", target_layer="1")
    # the ReLU's output A [B, 2, 5, 5]; d logit_t / d A_k = W[t, k] / 25 at every location
    activation = torch.relu(conv(images)).detach()
    for b, t in enumerate([0, 1]):
        weights = head.weight[t].detach() / 25
        cam = torch.relu((weights.view(2, 1, 1) * activation[b]).sum(0))
        assert torch.allclose(maps[b], cam, atol=1e-6)
    same = xaibench.explain(model, images, [0, 1], method="gradcam", target_layer=model[1])
    assert torch.equal(maps, same)


def test_explain_repeats_grayscale_for_a_three_channel_model():
    torch.manual_seed(0)
    rgb = nn.Sequential(nn.Conv2d(3, 1, 1, bias=False), nn.Flatten(), nn.Linear(16, 2))
    gray = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.Flatten(), rgb[2])
    with torch.no_grad():  # a 3-channel 1x1 conv on a repeated image: the summed weights
        gray[0].weight.copy_(rgb[0].weight.sum(dim=1, keepdim=True))
    images = torch.rand(2, 1, 4, 4)
    a = xaibench.explain(rgb, images, 1, method="saliency")
    b = xaibench.explain(gray, images, 1, method="saliency")
    assert torch.allclose(a, b, atol=1e-6)


def test_explain_is_seeded_and_leaves_the_global_rng_alone():
    model = _linear_model(torch.ones(2, 16))
    images = torch.rand(2, 1, 4, 4)
    state = torch.random.get_rng_state()
    a = xaibench.explain(model, images, 0, method="random", seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a, xaibench.explain(model, images, 0, method="random", seed=3))
    assert not torch.equal(a, xaibench.explain(model, images, 0, method="random", seed=4))


def test_explain_a_registered_backbone():
    images = torch.rand(2, 1, 32, 32)
    maps = xaibench.explain(
        "test_resnet.random", images, [0, 1], method="gradcam", backbone_options={"img_size": 32}
    )
    assert maps.shape == (2, 32, 32)
    assert bool((maps >= 0).all())
    again = xaibench.explain(
        "test_resnet.random", images, [0, 1], method="gradcam", backbone_options={"img_size": 32}
    )
    assert torch.equal(maps, again)


@pytest.mark.parametrize(
    ("model", "kwargs", "message"),
    [
        ("linear", {"method": "gradcm"}, "did you mean 'gradcam'"),
        ("linear", {"method": "integrated_gradients", "n_stepz": 3}, "did you mean 'n_steps'"),
        ("linear", {"method": "gradcam"}, "target_layer"),
        ("linear", {"method": "gradcam", "target_layer": "nope"}, "no module 'nope'"),
        ("linear", {"method": "attention_rollout"}, "attention_rollout"),
        ("linear", {"backbone_options": {"img_size": 4}}, "only for a registered backbone"),
        ("test_resnt.random", {}, "did you mean 'test_resnet.random'"),
        ("test_resnet.random", {"backbone_options": {"img_sise": 4}}, "did you mean 'img_size'"),
        (3, {}, "expected a torch.nn.Module"),
    ],
)
def test_explain_refuses_bad_input_in_one_line(model, kwargs, message):
    net = _linear_model(torch.ones(2, 16)) if model == "linear" else model
    with pytest.raises(xaibench.XaibenchError, match=re.escape(message)):
        xaibench.explain(net, torch.rand(2, 1, 4, 4), 0, **kwargs)


def test_explain_refuses_images_and_targets_of_the_wrong_shape():
    model = _linear_model(torch.ones(2, 48))
    with pytest.raises(xaibench.XaibenchError, match=r"\[B, 1, H, W\]"):
        xaibench.explain(model, torch.rand(2, 3, 4, 4), 0, method="saliency")
    with pytest.raises(xaibench.XaibenchError, match="expected 2 class indices"):
        xaibench.explain(_linear_model(torch.ones(2, 16)), torch.rand(2, 1, 4, 4), [0, 1, 0])


def test_score_pointing_game_by_hand():
    maps = torch.zeros(3, 4, 4)
    maps[0, 1, 1] = 1  # inside
    maps[1, 3, 3] = 1  # outside
    maps[2, 1, 1] = maps[2, 3, 3] = 1  # tied: one of two inside
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[:, :2, :2] = True  # area fraction 4 / 16
    result = xaibench.score(maps, masks, metric="pointing_game")
    assert result.values.tolist() == [1.0, 0.0, 0.5]
    assert result.value == pytest.approx(0.5)
    assert result.n == 3
    assert result.chance == pytest.approx(0.25)
    assert result.chance_method == "area fraction"
    assert result.normalised == pytest.approx((0.5 - 0.25) / (1 - 0.25))
    anyhit = xaibench.score(maps, masks, metric="pointing_game", ties="any")
    assert anyhit.values.tolist() == [1.0, 0.0, 1.0]


def test_score_relevance_mass_by_hand_and_refusals():
    maps = torch.zeros(1, 2, 2)
    maps[0] = torch.tensor([[3.0, 1.0], [0.0, -2.0]])
    masks = torch.tensor([[[1, 0], [0, 0]]])
    result = xaibench.score(maps, masks, metric="relevance_mass")
    assert result.values.tolist() == [pytest.approx(0.75)]  # 3 of the positive mass 4
    with pytest.raises(xaibench.XaibenchError, match="does not score maps against regions"):
        xaibench.score(maps, masks, metric="auc")
    with pytest.raises(xaibench.XaibenchError, match="did you mean 'ties'"):
        xaibench.score(maps, masks, metric="pointing_game", tiez="any")
    with pytest.raises(xaibench.XaibenchError, match="one shape"):
        xaibench.score(maps, masks[:, :1], metric="pointing_game")
    with pytest.raises(xaibench.XaibenchError, match="bool or 0/1"):
        xaibench.score(maps, masks * 2, metric="pointing_game")


BOOM_PLUGIN = """
from xaibench.hookspecs import hookimpl
from xaibench.saliency.base import SaliencyMethod


class Boom(SaliencyMethod):
    def explain(self, model, images, targets):
        raise RuntimeError("boom")


@hookimpl
def register_saliency_methods(register):
    register("boom_method", Boom)
"""


@pytest.mark.slow
def test_run_raises_when_a_cell_fails_and_check_false_returns_the_run(tmp_path, monkeypatch):
    from xaibench.run_handle import CellsFailedError

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "boom_plugin.py").write_text(BOOM_PLUGIN)
    monkeypatch.setenv("XAIBENCH_PLUGINS_DIR", str(plugins))
    (yaml_block,) = _blocks("yaml")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml_block)
    options = {"config": [config, {"gallery_images": 0}], "saliency": "boom_method"}
    with pytest.raises(CellsFailedError, match="parts of cells failed") as caught:
        xaibench.run("osteoporosis", out=tmp_path / "a", progress=False, **options)
    assert isinstance(caught.value, xaibench.XaibenchError)
    assert caught.value.run.path == tmp_path / "a"
    records = caught.value.run.records
    assert (records.loc[records["saliency"] == "boom_method", "status"] == "failed").all()
    run = xaibench.run("osteoporosis", out=tmp_path / "a", progress=False, check=False, **options)
    assert len(run.records) == len(records)  # resumed: the same run, read back


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seeds": -1}, "seeds: -1 is not a seed"),
        ({"seeds": [0, "1"]}, "seeds: '1' is not a seed"),
        ({"epochs": 0}, "epochs: expected a whole number >= 1"),
        ({"device": "gpu"}, "device: 'gpu' is not one of"),
        ({"precision": "fp16"}, "precision: 'fp16'"),
        ({"config": {"task": "cardiomegaly"}}, "config is for task 'cardiomegaly'"),
        ({"config": {"trian": {"epochs": 1}}}, "trian"),
        ({"grid": "quik"}, "did you mean 'quick'"),
        ({"backbones": 3.5}, "backbones: expected a name or a list of names"),
    ],
)
def test_run_refuses_bad_options_before_running(kwargs, message, tmp_path):
    with pytest.raises(xaibench.XaibenchError, match=re.escape(message)):
        xaibench.run("osteoporosis", out=tmp_path / "run", progress=False, **kwargs)
    assert not (tmp_path / "run").exists()
