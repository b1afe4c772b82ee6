#!/usr/bin/env bash
# One-GPU check of xaibench's GPU path (see docs/performance-gpu.md): training images/s and MFU
# for DINOv2 ViT-B/14 at 518 px with LoRA r=8 under bf16 autocast, eager and torch.compile'd,
# inference images/s, and Grad-CAM / vanilla-gradient saliency images/s. About 3-5 minutes on
# one recent data-centre GPU; the Python script stops itself starting compiled phases after
# half of its 420 s budget.
#
# Usage (from anywhere, with xaibench's environment active):
#   benchmarks/gpu_check.sh [OUT.json] [more benchmarks/gpu_check.py options]
# e.g. benchmarks/gpu_check.sh results/gpu_check_h100.json --peak-tflops 989
# Later options override the defaults below; eager and compiled phases both run on CUDA (pass
# --compile off|on for one). A CPU smoke test (tiny model, eager):
#   benchmarks/gpu_check.sh /tmp/g.json --device cpu --backbone test_vit.random --image-size 64
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="gpu_check.json"
if [[ $# -gt 0 && "$1" != -* ]]; then
    out="$1"
    shift
fi
export HF_HUB_OFFLINE=1  # weights from the local cache only, as in a run
python="${PYTHON:-python}"

if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit \
        --format=csv || true
fi
args=(
    --device cuda
    --backbone vit_base_patch14_dinov2.lvd142m
    --image-size 518
    --batch-size 32
    --steps 20
    --warmup 3
    --precision bf16
    --lora-rank 8
    --saliency gradcam saliency
    --saliency-images 64
    --json "$out"
    "$@"
)
# A hard stop at 470 s; the JSON written so far (after every phase) stays.
if command -v timeout >/dev/null 2>&1; then
    exec timeout 470 "$python" "$here/gpu_check.py" "${args[@]}"
fi
exec "$python" "$here/gpu_check.py" "${args[@]}"
