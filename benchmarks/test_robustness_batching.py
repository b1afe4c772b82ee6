"""Robustness metrics batch their re-explanations: max-sensitivity with all draws of a batch
stacked into as few ``method.explain`` calls as ``explain_batch`` allows, against the same metric
with one draw per call (``explain_batch`` = the batch size: what Quantus does, one call per draw).

Both give the same values (the noise stream does not depend on ``explain_batch``); the ratio is
batched time / one-draw-per-call time, measured alternately in the same process (target < 1,
smaller for cheap methods and small batches, where the per-call overhead dominates). Saliency
(the absolute gradient) on timm's tiny test ViT and ResNet at 32 px, 4 images, 32 draws.

Run ``python -m pytest benchmarks/test_robustness_batching.py --benchmark-only``; the ratios are
printed and stored in each row's ``extra_info``. Nothing is asserted about time.
"""

import pytest
import torch
from timing import interleaved_ratio

from xaibench.metrics.robustness import MaxSensitivity
from xaibench.models.base import Classifier
from xaibench.models.timm_backbone import TimmBackbone
from xaibench.saliency.gradient import VanillaGradient

BATCH, DRAWS, SIZE = 4, 32, 32


def _model(arch: str) -> Classifier:
    torch.manual_seed(0)
    backbone = TimmBackbone(arch=arch, img_size=SIZE, random_init=True).create_adapter(arch)
    return Classifier(backbone, 3).eval()


@pytest.mark.benchmark(group="robustness_batching")
@pytest.mark.parametrize("arch", ["test_vit", "test_resnet"])
def test_batched_reexplanations_vs_one_call_per_draw(benchmark, arch):
    model = _model(arch)
    method = VanillaGradient()
    images = torch.rand(BATCH, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([0, 1, 2, 0])
    maps = method.explain(model, images, targets).detach()

    def run(explain_batch: int):
        metric = MaxSensitivity(nr_samples=DRAWS, explain_batch=explain_batch)
        return lambda: metric.per_sample(
            model, method, images, targets, maps, torch.Generator().manual_seed(1)
        )

    batched, per_draw = run(BATCH * DRAWS), run(BATCH)
    torch.testing.assert_close(batched()[0], per_draw()[0], rtol=1e-5, atol=1e-7)
    benchmark.pedantic(batched, rounds=3, iterations=1)
    ratio = interleaved_ratio(batched, per_draw, rounds=5)
    benchmark.extra_info["ratio_batched_vs_one_call_per_draw"] = round(ratio, 3)
    print(f"\nmax_sensitivity ({arch}, {DRAWS} draws): batched / one call per draw {ratio:.3f}")
