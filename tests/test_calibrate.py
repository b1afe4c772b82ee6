"""Known-answer calibration of saliency methods (``xaibench calibrate``, ``xaibench.trust``).

The decision rule is tested on constructed records and per-image frames that carry the chance
fields of contract C1 (``details.chance``, ``best``, ``normalised``; the ``chance`` column of
explanations.csv), with numbers computed here by hand; the command end to end on a tiny phantom.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fake_runs import write_fake_run

from xaibench.calibrate import Plan, calibration_document, check_out_dir, summary_markdown
from xaibench.cli import main
from xaibench.config import resolve_config
from xaibench.errors import XaibenchError
from xaibench.trust import (
    NOT_TRUSTED,
    TRUSTED,
    UNTESTED,
    Calibration,
    Training,
    architecture,
    assess_training,
    calibration_entries,
    method_badges,
    read_calibration,
    trust_rows,
)

BONE, MARKER = "bone", "shortcut"
AREA = {BONE: 0.3, MARKER: 0.02}  # the chance level of relevance mass: the area fraction
CELL = ("test_resnet.random", "full")


def _records(
    planted: str,
    *,
    scores: dict[str, dict[int, np.ndarray]],
    auc_ci: tuple[float, float] = (0.85, 0.95),
    delta_ci: tuple[float, float] = (0.1, 0.3),
    best: float | None = 1.0,
) -> list[dict[str, Any]]:
    """Records of one cell per seed: AUC, Δ on the planted region, relevance mass per region."""
    base = {"backbone": CELL[0], "strategy": CELL[1], "status": "ok", "perturbation": None}
    out = []
    for seed in scores[BONE]:
        out.append(
            {**base, "seed": seed, "metric": "auc", "category": "performance", "saliency": None,
             "region": None, "value": sum(auc_ci) / 2, "ci_low": auc_ci[0],
             "ci_high": auc_ci[1], "details": {}}
        )  # fmt: skip
        out.append(
            {**base, "seed": seed, "metric": "delta_region", "category": "explanation",
             "saliency": None, "perturbation": "blur", "region": planted,
             "value": sum(delta_ci) / 2, "ci_low": delta_ci[0], "ci_high": delta_ci[1],
             "details": {}}
        )  # fmt: skip
        for region, per_seed in scores.items():
            value = float(per_seed[seed].mean())
            chance = AREA[region]
            details = {"chance": chance, "best": best}
            if best is not None:
                details["normalised"] = (value - chance) / (best - chance)
            out.append(
                {**base, "seed": seed, "metric": "relevance_mass", "category": "explanation",
                 "saliency": "saliency", "region": region, "value": value, "details": details}
            )  # fmt: skip
    return out


def _frame(scores: dict[str, dict[int, np.ndarray]], chance: bool = True) -> pd.DataFrame:
    rows = []
    for region, per_seed in scores.items():
        for seed, values in per_seed.items():
            for i, v in enumerate(values):
                rows.append(
                    {"backbone": CELL[0], "strategy": CELL[1], "seed": seed,
                     "sample_id": f"phantom-{i:05d}", "label": i % 3, "metric": "relevance_mass",
                     "saliency": "saliency", "region": region, "value": v,
                     **({"chance": AREA[region]} if chance else {})}
                )  # fmt: skip
    return pd.DataFrame(rows)


def _scores(planted_mass: float, decoy_mass: float, planted: str, seeds=(0, 1), n=40, sd=0.03):
    """Per region and seed, per-image relevance masses around the given means."""
    rng = np.random.default_rng(7)
    decoy = MARKER if planted == BONE else BONE
    return {
        region: {s: np.clip(rng.normal(mean, sd, n), 0, 1) for s in seeds}
        for region, mean in ((planted, planted_mass), (decoy, decoy_mass))
    }


def _training(name: str, planted_mass: float, decoy_mass: float, **kwargs: Any) -> Training:
    planted, decoy = (BONE, MARKER) if name == "primary" else (MARKER, BONE)
    chance = kwargs.pop("chance", True)
    scores = _scores(planted_mass, decoy_mass, planted)
    return Training(
        name, planted, decoy, _records(planted, scores=scores, **kwargs), _frame(scores, chance)
    )


def _badge(primary: Training, marker: Training) -> dict[str, Any]:
    (entry,) = calibration_entries([primary, marker], resamples=300)
    return entry


# ---------------------------------------------------------------- the decision rule


def test_normalised_score_is_c1s_formula_on_the_means_over_seeds() -> None:
    training = _training("primary", 0.6, 0.01)
    (result,) = assess_training(training, resamples=200).values()
    scores = _scores(0.6, 0.01, BONE)
    mean = np.mean([scores[BONE][s] for s in (0, 1)], axis=0).mean()  # per image, then images
    assert result["planted"]["normalised"] == pytest.approx((mean - 0.3) / (1 - 0.3))
    low, high = result["planted"]["ci"]
    assert low < result["planted"]["normalised"] < high
    # one seed's point value is that seed's record's `normalised` (same images, same formula)
    assert result["per_seed"]["planted"][0]["normalised"] == pytest.approx(
        (scores[BONE][0].mean() - 0.3) / 0.7
    )
    assert result["seeds"] == [0, 1]
    assert result["images"] == 40


def test_a_method_that_finds_the_planted_region_in_both_trainings_is_trusted() -> None:
    # primary: 60% of the mass on bone (chance 30%), 1% on the marker (chance 2%);
    # marker: 40% on the marker box (chance 2%), 30% on bone (chance: no preference)
    entry = _badge(_training("primary", 0.6, 0.01), _training("marker", 0.4, 0.3))
    assert entry["badge"] == TRUSTED, entry["reason"]
    assert entry["architecture"] == "test_resnet"
    for outcome in entry["trainings"].values():
        assert outcome["outcome"] == "identified"
        assert outcome["difference"]["ci"][0] > 0


def test_a_method_whose_maps_miss_the_marker_is_not_trusted() -> None:
    # the case: the marker model's maps still point at bone, 2% of the mass on the marker
    entry = _badge(_training("primary", 0.6, 0.01), _training("marker", 0.02, 0.6))
    assert entry["badge"] == NOT_TRUSTED
    assert entry["trainings"]["marker"]["outcome"] == "missed"
    assert "marker: the score on shortcut does not beat chance" in entry["reason"]


def test_beating_the_decoy_is_not_enough_without_beating_chance() -> None:
    # on the marker box a mass below its area fraction cannot count, however low bone's is
    entry = _badge(_training("primary", 0.6, 0.01), _training("marker", 0.019, 0.05))
    assert entry["badge"] == NOT_TRUSTED
    assert entry["trainings"]["primary"]["outcome"] == "identified"


def test_a_model_that_did_not_learn_leaves_the_method_untested() -> None:
    marker = _training("marker", 0.4, 0.3, auc_ci=(0.45, 0.62))
    entry = _badge(_training("primary", 0.6, 0.01), marker)
    assert entry["badge"] == UNTESTED
    assert entry["trainings"]["marker"]["outcome"] == "inconclusive"
    assert "did not learn" in entry["reason"]
    assert "AUC" in entry["reason"]
    assert entry["trainings"]["marker"]["planted"] is None  # no number on such a model


def test_a_delta_that_covers_zero_also_means_not_learned() -> None:
    marker = _training("marker", 0.4, 0.3, delta_ci=(-0.02, 0.05))
    entry = _badge(_training("primary", 0.6, 0.01), marker)
    assert entry["badge"] == UNTESTED
    assert "Δ on shortcut does not exclude 0" in entry["reason"]


def test_a_miss_in_one_training_outweighs_an_inconclusive_other() -> None:
    primary = _training("primary", 0.2, 0.01)  # below bone's chance (0.3): missed
    entry = _badge(primary, _training("marker", 0.4, 0.3, auc_ci=(0.4, 0.6)))
    assert entry["badge"] == NOT_TRUSTED


def test_a_specific_delta_decides_over_the_raw_one() -> None:
    primary = _training("primary", 0.6, 0.01)
    for rec in primary.records:
        if rec["metric"] == "delta_region":  # a large raw Δ, all of it off-target cost
            rec["details"] = {"specific": 0.0, "specific_ci": [-0.05, 0.05]}
    entry = _badge(primary, _training("marker", 0.4, 0.3))
    assert entry["badge"] == UNTESTED
    assert "specific Δ blur" in entry["reason"]


def test_without_chance_levels_nothing_is_badged() -> None:
    no_column = _training("primary", 0.6, 0.01, chance=False)
    assert _badge(no_column, _training("marker", 0.4, 0.3))["badge"] == UNTESTED
    no_best = _training("primary", 0.6, 0.01, best=None)
    entry = _badge(no_best, _training("marker", 0.4, 0.3))
    assert entry["badge"] == UNTESTED
    assert "no chance level" in entry["reason"]


def test_a_training_not_run_is_untested() -> None:
    (entry,) = calibration_entries([_training("primary", 0.6, 0.01)], resamples=200)
    assert entry["trainings"]["primary"]["outcome"] == "identified"
    assert entry["badge"] == UNTESTED
    assert entry["reason"] == "marker: not calibrated"
    empty = Training("marker", MARKER, BONE, [], pd.DataFrame())
    (entry,) = calibration_entries([_training("primary", 0.6, 0.01), empty], resamples=200)
    assert entry["badge"] == UNTESTED
    assert "marker: not calibrated" in entry["reason"]


def test_method_badge_is_trusted_under_some_metric_else_not_else_untested() -> None:
    def entry(metric: str, badge: str) -> dict[str, str]:
        return {"architecture": "a", "strategy": "s", "saliency": "m", "metric": metric,
                "badge": badge}  # fmt: skip

    assert method_badges([entry("iou", NOT_TRUSTED), entry("rma", TRUSTED)])[("a", "s", "m")] == {
        "badge": TRUSTED, "metrics": {"iou": NOT_TRUSTED, "rma": TRUSTED},
    }  # fmt: skip
    assert (
        method_badges([entry("iou", NOT_TRUSTED), entry("rma", UNTESTED)])[("a", "s", "m")]["badge"]
        == NOT_TRUSTED
    )
    assert method_badges([entry("rma", UNTESTED)])[("a", "s", "m")]["badge"] == UNTESTED


def test_architecture_is_the_name_before_the_weights_tag() -> None:
    assert architecture("vit_small_patch14_dinov2.lvd142m") == "vit_small_patch14_dinov2"
    assert architecture("timm:resnet18.a1_in1k") == "timm:resnet18"
    assert architecture("rad_dino") == "rad_dino"
    assert architecture("open_clip:hf-hub:org/model-v1.5") == "open_clip:hf-hub:org/model-v1.5"


def test_two_backbones_of_one_architecture_are_refused() -> None:
    primary = _training("primary", 0.6, 0.01)
    other = [{**r, "backbone": "test_resnet.other"} for r in primary.records]
    doubled = Training("primary", BONE, MARKER, [*primary.records, *other], primary.explanations)
    with pytest.raises(XaibenchError, match="share the architecture 'test_resnet'"):
        calibration_entries([doubled], resamples=50)


# ---------------------------------------------------------------- calibration.json


def _document(tmp_path: Path, components) -> dict[str, Any]:
    task = components.tasks.create("osteoporosis")
    config = resolve_config(task.defaults())
    the_plan = Plan(
        BONE,
        {"primary": config, "marker": config},
        {"primary": tmp_path / "runs/planted_bone", "marker": tmp_path / "runs/planted_shortcut"},
    )
    trainings = [_training("primary", 0.6, 0.01), _training("marker", 0.02, 0.6)]
    return calibration_document(the_plan, trainings, resamples=200, seed=0)


def _write(path: Path, document: Any) -> Path:
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    return path


def test_calibration_file_round_trips(tmp_path: Path, components) -> None:
    document = _document(tmp_path, components)
    assert document["calibration_version"] == "1.0"
    assert document["seeds"] == [0]
    assert len(document["config_hash"]) == 64
    assert [t["run_dir"] for t in document["trainings"]] == [
        "runs/planted_bone", "runs/planted_shortcut"
    ]  # fmt: skip
    calibration = read_calibration(_write(tmp_path / "calibration.json", document))
    assert calibration.document == document
    assert calibration.badges() == {
        ("test_resnet", "full", "saliency"): {
            "badge": NOT_TRUSTED, "metrics": {"relevance_mass": NOT_TRUSTED}
        }
    }  # fmt: skip
    assert read_calibration(tmp_path).path == tmp_path / "calibration.json"  # a folder too
    summary = summary_markdown(document)
    assert "| test_resnet | full | saliency | not trusted |" in summary


def test_summary_escapes_names_from_the_configuration(tmp_path: Path, components) -> None:
    document = _document(tmp_path, components)
    document["entries"][0]["saliency"] = "<img src=x>|"
    assert "<img" not in summary_markdown(document)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ([], "not a calibration file"),
        ({"calibration_version": "9.9", "entries": [], "methods": []}, "calibration_version"),
        ({"calibration_version": "1.0", "methods": []}, "'entries' must be a list"),
        ({"calibration_version": "1.0", "entries": [], "methods": [{"architecture": "a"}]},
         "methods 0 has no 'strategy'"),
        ({"calibration_version": "1.0", "entries": [], "methods": [
            {"architecture": "a", "strategy": "s", "saliency": "m", "badge": "great",
             "metrics": {}}]}, "'badge' is not valid"),
    ],
)  # fmt: skip
def test_a_malformed_calibration_file_is_one_line_naming_it(
    tmp_path: Path, capsys, content: Any, message: str
) -> None:
    bad = _write(tmp_path / "bad.json", content)
    with pytest.raises(XaibenchError, match=message) as caught:
        read_calibration(bad)
    assert str(bad) in str(caught.value)
    run = write_fake_run(tmp_path / "run", {"test_resnet.random": 2.0})
    with pytest.raises(SystemExit) as exit_info:
        main(["leaderboard", str(run), "--out", str(tmp_path / "lb"), "--calibration", str(bad)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert str(bad) in err
    assert "Traceback" not in err
    assert not (tmp_path / "lb").exists()


def test_run_with_a_malformed_calibration_stops_before_any_work(tmp_path: Path, capsys) -> None:
    bad = _write(tmp_path / "bad.json", {"calibration_version": "1.0"})
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "osteoporosis", "--calibration", str(bad), "--out", str(tmp_path / "r")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err == f"xaibench: error: {bad}: 'entries' must be a list\n"
    assert not (tmp_path / "r").exists()


def test_calibrate_refuses_an_out_that_is_not_a_calibration_folder(tmp_path: Path, capsys) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "results.json").write_text("{}")
    with pytest.raises(SystemExit) as exit_info:
        main(["calibrate", "osteoporosis", "--out", str(tmp_path / "taken"), "--quiet"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "holds files that are not a calibration's (results.json)" in err
    assert sorted(p.name for p in (tmp_path / "taken").iterdir()) == ["results.json"]


def test_missing_calibration_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(XaibenchError, match="no calibration file"):
        read_calibration(tmp_path / "nowhere.json")


def test_out_folder_of_something_else_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(XaibenchError, match="not a calibration's"):
        check_out_dir(tmp_path)
    with pytest.raises(XaibenchError, match="is not a folder"):
        check_out_dir(tmp_path / "notes.txt")
    check_out_dir(tmp_path / "new")  # a new folder is fine


# ---------------------------------------------------------------- badges attached


def _calibration(tmp_path: Path, badge: str = TRUSTED) -> Path:
    document = {
        "calibration_version": "1.0",
        "entries": [],
        "methods": [
            {"architecture": "test_resnet", "strategy": "linear_probe", "saliency": "gradcam",
             "badge": badge, "metrics": {"relevance_mass": badge, "iou_region": NOT_TRUSTED}},
        ],
    }  # fmt: skip
    return _write(tmp_path / "calibration.json", document)


def test_trust_rows_match_architecture_strategy_and_method(tmp_path: Path) -> None:
    calibration = read_calibration(_calibration(tmp_path))
    rows = trust_rows(
        calibration,
        [("test_resnet.other_weights", "linear_probe", 3), ("test_vit.random", "linear_probe", 3)],
        ["gradcam", "saliency"],
    )
    got = {(r["backbone"], r["saliency"]): r["badge"] for r in rows}
    assert got == {
        ("test_resnet.other_weights", "gradcam"): TRUSTED,
        ("test_resnet.other_weights", "saliency"): UNTESTED,
        ("test_vit.random", "gradcam"): UNTESTED,
        ("test_vit.random", "saliency"): UNTESTED,
    }
    assert all(r["seed"] == 3 and r["source"].startswith("calibration.json sha256:") for r in rows)
    assert isinstance(calibration, Calibration)


def test_leaderboard_shows_a_trust_column_per_method(tmp_path: Path) -> None:
    runs = write_fake_run(tmp_path / "run", {"test_resnet.random": 2.0, "test_vit.random": 1.0})
    out = tmp_path / "board"
    with pytest.raises(SystemExit) as exit_info:
        main(["leaderboard", str(runs), "--out", str(out), "--calibration",
              str(_calibration(tmp_path))])  # fmt: skip
    assert exit_info.value.code == 0
    table = pd.read_csv(out / "leaderboard_explainability.csv").set_index("backbone")
    assert table.loc["test_resnet.random", "trust (gradcam)"] == "trusted (RMA)"
    assert table.loc["test_vit.random", "trust (gradcam)"] == "untested"
    assert "trust (gradcam)" in (out / "leaderboard_explainability.md").read_text()
    # without --calibration, a run that recorded none has no trust column
    with pytest.raises(SystemExit):
        main(["leaderboard", str(runs), "--out", str(tmp_path / "plain")])
    plain = pd.read_csv(tmp_path / "plain" / "leaderboard_explainability.csv")
    assert not any(c.startswith("trust") for c in plain.columns)


def test_a_malformed_trust_row_in_results_is_one_line_naming_the_file(tmp_path: Path) -> None:
    from xaibench.report.run_files import load_run

    run = write_fake_run(tmp_path / "run", {"test_resnet.random": 2.0})
    document = json.loads((run / "results.json").read_text())
    document["trust"] = [{"backbone": "test_resnet.random", "strategy": "linear_probe",
                          "seed": "0", "saliency": "gradcam", "badge": TRUSTED}]  # fmt: skip
    (run / "results.json").write_text(json.dumps(document))
    with pytest.raises(XaibenchError, match=r"results.json: trust 0: 'seed' must be an integer"):
        load_run(run)


def test_run_records_the_badges_and_its_leaderboard_shows_them(tmp_path: Path, components) -> None:
    from cli_runs import TINY_PHANTOM_RUN

    from xaibench.engine.benchmark import run_benchmark

    task = components.tasks.create("osteoporosis")
    config = resolve_config(
        task.defaults(),
        {**TINY_PHANTOM_RUN, "saliency": ["gradcam"], "perturbations": ["zero"],
         "metrics": ["auc", "relevance_mass"], "max_explain_images": 2},
    )  # fmt: skip
    calibration = read_calibration(_calibration(tmp_path))
    outcome = run_benchmark(config, components, tmp_path / "run", calibration=calibration)
    doc = json.loads((tmp_path / "run" / "results.json").read_text())
    assert doc["trust"] == [
        {"backbone": "test_resnet.random", "strategy": "linear_probe", "seed": 0,
         "saliency": "gradcam", "badge": TRUSTED,
         "metrics": {"relevance_mass": TRUSTED, "iou_region": NOT_TRUSTED},
         "source": calibration.source},
    ]  # fmt: skip
    board = outcome.leaderboards.explainability
    assert board.loc[0, "trust (gradcam)"] == "trusted (RMA)"
    # the committed leaderboard is rebuilt from the files alone, trust column included
    with pytest.raises(SystemExit) as exit_info:
        main(["leaderboard", "--check", str(tmp_path / "run")])
    assert exit_info.value.code == 0


# ---------------------------------------------------------------- the command, end to end


def _with_chance_fields(monkeypatch) -> None:
    """Before the chance levels (contract C1) are recorded, put stand-ins into what is read.

    Chance 0 and best 1 (so the normalised score is the value itself): enough to drive the
    command end to end; the rule's numbers are tested above. A no-op once runs record them.
    """
    import xaibench.report.run_files as run_files

    original = run_files.load_run

    def load_run(path: Path) -> Any:
        run = original(path)
        for rec in run.document["records"]:
            if rec.get("saliency") and rec.get("region"):
                rec["details"].setdefault("chance", 0.0)
                rec["details"].setdefault("best", 1.0)
        if "chance" not in run.explanations.columns:
            run.explanations["chance"] = 0.0
        return run

    monkeypatch.setattr(run_files, "load_run", load_run)


def test_calibrate_command_trains_both_plantings_and_writes_the_calibration(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    import yaml

    config = tmp_path / "tiny.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "dataset": {"name": "phantom", "options": {"n_images": 60, "image_size": 32}},
                "backbones": [{"name": "test_resnet.random", "options": {"img_size": 32}}],
                "max_explain_images": 8,
                "cache": False,
                "analysis": {"bootstrap": 50},
            }
        )
    )
    _with_chance_fields(monkeypatch)
    out = tmp_path / "calibration"
    args = ["calibrate", "osteoporosis", "--config", str(config), "-s", "full",
            "--saliency", "saliency", "--metric", "relevance_mass", "--epochs", "1",
            "--quiet", "--out", str(out)]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "# Calibration of saliency methods: task osteoporosis" in printed
    calibration = read_calibration(out / "calibration.json")
    document = calibration.document
    assert [(t["name"], t["planted"], t["decoy"]) for t in document["trainings"]] == [
        ("primary", "bone", "shortcut"), ("marker", "shortcut", "bone")
    ]  # fmt: skip
    assert document["trainings"][1]["dataset_options"]["shortcut"] == 1.0
    assert document["trainings"][1]["dataset_options"]["bone_signal"] is False
    (entry,) = document["entries"]
    assert [entry[k] for k in ("architecture", "strategy", "saliency", "metric")] == [
        "test_resnet", "full", "saliency", "relevance_mass"
    ]  # fmt: skip
    assert entry["badge"] in (TRUSTED, NOT_TRUSTED, UNTESTED)
    for training in entry["trainings"].values():  # the model's learning was checked
        assert training["learned"]["0"]["auc"] is not None
        assert set(training["learned"]["0"]["delta"]) == {"blur"}
    assert (out / "calibration.md").read_text() in printed
    for name in ("planted_bone", "planted_shortcut"):
        assert (out / "runs" / name / "results.json").is_file()
    # a second call resumes both runs from their checkpoints and writes the same badges
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 0
    assert read_calibration(out).document["entries"] == document["entries"]
