"""The report's saliency-gallery section: the gallery PNGs of each run, checked, with captions."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from xaibench.errors import XaibenchError
from xaibench.paths import contained
from xaibench.report import figures
from xaibench.report.context import _Context, _missing
from xaibench.report.html import Section, figure, format_cell, grid, heading, note, paragraph
from xaibench.report.run_files import GALLERY_INDEX, RunFiles

_GALLERY_ORDER = {"best": 0, "worst": 1, "random": 2, "specific": 3}
_METRIC_NAMES = {"iou_region": "IoU", "pointing_game": "pointing game"}


def _read_png(run: RunFiles, entry: Mapping[str, Any]) -> bytes:
    """A gallery PNG's bytes, checked to be inside the run's gallery folder and readable."""
    from PIL import Image, UnidentifiedImageError

    path = contained(
        run.path, entry.get("file"), source=run.path / GALLERY_INDEX, what="gallery entry",
        under="gallery",
    )  # fmt: skip
    if not path.is_file():
        raise XaibenchError(f"{path}: gallery image named in gallery/index.json is missing")
    data = path.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != "PNG":
                raise XaibenchError(f"{path}: gallery image is {image.format}, not PNG")
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise XaibenchError(f"{path}: not a readable PNG ({exc})") from None
    return data


def _gallery_caption(entry: Mapping[str, Any]) -> str:
    kind = str(entry.get("kind", "images"))
    ids = [str(s) for s in entry.get("sample_ids") or []]
    scores = entry.get("scores") or [None] * len(ids)
    metric = entry.get("score_metric")
    region = entry.get("region")
    score_name = (
        f"{_METRIC_NAMES.get(str(metric), metric)}_{region}" if metric and region else metric
    )
    positive = entry.get("positive_class")
    if metric == "probability_drop":
        score_name = f"drop of p({positive or 'positive'})"
    what = {
        "best": f"the {len(ids)} test images with the highest {score_name}",
        "worst": f"the {len(ids)} test images with the lowest {score_name}",
        "random": f"{len(ids)} test images drawn at random (seeded)",
        "specific": (
            f"the {len(ids)} test images whose probability of {positive or 'the positive class'}"
            f" dropped most when {region} was perturbed ({entry.get('perturbation')}): the "
            "region with the largest specific Δ, which is not the primary region"
        ),
    }.get(kind, f"{len(ids)} test images")

    def column(i: int) -> list[Any]:
        return [
            (entry.get(key) or [])[i] if i < len(entry.get(key) or []) else None
            for key in ("classes", "called", "p_positive")
        ]

    padded = list(scores) + [None] * (len(ids) - len(scores))
    shown = []
    for i, (sid, score) in enumerate(zip(ids, padded, strict=False)):
        true, called, p = column(i)
        parts = [f"true {true}"] if true is not None else []
        parts += [f"called {called}"] if called is not None else []
        parts += [f"p({positive}) {format_cell(p)}"] if positive and not _missing(p) else []
        parts += [format_cell(score)] if not _missing(score) else []
        shown.append(f"{sid} ({'; '.join(parts)})" if parts else sid)
    outlines = [
        f"{o.get('region')} ({o.get('colour')})"
        for o in entry.get("outlines") or []
        if isinstance(o, Mapping)
    ]
    legend = f" Outlines: {', '.join(outlines)}." if outlines else ""
    return f"{kind.capitalize()}: {what}. Left to right: {', '.join(shown)}.{legend}"


def _galleries(ctx: _Context) -> Section:
    title = "Saliency galleries"
    entries = [(run, e) for run in ctx.runs for e in run.galleries]
    if not entries:
        return Section(
            title, note("These results have no gallery index (gallery/index.json)."), "galleries"
        )
    region = ctx.primary_region
    body = [
        paragraph(
            "Per cell and saliency method: the test images whose maps scored best and worst, "
            "a random draw for what is typical and, when perturbation shows the model needs "
            "another region more than the primary one (the largest specific Δ), the images "
            "whose prediction that region moves most. Top row: the image; bottom row: the "
            "map in red, stretched by its own 1st and 99th percentiles so that faint maps stay "
            "visible (the colour bar under each map gives those two values; tiles are not on "
            "one scale)"
            + (
                f", with the outline of every scored region ({region} in cyan, the others named "
                "in each gallery's legend)."
                if region
                else "."
            )
            + " Above each image: its sample id, its true class, the class the run calls with the "
            "positive-class probability, and the score that picked it."
            + " Look at these before trusting a localisation score."
        )
    ]

    def order(item: tuple[RunFiles, dict[str, Any]]) -> tuple[Any, ...]:
        e = item[1]
        return (
            str(e.get("backbone")),
            str(e.get("strategy")),
            str(e.get("seed")),
            str(e.get("saliency")),
            _GALLERY_ORDER.get(str(e.get("kind")), 9),
            str(e.get("file")),
        )

    groups: dict[tuple[str, ...], list[str]] = {}
    for run, entry in sorted(entries, key=order):
        cell = (str(entry.get("backbone")), str(entry.get("strategy")), str(entry.get("seed")))
        method = str(entry.get("saliency"))
        png = _read_png(run, entry)
        groups.setdefault((*cell, method), []).append(
            figure(
                png,
                f"{entry.get('kind')} gallery of {method} on {figures.cell_label(*cell)}",
                _gallery_caption(entry),
                css="gallery",
            )
        )
    current_cell: tuple[str, ...] | None = None
    for key, items in groups.items():
        if key[:3] != current_cell:
            body.append(heading(3, figures.cell_label(*key[:3])))
            current_cell = key[:3]
        body.append(heading(4, key[3]))
        body.append(grid(items))
    return Section(title, "".join(body), "galleries")
