"""Built-in backbones: generic families, the study's encoders, and tiny models for CPU runs.

Generic families take any model by name: ``timm:<arch>`` (e.g. ``timm:resnet18.a1_in1k``).
DINOv2 entries use timm's names and weights (``timm/<name>`` in the Hugging Face cache), at their
native 518 px unless ``img_size`` is set (timm then resamples the position embeddings).
"""

from __future__ import annotations

from xaibench.hookspecs import hookimpl
from xaibench.registry import Register

_TIMM = "xaibench.models.timm_backbone:TimmBackbone"


DINOV2 = tuple(
    f"vit_{size}_patch14_{reg}dinov2.lvd142m"
    for size in ("small", "base", "large", "giant")
    for reg in ("", "reg4_")
)


@hookimpl
def register_backbones(register: Register) -> None:
    """Register the timm family, DINOv2 and the tiny test models."""
    register("timm", _TIMM, summary="any timm model: timm:<arch>[.<tag>]")
    for name in DINOV2:
        register(name, _TIMM, summary="DINOv2 (timm weights), 518 px", options={"arch": name})
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
