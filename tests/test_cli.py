import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from xaibench.evidence import evidence_agreement

TINY = {
    "dataset": {
        "name": "phantom",
        "options": {"n_images": 100, "image_size": 48, "class_shares": [0.4, 0.3, 0.3]},
    },
    "backbones": [
        {"name": "test_vit.random", "options": {"img_size": 48}},
        {"name": "test_resnet.random", "options": {"img_size": 48}},
    ],
    "strategies": ["linear_probe", "full"],
    "saliency": ["gradcam", "saliency"],
    "train": {"epochs": 1, "batch_size": 16},
    "max_explain_images": 12,
}


def xaibench(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "xaibench", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


@pytest.fixture(scope="module")
def tiny_run(tiny_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    proc = xaibench(
        "run",
        "osteoporosis",
        "--config",
        str(tiny_config),
        "--saliency",
        "gradcam",
        "--saliency",
        "example_method",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_run_writes_the_run_directory(tiny_run):
    out, _ = tiny_run
    for name in (
        "config.yaml",
        "environment.json",
        "results.json",
        "predictions.csv",
        "explanations.csv",
        "leaderboard_performance.md",
        "leaderboard_performance.csv",
        "leaderboard_explainability.md",
        "leaderboard_explainability.csv",
        "comparisons.csv",
        "leaderboard.json",
        "leaderboard.html",
        "per_class.csv",
        "confusion.csv",
        "calibration.csv",
        "reliability.csv",
        "strata_performance.csv",
        "strata_explanations.csv",
        "gallery/index.json",
    ):
        assert (out / name).is_file(), name


def test_results_document_has_schema_provenance_and_flat_records(tiny_run):
    doc = json.loads((tiny_run[0] / "results.json").read_text())
    assert doc["schema_version"] == "1.5"
    assert doc["config"]["seeds"] == [0]
    # evidence agreement, computed from the records after all cells (empty without the
    # normalised and specific scores it compares)
    assert doc["evidence"] == evidence_agreement(doc["records"])
    # every option as it ran, defaults included (the config holds only what was given)
    options = doc["component_options"]
    assert set(options) == {
        "backbones", "strategies", "saliency", "perturbations", "metrics", "executors"
    }  # fmt: skip
    assert options["backbones"]["test_vit.random"]["random_init"] is True
    assert set(options["saliency"]) == {"gradcam", "example_method"}
    assert options["metrics"]["iou_region"]["binarization"] == "otsu"  # a default, not given
    assert doc["environment"]["libraries"]["torch"]
    env = doc["environment"]
    assert env["deterministic_algorithms"] is True
    assert env["gpus"] == [] or all(isinstance(g, str) for g in env["gpus"])
    assert "cpu_model" in env
    assert doc["config"]["train"]["batch_size"] == 16  # batch sizes travel with the config
    assert doc["components"]["saliency"]["example_method"]["distribution"] == "xaibench-example"
    assert doc["components"]["backbones"]["test_vit.random"]["distribution"] == "xaibench"
    assert len(doc["cells"]) == 4
    assert all(c["status"] == "ok" for c in doc["cells"])
    records = doc["records"]
    required = {"task", "dataset", "backbone", "strategy", "seed", "metric", "value", "n", "status"}
    assert all(required <= set(r) for r in records)
    assert all(r["random_init"] is True for r in records)
    cfg = doc["config"]
    regions = len(cfg["explain_regions"])
    n_deltas = len(cfg["perturbations"]) * (
        len(cfg["perturb_regions"]) + len(cfg["complement_regions"])
    )
    region_metrics = {"iou_region", "pointing_game", "relevance_mass"}
    assert region_metrics <= {m["name"] for m in cfg["metrics"]}
    # per cell: 7 performance + every delta + methods x regions x region metrics + 2 sanity
    # records per method
    per_cell = 7 + n_deltas + 2 * regions * len(region_metrics) + 2 * 2
    assert len(records) == 4 * per_cell
    ious = [r for r in records if r["metric"] == "iou_region" and r["status"] == "ok"]
    assert {r["saliency"] for r in ious} == {"gradcam", "example_method"}
    assert {r["region"] for r in ious} == {"bone", "spine", "ribs", "clavicles"}
    assert all(0 <= r["value"] <= 1 and r["n"] == 12 for r in ious)
    delta_records = [r for r in records if r["metric"] == "delta_region"]
    assert {(r["perturbation"], r["region"]) for r in delta_records} == {
        (p["name"], region)
        for p in cfg["perturbations"]
        for region in [*cfg["perturb_regions"], "outside_bone"]
    }
    # the default run carries the sanity badges and the cross-cell analyses
    sanity = [r for r in records if r["category"] == "sanity"]
    assert {r["saliency"] for r in sanity} == {"gradcam", "example_method"}
    assert all(r["details"]["passed"] in (True, False, None) for r in sanity)
    # both checks record the run-to-run reference; Grad-CAM is deterministic on the CPU
    assert all("run_to_run" in r["details"] for r in sanity)
    assert {r["details"]["run_to_run"] for r in sanity if r["saliency"] == "gradcam"} <= {1.0, None}
    assert doc["analysis"]["perturbation_rank_agreement"]
    assert doc["analysis"]["explanation_drift"]
    board = pd.read_csv(tiny_run[0] / "leaderboard_explainability.csv")
    assert {"sanity (gradcam)", "sanity (example_method)"} <= set(board.columns)


def test_per_sample_tables_match_the_records(tiny_run):
    out = tiny_run[0]
    doc = json.loads((out / "results.json").read_text())
    expl = pd.read_csv(out / "explanations.csv")
    rec = next(
        r
        for r in doc["records"]
        if r["metric"] == "iou_region"
        and r["region"] == "bone"
        and r["saliency"] == "gradcam"
        and r["backbone"] == "test_resnet.random"
        and r["strategy"] == "full"
    )
    rows = expl[
        (expl.metric == "iou_region")
        & (expl.region == "bone")
        & (expl.saliency == "gradcam")
        & (expl.backbone == "test_resnet.random")
        & (expl.strategy == "full")
    ]
    assert len(rows) == 12
    assert rows["value"].mean() == pytest.approx(rec["value"])
    preds = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    intact = preds[
        (preds.perturbation == "")
        & (preds.backbone == "test_resnet.random")
        & (preds.strategy == "full")
    ]
    assert "patient_id" not in preds.columns  # never copied into outputs
    from sklearn.metrics import roc_auc_score

    auc = next(
        r["value"]
        for r in doc["records"]
        if r["metric"] == "auc"
        and r["backbone"] == "test_resnet.random"
        and r["strategy"] == "full"
    )
    assert roc_auc_score(intact.label == 2, intact.prob_osteoporosis) == pytest.approx(auc)


def test_leaderboards_are_printed_and_written(tiny_run):
    out, proc = tiny_run
    # the headline view (tests/test_leaderboard_terminal.py), laid out for COLUMNS or 100
    assert "Leaderboard (osteoporosis vs rest, test split)" in proc.stdout
    assert "Every column: --wide" in proc.stdout
    assert "Explainability leaderboard" not in proc.stdout  # the full tables: --wide
    assert "…" not in proc.stdout
    columns = os.environ.get("COLUMNS", "")
    board = proc.stdout.split("results written to")[0]
    width = int(columns) if columns.isdigit() else 100
    assert max(len(line) for line in board.splitlines()) <= width
    perf = pd.read_csv(out / "leaderboard_performance.csv")
    assert len(perf) == 4
    assert list(perf["AUC"]) == sorted(perf["AUC"], reverse=True)
    assert set(perf["weights"]) == {"random init"}
    md = (out / "leaderboard_explainability.md").read_text()
    assert "Δ_bone (mean)" in md
    assert "IoU_spine (example_method)" in md


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "nosuchtask"], "unknown task 'nosuchtask'"),
        (["run", "osteoporsis"], "did you mean 'osteoporosis'"),
        (["run", "osteoporosis", "--backbone", "test_vit.randm"], "did you mean 'test_vit.random'"),
        (["run", "osteoporosis", "--saliency", "gradcm"], "did you mean 'gradcam'"),
        (["run", "osteoporosis", "--epochs", "zero"], "'zero' is not a valid integer"),
        (["run", "osteoporosis", "--epochs", "0"], "--epochs"),
        (["run", "osteoporosis", "--frobnicate"], "No such option"),
        (
            ["run", "osteoporosis", "--config", "missing.yaml"],
            "cannot read config file 'missing.yaml'",
        ),
        (["ls", "backbonez"], "did you mean 'backbones'"),
    ],
)
def test_user_errors_are_one_line_with_status_2(args, expected, tmp_path):
    proc = xaibench(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("xaibench: error: ")
    assert expected in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "xaibench-runs").exists()


