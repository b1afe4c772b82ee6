"""Run folders someone else wrote: every name read from one stays inside it (issue 16, item 2).

A run folder, a checkpoint's ``cell.json``, ``gallery/index.json`` and ``leaderboard.json`` all
name other files. Edited by hand (or by someone who sent you the folder), a name like
``../../../X``, an absolute path or a symlink that leads out must be refused with one line naming
the file and the entry, before anything is read or written through it.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_runs import write_fake_run

from xaibench.config import ComponentRef
from xaibench.engine.checkpoints import (
    CELLS_DIR,
    GalleryFile,
    checkpoint_galleries,
    load_cell,
    remove_partial,
    save_cell,
)
from xaibench.engine.grid import Cell
from xaibench.engine.results import write_run
from xaibench.engine.runner import CellResult, Gallery
from xaibench.errors import XaibenchError
from xaibench.leaderboard import build_leaderboards, sources_of, write_leaderboard_files
from xaibench.report.run_files import load_run

KEY = "k" * 64
DOCUMENT = {"config": {}, "environment": {}}


def _cell(backbone: str = "bb", strategy: str = "st") -> Cell:
    return Cell(ComponentRef(name=backbone), ComponentRef(name=strategy), 0)


def _result(cell: Cell) -> CellResult:
    images = np.random.default_rng(0).random((2, 8, 8)).astype(np.float32)
    result = CellResult(cell)
    result.galleries = [
        Gallery("saliency", "best", ("s1", "s2"), (0.1, 0.2), "iou_region", "bone", images,
                images, None),
    ]  # fmt: skip
    return result


def _files(root: Path) -> set[Path]:
    return set(root.rglob("*"))


def _entry_of(folder: Path) -> dict:
    return json.loads((folder / "cell.json").read_text())["galleries"][0]


def _tamper_gallery_entry(folder: Path, file: str) -> None:
    document = json.loads((folder / "cell.json").read_text())
    document["galleries"][0]["file"] = file
    (folder / "cell.json").write_text(json.dumps(document))


@pytest.mark.parametrize("entry", ["../../../X", "ABSOLUTE", "../../other__cell/gallery/x.png"])
def test_a_tampered_checkpoint_gallery_entry_is_refused_and_nothing_written_outside(
    tmp_path: Path, entry: str
):
    run = tmp_path / "a" / "b" / "run"
    cell = _cell()
    folder = save_cell(run, KEY, _result(cell))
    png = next((folder / "gallery").iterdir()).read_bytes()
    (run / "X").write_bytes(png)  # what ../../../X names from the checkpoint's gallery folder
    elsewhere = tmp_path / "elsewhere.png"
    elsewhere.write_bytes(png)
    _tamper_gallery_entry(folder, str(elsewhere) if entry == "ABSOLUTE" else entry)
    before = _files(tmp_path)
    with pytest.raises(XaibenchError, match=r"cell\.json.*gallery entry"):
        checkpoint_galleries(run, cell, KEY)  # what --resume copies into the results
    with pytest.raises(XaibenchError, match="gallery entry"):  # and the copy itself
        write_run(run, DOCUMENT, [], [GalleryFile(run / "X", _entry_of(folder))])
    assert _files(tmp_path) == before  # nothing written anywhere, least of all above the run
    assert not (tmp_path / "a" / "X").exists()


def test_a_checkpoint_gallery_entry_that_is_not_a_name_is_refused(tmp_path: Path):
    cell = _cell()
    folder = save_cell(tmp_path / "run", KEY, _result(cell))
    document = json.loads((folder / "cell.json").read_text())
    document["galleries"][0]["file"] = {"not": "a name"}
    (folder / "cell.json").write_text(json.dumps(document))
    with pytest.raises(XaibenchError, match=r"cell\.json"):
        checkpoint_galleries(tmp_path / "run", cell, KEY)
    (folder / "cell.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(XaibenchError, match=r"cell\.json"):
        checkpoint_galleries(tmp_path / "run", cell, KEY)
    with pytest.raises(XaibenchError, match=r"cell\.json"):
        load_cell(tmp_path / "run", cell, KEY)


def test_results_are_not_written_through_a_symlink_leading_out(tmp_path: Path):
    run, outside = tmp_path / "run", tmp_path / "outside"
    outside.mkdir()
    cell = _cell()
    save_cell(run, KEY, _result(cell))
    galleries = checkpoint_galleries(run, cell, KEY)
    (run / "gallery").symlink_to(outside, target_is_directory=True)
    with pytest.raises(XaibenchError, match="outside"):
        write_run(run, DOCUMENT, [], galleries)
    assert list(outside.iterdir()) == []


def test_a_checkpoint_folder_leading_out_is_neither_read_nor_cleaned(tmp_path: Path):
    run, outside = tmp_path / "run", tmp_path / "outside"
    cell = _cell()
    folder = save_cell(run, KEY, _result(cell))
    folder.rename(outside)
    folder.symlink_to(outside, target_is_directory=True)
    with pytest.raises(XaibenchError, match="outside"):
        load_cell(run, cell, KEY)
    with pytest.raises(XaibenchError, match="outside"):
        checkpoint_galleries(run, cell, KEY)
    # `cells` itself leading out: a resume's clean-up of half-written checkpoints must not
    # delete what lies there
    victims = tmp_path / "victims"
    (victims / ".tmp-precious").mkdir(parents=True)
    (victims / ".xaibench-tmp-precious").mkdir()
    other = tmp_path / "run2"
    other.mkdir()
    (other / CELLS_DIR).symlink_to(victims, target_is_directory=True)
    with pytest.raises(XaibenchError, match="outside"):
        remove_partial(other)
    assert sorted(p.name for p in victims.iterdir()) == [".tmp-precious", ".xaibench-tmp-precious"]


@pytest.mark.parametrize("entry", ["../results.json", "ABSOLUTE", "SYMLINK", 7])
def test_a_gallery_index_entry_leading_out_is_refused_when_the_run_is_read(
    tmp_path: Path, entry: object
):
    run = write_fake_run(tmp_path / "run", {"a": 2.0})
    (run / "gallery").mkdir()
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG not yours")
    if entry == "ABSOLUTE":
        entry = str(secret)
    elif entry == "SYMLINK":
        (run / "gallery" / "link.png").symlink_to(secret)
        entry = "link.png"
    index = [{"backbone": "a", "strategy": "linear_probe", "seed": 0, "saliency": "gradcam",
              "kind": "best", "file": entry, "sample_ids": [], "scores": []}]  # fmt: skip
    (run / "gallery" / "index.json").write_text(json.dumps(index))
    with pytest.raises(XaibenchError, match=r"index\.json.*gallery entry"):
        load_run(run)


def test_run_files_leading_out_through_a_symlink_are_refused(tmp_path: Path):
    real = write_fake_run(tmp_path / "elsewhere", {"a": 2.0})
    run = tmp_path / "run"
    run.mkdir()
    for name in ("results.json", "predictions.csv", "explanations.csv"):
        (run / name).symlink_to(real / name)
    with pytest.raises(XaibenchError, match="outside"):
        load_run(run)


def _board(tmp_path: Path) -> Path:
    run = write_fake_run(tmp_path / "runs" / "a", {"a": 2.0, "b": 0.5})
    board = tmp_path / "board"
    write_leaderboard_files(build_leaderboards([load_run(run)], resamples=50), board)
    return board


def test_leaderboard_sources_are_relative_paths_to_run_folders(tmp_path: Path):
    board = _board(tmp_path)
    assert sources_of(board) == [board / "../runs/a"]  # the sibling run folder: allowed
    document = json.loads((board / "leaderboard.json").read_text())
    for bad, message in (
        (str((tmp_path / "runs" / "a").resolve()), "absolute"),
        ("../runs/nothing-here", "no results.json"),
        ("../runs", "no results.json"),
        (["../runs/a"], "not a path"),
        ("", "not a path"),
    ):
        document["sources"][0]["path"] = bad
        (board / "leaderboard.json").write_text(json.dumps(document))
        with pytest.raises(XaibenchError, match=rf"leaderboard\.json.*{message}"):
            sources_of(board)


def test_the_report_checks_gallery_entries_of_runs_not_read_by_load_run(tmp_path: Path):
    """Runs built in code (not read by load_run) get the same check when rendered."""
    import dataclasses

    from xaibench.report.build import render_report

    run = load_run(write_fake_run(tmp_path / "run", {"a": 2.0}))
    entry = {"file": "../results.json", "path": run.path / "results.json", "kind": "best"}
    with pytest.raises(XaibenchError, match="gallery entry"):
        render_report([dataclasses.replace(run, galleries=[entry])])


def test_checkpoint_files_leading_out_are_never_copied_into_results(tmp_path: Path):
    """A planted symlink would copy whatever it names into the run's published tables."""
    run = tmp_path / "run"
    cell = _cell()
    result = _result(cell)
    result.predictions = [pd.DataFrame({"sample_id": ["s1"], "prob_a": [0.5]})]
    folder = save_cell(run, KEY, result)
    secret = tmp_path / "secret.csv"
    secret.write_text("sample_id,prob_a\nnot yours,1\n")
    (folder / "predictions.csv").unlink()
    (folder / "predictions.csv").symlink_to(secret)
    with pytest.raises(XaibenchError, match="outside"):
        load_cell(run, cell, KEY)


