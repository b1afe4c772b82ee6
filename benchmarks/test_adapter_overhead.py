"""Backbone-adapter overhead: xaibench's forward (range check, preprocessing, pooling) against a
plain PyTorch loop doing the same forward passes on the same model and data.

Target: ratio <= 1.05. Run ``python -m pytest benchmarks --benchmark-only``; both rows appear in
the ``adapter_overhead`` group and the ratio is stored in the adapter row's ``extra_info``.
"""

import pytest
import torch
from timing import interleaved_ratio

from xaibench.models.timm_backbone import TimmBackbone

N, SIZE, BATCH = 256, 128, 64


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    adapter = TimmBackbone(arch="test_vit", img_size=SIZE, random_init=True).create_adapter()
    images = torch.rand(N, 1, SIZE, SIZE)
    mean = torch.tensor(adapter.input_spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(adapter.input_spec.std).view(1, 3, 1, 1)
    return adapter, images, mean, std


def plain_loop(model, images, mean, std):
    out = []
    with torch.inference_mode():
        for s in range(0, len(images), BATCH):
            x = images[s : s + BATCH].expand(-1, 3, -1, -1)
            out.append(model((x - mean) / std))
    return torch.cat(out)


def adapter_loop(adapter, images):
    with torch.inference_mode():
        return torch.cat([adapter(images[s : s + BATCH]) for s in range(0, len(images), BATCH)])


@pytest.mark.benchmark(group="adapter_overhead")
def test_plain_pytorch_loop(benchmark, setup):
    adapter, images, mean, std = setup
    benchmark(plain_loop, adapter.model, images, mean, std)


@pytest.mark.benchmark(group="adapter_overhead")
def test_adapter_loop(benchmark, setup):
    adapter, images, mean, std = setup
    torch.testing.assert_close(
        adapter_loop(adapter, images), plain_loop(adapter.model, images, mean, std)
    )
    benchmark(adapter_loop, adapter, images)
    ratio = interleaved_ratio(
        lambda: adapter_loop(adapter, images),
        lambda: plain_loop(adapter.model, images, mean, std),
    )
    benchmark.extra_info["ratio_vs_plain_loop"] = round(ratio, 3)
    print(f"\nadapter / plain PyTorch loop: {ratio:.3f} (target <= 1.05)")
