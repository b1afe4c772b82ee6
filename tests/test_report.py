"""The HTML report: safe, self-contained, deterministic, and built from whatever a run has.

Most tests use a hand-made run directory (:func:`write_fake_run`): a results file, per-image
tables, analysis tables and gallery PNGs consistent with each other, small enough to build a
report in about a second. One test builds the report of a real tiny run.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from xaibench.config import resolve_config
from xaibench.engine.benchmark import run_benchmark
from xaibench.errors import XaibenchError
from xaibench.report import diagnostic_figures, figures
from xaibench.report.build import REPORT_FILE, build_report, write_report
from xaibench.report.gallery import gallery_filename, render_gallery
from xaibench.report.html import (
    Section,
    escape,
    format_cell,
    image_data_uri,
    page,
    table_html,
)

EVIL = "<script>alert(1)</script>"
CLASSES = ["normal", "osteopenia", "osteoporosis"]
CELLS = [("alpha.random", "linear_probe", 0), (EVIL, "lora", 0), ("gamma", "linear_probe", 1)]
METHODS = ["gradcam", "saliency"]
N_TEST = 36


# --------------------------------------------------------------------------------------------
# A hand-made run directory
# --------------------------------------------------------------------------------------------


def _record(cell: tuple[Any, ...], metric: str, category: str, value: float | None, **extra):
    backbone, strategy, seed = cell
    return {
        "task": "osteoporosis",
        "dataset": "phantom",
        "backbone": backbone,
        "strategy": strategy,
        "seed": seed,
        "random_init": backbone.endswith(".random"),
        "metric": metric,
        "category": category,
        "higher_is_better": category != "sanity",
        "saliency": extra.pop("saliency", None),
        "perturbation": extra.pop("perturbation", None),
        "region": extra.pop("region", None),
        "value": value,
        "ci_low": extra.pop("ci_low", None),
        "ci_high": extra.pop("ci_high", None),
        "n": extra.pop("n", N_TEST),
        "status": "ok" if value is not None else "skipped",
        "reason": None if value is not None else "not applicable",
        "details": extra.pop("details", {}),
    }


def write_fake_run(
    path: Path,
    cells: list[tuple[Any, ...]] = CELLS,
    *,
    gallery: bool = True,
    analysis: bool = True,
    predictions: bool = True,
    seed: int = 0,
) -> Path:
    """Write a small, internally consistent run directory at ``path`` and return it."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    labels = np.arange(N_TEST) % 3
    ids = [f"img-{i:03d}" for i in range(N_TEST)]
    records: list[dict[str, Any]] = []
    pred_rows: list[dict[str, Any]] = []
    expl_rows: list[dict[str, Any]] = []
    index: list[dict[str, Any]] = []
    analysis_tables: dict[str, list[dict[str, Any]]] = {
        k: []
        for k in (
            "per_class",
            "confusion",
            "calibration",
            "strata_performance",
            "strata_explanations",
        )
    }
    for c, cell in enumerate(cells):
        backbone, strategy, cell_seed = cell
        key = {"backbone": backbone, "strategy": strategy, "seed": cell_seed}
        logits = rng.normal(size=(N_TEST, 3)) + (0.8 + 0.3 * c) * np.eye(3)[labels]
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        perturbed = probs.copy()
        perturbed[:, 2] = np.clip(perturbed[:, 2] * 0.7 + 0.05 * rng.random(N_TEST), 0, 1)
        truth = labels == 2
        auc = float(roc_auc_score(truth, probs[:, 2]))
        auc_p = float(roc_auc_score(truth, perturbed[:, 2]))
        for condition, p in (("", probs), ("mean", perturbed)):
            for i in range(N_TEST):
                pred_rows.append(
                    {
                        **key,
                        "split": "test",
                        "sample_id": ids[i],
                        "label": int(labels[i]),
                        "perturbation": condition,
                        "region": "bone" if condition else "",
                        **{f"prob_{n}": float(p[i, k]) for k, n in enumerate(CLASSES)},
                        "called_positive": bool(p[i, 2] > 0.34),
                    }
                )
        called = probs[:, 2] > 0.34
        records += [
            _record(cell, "auc", "performance", auc, ci_low=auc - 0.1, ci_high=min(auc + 0.1, 1)),
            _record(
                cell,
                "accuracy",
                "performance",
                float(np.mean(called == truth)),
                ci_low=0.3,
                ci_high=0.9,
            ),
            _record(cell, "macro_auc", "performance", 0.6 + 0.01 * c),
            _record(
                cell,
                "delta_region",
                "explanation",
                auc - max(auc_p, 0.5),
                perturbation="mean",
                region="bone",
                ci_low=-0.05,
                ci_high=0.2,
            ),
        ]
        for m, method in enumerate(METHODS):
            scores = np.clip(rng.normal(0.2 + 0.05 * c + 0.03 * m, 0.05, N_TEST), 0, 1)
            expl_rows += [
                {
                    **key,
                    "sample_id": ids[i],
                    "label": int(labels[i]),
                    "metric": "iou_region",
                    "saliency": method,
                    "region": "bone",
                    "value": float(scores[i]),
                }
                for i in range(N_TEST)
            ]
            mean = float(scores.mean())
            records.append(
                _record(
                    cell,
                    "iou_region",
                    "explanation",
                    mean,
                    saliency=method,
                    region="bone",
                    ci_low=mean - 0.02,
                    ci_high=mean + 0.02,
                )
            )
            cascade = [{"from": "head", "spearman": 0.8 - 0.2 * s - 0.1 * m} for s in range(3)]
            for check, value in (("model", cascade[-1]["spearman"]), ("target", 0.3 + 0.3 * c)):
                records.append(
                    _record(
                        cell,
                        f"sanity_{check}_randomisation",
                        "sanity",
                        value,
                        saliency=method,
                        n=8,
                        details={
                            "passed": value < 0.5,
                            "threshold": 0.5,
                            "control": False,
                            **({"cascade": cascade} if check == "model" else {}),
                        },
                    )
                )
            if gallery:
                order = np.argsort(-scores, kind="stable")
                for kind, chosen in (
                    ("best", order[:3]),
                    ("worst", order[::-1][:3]),
                    ("random", np.sort(rng.choice(N_TEST, 3, replace=False))),
                ):
                    name = gallery_filename(backbone, strategy, cell_seed, method)
                    name = name.replace(".png", f"__{kind}.png")
                    images = rng.random((len(chosen), 12, 12))
                    maps = rng.random((len(chosen), 12, 12))
                    masks = np.zeros((len(chosen), 12, 12), dtype=bool)
                    masks[:, 3:9, 3:9] = True
                    (path / "gallery").mkdir(exist_ok=True)
                    render_gallery(images, maps, masks).save(path / "gallery" / name)
                    index.append(
                        {
                            **key,
                            "saliency": method,
                            "kind": kind,
                            "file": name,
                            "sample_ids": [ids[i] for i in chosen],
                            "scores": None
                            if kind == "random"
                            else [float(scores[i]) for i in chosen],
                            "score_metric": "iou_region",
                            "region": "bone",
                        }
                    )
        argmax = probs.argmax(axis=1)
        for k, name in enumerate(CLASSES):
            analysis_tables["per_class"].append(
                {
                    **key,
                    "class": name,
                    "n": N_TEST,
                    "auc": float(roc_auc_score(labels == k, probs[:, k])),
                    "auc_low": 0.4,
                    "auc_high": 0.9,
                    "sensitivity": float(np.mean(argmax[labels == k] == k)),
                    "sensitivity_low": 0.2,
                    "sensitivity_high": 0.8,
                    "specificity": float(np.mean(argmax[labels != k] != k)),
                    "specificity_low": 0.3,
                    "specificity_high": 0.9,
                    "reason": None,
                }
            )
            for j, predicted in enumerate(CLASSES):
                analysis_tables["confusion"].append(
                    {
                        **key,
                        "true": name,
                        "predicted": predicted,
                        "count": int(np.sum((labels == k) & (argmax == j))),
                    }
                )
        for kind, conf in (("top_label", probs.max(axis=1)), ("positive_class", probs[:, 2])):
            outcome = (argmax == labels) if kind == "top_label" else truth
            edges = np.linspace(0, 1, 6)
            for b in range(5):
                inside = (conf >= edges[b]) & (conf < edges[b + 1])
                analysis_tables["calibration"].append(
                    {
                        **key,
                        "kind": kind,
                        "ece": 0.1 + 0.01 * c,
                        "bin_low": float(edges[b]),
                        "bin_high": float(edges[b + 1]),
                        "n": int(inside.sum()),
                        "mean_confidence": float(conf[inside].mean()) if inside.any() else None,
                        "observed": float(outcome[inside].mean()) if inside.any() else None,
                    }
                )
        for level in ("F", "M"):
            analysis_tables["strata_performance"].append(
                {
                    **key,
                    "variable": "sex",
                    "level": level,
                    "n": N_TEST // 2,
                    "auc": 0.6,
                    "auc_low": 0.4,
                    "auc_high": 0.8,
                }
            )
            analysis_tables["strata_explanations"].append(
                {
                    **key,
                    "variable": "sex",
                    "level": level,
                    "n": N_TEST // 2,
                    "saliency": "gradcam",
                    "metric": "iou_region",
                    "region": "bone",
                    "value": 0.2,
                    "ci_low": 0.15,
                    "ci_high": 0.25,
                }
            )
    analysis_tables["explanation_drift"] = [
        {
            "backbone": "gamma",
            "seed": 1,
            "saliency": "gradcam",
            "strategy_a": "linear_probe",
            "strategy_b": "lora",
            "spearman": 0.5,
            "ci_low": 0.4,
            "ci_high": 0.6,
            "n": N_TEST,
        }
    ]
    analysis_tables["performance_explanation_correlation"] = [
        {
            "performance": "auc",
            "metric": "iou_region",
            "perturbation": None,
            "saliency": "gradcam",
            "region": "bone",
            "spearman": 0.5,
            "ci_low": -1.0,
            "ci_high": 1.0,
            "cells": len(cells),
        }
    ]
    config = {
        "task": "osteoporosis",
        "dataset": {"name": "phantom", "options": {"n_images": 180}},
        "metrics": [{"name": "auc"}, {"name": "iou_region"}],
        "perturbations": [{"name": "mean"}],
        "ci": "default",
        "explain_regions": ["bone"],
        "saliency_target": "positive",
        "seeds": sorted({c[2] for c in cells}),
    }
    document = {
        "schema_version": "1.1",
        "created": "2026-01-02T03:04:05+00:00",
        "finished": "2026-01-02T03:05:05+00:00",
        "config": config,
        "config_hash": "ab" * 32,
        "task": {
            "name": "osteoporosis",
            "class_names": CLASSES,
            "positive_class": "osteoporosis",
            "regions_of_interest": ["bone", "spine"],
        },
        "dataset": {
            "name": "phantom",
            "fingerprint": "cd" * 32,
            "splits": {
                "test": {"images": N_TEST, "normal": 12, "osteopenia": 12, "osteoporosis": 12}
            },
        },
        "environment": {
            "xaibench_version": "0.1.0",
            "git_commit": "0" * 40,
            "python": "3.11.7",
            "platform": "Linux",
            "libraries": {"torch": "2.0", "numpy": "2.0"},
            "seeds": {"cells": sorted({c[2] for c in cells}), "split": 0},
        },
        "components": {
            "backbones": {
                str(b): {
                    "plugin": "tests",
                    "distribution": "xaibench",
                    "version": "0.1.0",
                    "component_version": "1",
                }
                for b, _, _ in cells
            }
        },
        "cells": [
            {
                "backbone": b,
                "strategy": s,
                "seed": d,
                "random_init": str(b).endswith(".random"),
                "weights": {
                    "source": "random" if str(b).endswith(".random") else "local",
                    "path": None if str(b).endswith(".random") else "/weights/model.safetensors",
                    "sha256": None if str(b).endswith(".random") else "ef" * 32,
                    "files": []
                    if str(b).endswith(".random")
                    else [{"name": "model.safetensors", "sha256": "ef" * 32}],
                },
                "status": "ok",
                "error": None,
                "seconds": 1.5,
                "fit": {"epochs_run": 2, "best_epoch": 1, "threshold": 0.34},
            }
            for b, s, d in cells
        ],
        "records": records,
        "analysis": analysis_tables if analysis else {},
    }
    (path / "results.json").write_text(json.dumps(document, indent=1))
    if predictions:
        pd.DataFrame(pred_rows).to_csv(path / "predictions.csv", index=False)
        pd.DataFrame(expl_rows).to_csv(path / "explanations.csv", index=False)
    if gallery:
        (path / "gallery" / "index.json").write_text(json.dumps(index, indent=1))
    return path


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory) -> Path:
    return write_fake_run(tmp_path_factory.mktemp("report") / "run")


