"""Built-in backbones: generic families, the study's encoders, and tiny models for CPU runs.

Generic families take any model by name: ``timm:<arch>[.<tag>]`` (e.g. ``timm:resnet18.a1_in1k``),
``open_clip:<name>`` (with the option ``pretrained_tag``, or ``open_clip:hf-hub:org/repo``) and
``hf:<model id>`` (any ``transformers`` vision encoder). Weights come from the option
``weights`` or the local Hugging Face cache, never from the network.

The study's four encoders (Kim et al., 2025) are registered under short names; the ``*.random``
entries are tiny randomly initialised versions of the same four families for CPU runs and tests.
"""

from __future__ import annotations

from xaibench.hookspecs import hookimpl
from xaibench.models.presets import (
    CHEXAGENT_SIGLIP,
    HF_TINY_CONFIGS,
    OPEN_CLIP_TINY_CONFIG,
    OPENCLIP_VIT_B16,
    RAD_DINO,
    TIMM_TINY_DINOV2,
)
from xaibench.registry import Register

_TIMM = "xaibench.models.timm_backbone:TimmBackbone"
_OPEN_CLIP = "xaibench.models.open_clip_backbone:OpenCLIPBackbone"
_HF = "xaibench.models.hf_backbone:HFVisionBackbone"

DINOV2 = tuple(
    f"vit_{size}_patch14_{reg}dinov2.lvd142m"
    for size in ("small", "base", "large", "giant")
    for reg in ("", "reg4_")
)


@hookimpl
def register_backbones(register: Register) -> None:
    """Register the generic families, the study's encoders and the tiny models."""
    register("timm", _TIMM, summary="any timm model: timm:<arch>[.<tag>]")
    register("open_clip", _OPEN_CLIP, summary="an OpenCLIP image tower: open_clip:<name>")
    register("hf", _HF, summary="a transformers vision encoder: hf:<model id>")

    # The study's encoders (real weights: local file/folder or the Hugging Face cache).
    register(
        "openclip_vit_b16",
        _OPEN_CLIP,
        summary="OpenCLIP ViT-B/16, LAION-2B (study: OpenCLIP)",
        options=OPENCLIP_VIT_B16,
    )
    register(
        "rad_dino",
        _HF,
        summary="RAD-DINO, microsoft/rad-dino (study: RAD-DINO)",
        options=RAD_DINO,
    )
    register(
        "chexagent_siglip",
        _HF,
        summary="CheXagent's vision encoder, XraySigLIP ViT-L/16 384 px (study: CheXagent)",
        options=CHEXAGENT_SIGLIP,
    )
    for name in DINOV2:
        register(name, _TIMM, summary="DINOv2 (timm weights), 518 px", options={"arch": name})

    # Tiny, randomly initialised versions of the four study families (quick grid, tests).
    register(
        "openclip_tiny.random",
        _OPEN_CLIP,
        summary="tiny OpenCLIP ViT tower (3 blocks, width 64), random init",
        options={
            "model_name": "ViT-B-16",
            "model_cfg_overrides": OPEN_CLIP_TINY_CONFIG,
            "random_init": True,
        },
    )
    register(
        "dinov2_tiny.random",
        _TIMM,
        summary="tiny DINOv2 ViT/14 with 4 registers (3 blocks, width 64), random init; "
        "LayerScale starts at 1 (DINOv2's 1e-5 gives near-constant random features)",
        options={**TIMM_TINY_DINOV2, "random_init": True},
    )
    register(
        "rad_dino_tiny.random",
        _HF,
        summary="tiny Dinov2Model (transformers, 2 layers, width 32) as RAD-DINO, random init",
        options={
            **RAD_DINO,
            "img_size": 128,
            "config_overrides": HF_TINY_CONFIGS["dinov2"],
            "random_init": True,
        },
    )
    register(
        "chexagent_siglip_tiny.random",
        _HF,
        summary="tiny SiglipVisionModel (2 layers, width 32) as CheXagent's encoder, random init",
        options={
            **CHEXAGENT_SIGLIP,
            "img_size": 128,
            "config_overrides": HF_TINY_CONFIGS["siglip"],
            "random_init": True,
        },
    )
    register(
        "test_vit.random",
        _TIMM,
        summary="timm test_vit (0.3M params, 6 blocks, patch 16), random init",
        options={"arch": "test_vit", "img_size": 128, "random_init": True},
    )
    register(
        "test_resnet.random",
        _TIMM,
        summary="timm test_resnet (0.4M params, 4 stages), random init",
        options={"arch": "test_resnet", "img_size": 128, "random_init": True},
    )
