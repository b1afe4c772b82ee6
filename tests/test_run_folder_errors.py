"""Run folders and results files that cannot be used: one line, never a traceback (issue 16).

Item 8: an ``--out`` that is a file, lies under a file or is read-only is refused before any
work; a full disk names the file it could not write; a results file with a record of the wrong
shape (or nested 100,000 deep) names the file and the record. Item 9: what a failed write leaves
behind (xaibench's own temporary files, the lock file) never blocks the retry.
"""

import errno
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from fake_runs import write_fake_run

import xaibench.cli
import xaibench.engine.benchmark
from xaibench.config import resolve_config
from xaibench.engine.benchmark import _resumable, run_benchmark
from xaibench.engine.checkpoints import remove_partial, write_run_state
from xaibench.engine.results import write_run
from xaibench.errors import XaibenchError
from xaibench.leaderboard import build_leaderboards, write_leaderboard_files
from xaibench.report.build import write_report
from xaibench.report.run_files import load_run

SMALL = {
    "dataset": {"name": "phantom", "options": {"n_images": 60, "image_size": 32}},
    "backbones": [{"name": "test_resnet.random", "options": {"img_size": 32}}],
    "strategies": ["linear_probe"],
    "cache": False,
}


@pytest.fixture
def config(components):
    return resolve_config(components.tasks.create("osteoporosis").defaults(), SMALL)


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a run gets as far as preparing its data."""

    def prepare_data(*args, **kwargs):
        raise AssertionError("the run started working")

    monkeypatch.setattr(xaibench.engine.benchmark, "prepare_data", prepare_data)


def _temporary(root: Path) -> list[str]:
    """Leftovers of an unfinished write, by any naming xaibench ever used."""
    return [
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.name.endswith(".tmp") or ".tmp-" in p.name or p.name.startswith(".xaibench-tmp")
    ]


# --------------------------------------------------------------------------------------------
# Item 8: --out that cannot be a run folder, refused before any work
# --------------------------------------------------------------------------------------------


def _read_only(tmp_path: Path, monkeypatch) -> Path:
    parent = tmp_path / "ro"
    parent.mkdir()
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):  # what a read-only folder answers, also for root
        if Path(self).parent == parent:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    return parent / "run"


@pytest.mark.parametrize("kind", ["file", "under-file", "read-only"])
def test_an_unusable_out_is_refused_before_any_work(config, components, tmp_path, monkeypatch,
                                                    no_work, kind):  # fmt: skip
    afile = tmp_path / "afile"
    afile.write_text("mine")
    out = {"file": afile, "under-file": afile / "run"}.get(kind) or _read_only(
        tmp_path, monkeypatch
    )
    reason = {"file": "not a folder", "under-file": "afile is a file", "read-only": "ermission"}
    with pytest.raises(XaibenchError, match=rf"{out.name}.*{reason[kind]}"):
        run_benchmark(config, components, out)
    assert afile.read_text() == "mine"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_really_read_only_out_is_refused_before_any_work(config, components, tmp_path, no_work):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        with pytest.raises(XaibenchError, match="ermission"):
            run_benchmark(config, components, parent / "run")
        existing = tmp_path / "existing"
        existing.mkdir()
        existing.chmod(0o555)
        with pytest.raises(XaibenchError, match="ermission"):
            run_benchmark(config, components, existing)
    finally:
        parent.chmod(0o755)
        (tmp_path / "existing").chmod(0o755)


def test_the_command_line_says_so_in_one_line(tmp_path, capsys, no_work):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    for out in (afile, afile / "run"):
        with pytest.raises(SystemExit) as exit_info:
            xaibench.cli.main(["run", "osteoporosis", "--out", str(out), "--quiet"])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("xaibench: error: "), err
        assert err.count("\n") == 1, err
        assert str(afile) in err


# --------------------------------------------------------------------------------------------
# Items 8 and 9: a full disk
# --------------------------------------------------------------------------------------------


@pytest.fixture
def full_disk(monkeypatch):
    """Make every write of a file whose name contains one of ``names`` fail half-way (ENOSPC)."""
    names: list[str] = []
    real_bytes, real_text = Path.write_bytes, Path.write_text

    def check(path: Path, content) -> None:
        if any(n in path.name for n in names):
            real_bytes(path, (content.encode() if isinstance(content, str) else content)[:10])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    def write_bytes(self, data):
        check(self, data)
        return real_bytes(self, data)

    def write_text(self, data, *args, **kwargs):
        check(self, data)
        return real_text(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    monkeypatch.setattr(Path, "write_text", write_text)
    return names


@pytest.mark.parametrize("victim", ["results.json", "predictions.csv", "config.yaml"])
def test_a_full_disk_names_the_file_and_leaves_nothing_half_written(tmp_path, full_disk, victim):
    run = write_fake_run(tmp_path / "run", {"a": 2.0})
    document = json.loads((run / "results.json").read_text())
    before = (run / "results.json").read_bytes()
    cell = SimpleNamespace(predictions=[pd.read_csv(run / "predictions.csv")], explanations=[])
    full_disk.append(victim)
    with pytest.raises(XaibenchError, match=rf"{victim}.*No space left on device"):
        write_run(run, document, [cell], [])  # type: ignore[list-item]
    assert _temporary(run) == []
    assert (run / "results.json").read_bytes() == before  # the old file whole, not half new


def test_a_full_disk_is_exit_status_1_and_one_line(tmp_path, full_disk, capsys):
    """Not a usage error: the system's (exit 1, like any other OS error), naming the file."""
    run = write_fake_run(tmp_path / "run", {"a": 2.0, "b": 0.1})
    full_disk.append("leaderboard.json")
    with pytest.raises(SystemExit) as exit_info:
        xaibench.cli.main(["leaderboard", str(run), "--out", str(tmp_path / "board")])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "leaderboard.json: cannot be written (No space left on device)" in err


