"""Label rules of task files (issue 18 item 1): known answers by hand, every bad cell a row."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from xaibench.data.values import format_problem
from xaibench.errors import XaibenchError
from xaibench.tasks.file_task import FileTask
from xaibench.tasks.label_rules import ClassColumn, Findings, Interval, NumericColumn

OSTEOPOROSIS = "xaibench.tasks:osteoporosis.yaml"
WHO = ("normal", "osteopenia", "osteoporosis")


def _lines(problems) -> list[str]:
    return [format_problem(p) for p in problems]


def test_interval_bounds_are_inclusive_or_exclusive_as_written():
    ctr = Interval(above=0, max=1)
    assert [ctr.contains(x) for x in (0.0, 1e-9, 0.5, 1.0, 1.0000001)] == [
        False, True, True, True, False,
    ]  # fmt: skip
    assert ctr.describe() == "(0, 1]"
    assert Interval(max=-2.5).describe() == "(-inf, -2.5]"
    assert Interval(max=0.5).overlaps(Interval(min=0.5))
    assert not Interval(max=0.5).overlaps(Interval(above=0.5))
    assert not Interval(below=0.5).overlaps(Interval(min=0.5))
    with pytest.raises(ValueError, match="empty"):
        Interval(min=1, below=1)
    with pytest.raises(ValueError, match="not both"):
        Interval(min=1, above=0)


def test_overlapping_class_ranges_are_refused():
    with pytest.raises(ValueError, match=r"'a' .* and 'b' .* overlap"):
        NumericColumn(column="x", classes={"a": Interval(max=0.5), "b": Interval(min=0.5)})


def test_who_classes_at_their_cut_points_from_strings_and_floats():
    task = FileTask(file=OSTEOPOROSIS)
    text = pd.DataFrame({"t_score": ["-1", "-1.0001", "-2.5", "-2.4999", "+0.5", ".5", "-2.5e0"]})
    assert task.labels(text).tolist() == [0, 1, 2, 1, 0, 0, 2]
    floats = pd.DataFrame(
        {"t_score": [-1.0, -1.0001, -2.5, -2.4999, np.nan], "label": [""] * 4 + [2]}
    )
    assert task.labels(floats).tolist() == [0, 1, 2, 1, 2]


def test_every_bad_osteoporosis_cell_is_a_numbered_problem():
    """The checks the manifest made (plain decimals, T-score limit, agreement) are the rule's."""
    task = FileTask(file=OSTEOPOROSIS)
    table = pd.DataFrame(
        {
            "t_score": ["1_0", "nan", "11", "", "-3", "", "-0.5", "0x10"],
            "label": ["", "", "", "", "normal", "severe", "", ""],
        }
    )
    lines = _lines(task.check_labels(table))
    assert lines == [
        "row 1 (t_score): not a number: '1_0'",
        "row 2 (t_score): not a finite number: 'nan'",
        "row 3 (t_score): 11 is outside [-10, 10]; is this column a T-score?",
        "row 4 (t_score / label): no class: the row needs a t_score or a label",
        "row 5 (label): label 'normal' disagrees with t_score -3 (osteoporosis); give one or "
        "make them agree",
        "row 6 (label): unknown label 'severe'; use one of normal, osteopenia, osteoporosis or 0-2",
        "row 8 (t_score): not a number: '0x10'",
    ]
    with pytest.raises(XaibenchError) as info:
        task.labels(table)
    message = str(info.value)
    assert message.startswith("task 'osteoporosis': 7 label problems (rows are 1-based")
    assert "row 3 (t_score): 11 is outside" in message
    assert "row 8" in message


def test_a_missing_label_column_is_one_problem_naming_the_columns():
    task = FileTask(file=OSTEOPOROSIS)
    problems = task.check_labels(pd.DataFrame({"age": [50]}))
    assert _lines(problems) == ["task 'osteoporosis' needs a 't_score' or a 'label' column"]


def test_a_number_may_win_over_its_class_column():
    rule = NumericColumn(
        column="ctr",
        classes={"normal": Interval(max=0.5), "big": Interval(above=0.5)},
        fallback="label",
        agree=False,
    )
    out = rule.apply(
        pd.DataFrame({"ctr": [0.6, ""], "label": ["normal", "big"]}), ("normal", "big"), "t"
    )
    assert out.labels.tolist() == [1, 1]
    assert not out.problems


def test_class_column_takes_names_in_any_case_and_indexes():
    rule = ClassColumn(name="pneumothorax")
    names = ("no_pneumothorax", "pneumothorax")
    out = rule.apply(pd.DataFrame({"pneumothorax": [0.0, 1.0, "PNEUMOTHORAX", "1"]}), names, "t")
    assert out.labels.tolist() == [0, 1, 1, 1]
    assert not out.problems
    out = rule.apply(pd.DataFrame({"pneumothorax": ["2", "", "1.5", True]}), names, "t")
    assert [p.row for p in out.problems] == [1, 2, 3, 4]
    assert "no class" in out.problems[1].message
    assert out.labels.tolist() == [-1, -1, -1, -1]


@pytest.mark.parametrize(
    ("uncertain", "blank", "expected", "excluded"),
    [
        ("exclude", "exclude", [1, 0, -1, -1, 1], {"uncertain": 1, "blank": 1}),
        ("positive", "negative", [1, 0, 1, 0, 1], {}),
        ("negative", "exclude", [1, 0, 0, -1, 1], {"blank": 1}),
    ],
)
def test_finding_policies(uncertain, blank, expected, excluded):
    rule = Findings(columns=["edema"], uncertain=uncertain, blank=blank)
    table = pd.DataFrame({"edema": ["1", "0", "-1", "", 1.0]})
    out = rule.apply_finding(table, "edema", "chest:edema")
    assert out.labels.tolist() == expected
    assert out.excluded == excluded
    assert not out.problems


def test_finding_cells_other_than_one_zero_minus_one_are_problems():
    out = Findings(columns=["edema"]).apply_finding(
        pd.DataFrame({"edema": ["2", "yes", "0.5", 1.0]}), "edema", "t"
    )
    assert [p.row for p in out.problems] == [1, 2, 3]
    assert out.problems[1].message == "not 1, 0, -1 or blank: 'yes'"


def test_a_task_file_lists_problems_hidden_behind_others(tmp_path):
    """Every problem at once: unknown keys, a bad range and a misspelt positive class."""
    from xaibench.tasks.spec import TaskFileError, load_spec

    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: t\nclases: [a]\nclasses: [normal, sick]\npositive: sik\nlabels:\n"
        "  numeric: {column: x, valid: {min: 0, maxx: 1}, classes: {normal: {max: 0.5}, "
        "sick: {min: 0.4}}}\n"
    )
    with pytest.raises(TaskFileError) as info:
        load_spec(str(path))
    items = info.value.items
    assert len(items) == 4
    assert items[0].startswith("labels.numeric.valid.maxx: unknown key; did you mean 'max'?")
    assert "overlap" in items[1]
    assert items[2].startswith("clases: unknown key; did you mean 'classes'?")
    assert items[3].startswith("positive 'sik' is not a class; did you mean 'sick'?")
