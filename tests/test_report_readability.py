"""The HTML report's readability (issue 21 item 6): Pareto front, tier legend."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd

from xaibench.report import figures
from xaibench.report.performance_sections import _tradeoff
from xaibench.report.summary_sections import tier_legend


def _records() -> list[dict]:
    """Three cells with an AUC and an IoU on bone; ``chance`` localises best but is at chance."""
    cells = {
        # backbone: (AUC, CI low, CI high, IoU)
        "good": (0.90, 0.85, 0.95, 0.30),
        "fair": (0.80, 0.72, 0.88, 0.40),
        "chance": (0.505, 0.40, 0.61, 0.70),
    }
    records = []
    for backbone, (auc, low, high, iou) in cells.items():
        base = {"backbone": backbone, "strategy": "linear", "seed": 0, "status": "ok"}
        records.append(
            {**base, "metric": "auc", "category": "performance", "value": auc,
             "ci_low": low, "ci_high": high}
        )  # fmt: skip
        records.append(
            {**base, "metric": "iou_region", "category": "explanation", "region": "bone",
             "saliency": "gradcam", "value": iou, "ci_low": iou - 0.05, "ci_high": iou + 0.05}
        )  # fmt: skip
    return records


def test_a_chance_level_cell_is_not_on_the_pareto_front():
    points = figures.tradeoff_points(_records(), "bone")
    by_cell = {p.cell.split(" / ")[0]: i for i, p in enumerate(points)}
    # without the rule, the chance cell (best IoU) would be on the front
    unfiltered = figures.pareto_front([(p.auc, p.score) for p in points])
    assert by_cell["chance"] in unfiltered
    front = figures.tradeoff_front(points)
    assert by_cell["chance"] not in front
    assert front == [by_cell["fair"], by_cell["good"]]  # staircase order: ascending AUC
    assert not points[by_cell["chance"]].above_chance
    assert points[by_cell["good"]].above_chance


def test_a_missing_or_low_auc_interval_keeps_a_point_off_the_front():
    point = figures.TradeoffPoint("c", "m", 0.9, float("nan"), float("nan"), 0.5, 0.4, 0.6)
    assert not point.above_chance
    below = figures.TradeoffPoint("c", "m", 0.3, 0.2, 0.4, 0.9, 0.8, 1.0)  # systematically wrong
    assert not below.above_chance
    assert figures.tradeoff_front([point, below]) == []


def test_the_tradeoff_section_greys_the_chance_cell_and_says_so():
    ctx = SimpleNamespace(primary_region="bone", records=_records())
    section = _tradeoff(ctx)
    body = section.body
    assert "Greyed: 1 of 3 points whose AUC" in body
    assert "drawn only over cells whose AUC" in body
    rows = body.split("<tr>")
    chance_row = next(r for r in rows if "chance" in r and "0.505" in r)
    assert "no (AUC CI not above 0.5)" in chance_row
    assert sum(">yes<" in r for r in rows) == 2


def test_the_tier_legend_explains_rank_vs_tier_and_names_an_out_of_order_pair():
    # issue 21's case: rank 10 in tier 2, ranks 11-12 in tier 1
    board = pd.DataFrame({"rank": range(1, 13), "tier": [1] * 9 + [2, 1, 1]})
    legend = tier_legend(board)
    assert legend.startswith('<p class="legend">Rank vs tier:')
    assert "not significantly different" in legend
    assert "a lower rank can sit in a better (lower-numbered) tier" in legend
    assert "Here rank 10 is in tier 2 and rank 11 in tier 1." in legend
    ordered = tier_legend(pd.DataFrame({"rank": [1, 2, 3], "tier": [1, 2, 2]}))
    assert "Rank vs tier:" in ordered
    assert "Here rank" not in ordered
    missing = pd.DataFrame({"rank": [1, 2], "tier": pd.array([1, None], dtype="Int64")})
    assert "Here rank" not in tier_legend(missing)
