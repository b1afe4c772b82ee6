"""Options of the study's encoders and of the tiny random models, in one light module.

Kept free of heavy imports so the built-in plugin that registers backbones (and ``xaibench ls``)
never imports torch, and so the family modules and the registrations share one definition.
"""

from __future__ import annotations

from typing import Any

#: The study's four encoders (Kim et al., 2025), as registry name -> options of their family.
#: ``img_size`` is each checkpoint's native size.
OPENCLIP_VIT_B16: dict[str, Any] = {"model_name": "ViT-B-16", "pretrained_tag": "laion2b_s34b_b88k"}
RAD_DINO: dict[str, Any] = {
    "model_id": "microsoft/rad-dino",
    "architecture": "dinov2",
    "img_size": 518,
}
CHEXAGENT_SIGLIP: dict[str, Any] = {
    "model_id": "StanfordAIMI/XraySigLIP__vit-l-16-siglip-384__webli",
    "architecture": "siglip",
    "img_size": 384,
}

#: ``config_overrides`` for tiny random transformers models (tests, the quick grid): they build
#: in milliseconds and, at random initialisation, give pooled features that vary between inputs
#: (transformers' DINOv2 LayerScale starts at ``layerscale_value=1.0``).
HF_TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "dinov2": {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "mlp_ratio": 2,
        "patch_size": 16,
        "image_size": 128,
    },
    "dinov2_with_registers": {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "mlp_ratio": 2,
        "patch_size": 16,
        "image_size": 128,
        "num_register_tokens": 4,
    },
    "siglip": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "patch_size": 16,
        "image_size": 128,
    },
}

#: ``model_cfg_overrides`` for a tiny random OpenCLIP ViT tower (with ``model_name="ViT-B-16"``):
#: width 64, 3 blocks, 2 heads (open_clip derives heads as ``width // head_width``), patch 16,
#: 128 px and a 32-d joint embedding. At random init its features still vary across inputs (std
#: over a batch / mean |feature| about 0.1 for noise images, 0.35-0.5 for varied images).
OPEN_CLIP_TINY_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"width": 64, "layers": 3, "head_width": 32, "patch_size": 16, "image_size": 128},
}

#: A tiny DINOv2-style timm ViT/14 with 4 registers. LayerScale starts at 1: DINOv2's own 1e-5
#: mutes every residual branch at random init, giving near-constant features (measured spread
#: 3e-6 of the mean, against 0.39 with 1.0).
TIMM_TINY_DINOV2: dict[str, Any] = {
    "arch": "vit_small_patch14_reg4_dinov2",
    "img_size": 126,
    "model_kwargs": {"embed_dim": 64, "depth": 3, "num_heads": 2, "init_values": 1.0},
}
