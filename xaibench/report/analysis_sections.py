"""Report sections that close it: sanity checks, cross-cell analyses and provenance."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from xaibench.leaderboard import sanity_badges
from xaibench.report import diagnostic_figures
from xaibench.report.context import _CELL, _cell_name, _Context, _fold_intervals, _sort_cells
from xaibench.report.html import (
    Section,
    details,
    figure,
    heading,
    key_value_table,
    note,
    paragraph,
    preformatted,
    table_html,
)


def _sanity(ctx: _Context) -> Section:
    title = "Sanity checks"
    sanity = [r for r in ctx.records if r.get("category") == "sanity"]
    if not sanity:
        return Section(title, note("No sanity-check records (sanity: {images: 0})."), "sanity")
    body = [
        paragraph(
            "Adebayo et al.'s checks: a saliency method passes when its maps change once the "
            "model's weights are randomised, layer by layer from the head down, and when another "
            "class is explained, clearly more than between two of its own runs on the unchanged "
            "model (Spearman similarity below threshold - (1 - run-to-run similarity); for a "
            "deterministic method, run to run is 1). A method that fails draws much the same "
            "map whatever the model learned; a noise map, which changes anyway, fails too."
        ),
        figure(
            diagnostic_figures.sanity_png(sanity),
            "Sanity-check similarities",
            "Spearman similarity of the maps to the trained model's, per randomisation step "
            "(crosses: target randomisation), with the pass threshold dashed.",
        ),
    ]
    body.append(table_html(_sanity_table(sanity)))
    return Section(title, "".join(body), "sanity")


def _sanity_table(sanity: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Per cell and method: the badge, both similarities, run-to-run and the threshold."""
    badges = sanity_badges(sanity)
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for rec in sanity:
        key = (rec["backbone"], rec["strategy"], rec["seed"], rec["saliency"])
        row = rows.setdefault(
            key,
            {
                **dict(zip([*_CELL, "saliency"], key, strict=True)),
                "badge": badges.get(key[:3], {}).get(key[3], ""),
                "model randomisation": None,
                "target randomisation": None,
                "run to run": None,
                "threshold": None,
            },
        )
        check = "model randomisation" if "model" in str(rec["metric"]) else "target randomisation"
        row[check] = rec.get("value") if rec.get("status") == "ok" else rec.get("reason")
        threshold = (rec.get("details") or {}).get("threshold")
        if threshold is not None:
            row["threshold"] = threshold
        run_to_run = (rec.get("details") or {}).get("run_to_run")
        if run_to_run is not None:
            row["run to run"] = run_to_run
    return _sort_cells(pd.DataFrame(list(rows.values())), ["saliency"])


def _cross_cell(ctx: _Context) -> Section:
    title = "Cross-cell analyses"
    texts: dict[str, tuple[str, str]] = {
        "explanation_drift": (
            "Explanation drift",
            "How far adaptation moved each backbone's maps: mean per-image Spearman "
            "correlation between two strategies' maps on the same test images (bootstrap CI). "
            "Low values: fine-tuning changed where the model looks.",
        ),
        "perturbation_rank_agreement": (
            "Perturbation rank agreement",
            "Kendall's tau between the cell rankings by Δ under two perturbations. A low tau "
            "means the Δ leaderboard's order depends on the perturbation chosen.",
        ),
        "performance_explanation_correlation": (
            "Performance vs explanation correlation",
            "Spearman's rho between the cells' AUC and each explanation score, with a "
            "bootstrap CI over cells; with few cells the interval is wide.",
        ),
    }
    body: list[str] = []
    for name, (label, text) in texts.items():
        frame = ctx.analysis(name)
        if frame.empty:
            continue
        body.append(heading(3, label))
        body.append(paragraph(text))
        body.append(table_html(_fold_intervals(frame)))
    if not body:
        body.append(note("These results have no cross-cell analyses."))
    return Section(title, "".join(body), "analyses")


def _provenance(ctx: _Context) -> Section:
    body: list[str] = []
    meta = ctx.boards.meta
    body.append(
        paragraph(
            f"Leaderboard tests: alpha {meta.get('alpha')}, {meta.get('resamples')} bootstrap "
            f"resamples, seed {meta.get('seed')}. Everything below comes from the results files."
        )
    )
    sources = {str(Path(s["path"]).resolve()): s for s in meta.get("sources") or []}
    for run in ctx.runs:
        doc = run.document
        env = doc.get("environment") or {}
        source = sources.get(str(run.path.resolve()), {})
        body.append(heading(3, f"Run {run.path.resolve().name}"))
        body.append(
            key_value_table(
                [
                    ("location (relative to this report)", ctx.shown_path(run.path)),
                    ("results.json sha256", source.get("results_sha256")),
                    ("schema version", doc.get("schema_version")),
                    ("created", doc.get("created")),
                    ("finished", doc.get("finished")),
                    ("config hash", doc.get("config_hash")),
                    ("xaibench", env.get("xaibench_version")),
                    ("git commit", env.get("git_commit")),
                    ("python", env.get("python")),
                    ("platform", env.get("platform")),
                    ("device", env.get("device")),
                    ("precision", env.get("precision")),
                    ("CPU count", env.get("cpu_count")),
                    ("torch threads", env.get("torch_threads")),
                    ("CUDA available", env.get("cuda_available")),
                    ("deterministic algorithms", env.get("deterministic_algorithms")),
                    ("seeds", yaml.safe_dump(env.get("seeds"), default_flow_style=True).strip()),
                ]
            )
        )
        libraries = env.get("libraries") or {}
        if libraries:
            body.append(heading(4, "Library versions"))
            body.append(key_value_table(sorted(libraries.items())))
        components = doc.get("components") or {}
        rows = [
            {"kind": kind, "name": name, **(info if isinstance(info, Mapping) else {})}
            for kind, named in components.items()
            if isinstance(named, Mapping)
            for name, info in named.items()
        ]
        if rows:
            body.append(heading(4, "Components"))
            body.append(table_html(pd.DataFrame(rows), cell_class=None))
        weights = [
            {
                "backbone": c.get("backbone"),
                "strategy": c.get("strategy"),
                "seed": c.get("seed"),
                "source": (c.get("weights") or {}).get("source"),
                "path": (c.get("weights") or {}).get("path"),
                "sha256": (c.get("weights") or {}).get("sha256"),
                "files": len((c.get("weights") or {}).get("files") or []),
            }
            for c in doc.get("cells", [])
        ]
        if weights:
            body.append(heading(4, "Weights"))
            body.append(table_html(_sort_cells(pd.DataFrame(weights)), cell_class=None))
            files = [
                (c, f)
                for c in doc.get("cells", [])
                for f in (c.get("weights") or {}).get("files") or []
                if isinstance(f, Mapping)
            ]
            if files:
                body.append(
                    details(
                        "Weight files with hashes",
                        table_html(
                            pd.DataFrame(
                                [
                                    {"cell": _cell_name(c), **{str(k): v for k, v in f.items()}}
                                    for c, f in files
                                ]
                            ),
                            cell_class=None,
                        ),
                    )
                )
        config = doc.get("config")
        if config is not None:
            body.append(heading(4, "Configuration"))
            body.append(preformatted(yaml.safe_dump(config, sort_keys=False, allow_unicode=True)))
    return Section("Provenance", "".join(body), "provenance")
