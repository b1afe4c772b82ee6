"""The headline leaderboard: 12 cells in 100 columns, --wide, --ci-lines, the Markdown files."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from fake_runs15 import write_fake_run_15
from rich.console import Console

import xaibench.cli
from xaibench.leaderboard import CHANCE_MARK, build_leaderboards, write_leaderboard_files
from xaibench.leaderboard.headline_view import (
    TIMES,
    ci_text,
    headline_view,
    sanity_text,
    trust_text,
)
from xaibench.leaderboard.terminal import print_leaderboards, short_names
from xaibench.report.run_files import load_run

#: The default (quick) grid of the osteoporosis task: 4 backbones x 3 strategies.
BACKBONES = (
    "openclip_tiny.random",
    "dinov2_tiny.random",
    "chexagent_siglip_tiny.random",
    "rad_dino_tiny.random",
)
STRATEGIES = ("linear_probe", "last_block", "lora")
METHODS = ("gradcam", "saliency")


def _split_cells(path: Path) -> None:
    """Turn the fake run's ``backbone@strategy`` names into real cells; add a second method."""
    doc = json.loads((path / "results.json").read_text())

    def split(item: dict) -> None:
        item["backbone"], item["strategy"] = item["backbone"].split("@")

    records = []
    for rec in doc["records"]:
        split(rec)
        records.append(rec)
        if rec.get("saliency") == "gradcam":
            records.append({**rec, "saliency": "saliency"})
    doc["records"] = records
    for cell in doc["cells"]:
        split(cell)
    (path / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    for name in ("predictions.csv", "explanations.csv"):
        frame = pd.read_csv(path / name, keep_default_na=False)
        parts = frame["backbone"].str.split("@", expand=True)
        frame["backbone"], frame["strategy"] = parts[0], parts[1]
        if name == "explanations.csv":
            frame = pd.concat([frame, frame.assign(saliency="saliency")], ignore_index=True)
        frame.to_csv(path / name, index=False)


@pytest.fixture(scope="module")
def run12(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("board12") / "run"
    strengths = {
        f"{b}@{s}": 0.3 + 0.25 * i + 0.1 * j
        for i, b in enumerate(BACKBONES)
        for j, s in enumerate(STRATEGIES)
    }
    write_fake_run_15(path, strengths, n=90, resamples=50)
    _split_cells(path)
    return path


@pytest.fixture(scope="module")
def boards12(run12):
    cells = [(b, s, 0) for b in BACKBONES for s in STRATEGIES]
    trust = [
        {"backbone": b, "strategy": s, "seed": seed, "saliency": m,
         "badge": "trusted" if m == "gradcam" else "not trusted",
         "metrics": {"relevance_mass": "trusted", "pointing_game": "trusted"}}
        for b, s, seed in cells
        for m in METHODS
    ]  # fmt: skip
    return build_leaderboards([load_run(run12)], resamples=50, seed=0, trust=trust)


def _render(boards, width: int = 100, **options) -> str:
    console = Console(width=width, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    print_leaderboards(boards, console=console, **options)
    console.file.close()
    return console.export_text()


def _expected_strings(boards) -> list[str]:
    """Every value the headline must show in full, formatted independently of the view."""
    perf, expl = boards.performance, boards.explainability
    strings = []
    for _, row in perf.iterrows():
        auc, lo, hi = row["AUC"], row["AUC low"], row["AUC high"]
        strings.append(f"{auc:.2f} ±{max(hi - auc, auc - lo):.2f}")
    delta = "sΔ_bone (mean)"
    for _, row in expl.iterrows():
        v, lo, hi = row[delta], row[f"{delta} low"], row[f"{delta} high"]
        strings.append(f"{v:.2f} ±{max(abs(hi - v), abs(v - lo)):.2f}")
        for method in METHODS:
            col = f"nIoU_bone ({method})"
            v, lo, hi = row[col], row[f"{col} low"], row[f"{col} high"]
            strings.append(f"{v:.2f} ±{max(abs(hi - v), abs(v - lo)):.2f}")
    return strings


def test_twelve_cells_fit_100_columns_and_nothing_is_cut(boards12):
    assert len(boards12.performance) == 12
    text = _render(boards12)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert "…" not in text
    for value in _expected_strings(boards12):
        assert value in text, value
    body = "\n".join(lines)
    # every cell appears: its backbone (abbreviated, the full name listed once) and strategy
    joined = " ".join(line.strip() for line in lines)
    for backbone in BACKBONES:
        assert f"{backbone.removesuffix('_tiny.random')} = {backbone}" in joined
    for strategy in STRATEGIES:
        assert body.count(f"{TIMES.strip()} {strategy}") == 4
    for short in ("openclip*", "dinov2*", "chexagent_siglip*", "rad_dino*"):
        assert len(re.findall(rf"(?m)^\s*\d+\s+{re.escape(short)}\s", body)) == 3, short
    # per cell and method: the sanity and trust badges, shortened
    assert body.count("not trusted") == 12
    assert len(re.findall(r"\btrusted\b", body)) == 24
    assert "sΔ_bone" in body
    assert "nIoU_bone" in body
    assert "Every column: --wide" in body


def test_rows_follow_the_performance_table_with_its_tiers(boards12):
    view = headline_view(boards12)
    perf = boards12.performance
    assert [(r.backbone, r.strategy) for r in view.rows] == list(
        zip(perf["backbone"], perf["strategy"], strict=True)
    )
    assert [r.tier for r in view.rows] == [str(int(t)) for t in perf["tier"]]
    assert all(r.seed == "" for r in view.rows)  # one seed: not shown
    assert [m.method for m in view.rows[0].methods] == list(METHODS)


def test_ci_lines_put_each_half_width_under_its_value(boards12):
    text = _render(boards12, ci_lines=True)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert "…" not in text
    row = boards12.performance.iloc[0]
    value, half = ci_text(row["AUC"], row["AUC low"], row["AUC high"])
    at = next(i for i, line in enumerate(lines) if f" {value} " in line)
    assert half in lines[at + 1]
    assert f"{value} {half}" not in text


def test_a_narrow_terminal_gets_abbreviations_and_ci_lines_before_any_cut(boards12):
    text = _render(boards12, width=80)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text


def test_wide_prints_every_column_of_both_tables_uncut(boards12):
    text = _render(boards12, wide=True)
    assert "…" not in text
    assert "Performance leaderboard" in text
    assert "Explainability leaderboard" in text
    assert "chexagent_siglip_tiny.random" in text  # full names
    for column in ("Accuracy", "off-target", "evidence", "p vs leader"):
        assert column in text
    row = boards12.performance.iloc[0]
    assert f"{row['AUC']:.3f} [{row['AUC low']:.3f}, {row['AUC high']:.3f}]" in text
    assert "trusted (RMA, PG)" in text  # the full badge, not the headline's short one
    assert max(len(line) for line in text.splitlines()) > 100  # its natural width


def test_markdown_has_the_headline_first_and_the_full_table_collapsed(boards12, tmp_path):
    write_leaderboard_files(boards12, tmp_path)
    for name in ("performance", "explainability"):
        md = (tmp_path / f"leaderboard_{name}.md").read_text()
        head, _, rest = md.partition("<details>")
        full, _, after = rest.partition("</details>")
        header = "| tier | cell | AUC | sΔ_bone (mean) | method | nIoU_bone | sanity | trust |"
        assert header in head
        assert f"chexagent_siglip_tiny.random{TIMES}linear_probe\\*" in head  # full names
        assert head.count("\n| ") == 1 + 24  # header and a row per cell and method
        assert "<summary>Full " in full
        assert "| rank | tier | backbone |" in full
        assert "Built from:" in after
        row = boards12.performance.iloc[0]
        half = max(row["AUC high"] - row["AUC"], row["AUC"] - row["AUC low"])
        auc = f"{row['AUC']:.2f} ±{half:.2f}"
        assert auc in head


def test_markdown_headline_is_escaped(tmp_path):
    run = write_fake_run_15(tmp_path / "run", {"<b>x</b>|y": 2.0, "plain": 1.0}, n=60, resamples=20)
    boards = build_leaderboards([load_run(run)], resamples=20)
    write_leaderboard_files(boards, tmp_path / "board")
    md = (tmp_path / "board" / "leaderboard_performance.md").read_text()
    head = md.partition("<details>")[0]
    assert "<b>" not in md
    assert f"| &lt;b>x&lt;/b>\\|y{TIMES}linear_probe\\* |" in head


@pytest.mark.parametrize(
    ("value", "low", "high", "expected"),
    [
        (0.724, 0.650, 0.800, ("0.72", "±0.08")),  # wider half: 0.076 above vs 0.074 below
        (0.5, 0.41, 0.52, ("0.50", "±0.09")),  # asymmetric: the wider (lower) half
        (0.1, 0.12, 0.2, ("0.10", "±0.10")),  # estimate outside its interval
        (-0.001, -0.05, 0.04, ("0.00", "±0.05")),  # no "-0.00"
        (0.3, None, None, ("0.30", "")),
        (float("nan"), 0.1, 0.2, ("–", "")),  # noqa: RUF001
    ],
)
def test_ci_text(value, low, high, expected):
    assert ci_text(value, low, high) == expected


def test_badges_are_shortened():
    assert sanity_text("fail (model, target)") == "fail (both)"
    assert sanity_text("fail (target)") == "fail (target)"
    assert sanity_text("control (fail: model, target)") == "control: fail"
    assert sanity_text("control (n/a: model)") == "control: n/a"
    assert sanity_text("control (pass)") == "control: pass"
    assert trust_text("trusted (RMA, PG)") == "trusted"
    assert trust_text("not trusted") == "not trusted"


def test_short_names_stay_unique():
    assert short_names(["resnet", "vit"], 16) == {"resnet": "resnet", "vit": "vit"}
    names = short_names(BACKBONES, 16)
    assert names["chexagent_siglip_tiny.random"] == "chexagent_siglip"
    assert short_names(["longname_a", "longname_b"], 5) == {"longname_a": "a", "longname_b": "b"}
    names = short_names(["averyveryverylongnamea", "averyveryverylongnameb"], 10)
    assert names == {"averyveryverylongnamea": "averyvery~", "averyveryverylongnameb": "averyver~1"}
    many = [f"sharedlongprefix{i:02d}" for i in range(25)]  # 25 cuts to the same prefix
    names = short_names(many, 10)
    assert len(set(names.values())) == 25
    assert all(len(v) <= 10 for v in names.values())
    assert names[many[0]] == "sharedlon~"
    assert names[many[1]] == "sharedlo~1"
    assert names[many[12]] == "sharedl~12"
    names = short_names(["a_x", "a_y", "a_x_y" * 8], 6)
    assert len(set(names.values())) == 3
    assert all(len(v) <= 6 for v in names.values())


def _cli(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        xaibench.cli.main(args)
    assert exit_info.value.code in (0, None)
    return capsys.readouterr().out


def test_cli_leaderboard_prints_the_headline_at_100_columns(run12, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    args = ["leaderboard", str(run12), "--resamples", "20", "--out"]
    out = _cli([*args, str(tmp_path / "b")], capsys)
    assert max(len(line) for line in out.splitlines()) <= 100
    assert "…" not in out
    assert "Leaderboard (osteoporosis vs rest" in out
    assert "Explainability leaderboard" not in out
    assert out.rstrip().endswith(f"wrote 7 files to {tmp_path / 'b'}")
    wide = _cli([*args, str(tmp_path / "c"), "--wide"], capsys)
    assert "Explainability leaderboard" in wide
    assert "…" not in wide
    assert "chexagent_siglip_tiny.random" in wide
    lines = _cli([*args, str(tmp_path / "d"), "--ci-lines"], capsys)
    assert max(len(line) for line in lines.splitlines()) <= 100
    assert CHANCE_MARK in (tmp_path / "b" / "leaderboard_explainability.md").read_text()


def test_several_seeds_are_shown_and_a_table_without_explanations_still_prints(boards12):
    seeds = [i % 2 for i in range(12)]
    perf = boards12.performance.assign(seed=seeds)
    expl = boards12.explainability.set_index(["backbone", "strategy"])
    expl = expl.loc[list(zip(perf["backbone"], perf["strategy"], strict=True))].reset_index()
    expl["seed"] = seeds
    boards = replace(boards12, performance=perf, explainability=expl)
    text = _render(boards)
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "…" not in text
    assert text.count(", seed 1") == 6
    assert text.count(", seed 0") == 6
    no_explanations = replace(
        boards12,
        explainability=boards12.explainability.iloc[0:0][["rank", "backbone", "strategy", "seed"]],
        meta={**boards12.meta, "ranking": {"performance": "AUC", "explainability": None}},
    )
    text = _render(no_explanations)
    assert "method" not in text
    assert "sΔ" not in text
    row = boards12.performance.iloc[0]
    assert " ".join(ci_text(row["AUC"], row["AUC low"], row["AUC high"])) in text