def test_unknown_config_key_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("trian:\n  epochs: 3\n")
    proc = xaibench("run", "osteoporosis", "--config", str(bad))
    assert proc.returncode == 2
    assert "trian: unknown key" in proc.stderr


def test_bad_component_option_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("perturbations:\n  - name: mean\n    options: {over: everywhere}\n")
    proc = xaibench("run", "osteoporosis", "--config", str(bad))
    assert proc.returncode == 2
    assert "perturbation 'mean'" in proc.stderr
    assert "over" in proc.stderr


def test_ls_filters_with_wildcards():
    proc = xaibench("ls", "backbones", "test_*")
    assert proc.returncode == 0
    assert [line.split()[0] for line in proc.stdout.splitlines()] == [
        "test_resnet.random",
        "test_vit.random",
    ]
    proc = xaibench("ls", "backbones", "*dinov2*", "--exclude", "*reg4*")
    names = [line.split()[0] for line in proc.stdout.splitlines()]
    assert "vit_base_patch14_dinov2.lvd142m" in names
    assert not any("reg4" in n for n in names)


def test_version_and_help():
    assert xaibench("--version").stdout.strip().endswith("0.1.0")
    help_text = xaibench("--help").stdout
    for command in ("run", "plugins", "ls"):
        assert command in help_text


