"""benchmarks/gpu_check.sh on the CPU with a tiny model: every field of its JSON, with sane values.

On a GPU the script measures DINOv2 ViT-B/14 at 518 px; here the same code runs with
``--device cpu --backbone test_vit.random --image-size 64`` in a few seconds (plus imports).
"""

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
HAS_COMPILER = any(shutil.which(cc) for cc in ("cc", "gcc", "clang"))

TINY = [
    "--device", "cpu", "--backbone", "test_vit.random", "--image-size", "64", "--steps", "3",
    "--warmup", "1", "--batch-size", "4", "--saliency-images", "4",
]  # fmt: skip

TOP_LEVEL = {
    "schema", "created", "complete", "device", "device_name", "device_count", "torch", "cuda",
    "cudnn", "xaibench", "python", "backbone", "random_init", "image_size", "batch_size",
    "eval_batch_size", "precision", "strategy", "trainable_parameters", "total_parameters",
    "peak_tflops", "peak_source", "train_flops_per_step", "inference_flops_per_batch",
    "attention_flops_counted", "train",
    "inference", "saliency", "notes", "elapsed_s",
}  # fmt: skip


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_check(tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHON": sys.executable, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        ["bash", str(SCRIPT), str(out), *TINY, *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc, json.loads(out.read_text())


def positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def check_throughput(row: dict, *, mfu: bool) -> None:
    assert positive(row["images_per_s"])
    assert row["warmup_s"] >= 0
    assert positive(row["achieved_tflops"])
    if mfu:
        assert 0 < row["mfu"] <= 1
    else:
        assert row["mfu"] is None


def test_cpu_run_writes_every_field(tmp_path: Path):
    proc, doc = run_check(tmp_path, "--peak-tflops", "1")
    assert set(doc) == TOP_LEVEL
    assert doc["complete"] is True
    assert doc["schema"] == "xaibench-gpu-check/1"
    assert doc["device"] == "cpu"
    assert doc["random_init"] is True
    assert doc["backbone"] == "test_vit.random"
    assert doc["image_size"] == 64
    assert doc["precision"] == "bf16"
    assert doc["strategy"] == {"name": "lora", "rank": 8}
    assert 0 < doc["trainable_parameters"] < doc["total_parameters"]
    assert doc["peak_tflops"] == 1.0
    assert doc["peak_source"] == "--peak-tflops"
    # A LoRA step skips the frozen weights' gradients but still propagates through them.
    assert doc["train_flops_per_step"] > doc["inference_flops_per_batch"] > 0
    assert isinstance(doc["attention_flops_counted"], bool)  # a ViT (CPU: fused, not counted)
    assert set(doc["train"]) == set(doc["inference"]) == {"eager"}  # no compile on the CPU
    train, infer = doc["train"]["eager"], doc["inference"]["eager"]
    check_throughput(train, mfu=True)
    check_throughput(infer, mfu=True)
    assert train["steps"] == 3
    assert positive(train["step_ms"])
    assert train["peak_memory_gib"] is None
    assert set(doc["saliency"]) == {"gradcam", "saliency"}
    for row in doc["saliency"].values():
        assert positive(row["images_per_s"])
        assert positive(row["ms_per_image"])
        assert row["images"] == 4
    assert positive(doc["elapsed_s"])
    assert "images/s" in proc.stdout
    assert "MFU" in proc.stdout


def test_without_a_peak_mfu_is_left_out(tmp_path: Path):
    _, doc = run_check(tmp_path, "--saliency", "gradcam", "--steps", "1")
    assert doc["peak_tflops"] is None
    assert doc["peak_source"] is None
    check_throughput(doc["train"]["eager"], mfu=False)
    assert set(doc["saliency"]) == {"gradcam"}


@pytest.mark.slow
@pytest.mark.skipif(not HAS_COMPILER, reason="torch.compile on the CPU needs a C compiler")
def test_cpu_run_with_compile(tmp_path: Path):
    _, doc = run_check(tmp_path, "--compile", "both", "--saliency", "--peak-tflops", "1")
    assert set(doc["train"]) == set(doc["inference"]) == {"eager", "compiled"}
    for phase in ("train", "inference"):
        check_throughput(doc[phase]["compiled"], mfu=True)
    assert doc["saliency"] == {}


@pytest.mark.parametrize(
    ("name", "tflops"),
    [
        ("NVIDIA H200", 989.0),
        ("NVIDIA H200 NVL", 835.0),
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA L4", 121.0),
        ("NVIDIA L40S", 362.0),
        ("NVIDIA GeForce RTX 4090", 165.0),
        ("NVIDIA A10", 125.0),
        ("Tesla V100-SXM2-16GB", None),
    ],
)
def test_peak_table(name: str, tflops: float | None):
    found = load_script().peak_tflops(name)
    assert (found and found[0]) == tflops
