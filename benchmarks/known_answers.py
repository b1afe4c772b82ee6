"""The known-answer table of ``docs/explainability.md``: raw and corrected scores side by side.

Two versions of the phantom, one CNN fully fine-tuned on each:

* **clean** — the class lives in bone density only (the phantom's default);
* **marker** — bone density is drawn independently of the class (``bone_signal=False``) and a
  small lead marker outside the body carries it (``shortcut=1``).

Each run (with ``controls.draws: 2``) scores every perturbation on bone, on the marker's box and
outside bone, and Grad-CAM, gradient saliency and the ``random`` control on bone and on the
marker's box. The table gives,
per row, the raw score (what the leaderboards showed before the scores were corrected) and the
corrected one: the specific Δ (region minus same-area control regions, with its 95% CI) and the
chance-normalised localisation (with its CI; ``†`` where the method does not beat chance,
Holm-adjusted over the table's localisation entries).

Run (about half an hour per model on two cores at the defaults, which follow the issue's
real-CT setting: ``test_resnet.random``, ``full``, 30 epochs, 128 px, 600 images)::

    python benchmarks/known_answers.py --out /tmp/known-answers [--epochs 30 --images 600]

The runs are kept in ``--out`` (a second call with the same options reuses them); the Markdown
table is printed and written to ``--out/known_answers.md``.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PERTURBATIONS = ("mean", "blur", "inpaint", "zero", "road")
METHODS = ("gradcam", "saliency", "random")
VERSIONS = {"clean": {}, "marker": {"shortcut": 1.0, "bone_signal": False}}


def overrides(version: str, *, images: int, size: int, epochs: int, seed: int) -> dict[str, Any]:
    """The run configuration (over the osteoporosis task's defaults) of one version."""
    dataset = {"n_images": images, "image_size": size, "class_shares": [0.45, 0.30, 0.25]}
    return {
        "dataset": {"name": "phantom", "options": {**dataset, **VERSIONS[version]}},
        "backbones": [{"name": "test_resnet.random", "options": {"img_size": size}}],
        "strategies": ["full"],
        "seeds": [seed],
        "saliency": list(METHODS),
        "perturbations": list(PERTURBATIONS),
        "perturb_regions": ["bone", "shortcut"],
        "complement_regions": ["bone"],
        "explain_regions": ["bone", "shortcut"],
        "metrics": ["auc", "delta_region", "iou_region", "relevance_mass", "pointing_game"],
        "sanity": {"images": 8},
        "controls": {"draws": 2},
        "gallery_images": 0,
        "train": {"epochs": epochs, "batch_size": 32, "lr": 2e-3, "weight_decay": 0.01},
    }


def run(version: str, out: Path, **options: Any) -> list[dict[str, Any]]:
    """Run (or reuse) one version; its results records."""
    from xaibench.config import resolve_config
    from xaibench.engine.benchmark import run_benchmark
    from xaibench.plugins import collect_components, get_plugin_manager

    folder = out / version
    results = folder / "results.json"
    if not results.exists():
        components = collect_components(get_plugin_manager())
        task = components.tasks.create("osteoporosis")
        config = resolve_config(task.defaults(), overrides(version, **options))
        run_benchmark(config, components, folder)
    return list(json.loads(results.read_text(encoding="utf-8"))["records"])


def _find(records: Sequence[dict[str, Any]], **where: Any) -> dict[str, Any] | None:
    for rec in records:
        if all(rec.get(k) == v for k, v in where.items()) and rec.get("status") == "ok":
            return rec
    return None


def _num(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"  # noqa: RUF001
    return f"{value:.2f}"


def _ci(value: Any, ci: Any) -> str:
    if value is None:
        return "–"  # noqa: RUF001
    if not ci or ci[0] is None:
        return _num(value)
    return f"{_num(value)} [{_num(ci[0])}, {_num(ci[1])}]"


def holm_flags(pvalues: dict[Any, float | None], alpha: float = 0.05) -> dict[Any, bool]:
    """Key -> beats chance: its Holm-adjusted p-value (over the defined ones) is below alpha."""
    from xaibench.stats.comparisons import holm

    keys = list(pvalues)
    raw = [math.nan if pvalues[k] is None else float(pvalues[k]) for k in keys]  # type: ignore[arg-type]
    adjusted = holm(raw) if keys else []
    return {k: bool(a < alpha) for k, a in zip(keys, adjusted, strict=True)}


def delta_rows(records: Sequence[dict[str, Any]], region: str) -> tuple[str, str, str]:
    """Raw Δ, specific Δ (CI) and off-target cost per perturbation, ``a / b / ...``."""
    raw, specific, cost = [], [], []
    for p in PERTURBATIONS:
        rec = _find(records, metric="delta_region", perturbation=p, region=region)
        d = rec["details"] if rec else {}
        raw.append(_num(rec["value"]) if rec else "–")  # noqa: RUF001
        specific.append(_ci(d.get("specific"), d.get("specific_ci")))
        cost.append(_num(d.get("control_delta")))
    return " / ".join(raw), " / ".join(specific), " / ".join(cost)


def table(runs: dict[str, list[dict[str, Any]]]) -> str:
    """The Markdown table: one row per score, raw and corrected per version."""
    lines = [
        "| score | " + " | ".join(f"{v} raw | {v} corrected" for v in runs) + " |",
        "|---|" + "---|---|" * len(runs),
    ]

    def row(label: str, cells: list[tuple[str, str]]) -> None:
        lines.append(f"| {label} | " + " | ".join(f"{a} | {b}" for a, b in cells) + " |")

    row(
        "AUC",
        [(_num((_find(r, metric="auc") or {}).get("value")), "") for r in runs.values()],
    )
    order = " / ".join(PERTURBATIONS)
    for region in ("bone", "shortcut"):
        cells = [delta_rows(r, region) for r in runs.values()]
        row(f"Δ_{region} ({order}); corrected: specific Δ [95% CI]", [(a, b) for a, b, _ in cells])
        row(f"off-target cost on {region} ({order})", [(c, "") for _, _, c in cells])
    cells = [delta_rows(r, "outside_bone") for r in runs.values()]
    row(f"Δ_outside_bone ({order})", [(a, "") for a, _, _ in cells])
    localisation = [("iou_region", "bone", m) for m in METHODS] + [
        ("relevance_mass", "bone", "saliency"),
        ("relevance_mass", "bone", "random"),
        ("relevance_mass", "shortcut", "saliency"),
        ("relevance_mass", "shortcut", "random"),
        ("pointing_game", "shortcut", "saliency"),
        ("pointing_game", "shortcut", "random"),
    ]
    beats: dict[str, dict[Any, bool]] = {}
    for version, records in runs.items():
        pvalues = {}
        for key in localisation:
            rec = _find(records, metric=key[0], region=key[1], saliency=key[2])
            pvalues[key] = rec["details"].get("p_chance") if rec else None
        beats[version] = holm_flags(pvalues)
    for key in localisation:
        metric, region, method = key
        cells = []
        for version, records in runs.items():
            rec = _find(records, metric=metric, region=region, saliency=method)
            if rec is None:
                cells.append(("–", "–"))  # noqa: RUF001
                continue
            d = rec["details"]
            mark = "" if beats[version].get(key) else " †"
            corrected = _ci(d.get("normalised"), d.get("normalised_ci"))
            chance = d.get("chance")
            cells.append((_num(rec["value"]), f"{corrected}{mark} (chance {_num(chance)})"))
        row(f"{metric} on {region}, {method}", cells)
    for method in METHODS:
        cells = []
        for records in runs.values():
            rec = _find(records, metric="sanity_model_randomisation", saliency=method)
            d = rec["details"] if rec else {}
            passed = d.get("passed")
            text = "–" if passed is None else ("pass" if passed else "fail")  # noqa: RUF001
            similarity = _num(rec["value"] if rec else None)
            cells.append((f"{text} (sim {similarity}, run to run {_num(d.get('run_to_run'))})", ""))
        row(f"model-randomisation check, {method}", cells)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Run both versions (or reuse their runs) and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    options = {"images": args.images, "size": args.size, "epochs": args.epochs, "seed": args.seed}
    runs = {v: run(v, args.out, **options) for v in VERSIONS}
    text = table(runs)
    (args.out / "known_answers.md").write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
