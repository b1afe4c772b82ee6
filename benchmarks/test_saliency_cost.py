"""Saliency cost: memory of integrated gradients as ``n_steps`` grows, and the time of Grad-CAM and
attention rollout relative to the passes they cannot avoid.

* Integrated gradients runs at most ``internal_batch_size`` rows per pass, so its peak tensor memory
  should not grow with ``n_steps``: target peak(256) / peak(16) ~ 1. Peak memory is the CPU
  allocator's "Total Allocated" high-water mark recorded by ``torch.profiler`` with
  ``profile_memory=True`` (it counts tensor bytes, unlike RSS, which the allocator's caching and
  the Python heap blur). The same measurement with an unbounded batch shows that it does see growth.
* Grad-CAM against one plain forward and backward pass (to the input) on the same model and batch,
  attention rollout against one forward pass with attention weights materialised: target ~ 1
  (Grad-CAM comes out below 1: its backward pass stops at the CAM layer).
  Each on timm's tiny test models and on randomly initialised ViT-S/16 and ResNet-18 (at 128 px),
  where the fixed per-call overheads are in proportion to a real model.

Run ``python -m pytest benchmarks/test_saliency_cost.py --benchmark-only``; the ratios are printed
and stored in each row's ``extra_info``. Nothing is asserted about time.
"""

import json
import tempfile
from collections.abc import Callable

import pytest
import torch
from timing import interleaved_ratio
from torch.profiler import ProfilerActivity, profile

from xaibench.models.base import Classifier
from xaibench.models.timm_backbone import TimmBackbone
from xaibench.saliency.attention import AttentionRollout
from xaibench.saliency.gradcam import GradCAM
from xaibench.saliency.gradient import IntegratedGradients

SIZE, BATCH = 128, 16
IG_BATCH, IG_INTERNAL = 4, 16
STEPS = (16, 64, 256)
VITS, CNNS = ("test_vit", "vit_small_patch16_224"), ("test_resnet", "resnet18")
_MODELS: dict[str, Classifier] = {}


def model_for(arch: str) -> Classifier:
    """Randomly initialised classifier, built once per session."""
    if arch not in _MODELS:
        torch.manual_seed(0)
        adapter = TimmBackbone(arch=arch, img_size=SIZE, random_init=True).create_adapter()
        _MODELS[arch] = Classifier(adapter, 3).eval()
    return _MODELS[arch]


@pytest.fixture(scope="module")
def vit() -> Classifier:
    return model_for("test_vit")


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.rand(BATCH, 1, SIZE, SIZE, generator=gen), torch.arange(BATCH) % 3


def peak_tensor_bytes(fn: Callable[[], object]) -> int:
    """High-water mark of CPU tensor memory allocated while ``fn`` runs, in bytes."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    with tempfile.NamedTemporaryFile(suffix=".json") as trace:
        prof.export_chrome_trace(trace.name)
        with open(trace.name) as fh:
            events = json.load(fh)["traceEvents"]
    mem = [e["args"] for e in events if e.get("name") == "[memory]"]
    # The counter starts where the allocator stood before the first event of the run.
    start = mem[0]["Total Allocated"] - mem[0]["Bytes"]
    return max(m["Total Allocated"] for m in mem) - start


def forward_backward(model: Classifier, images: torch.Tensor, targets: torch.Tensor) -> None:
    """One plain forward and backward pass to the input: what any gradient method must pay."""
    with torch.enable_grad():
        x = images.clone().requires_grad_(True)
        score = model(x).gather(1, targets.view(-1, 1)).sum()
        torch.autograd.grad(score, x)


@pytest.mark.benchmark(group="saliency_ig_memory")
def test_integrated_gradients_memory_is_flat_in_n_steps(benchmark, vit, batch):
    images, targets = batch[0][:IG_BATCH], batch[1][:IG_BATCH]

    def run(n_steps: int, internal: int) -> Callable[[], torch.Tensor]:
        method = IntegratedGradients(n_steps=n_steps, internal_batch_size=internal)
        return lambda: method.explain(vit, images, targets)

    run(STEPS[0], IG_INTERNAL)()  # warm-up: lazy imports and one-off allocations
    bounded = {n: peak_tensor_bytes(run(n, IG_INTERNAL)) for n in STEPS}
    unbounded = {n: peak_tensor_bytes(run(n, 10**6)) for n in STEPS[:2]}
    benchmark.pedantic(run(STEPS[-1], IG_INTERNAL), rounds=1, iterations=1)
    ratio = bounded[STEPS[-1]] / bounded[STEPS[0]]
    growth = unbounded[STEPS[1]] / unbounded[STEPS[0]]
    benchmark.extra_info["peak_bytes"] = bounded
    benchmark.extra_info["ratio_peak_256_vs_16"] = round(ratio, 3)
    benchmark.extra_info["unbounded_ratio_peak_64_vs_16"] = round(growth, 3)
    mib = ", ".join(f"n_steps={n}: {b / 2**20:.1f} MiB" for n, b in bounded.items())
    print(f"\nintegrated_gradients peak tensor memory (internal_batch_size={IG_INTERNAL}): {mib}")
    print(f"peak(256) / peak(16): {ratio:.3f} (target ~1)")
    print(f"without internal batching, peak(64) / peak(16): {growth:.2f} (the measure sees growth)")


@pytest.mark.benchmark(group="saliency_gradcam")
@pytest.mark.parametrize("arch", VITS + CNNS)
def test_gradcam_vs_one_forward_backward(benchmark, arch, batch):
    model = model_for(arch)
    images, targets = batch
    method = GradCAM()
    benchmark(method.explain, model, images, targets)
    ratio = interleaved_ratio(
        lambda: method.explain(model, images, targets),
        lambda: forward_backward(model, images, targets),
        rounds=9,
    )
    benchmark.extra_info["ratio_vs_forward_backward"] = round(ratio, 3)
    print(f"\ngradcam ({arch}) / one forward+backward: {ratio:.3f} (target <= ~1)")


@pytest.mark.benchmark(group="saliency_rollout")
@pytest.mark.parametrize("arch", VITS)
def test_attention_rollout_vs_one_attention_forward(benchmark, arch, batch):
    vit = model_for(arch)
    images, targets = batch
    method = AttentionRollout()

    def attention_forward() -> None:
        with torch.no_grad():
            vit.backbone.attention_maps(images)

    def plain_forward() -> None:
        with torch.no_grad():
            vit(images)

    benchmark(method.explain, vit, images, targets)
    explain = lambda: method.explain(vit, images, targets)  # noqa: E731
    ratio = interleaved_ratio(explain, attention_forward, rounds=9)
    vs_plain = interleaved_ratio(explain, plain_forward, rounds=9)
    benchmark.extra_info["ratio_vs_attention_forward"] = round(ratio, 3)
    benchmark.extra_info["ratio_vs_plain_forward"] = round(vs_plain, 3)
    print(
        f"\nattention_rollout ({arch}) / one forward with attention maps: {ratio:.3f} (target ~1)"
    )
    print(f"attention_rollout ({arch}) / one plain (fused) forward: {vs_plain:.3f}")
