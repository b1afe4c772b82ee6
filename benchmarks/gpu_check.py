"""One-GPU check of xaibench's GPU path: training and saliency throughput, and model FLOP use.

Measures, on one device, for one backbone with LoRA adapters (xaibench's ``lora`` strategy):

* **training** images/s under the run's precision (bf16 autocast by default), after warm-up:
  xaibench's training step (batches from host memory through :meth:`Runtime.to
  <xaibench.device.Runtime.to>`, pinned and non-blocking on CUDA; class-weighted cross-entropy in
  float32; AdamW), eager and, if asked, with ``torch.compile`` (``compile: true``);
* **MFU** (model FLOP utilisation): the FLOPs of one training step, counted by
  :class:`torch.utils.flop_counter.FlopCounterMode` on the eager model (matrix products,
  convolutions and attention; elementwise work is not counted), times steps per second, over
  the card's peak dense bf16 FLOP/s (:data:`PEAK_BF16_TFLOPS`, or ``--peak-tflops``);
* **inference** images/s (as ``predict``: forward under autocast, probabilities back on the
  host), eager and compiled, with its MFU likewise;
* **saliency** images/s of xaibench's saliency methods (default ``gradcam`` and ``saliency``)
  on the trained model, always eager and float32, as in a run.

It prints a summary and writes a JSON file (rewritten after every phase, so a run cut short still
leaves what it measured). ``benchmarks/gpu_check.sh`` runs it with the defaults for a GPU
(DINOv2 ViT-B/14 at 518 px, LoRA r=8, batch 32, eager and compiled) in a few minutes; on the CPU
it runs with a tiny model for tests::

    python benchmarks/gpu_check.py --device cpu --backbone test_vit.random --image-size 64 \\
        --steps 3 --json /tmp/gpu_check.json

Backbone weights come from the local cache as in a run; when they are missing the backbone is
built with random weights and the output says so (throughput does not depend on weight values).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

#: Peak dense (no sparsity) bf16 tensor-core TFLOP/s by card, from vendor datasheets, matched in
#: order (first match wins) against ``torch.cuda.get_device_name()`` in lower case.
PEAK_BF16_TFLOPS: tuple[tuple[str, str, float], ...] = (
    (r"h200 nvl", "H200 NVL", 835.0),
    (r"h200", "H200 SXM / GH200", 989.0),
    (r"h100 nvl", "H100 NVL", 835.0),
    (r"h100 pcie", "H100 PCIe", 756.0),
    (r"h100", "H100 SXM", 989.0),
    (r"a100", "A100", 312.0),
    (r"l40s", "L40S", 362.0),
    (r"\bl40\b", "L40", 181.0),
    (r"\bl4\b", "L4", 121.0),
    (r"\ba10\b", "A10", 125.0),
    (r"rtx 4090", "GeForce RTX 4090", 165.0),
    (r"rtx a6000", "RTX A6000", 155.0),
)

DEFAULT_BACKBONE = "vit_base_patch14_dinov2.lvd142m"


def peak_tflops(device_name: str) -> tuple[float, str] | None:
    """(peak dense bf16 TFLOP/s, the table's card) for a CUDA device name, or None if unknown."""
    name = device_name.lower()
    for pattern, card, tflops in PEAK_BF16_TFLOPS:
        if re.search(pattern, name):
            return tflops, card
    return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--backbone", default=DEFAULT_BACKBONE, help="xaibench backbone name")
    p.add_argument("--image-size", type=int, default=518, help="model input size (px)")
    p.add_argument("--batch-size", type=int, default=32, help="training batch size")
    p.add_argument(
        "--eval-batch-size", type=int, default=None, help="inference/saliency batch (default: same)"
    )
    p.add_argument("--steps", type=int, default=20, help="timed training steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument(
        "--compile",
        choices=["off", "on", "both"],
        default=None,
        help="eager only, compiled only, or both (default: both on cuda, off on cpu)",
    )
    p.add_argument("--saliency", nargs="*", default=["gradcam", "saliency"])
    p.add_argument("--saliency-images", type=int, default=64, help="timed images per method")
    p.add_argument(
        "--peak-tflops", type=float, default=None, help="peak bf16 TFLOP/s (default: table)"
    )
    p.add_argument(
        "--budget-s",
        type=float,
        default=420.0,
        help="skip the compiled phases when more than half of this is already spent",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=Path("gpu_check.json"), help="output file")
    args = p.parse_args(argv)
    if args.compile is None:
        args.compile = "both" if args.device == "cuda" else "off"
    args.eval_batch_size = args.eval_batch_size or args.batch_size
    for name in ("image_size", "batch_size", "eval_batch_size", "steps", "saliency_images"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.peak_tflops is not None and args.peak_tflops <= 0:
        p.error("--peak-tflops must be positive")
    return args


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_model(args: argparse.Namespace, components: Any, notes: list[str]) -> tuple[Any, bool]:
    """The LoRA classifier (on the CPU), and whether its backbone weights are random."""
    from xaibench.config import ComponentRef
    from xaibench.engine.grid import create_backbone
    from xaibench.models.weights import MissingWeightsError

    ref = ComponentRef.model_validate(args.backbone)
    cls = components.backbones.get(ref.name).load()
    options = {"img_size": args.image_size} if "img_size" in cls.model_fields else {}
    ref = ref.model_copy(update={"options": options})
    factory = create_backbone(components, ref)
    try:
        weights = factory.locate_weights(ref.key)
    except MissingWeightsError as exc:
        notes.append(
            f"weights of {ref.key} not found locally ({exc.hint}); using RANDOM weights: "
            "throughput and MFU do not depend on weight values"
        )
        factory = create_backbone(
            components, ref.model_copy(update={"options": {**options, "random_init": True}})
        )
        weights = factory.locate_weights(ref.key)
    torch.manual_seed(args.seed)
    strategy = components.strategies.create("lora", {"rank": args.lora_rank})
    model = strategy.prepare(factory.build(weights), 2)
    return model, weights.random_init


def timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """Seconds for ``repeats`` calls of ``fn``, the device synchronised before and after."""
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return time.perf_counter() - start


def peak_memory_gib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 1024**3, 2)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def rate(
    flops: float | None, seconds_per_call: float, peak: float | None
) -> dict[str, float | None]:
    """Achieved TFLOP/s and MFU for ``flops`` per call."""
    if not flops:
        return {"achieved_tflops": None, "mfu": None}
    achieved = flops / seconds_per_call / 1e12
    return {
        "achieved_tflops": significant(achieved),
        "mfu": None if peak is None else significant(achieved / peak),
    }


def significant(value: float, digits: int = 4) -> float:
    """``value`` to ``digits`` significant digits (small CPU rates do not round to 0)."""
    return float(f"{value:.{digits}g}")


def attention_counted(counter: Any, model: Any) -> bool | None:
    """Whether ``counter`` saw attention (fused kernels or batched products); None for CNNs."""
    if model.backbone.architecture != "vit":
        return None
    ops = {str(op) for per_module in counter.get_flop_counts().values() for op in per_module}
    return any("attention" in op or "bmm" in op for op in ops)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device (use --device cpu for a CPU test run)", file=sys.stderr)
        return 2

    import xaibench
    from xaibench.device import Runtime, resolve_device
    from xaibench.plugins import collect_components, get_plugin_manager
    from xaibench.strategies.base import count_parameters
    from xaibench.strategies.training import freeze_norm_statistics

    device = resolve_device(args.device)
    notes: list[str] = []
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = platform.processor() or platform.machine()
    if args.peak_tflops is not None:
        peak: float | None = args.peak_tflops
        peak_source: str | None = "--peak-tflops"
    else:
        found = peak_tflops(device_name) if device.type == "cuda" else None
        peak, peak_source = (found[0], f"table: {found[1]}") if found else (None, None)
        if found is None:
            notes.append(f"no peak FLOP/s known for {device_name!r}: pass --peak-tflops for MFU")
    if args.precision != "bf16" and peak is not None:
        notes.append("MFU is against the peak bf16 rate, but the run is fp32")

    components = collect_components(get_plugin_manager())
    model, random_init = build_model(args, components, notes)
    model.to(device)
    trainable, total = count_parameters(model)
    gen = torch.Generator().manual_seed(args.seed)
    pool = 4  # distinct host batches, cycled, so every step transfers fresh data
    size = args.image_size
    images = torch.rand(
        pool * max(args.batch_size, args.eval_batch_size), 1, size, size, generator=gen
    )
    labels = torch.randint(0, 2, (len(images),), generator=gen)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)

    result: dict[str, Any] = {
        "schema": "xaibench-gpu-check/1",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "complete": False,
        "device": device.type,
        "device_name": device_name,
        "device_count": torch.cuda.device_count() if device.type == "cuda" else 0,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "xaibench": xaibench.__version__,
        "python": platform.python_version(),
        "backbone": args.backbone,
        "random_init": random_init,
        "image_size": size,
        "batch_size": args.batch_size,
        "eval_batch_size": args.eval_batch_size,
        "precision": args.precision,
        "strategy": {"name": "lora", "rank": args.lora_rank},
        "trainable_parameters": trainable,
        "total_parameters": total,
        "peak_tflops": peak,
        "peak_source": peak_source,
        "train_flops_per_step": None,
        "inference_flops_per_batch": None,
        "attention_flops_counted": None,
        "train": {},
        "inference": {},
        "saliency": {},
        "notes": notes,
        "elapsed_s": None,
    }

    def save() -> None:
        result["elapsed_s"] = round(time.perf_counter() - started, 1)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")

    step_count = [0]

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        i = step_count[0] % pool
        step_count[0] += 1
        return images[i * n : (i + 1) * n], labels[i * n : (i + 1) * n]

    def train_step(runtime: Runtime, forward: Callable[[torch.Tensor], torch.Tensor]) -> None:
        x, y = batch(args.batch_size)
        with runtime.autocast():
            logits = forward(runtime.to(x))
        loss = F.cross_entropy(logits.float(), runtime.to(y))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def infer(runtime: Runtime, forward: Callable[[torch.Tensor], torch.Tensor]) -> None:
        x, _ = batch(args.eval_batch_size)
        with torch.inference_mode(), runtime.autocast():
            logits = forward(runtime.to(x))
        torch.softmax(logits.float(), dim=1).cpu()

    # FLOPs of one step, counted on the eager model (the compiled graph does the same math).
    from torch.utils.flop_counter import FlopCounterMode

    eager = Runtime(device, args.precision, compile=False)
    model.train()
    freeze_norm_statistics(model)
    with FlopCounterMode(display=False) as counter:
        train_step(eager, model)
    result["train_flops_per_step"] = int(counter.get_total_flops())
    result["attention_flops_counted"] = attention_counted(counter, model)
    if result["attention_flops_counted"] is False:
        notes.append(
            "the FLOP counter saw no attention kernel (it knows no fused CPU attention): "
            "FLOPs and MFU leave attention out"
        )
    model.eval()
    with FlopCounterMode(display=False) as counter:
        infer(eager, model)
    result["inference_flops_per_batch"] = int(counter.get_total_flops())
    save()

    failures: list[str] = []

    def guarded(section: dict[str, Any], key: str, measure: Callable[[], dict[str, Any]]) -> None:
        """Run one measurement; an error (out of memory, a compiler failure) is recorded."""
        try:
            section[key] = measure()
        except Exception as exc:
            failures.append(key)
            section[key] = {"error": f"{type(exc).__name__}: {exc}"[:1000]}
            optimizer.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
        save()

    def measure_training(runtime: Runtime) -> dict[str, Any]:
        model.train()
        freeze_norm_statistics(model)
        forward = runtime.forward(model)
        reset_peak(device)
        warmup_s = timed(lambda: train_step(runtime, forward), device, args.warmup)
        per_step = timed(lambda: train_step(runtime, forward), device, args.steps) / args.steps
        return {
            "images_per_s": significant(args.batch_size / per_step),
            "step_ms": round(per_step * 1e3, 2),
            "warmup_s": round(warmup_s, 2),
            "steps": args.steps,
            **rate(result["train_flops_per_step"], per_step, peak),
            "peak_memory_gib": peak_memory_gib(device),
        }

    def measure_inference(runtime: Runtime) -> dict[str, Any]:
        model.eval()
        forward = runtime.forward(model)
        warmup_s = timed(lambda: infer(runtime, forward), device, max(1, args.warmup))
        per_batch = timed(lambda: infer(runtime, forward), device, args.steps) / args.steps
        return {
            "images_per_s": significant(args.eval_batch_size / per_batch),
            "batch_ms": round(per_batch * 1e3, 2),
            "warmup_s": round(warmup_s, 2),
            "batches": args.steps,
            **rate(result["inference_flops_per_batch"], per_batch, peak),
        }

    modes = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    for compiled in modes:
        key = "compiled" if compiled else "eager"
        if compiled and time.perf_counter() - started > args.budget_s / 2:
            reason = f"skipped: over half of the {args.budget_s:.0f} s budget already spent"
            result["train"][key] = result["inference"][key] = {"skipped": reason}
            notes.append(f"compiled phases {reason}")
            continue
        runtime = Runtime(device, args.precision, compile=compiled)
        guarded(result["train"], key, lambda r=runtime: measure_training(r))
        guarded(result["inference"], key, lambda r=runtime: measure_inference(r))

    # Saliency as in a run: eager model, float32, maps back on the host.
    batches = math.ceil(args.saliency_images / args.eval_batch_size)

    def measure_saliency(name: str) -> dict[str, Any]:
        method = components.saliency.create(name)
        model.eval()

        def explain() -> None:
            x, _ = batch(args.eval_batch_size)
            targets = torch.ones(len(x), dtype=torch.long)
            method.explain(model, eager.to(x), eager.to(targets)).cpu()

        reset_peak(device)
        explain()  # warm-up (cuDNN/cuBLAS heuristics, captum set-up)
        seconds = timed(explain, device, batches)
        return {
            "images_per_s": significant(batches * args.eval_batch_size / seconds),
            "ms_per_image": significant(seconds * 1e3 / (batches * args.eval_batch_size)),
            "images": batches * args.eval_batch_size,
            "peak_memory_gib": peak_memory_gib(device),
        }

    for name in args.saliency:
        guarded(result["saliency"], name, lambda n=name: measure_saliency(n))

    result["complete"] = not failures
    save()
    print_summary(result)
    print(f"written: {args.json}")
    return 1 if failures else 0


