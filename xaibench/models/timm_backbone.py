"""timm models behind the backbone adapter contract.

timm gives every architecture the same constructor and feature API; the adapter adds what timm
leaves to the user: the ViT token-to-grid reshape (class and register tokens dropped), the default
CAM layer, and the raw-range check.
"""

from __future__ import annotations

import difflib
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from xaibench.errors import XaibenchError
from xaibench.models.base import BackboneAdapter, BackboneFactory, InputSpec


class TimmAdapter(BackboneAdapter):
    """Adapter around a timm model created with ``num_classes=0`` (pooled features out)."""

    def __init__(self, model: nn.Module, input_spec: InputSpec, *, random_init: bool) -> None:
        is_vit = all(hasattr(model, a) for a in ("blocks", "patch_embed", "num_prefix_tokens"))
        super().__init__(
            input_spec,
            int(getattr(model, "num_features")),  # noqa: B009 (timm attribute, untyped)
            "vit" if is_vit else "cnn",
            random_init=random_init,
        )
        # timm models are typed as plain modules; their attributes vary by architecture.
        self.model: Any = model

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled pre-logit features (timm's ``num_classes=0`` forward)."""
        return self.model(x)

    def cam_layer(self) -> nn.Module:
        """ViT: ``blocks[-1].norm1`` (tokens entering the last attention); CNN: last stage."""
        if self.architecture == "vit":
            last = self.model.blocks[-1]
            return last.norm1 if hasattr(last, "norm1") else last
        name = self.model.feature_info[-1]["module"]
        return self.model.get_submodule(name)

    def activation_to_grid(self, activation: torch.Tensor) -> torch.Tensor:
        """Reshape ViT tokens ``[B, N, C]`` to ``[B, C, h, w]``; CNN maps pass through."""
        if self.architecture == "cnn":
            return activation
        prefix = int(self.model.num_prefix_tokens)
        h, w = self.model.patch_embed.grid_size
        tokens = activation[:, prefix:, :]
        if tokens.shape[1] != h * w:
            raise ValueError(
                f"expected {h}x{w} patch tokens after {prefix} prefix tokens, got {tokens.shape[1]}"
            )
        return tokens.transpose(1, 2).reshape(activation.shape[0], -1, h, w)

    def last_block_modules(self) -> list[nn.Module]:
        """Last transformer block and final norm (ViT), or the last stage (CNN)."""
        if self.architecture == "vit":
            return [self.model.blocks[-1], self.model.norm]
        name = self.model.feature_info[-1]["module"]
        return [self.model.get_submodule(name)]


class TimmBackbone(BackboneFactory):
    """Any timm architecture by name.

    In this release weights are random only (``weights="random"``); loading local checkpoints and
    the Hugging Face cache comes with the backbone families. Random initialisation is therefore
    recorded in every result and leaderboard row.
    """

    display_name = "timm"
    citation = "Wightman, PyTorch Image Models, https://github.com/huggingface/pytorch-image-models"

    arch: str = Field(description="timm architecture name, e.g. 'test_vit' or 'resnet18'.")
    img_size: int = Field(128, ge=16, le=2048, description="Square input size in pixels.")
    weights: Literal["random"] = Field("random", description="Where weights come from.")
    model_kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra timm kwargs.")

    @property
    def random_init(self) -> bool:
        """True: only random initialisation is supported so far."""
        return self.weights == "random"

    def build(self) -> BackboneAdapter:
        """Create the timm model (random init from torch's current seed) and wrap it."""
        import timm

        if not timm.is_model(self.arch):
            close = difflib.get_close_matches(self.arch, timm.list_models(), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise XaibenchError(f"unknown timm architecture {self.arch!r}{hint}")
        kwargs: dict[str, Any] = {"pretrained": False, "num_classes": 0, **self.model_kwargs}
        try:
            # Transformers take their input size at construction (position embeddings);
            # convolutional networks reject the argument before touching the RNG.
            model = timm.create_model(self.arch, **{"img_size": self.img_size, **kwargs})
        except TypeError as exc:
            if "img_size" not in str(exc):
                raise
            model = timm.create_model(self.arch, **kwargs)
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        spec = InputSpec(
            size=self.img_size,
            mean=tuple(cfg.get("mean", InputSpec.mean)),
            std=tuple(cfg.get("std", InputSpec.std)),
        )
        return TimmAdapter(model.eval(), spec, random_init=self.random_init)