def test_a_full_disk_while_writing_leaderboards_or_a_report(tmp_path, full_disk):
    run = write_fake_run(tmp_path / "run", {"a": 2.0, "b": 0.1})
    boards = build_leaderboards([load_run(run)], resamples=50)
    full_disk.append("leaderboard.json")
    with pytest.raises(XaibenchError, match=r"leaderboard\.json.*No space left"):
        write_leaderboard_files(boards, tmp_path / "board")
    full_disk.append("report.html")
    with pytest.raises(XaibenchError, match=r"report\.html.*No space left"):
        write_report([run], tmp_path / "report.html", leaderboards=boards)
    assert _temporary(tmp_path) == []
    assert not (tmp_path / "report.html").exists()


def test_a_report_that_cannot_replace_its_target_leaves_no_temporary_file(tmp_path):
    run = write_fake_run(tmp_path / "run", {"a": 2.0})
    (run / "report.html").mkdir()  # in the way: the rename fails
    with pytest.raises(XaibenchError, match=r"report\.html"):
        write_report([run], run)
    assert _temporary(tmp_path) == []


# --------------------------------------------------------------------------------------------
# Item 9: leftovers of a failed first write do not block the retry
# --------------------------------------------------------------------------------------------


def test_a_failed_first_write_does_not_block_the_retry(config, tmp_path, full_disk):
    run = tmp_path / "run"
    full_disk.append("run-state.json")
    with pytest.raises(XaibenchError, match=r"run-state\.json.*No space left"):
        write_run_state(run, config, "2026-01-01T00:00:00+00:00")
    assert _temporary(run) == []
    full_disk.clear()  # space freed
    # what a SIGKILL at that moment (or an older xaibench) leaves: 0-byte temporary files
    (run / f".run-state.json.{os.getpid() + 1}.tmp").write_bytes(b"")
    (run / ".xaibench-tmp-123-run-state.json").write_bytes(b"")
    (run / ".xaibench.lock").write_bytes(b"")
    assert _resumable(run, config) is None  # a new run, not "holds no xaibench run"
    (run / "notes.txt").write_text("mine")
    with pytest.raises(XaibenchError, match="holds no xaibench run"):
        _resumable(run, config)


def test_stale_temporary_files_are_removed_when_a_run_takes_its_folder(tmp_path):
    run = tmp_path / "run"
    for folder in (run, run / "gallery", run / "cells"):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ".xaibench-tmp-99-results.json").write_bytes(b"half")
    (run / "cells" / ".xaibench-tmp-99-a__b__seed0__key").mkdir()
    (run / ".tmp-notes").write_text("not xaibench's: kept")
    (run / "notes.tmp").write_text("not xaibench's: kept")
    remove_partial(run)
    assert sorted(_temporary(run)) == [".tmp-notes", "notes.tmp"]


# --------------------------------------------------------------------------------------------
# Item 8: results files of the wrong shape
# --------------------------------------------------------------------------------------------


