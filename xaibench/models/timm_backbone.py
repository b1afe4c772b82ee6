"""timm models behind the backbone adapter contract.

timm gives every architecture the same constructor and feature API; the adapter adds what timm
leaves to the user: the ViT token-to-grid reshape (class and register tokens dropped), the default
CAM layer, and the raw-range check.
"""

from __future__ import annotations

import difflib
from contextlib import AbstractContextManager
from typing import Any

import torch
from pydantic import Field
from torch import nn

from xaibench.errors import XaibenchError
from xaibench.models.attention_capture import Capture, timm_attention_capture
from xaibench.models.base import BackboneAdapter, BackboneFactory, InputSpec, tokens_to_grid
from xaibench.models.weights import ResolvedWeights, load_state_dict, resolve_weights


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
        if is_vit:
            self.num_prefix_tokens = int(getattr(model, "num_prefix_tokens"))  # noqa: B009

    def attention_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Softmax attention of every block (ViTs), captured at timm's ``attn_drop`` input.

        timm computes attention with fused SDPA, which never materialises the weights; the
        explicit path is switched on for this call only and restored afterwards.
        """
        if self.architecture != "vit":
            return super().attention_maps(images)
        captured: list[torch.Tensor] = []
        handles, fused = [], []
        try:
            for block in self.model.blocks:
                attn = block.attn
                if not hasattr(attn, "attn_drop"):
                    raise XaibenchError(f"{type(attn).__name__} exposes no attention weights")
                fused.append((attn, getattr(attn, "fused_attn", False)))
                attn.fused_attn = False
                handles.append(
                    attn.attn_drop.register_forward_hook(
                        lambda _m, inputs, _o: captured.append(inputs[0].detach())
                    )
                )
            self(images)
        finally:
            for handle in handles:
                handle.remove()
            for attn, value in fused:
                attn.fused_attn = value
        return captured

    def capture_attention(self, capture: Capture) -> AbstractContextManager[None]:
        """ViTs: each block's softmax attention through ``capture`` (explicit path forced).

        Raises:
            NotImplementedError: A CNN (no attention).
        """
        if self.architecture != "vit":
            return super().capture_attention(capture)
        return timm_attention_capture(self.model.blocks, capture)

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
        grid = self.model.patch_embed.grid_size
        return tokens_to_grid(activation, self.num_prefix_tokens, (int(grid[0]), int(grid[1])))

    def last_block_modules(self) -> list[nn.Module]:
        """Last transformer block and final norm (ViT), or the last stage (CNN)."""
        if self.architecture == "vit":
            return [self.model.blocks[-1], self.model.norm]
        name = self.model.feature_info[-1]["module"]
        return [self.model.get_submodule(name)]

    def lora_target_modules(self) -> list[str]:
        """ViT: every block's ``attn.qkv`` and ``attn.proj``; CNN: the last stage's convs."""
        if self.architecture == "vit":
            return [
                f"model.blocks.{i}.attn.{part}"
                for i, block in enumerate(self.model.blocks)
                for part in ("qkv", "proj")
                if isinstance(getattr(block.attn, part, None), nn.Linear)
            ]
        stage = self.model.feature_info[-1]["module"]
        return [
            f"model.{stage}.{name}"
            for name, module in self.model.get_submodule(stage).named_modules()
            if isinstance(module, nn.Conv2d)
        ]


class TimmBackbone(BackboneFactory):
    """Any timm architecture by name, with weights from a local file or the Hugging Face cache.

    ``arch`` may carry a pretrained tag (``vit_base_patch14_dinov2.lvd142m``); its weights are
    then looked up in the local cache as ``timm/<arch>`` (timm's own hub naming). Checkpoints are
    read safely by :func:`~xaibench.models.weights.load_state_dict` and handed to timm as a state
    dict, so timm's own filters apply (classifier removal, position-embedding resampling when
    ``img_size`` differs from the checkpoint's).
    """

    display_name = "timm"
    citation = "Wightman, PyTorch Image Models, https://github.com/huggingface/pytorch-image-models"
    spec_option = "arch"

    arch: str = Field(description="timm architecture, optionally with a pretrained tag.")
    img_size: int | None = Field(
        None, ge=16, le=2048, description="Square input size; default: the architecture's own."
    )
    hf_repo: str | None = Field(
        None, description="Hugging Face repository in the local cache (default: timm/<arch>)."
    )
    model_kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra timm kwargs.")

    def _check_arch(self) -> None:
        import timm

        if not timm.is_model(self.arch):
            close = difflib.get_close_matches(self.arch, timm.list_models(), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise XaibenchError(f"unknown timm architecture {self.arch!r}{hint}")

    def default_repo(self) -> str | None:
        """``hf_repo``, else ``timm/<arch>`` when ``arch`` names pretrained weights."""
        return self.hf_repo or (f"timm/{self.arch}" if "." in self.arch else None)

    def locate_weights(self, name: str) -> ResolvedWeights:
        """Explicit file or folder, else the timm repository in the local Hugging Face cache."""
        self._check_arch()
        return resolve_weights(
            name, weights=self.weights, hf_repo=self.default_repo(), random_init=self.random_init
        )

    def build(self, weights: ResolvedWeights) -> BackboneAdapter:
        """Create the timm model, load ``weights`` (unless random) and wrap it."""
        import timm

        self._check_arch()
        kwargs: dict[str, Any] = {"pretrained": False, "num_classes": 0, **self.model_kwargs}
        if not weights.random_init:
            state = merged_state_dict(weights)
            kwargs.update(pretrained=True, pretrained_cfg_overlay={"state_dict": state})
        if self.img_size is not None:
            kwargs.setdefault("img_size", self.img_size)
        try:
            # Transformers take their input size at construction (position embeddings);
            # convolutional networks reject the argument before touching the RNG.
            model = timm.create_model(self.arch, **kwargs)
        except TypeError as exc:
            if "img_size" not in str(exc):
                raise
            kwargs.pop("img_size")
            model = timm.create_model(self.arch, **kwargs)
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        # The size the model was built for; timm's resolve_data_config would report the
        # checkpoint's native size (518 for DINOv2) even when the model was built smaller.
        size = self.img_size or int(cfg.get("input_size", (3, 224, 224))[-1])
        spec = InputSpec(
            size=size,
            mean=tuple(cfg.get("mean", InputSpec.mean)),
            std=tuple(cfg.get("std", InputSpec.std)),
        )
        return TimmAdapter(model, spec, random_init=weights.random_init).eval()


def merged_state_dict(weights: ResolvedWeights) -> dict[str, torch.Tensor]:
    """Load every weight file of ``weights`` (sharded checkpoints) into one state dict."""
    if not weights.files:
        raise XaibenchError(f"no weight files found in {str(weights.path)!r}")
    state: dict[str, torch.Tensor] = {}
    for file in weights.files:
        state.update(load_state_dict(file))
    return state