def test_saliency_galleries_show_the_best_worst_and_random_images(tiny_run):
    from PIL import Image

    out = tiny_run[0]
    everything = json.loads((out / "gallery" / "index.json").read_text())
    # the 'specific' gallery appears where perturbation points at a region other than bone
    specific = [e for e in everything if e["kind"] == "specific"]
    for entry in specific:
        assert entry["region"] != "bone"
        assert entry["perturbation"]
    index = [e for e in everything if e["kind"] != "specific"]
    assert len(index) == 4 * 2 * 3  # cells x saliency methods x (best, worst, random)
    assert {e["kind"] for e in index} == {"best", "worst", "random"}
    expl = pd.read_csv(out / "explanations.csv")
    for entry in index:
        assert len(entry["sample_ids"]) == 4  # gallery_images, default 4
        assert entry["score_metric"] == "iou_region"
        assert entry["region"] == "bone"
        with Image.open(out / "gallery" / entry["file"]) as picture:
            width, height = picture.size
            assert width == 4 * 48 * 4  # 4 tiles, enlarged to >= 160 px
            assert height > 2 * 48 * 4  # image and map rows, the labels above, the legend below
        assert entry["outlines"][0]["region"] == "bone"  # every scored region, bone first
        ious = expl[
            (expl.backbone == entry["backbone"])
            & (expl.strategy == entry["strategy"])
            & (expl.saliency == entry["saliency"])
            & (expl.metric == "iou_region")
            & (expl.region == "bone")
        ].set_index("sample_id")["value"]
        # the recorded scores are the images' IoU in explanations.csv
        assert entry["scores"] == pytest.approx(list(ious.loc[entry["sample_ids"]]))
        if entry["kind"] == "best":
            assert min(entry["scores"]) >= ious.drop(entry["sample_ids"]).max()
        if entry["kind"] == "worst":
            assert max(entry["scores"]) <= ious.drop(entry["sample_ids"]).min()


def test_run_writes_per_class_calibration_and_strata_tables(tiny_run):
    out = tiny_run[0]
    doc = json.loads((out / "results.json").read_text())
    analysis = doc["analysis"]
    n_test = doc["dataset"]["splits"]["test"]["images"]
    assert len(analysis["per_class"]) == 4 * 3  # cells x classes
    confusion = pd.DataFrame(analysis["confusion"])
    assert (confusion.groupby(["backbone", "strategy"])["count"].sum() == n_test).all()
    assert {r["kind"] for r in analysis["calibration"]} == {"top_label", "positive_class"}
    assert all(0 <= r["ece"] <= 1 for r in analysis["calibration"])
    assert len(analysis["reliability"]) == 4 * 2 * 10  # cells x kinds x bins
    variables = {r["variable"] for r in analysis["strata_performance"]}
    assert variables == {"true_class", "prediction"}  # the phantom without shortcut: no metadata
    sizes = pd.DataFrame(analysis["strata_performance"])
    by_class = sizes[sizes.variable == "true_class"].groupby(["backbone", "strategy"])["n"].sum()
    assert (by_class == n_test).all()
    assert pd.read_csv(out / "per_class.csv").shape[0] == 4 * 3


def test_a_run_directory_passes_its_own_leaderboard_check(tiny_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run[0], run)
    proc = xaibench("leaderboard", "--check", str(run))
    assert proc.returncode == 0, proc.stderr
    perf = pd.read_csv(run / "leaderboard_performance.csv")
    assert {"rank", "tier", "AUC low", "AUC high", "p vs leader"} <= set(perf.columns)
    assert perf["tier"].min() == 1
    perf.loc[0, "AUC"] = 0.999
    perf.to_csv(run / "leaderboard_performance.csv", index=False)
    proc = xaibench("leaderboard", "--check", str(run))
    assert proc.returncode == 1