@pytest.fixture(scope="module")
def report_html(fake_run: Path) -> str:
    return write_report([fake_run], fake_run).read_text(encoding="utf-8")


def _is_png(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        image.load()
        return image.size


# --------------------------------------------------------------------------------------------
# HTML primitives
# --------------------------------------------------------------------------------------------


def test_escape_quotes_and_markup():
    assert escape('<a href="x">&') == "&lt;a href=&quot;x&quot;&gt;&amp;"
    assert escape(None) == ""


def test_format_cell_keeps_integers_and_marks_missing_values():
    assert format_cell(8) == "8"
    assert format_cell(np.int64(3)) == "3"
    assert format_cell(0.12345) == "0.123"
    assert format_cell(float("nan")) == "–"  # noqa: RUF001
    assert format_cell(None) == "–"  # noqa: RUF001
    assert format_cell(np.bool_(True)) == "yes"


def test_table_escapes_headers_and_cells_and_marks_badges():
    frame = pd.DataFrame(
        {"<b>": [EVIL], "sanity (x)": ["fail (model)"], "weights": ["random init"]}
    )
    out = table_html(frame, caption="<i>")
    for markup in ("<script", "<b>", "<i>"):
        assert markup not in out
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out
    assert 'class="b-fail"' in out
    assert 'class="b-random"' in out


def test_page_has_no_script_and_forbids_outside_resources():
    html = page(EVIL, [Section("One", "<p>x</p>"), Section("Two", "<p>y</p>")])
    assert "<script" not in html
    assert "Content-Security-Policy" in html
    assert "default-src 'none'" in html
    assert '<a href="#one">' in html
    assert '<section id="two">' in html
    with pytest.raises(ValueError, match="duplicate"):
        page("t", [Section("Same", ""), Section("same", "")])


def test_image_data_uri_refuses_non_png():
    assert image_data_uri(b"\x89PNG\r\n\x1a\nrest").startswith("data:image/png;base64,")
    with pytest.raises(XaibenchError, match="not a PNG"):
        image_data_uri(b"GIF89a")


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def test_pareto_front_known_answer():
    points = [
        (0.9, 0.1),  # 0: best AUC
        (0.8, 0.3),  # 1: front
        (0.7, 0.3),  # 2: dominated by 1
        (0.6, 0.5),  # 3: best score
        (0.8, 0.3),  # 4: equal to 1: both stay
        (0.5, 0.2),  # 5: dominated
        (float("nan"), 0.9),  # 6: undefined: never on the front
    ]
    assert figures.pareto_front(points) == [3, 1, 4, 0]
    assert figures.pareto_front([]) == []
    assert figures.pareto_front([(0.5, 0.5)]) == [0]


def test_tradeoff_points_pair_auc_with_each_method(fake_run: Path):
    records = json.loads((fake_run / "results.json").read_text())["records"]
    points = figures.tradeoff_points(records, "bone")
    assert len(points) == len(CELLS) * len(METHODS)
    assert all(p.auc_low < p.auc <= p.auc_high for p in points)
    assert figures.tradeoff_points(records, "spine") == []


def _all_figures(fake_run: Path) -> dict[str, bytes]:
    doc = json.loads((fake_run / "results.json").read_text())
    preds = pd.read_csv(fake_run / "predictions.csv", keep_default_na=False)
    intact = preds[preds["perturbation"] == ""]
    curves = figures.roc_curves(intact, CLASSES, "osteoporosis")
    no_cascade = [
        {**r, "details": {k: v for k, v in r["details"].items() if k != "cascade"}}
        for r in doc["records"]
    ]
    rows = [
        diagnostic_figures.ForestRow("a", 0.1, 0.02, 0.2, 0.01),
        diagnostic_figures.ForestRow(EVIL, -0.05, float("nan"), float("nan"), float("nan")),
    ]
    return {
        "roc": figures.roc_png(curves, "osteoporosis"),
        "tradeoff": figures.tradeoff_png(figures.tradeoff_points(doc["records"], "bone")),
        "forest": diagnostic_figures.forest_png(rows, "AUC"),
        "reliability": diagnostic_figures.reliability_png(
            pd.DataFrame(doc["analysis"]["calibration"])
        ),
        "sanity_cascade": diagnostic_figures.sanity_png(doc["records"]),
        "sanity_bars": diagnostic_figures.sanity_png(no_cascade),
        "empty": figures.tradeoff_png([]),
    }


def test_every_figure_is_a_deterministic_png(fake_run: Path):
    first = _all_figures(fake_run)
    for name, data in first.items():
        width, height = _is_png(data)
        assert min(width, height) > 50, name
    assert _all_figures(fake_run) == first


def test_roc_curves_match_the_recorded_auc(fake_run: Path):
    doc = json.loads((fake_run / "results.json").read_text())
    preds = pd.read_csv(fake_run / "predictions.csv", keep_default_na=False)
    curves = figures.roc_curves(preds[preds["perturbation"] == ""], CLASSES, "osteoporosis")
    recorded = {
        figures.cell_label(r["backbone"], r["strategy"], r["seed"]): r["value"]
        for r in doc["records"]
        if r["metric"] == "auc"
    }
    assert len(curves) == len(CELLS)
    for curve in curves:
        match = [v for k, v in recorded.items() if k.startswith(curve.backbone + " / ")]
        assert any(abs(curve.auc - v) < 1e-9 for v in match)


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def test_report_escapes_untrusted_names(report_html: str):
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in report_html
    assert "<script" not in report_html.lower()


def test_report_references_nothing_outside_itself(report_html: str):
    assert "http://" not in report_html
    assert "https://" not in report_html
    references = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]*)""", report_html)
    assert references
    assert all(ref.startswith(("data:", "#")) for ref in references), {
        ref[:40] for ref in references if not ref.startswith(("data:", "#"))
    }
    assert "<link" not in report_html
    assert "@import" not in report_html


def test_each_leaderboard_table_has_the_tier_legend_beside_it(report_html: str):
    for anchor in ("headline", "performance", "explainability"):
        section = report_html.split(f'id="{anchor}"', 1)[1].split("</section>", 1)[0]
        legend = section.index('<p class="legend">Rank vs tier:')
        assert legend < section.index("<table"), anchor  # just above the table it explains
    assert report_html.count("tier numbers need not rise with rank") == 3


def test_the_headline_table_comes_before_the_full_tables(report_html: str):
    headline = report_html.index('id="headline"')
    assert headline < report_html.index('id="performance"')
    section = report_html[headline:].split("</section>", 1)[0]
    assert "<caption>Headline: AUC, Δ and localisation</caption>" in section
    head = section.split("<thead>", 1)[1].split("</thead>", 1)[0]
    assert ">tier<" in head
    assert ">cell<" in head
    assert ">AUC<" in head
    assert ">Accuracy<" not in head  # the full table's other metrics are not in the headline
    for backbone, strategy, _seed in CELLS:
        shown = escape(f"{backbone} × {strategy}")  # noqa: RUF001 (multiplication sign)
        assert shown in section


def test_report_is_byte_identical_when_rebuilt(fake_run: Path, report_html: str):
    again = write_report([fake_run], fake_run / REPORT_FILE)
    assert again.read_text(encoding="utf-8") == report_html


def test_report_holds_leaderboards_figures_and_galleries(fake_run: Path, report_html: str):
    for title in (
        "Performance leaderboard",
        "Explainability leaderboard",
        "ROC curves",
        "Performance vs explanation",
        "Paired comparisons",
        "Per-class performance and calibration",
        "Strata",
        "Saliency galleries",
        "Sanity checks",
        "Cross-cell analyses",
        "Provenance",
    ):
        assert f"<h2>{title}</h2>" in report_html, title
    assert '<th scope="col">AUC</th>' in report_html
    assert "alpha.random" in report_html
    assert "gamma / linear_probe / seed 1" in report_html
    assert "Random initialisation." in report_html  # alpha.random has random weights
    index = json.loads((fake_run / "gallery" / "index.json").read_text())
    galleries = re.findall(r'<figure class="gallery"><img src="data:image/png;base64,', report_html)
    assert len(galleries) == len(index)
    assert "Best: the 3 test images with the highest IoU_bone" in report_html
    assert "Random: 3 test images drawn at random" in report_html
    assert index[0]["sample_ids"][0] in report_html
    assert "ef" * 32 in report_html  # gamma's weights hash
    assert "explain_regions:" in report_html  # the configuration as YAML
    for uri in re.findall(r'src="data:image/png;base64,([^"]+)"', report_html)[:5]:
        import base64

        _is_png(base64.b64decode(uri))


def test_report_skips_missing_parts_with_a_note(tmp_path: Path):
    run = write_fake_run(tmp_path / "bare", gallery=False, analysis=False)
    html = build_report([run])
    assert "These results have no gallery index" in html
    assert "no per-class, confusion or calibration tables" in html
    assert "no stratified tables" in html
    assert "<h2>Provenance</h2>" in html


def test_report_without_per_image_tables(tmp_path: Path):
    run = write_fake_run(tmp_path / "records-only", predictions=False)
    html = build_report([run])
    assert "No per-image test predictions" in html
    assert "No paired comparisons" in html
    assert '<th scope="col">AUC</th>' in html


def test_report_of_two_runs_merges_their_cells(tmp_path: Path):
    a = write_fake_run(tmp_path / "a", CELLS[:2], seed=1)
    b = write_fake_run(tmp_path / "b", CELLS[2:], seed=2)
    out = write_report([a, b], tmp_path / "out" / "both.html")
    html = out.read_text(encoding="utf-8")
    assert out.name == "both.html"
    assert "3 cell(s) from 2 run(s)" in html
    assert "<h3>Run a</h3>" in html
    assert "<td>../b</td>" in html  # paths relative to the report, no home folders


def test_failed_cells_are_named_with_their_error(tmp_path: Path):
    run = write_fake_run(tmp_path / "run", gallery=False)
    document = json.loads((run / "results.json").read_text())
    document["cells"].append(
        {
            "backbone": "broken",
            "strategy": "lora",
            "seed": 0,
            "random_init": False,
            "weights": {},
            "status": "failed",
            "error": "weights file <corrupt>",
            "traceback": "Traceback ...",
        }
    )
    (run / "results.json").write_text(json.dumps(document))
    html = build_report([run])
    assert "Failed cells." in html
    assert "broken / lora / seed 0: weights file &lt;corrupt&gt;" in html


@pytest.mark.parametrize("damage", ["missing", "corrupt", "outside"])
def test_broken_gallery_image_is_an_error_naming_the_file(tmp_path: Path, damage: str):
    run = write_fake_run(tmp_path / "run")
    index_file = run / "gallery" / "index.json"
    index = json.loads(index_file.read_text())
    victim = run / "gallery" / index[1]["file"]
    if damage == "missing":
        victim.unlink()
    elif damage == "corrupt":
        victim.write_bytes(victim.read_bytes()[:60])
    else:
        index[1]["file"] = "../results.json"
        index_file.write_text(json.dumps(index))
    name = "results.json" if damage == "outside" else victim.name
    with pytest.raises(XaibenchError, match=re.escape(name)):
        write_report([run], tmp_path / "report.html")
    assert not (tmp_path / "report.html").exists()


# --------------------------------------------------------------------------------------------
# A real (tiny) run
# --------------------------------------------------------------------------------------------

TINY = {
    "dataset": {
        "name": "phantom",
        "options": {"n_images": 60, "image_size": 32, "class_shares": [0.4, 0.3, 0.3]},
    },
    "backbones": [{"name": "test_vit.random", "options": {"img_size": 32}}],
    "strategies": [{"name": "linear_probe", "options": {"steps": 20}}],
    "saliency": ["gradcam"],
    "perturbations": ["zero"],
    "explain_regions": ["bone"],
    "perturb_regions": ["bone"],
    "complement_regions": [],
    "train": {"epochs": 1, "batch_size": 16},
    "max_explain_images": 8,
    "gallery_images": 2,
    "sanity": {"images": 2, "steps": 2},
}


def test_report_of_a_real_tiny_run(components, tmp_path: Path):
    defaults = components.tasks.create("osteoporosis").defaults()
    outcome = run_benchmark(resolve_config(defaults, TINY, {}), components, tmp_path / "run")
    html = write_report(
        [outcome.run_dir], outcome.run_dir, leaderboards=outcome.leaderboards
    ).read_text(encoding="utf-8")
    assert "test_vit.random / linear_probe / seed 0" in html
    assert "<script" not in html.lower()
    assert 'class="b-random"' in html
    assert "Random initialisation." in html
    assert '<img src="data:image/png;base64,' in html  # the ROC curves at least
    if (outcome.run_dir / "gallery" / "index.json").is_file():
        assert '<figure class="gallery">' in html
