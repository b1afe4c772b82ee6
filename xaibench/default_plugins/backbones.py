"""Built-in backbones: tiny timm test models, randomly initialised, for fast CPU runs."""

from __future__ import annotations

from xaibench.hookspecs import hookimpl
from xaibench.registry import Register

_TIMM = "xaibench.models.timm_backbone:TimmBackbone"


@hookimpl
def register_backbones(register: Register) -> None:
    """Register the tiny ViT and ResNet used by the quick grid and the tests."""
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
