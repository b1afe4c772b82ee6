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
from xaibench.registry import Register

_TIMM = "xaibench.models.timm_backbone:TimmBackbone"
_OPEN_CLIP = "xaibench.models.open_clip_backbone:OpenCLIPBackbone"
_HF = "xaibench.models.hf_backbone:HFVisionBackbone"

DINOV2 = tuple(
    f"vit_{size}_patch14_{reg}dinov2.lvd142m"
    for size in ("small", "base", "large", "giant")
    for reg in ("", "reg4_")
)

#: Tiny transformer sizes shared by the ``*.random`` family entries (about 0.05-0.2 M parameters).
_TINY_HF_DINOV2 = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "mlp_ratio": 2,
    "patch_size": 16,
    "image_size": 128,
}
_TINY_HF_SIGLIP = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "patch_size": 16,
    "image_size": 128,
}
_TINY_OPEN_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"width": 64, "layers": 3, "head_width": 32, "patch_size": 16, "image_size": 128},
}


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
        options={"model_name": "ViT-B-16", "pretrained_tag": "laion2b_s34b_b88k"},
    )
    register(
        "rad_dino",
        _HF,
        summary="RAD-DINO, microsoft/rad-dino (study: RAD-DINO)",
        options={"model_id": "microsoft/rad-dino", "architecture": "dinov2", "img_size": 518},
    )
    register(
        "chexagent_siglip",
        _HF,
        summary="CheXagent's vision encoder, XraySigLIP ViT-L/16 384 px (study: CheXagent)",
        options={
            "model_id": "StanfordAIMI/XraySigLIP__vit-l-16-siglip-384__webli",
            "architecture": "siglip",
            "img_size": 384,
        },
    )
    for name in DINOV2:
        register(name, _TIMM, summary="DINOv2 (timm weights), 518 px", options={"arch": name})

    # Tiny, randomly initialised versions of the four study families (quick grid, tests).
    register(
        "openclip_tiny.random",
        _OPEN_CLIP,
        summary="tiny OpenCLIP ViT tower (3 blocks, width 64), random init",
        options={"model_name": "ViT-B-16", "model_cfg_overrides": _TINY_OPEN_CLIP,
                 "random_init": True},
    )  # fmt: skip
    register(
        "dinov2_tiny.random",
        _TIMM,
        summary="tiny DINOv2 ViT/14 with 4 registers (3 blocks, width 64), random init; "
        "LayerScale starts at 1 (DINOv2's 1e-5 gives near-constant random features)",
        options={
            "arch": "vit_small_patch14_reg4_dinov2",
            "img_size": 126,
            "model_kwargs": {"embed_dim": 64, "depth": 3, "num_heads": 2, "init_values": 1.0},
            "random_init": True,
        },
    )
    register(
        "rad_dino_tiny.random",
        _HF,
        summary="tiny Dinov2Model (transformers, 2 layers, width 32) as RAD-DINO, random init",
        options={"model_id": "microsoft/rad-dino", "architecture": "dinov2", "img_size": 128,
                 "config_overrides": _TINY_HF_DINOV2, "random_init": True},
    )  # fmt: skip
    register(
        "chexagent_siglip_tiny.random",
        _HF,
        summary="tiny SiglipVisionModel (2 layers, width 32) as CheXagent's encoder, random init",
        options={
            "model_id": "StanfordAIMI/XraySigLIP__vit-l-16-siglip-384__webli",
            "architecture": "siglip",
            "img_size": 128,
            "config_overrides": _TINY_HF_SIGLIP,
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
