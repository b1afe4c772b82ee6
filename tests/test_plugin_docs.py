"""The plugin author's reference cannot drift from the code.

* ``docs/plugins/backbones.md`` lists every public member of ``BackboneAdapter`` and
  ``BackboneFactory``;
* every name in the public-API table of ``docs/plugins/hooks.md`` imports from where the table
  says it lives;
* the column-name examples in ``hooks.md`` are what the leaderboard code names those records;
* ``linear_probe``'s own options are documented with their defaults.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

from xaibench.leaderboard.columns import _column
from xaibench.models.base import BackboneAdapter, BackboneFactory

DOCS = Path(__file__).resolve().parents[1] / "docs" / "plugins"


def _public_members(cls: type) -> set[str]:
    members = {n for n in vars(cls) if not n.startswith("_") and n != "model_config"}
    members |= set(getattr(cls, "model_fields", {}))
    if issubclass(cls, BackboneAdapter):  # attributes set by the constructor
        params = inspect.signature(cls.__init__).parameters
        members |= {p for p in params if p != "self"}
    return members


@pytest.mark.parametrize("cls", [BackboneAdapter, BackboneFactory], ids=lambda c: c.__name__)
def test_the_backbone_reference_lists_every_public_member(cls):
    text = (DOCS / "backbones.md").read_text()
    documented = set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)(?:\([^`]*\))?`", text))
    missing = sorted(_public_members(cls) - documented)
    assert not missing, f"docs/plugins/backbones.md does not list {cls.__name__}.{missing}"


def _api_table() -> list[str]:
    text = (DOCS / "hooks.md").read_text()
    section = text.split("## The API a plugin may rely on", 1)[1].split("\n## ", 1)[0]
    return [line.split(" | ")[0] for line in section.splitlines() if line.startswith("| `")]


def _resolve(dotted: str) -> tuple[object, object]:
    """(module, object) for ``xaibench.a.b.Name``: the longest importable module prefix."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            module = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        obj: object = module
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return (obj if not parts[cut:] else module), obj
    raise ModuleNotFoundError(dotted)


def test_every_name_in_the_public_api_table_imports_from_where_it_says():
    rows = _api_table()
    assert len(rows) > 10
    checked = []
    for row in rows:
        module: object = None
        for token in re.findall(r"`([^`]+)`", row):
            name = token.split("(", 1)[0]
            if name.startswith("xaibench"):
                module, obj = _resolve(name)
                if inspect.ismodule(obj):
                    module = obj
                checked.append(name)
            else:
                assert module is not None, row
                assert hasattr(module, name), f"{name} is not in {module.__name__}: {row}"
                checked.append(f"{module.__name__}.{name}")
    for name in (
        "xaibench.models.base.InputSpec",
        "xaibench.models.weights.ResolvedWeights",
        "xaibench.models.weights.MissingWeightsError",
        "xaibench.models.weights.resolve_weights",
    ):
        assert name in checked


def _column_examples() -> list[list[str]]:
    text = (DOCS / "hooks.md").read_text()
    section = text.split("**Column names.**", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


def test_the_documented_column_names_are_the_leaderboards():
    examples = _column_examples()
    assert len(examples) == 5
    for metric_cell, where, column in examples:
        name = re.match(r"`([a-z_0-9]+)` \((\w+)", metric_cell)
        assert name is not None, metric_cell
        metric, kind = name.groups()
        region, method = (c.strip().strip("`") for c in where.split(","))
        record: dict[str, object] = {
            "metric": metric,
            "category": "performance" if kind == "performance" else "explanation",
            "region": None if region == "-" else region,
            "details": {"normalised": 0.5} if "yes" in metric_cell else {},
        }
        if method != "-":
            record["perturbation" if kind == "perturbation" else "saliency"] = method
        assert _column(record) == column.strip("`"), (metric_cell, where)


def test_linear_probe_options_are_documented_with_their_defaults():
    from xaibench.strategies.linear_probe import LinearProbe

    text = " ".join((DOCS / "hooks.md").read_text().split())
    fields = LinearProbe.model_fields
    for name, shown in (
        ("steps", "300"),
        ("lr", "0.01"),
        ("weight_decay", "1e-3"),
        ("eval_every", "10"),
    ):
        assert float(fields[name].default) == float(shown)
        assert f"`{name}` ({shown}" in text, name
    assert "ignores `train.epochs`" in text