def test_missing_weights_list_every_backbone_and_exit_2(tmp_path):
    proc = xaibench(
        "run", "osteoporosis", "-b", "vit_small_patch14_dinov2.lvd142m",
        "-b", "timm:resnet18.a1_in1k", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "missing weights for 2 backbone(s)" in proc.stderr
    assert "timm/vit_small_patch14_dinov2.lvd142m" in proc.stderr
    assert "timm/resnet18.a1_in1k" in proc.stderr
    assert not (tmp_path / "xaibench-runs").exists()


def test_random_init_flag_runs_a_generic_timm_model(tiny_config, tmp_path):
    out = tmp_path / "run"
    proc = xaibench(
        "run", "osteoporosis", "--config", str(tiny_config), "-b", "timm:test_convnext",
        "-s", "last_block", "--random-init", "--out", str(out), "--quiet",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / "results.json").read_text())
    (cell,) = doc["cells"]
    assert cell["backbone"] == "timm:test_convnext"
    assert cell["random_init"] is True
    assert cell["weights"]["source"] == "random"
    assert doc["config"]["backbones"][0]["options"]["random_init"] is True


def test_paper_grid_without_weights_lists_each_missing_weight(tmp_path):
    proc = xaibench("run", "osteoporosis", "--grid", "paper", cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == "xaibench: error: missing weights for 4 backbone(s):"
    for name, repo in (
        ("openclip_vit_b16", "laion/CLIP-ViT-B-16-laion2B-s34B-b88K"),
        ("vit_base_patch14_dinov2.lvd142m", "timm/vit_base_patch14_dinov2.lvd142m"),
        ("chexagent_siglip", "StanfordAIMI/XraySigLIP__vit-l-16-siglip-384__webli"),
        ("rad_dino", "microsoft/rad-dino"),
    ):
        line = next(x for x in lines[1:] if f"backbone {name!r}" in x)
        assert repo in line
        assert "Hugging Face cache" in line
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "xaibench-runs").exists()


def test_unknown_grid_suggests(tmp_path):
    proc = xaibench("run", "osteoporosis", "--grid", "papr", cwd=tmp_path)
    assert proc.returncode == 2
    assert "did you mean 'paper'" in proc.stderr


def test_default_run_is_the_study_design_on_tiny_models(tmp_path):
    """No --grid: the default is the quick grid, 4 families x 3 strategies in both leaderboards."""
    small = tmp_path / "small.yaml"
    small.write_text(
        yaml.safe_dump(
            {
                "dataset": {"options": {"n_images": 160, "image_size": 64}},
                "train": {"epochs": 1},
                "max_explain_images": 8,
                "gallery_images": 0,
            }
        )
    )
    out = tmp_path / "run"
    proc = xaibench(
        "run", "osteoporosis", "--config", str(small), "--out", str(out), "--quiet",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / "results.json").read_text())
    cells = {(c["backbone"], c["strategy"]) for c in doc["cells"] if c["status"] == "ok"}
    assert len(cells) == 12
    assert {b for b, _ in cells} == {
        "openclip_tiny.random", "dinov2_tiny.random",
        "chexagent_siglip_tiny.random", "rad_dino_tiny.random",
    }  # fmt: skip
    assert {s for _, s in cells} == {"linear_probe", "last_block", "lora"}
    trainable = {
        (c["backbone"], c["strategy"]): c["fit"]["trainable_parameters"] for c in doc["cells"]
    }
    for backbone in {b for b, _ in cells}:
        # the linear probe trains the head only; LoRA adds its adapters
        assert trainable[(backbone, "linear_probe")] < trainable[(backbone, "lora")]
    for name in ("performance", "explainability"):
        assert len(pd.read_csv(out / f"leaderboard_{name}.csv")) == 12


def test_quick_grid_is_the_default(tmp_path):
    from xaibench.config import resolve_config
    from xaibench.plugins import collect_components, get_plugin_manager

    task = collect_components(get_plugin_manager()).tasks.create("osteoporosis")
    default = resolve_config(task.defaults())
    quick = resolve_config(task.defaults(), task.grids()["quick"])
    assert default == quick
    assert [b.name for b in default.backbones] == [
        "openclip_tiny.random", "dinov2_tiny.random",
        "chexagent_siglip_tiny.random", "rad_dino_tiny.random",
    ]  # fmt: skip
    assert [s.name for s in default.strategies] == ["linear_probe", "last_block", "lora"]