def print_summary(result: dict[str, Any]) -> None:
    def fmt(value: Any, spec: str = ".1f") -> str:
        return "-" if value is None else format(value, spec)

    print(
        f"gpu_check: {result['device_name']} ({result['device']}), torch {result['torch']}, "
        f"CUDA {result['cuda']}"
    )
    weights = "RANDOM weights" if result["random_init"] else "pretrained weights"
    print(
        f"  {result['backbone']} at {result['image_size']} px, {weights}, LoRA "
        f"r={result['strategy']['rank']} ({result['trainable_parameters']:,} of "
        f"{result['total_parameters']:,} parameters train), {result['precision']}"
    )
    peak = result["peak_tflops"]
    print(
        f"  FLOPs/training step {result['train_flops_per_step']:.3g} (batch "
        f"{result['batch_size']}); peak {fmt(peak)} TFLOP/s ({result['peak_source'] or 'unknown'})"
    )
    for phase in ("train", "inference"):
        for key, row in result[phase].items():
            if "skipped" in row or "error" in row:
                print(f"  {phase:<9} {key:<8} {row.get('skipped') or row['error']}")
                continue
            mfu = row.get("mfu")
            print(
                f"  {phase:<9} {key:<8} {row['images_per_s']:>9.4g} images/s   "
                f"{fmt(row.get('achieved_tflops'), '.3g')} TFLOP/s   "
                f"MFU {fmt(None if mfu is None else 100 * mfu, '.3g')}%   "
                f"warm-up {row['warmup_s']:.1f} s"
            )
    for name, row in result["saliency"].items():
        if "error" in row:
            print(f"  saliency  {name:<8} {row['error']}")
        else:
            print(f"  saliency  {name:<8} {row['images_per_s']:>9.4g} images/s (eager, fp32)")
    for note in result["notes"]:
        print(f"  note: {note}")


if __name__ == "__main__":
    sys.exit(main())