@pytest.mark.parametrize("name", ["run-state.json", "config.yaml"])
def test_resume_refuses_run_state_or_config_leading_out(tmp_path: Path, capsys, name: str):
    import xaibench.cli

    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    run.mkdir()
    elsewhere.mkdir()
    (elsewhere / "run-state.json").write_text(json.dumps({"study_hash": "0" * 64}))
    (elsewhere / "config.yaml").write_text("task: osteoporosis\n")
    for file in ("run-state.json", "config.yaml"):
        target = run / file
        if file == name:
            target.symlink_to(elsewhere / file)
        else:
            target.write_bytes((elsewhere / file).read_bytes())
    with pytest.raises(SystemExit) as exit_info:
        xaibench.cli.main(["run", "osteoporosis", "--resume", "--out", str(run), "--quiet"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "leads outside" in err, err
    assert name in err


def test_a_symlink_loop_in_a_run_folder_is_one_line(tmp_path: Path):
    run = write_fake_run(tmp_path / "run", {"a": 2.0})
    (run / "gallery").mkdir()
    (run / "gallery" / "a").symlink_to(run / "gallery" / "b")
    (run / "gallery" / "b").symlink_to(run / "gallery" / "a")
    index = [{"kind": "best", "file": "a/x.png"}]
    (run / "gallery" / "index.json").write_text(json.dumps(index))
    with pytest.raises(XaibenchError, match=r"gallery entry 'a/x.png' cannot be resolved"):
        load_run(run)