def _damage(run: Path, how: str) -> None:
    file = run / "results.json"
    if how == "deep":
        file.write_text("[" * 100_000 + "]" * 100_000)
        return
    if how == "deep-record":
        text = file.read_text()
        file.write_text(
            text.replace('"details": {}', '"details": ' + "[" * 100_000 + "]" * 100_000, 1)
        )
        return
    document = json.loads(file.read_text())
    record = document["records"][2]
    if how == "no-category":
        del record["category"]
    elif how == "string-value":
        record["value"] = "0.9"
    elif how == "bool-value":
        record["value"] = True
    elif how == "list-record":
        document["records"][2] = ["auc", 0.9]
    elif how == "records-not-list":
        document["records"] = {"auc": 0.9}
    elif how == "task-not-object":
        document["task"] = "osteoporosis"
    elif how == "string-seed":
        record["seed"] = "0"
    elif how == "details-not-object":
        record["details"] = "passed"
    elif how == "cells-not-list":
        document["cells"] = "all"
    elif how == "non-utf8":
        file.write_bytes(b'{"schema_version": "1.3", "task": "\xff"}')
        return
    elif how == "analysis-string-number":
        document["analysis"]["reliability"] = [
            {"backbone": "a", "strategy": "linear_probe", "seed": 0, "kind": "top_label",
             "bin_low": "x", "bin_high": 0.1, "n": 3, "mean_confidence": 0.5, "observed": 0.5}
        ]  # fmt: skip
    elif how == "analysis-nested-value":
        document["analysis"]["calibration"] = [
            {"backbone": "a", "strategy": "linear_probe", "seed": 0, "kind": ["top"], "ece": 0.1}
        ]
    file.write_text(json.dumps(document))


DAMAGES = {
    "deep": "nested too deeply",
    "deep-record": "nested too deeply",
    "no-category": r"record 2.*category",
    "string-value": r"record 2.*value",
    "bool-value": r"record 2.*value",
    "list-record": r"record 2",
    "records-not-list": "records",
    "task-not-object": "task",
    "string-seed": r"record 2.*seed",
    "details-not-object": r"record 2.*details",
    "cells-not-list": "cells",
    "non-utf8": "UTF-8",
    "analysis-string-number": r"'reliability', row 0: 'bin_low' must be a number",
    "analysis-nested-value": r"'calibration', row 0: 'kind' must be a single value",
}


@pytest.mark.parametrize("how", list(DAMAGES))
def test_a_results_file_of_the_wrong_shape_names_the_file_and_record(tmp_path, how):
    run = write_fake_run(tmp_path / "run", {"a": 2.0, "b": 0.5})
    _damage(run, how)
    with pytest.raises(XaibenchError, match=rf"results\.json.*{DAMAGES[how]}"):
        load_run(run)


@pytest.mark.parametrize("how", ["no-category", "string-value", "deep"])
def test_leaderboard_and_report_of_a_damaged_results_file_say_so_in_one_line(tmp_path, capsys,
                                                                             how):  # fmt: skip
    run = write_fake_run(tmp_path / "run", {"a": 2.0, "b": 0.5})
    _damage(run, how)
    for args in (["leaderboard", str(run), "--out", str(tmp_path / "board")], ["report", str(run)]):
        with pytest.raises(SystemExit) as exit_info:
            xaibench.cli.main(args)
        assert exit_info.value.code == 2, args
        err = capsys.readouterr().err
        assert err.startswith("xaibench: error: "), err
        assert err.count("\n") == 1, err
        assert "results.json" in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"sources": [{"path": "../run"}], "resamples": "many"}', "resamples"),
        ('{"sources": [{"path": "../run"}], "resamples": 1000000000000}', "resamples"),
        ('{"sources": [{"path": "../run"}], "seed": -1}', "seed"),
        ('{"sources": [{"path": "../run"}], "alpha": 2}', "alpha"),
        ('{"sources": "../run"}', "sources"),
    ],
)
def test_a_damaged_leaderboard_file_is_one_line_in_check(tmp_path, capsys, content, message):
    write_fake_run(tmp_path / "run", {"a": 2.0})
    board = tmp_path / "board"
    board.mkdir()
    (board / "leaderboard.json").write_text(content)
    with pytest.raises(SystemExit) as exit_info:
        xaibench.cli.main(["leaderboard", "--check", str(board)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("xaibench: error: "), err
    assert err.count("\n") == 1, err
    assert "leaderboard.json" in err
    assert message in err
