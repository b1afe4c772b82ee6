"""The adapter around a bare Hugging Face ``transformers`` ViT encoder, and its family layouts.

:class:`HFVisionAdapter` turns a loaded DINOv2, DINOv2-with-registers or SigLIP vision encoder
into a backbone adapter: the token-to-grid reshape with the class and register tokens dropped,
the CAM layer and the pooled feature per family. The module paths of each hand-written family
(``transformers`` >= 5 layout) are the ``_Family`` records here. Encoders are built and loaded by
:class:`~xaibench.models.hf_backbone.HFVisionBackbone`; every other ``AutoModel`` vision encoder
is laid out by :mod:`xaibench.models.hf_generic`.
"""

from __future__ import annotations

import dataclasses
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from xaibench.errors import XaibenchError
from xaibench.models.attention_capture import Capture, hf_attention_capture
from xaibench.models.base import BackboneAdapter, InputSpec, tokens_to_grid

Pooling = Literal["cls", "mean", "pooler"]


_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class _Family:
    """How one ``transformers`` family is laid out (module paths relative to the HF model).

    Attributes:
        name: The ``architecture`` option value.
        model_types: ``config.model_type`` values that belong to the family.
        config_class: ``transformers`` config class for models built from scratch.
        model_class: ``transformers`` model class (the bare encoder, no head).
        layers: Path of the ``nn.ModuleList`` of transformer blocks.
        norm1: Name, inside a block, of the layer norm in front of attention (the CAM layer).
        final_norm: Path of the norm applied to the last block's output.
        attention: Names, inside a block, of the attention ``nn.Linear`` layers LoRA adapts.
        class_token: Whether the token sequence starts with a class token.
        interpolate_flag: Whether the forward needs ``interpolate_pos_encoding=True`` at a
            non-native size (DINOv2 interpolates on its own).
        mean: Default normalisation mean when the checkpoint has no preprocessor config.
        std: Default normalisation std.
        unused_weights: Weights the encoder has but never uses without special inputs, so a
            checkpoint may lack them (DINOv2's ``mask_token``, used only with
            ``bool_masked_pos`` in masked-image pretraining).
    """

    name: str
    model_types: tuple[str, ...]
    config_class: str
    model_class: str
    layers: str
    norm1: str
    final_norm: str
    attention: tuple[str, ...]
    class_token: bool
    interpolate_flag: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]
    unused_weights: tuple[str, ...] = ()


_DINOV2 = _Family(
    name="dinov2",
    model_types=("dinov2",),
    config_class="Dinov2Config",
    model_class="Dinov2Model",
    layers="encoder.layer",
    norm1="norm1",
    final_norm="layernorm",
    attention=("attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.o_proj"),
    class_token=True,
    interpolate_flag=False,
    mean=_IMAGENET_MEAN,
    std=_IMAGENET_STD,
    unused_weights=("embeddings.mask_token",),
)

_FAMILIES: dict[str, _Family] = {
    "dinov2": _DINOV2,
    # Same layout; the register tokens only change the prefix count (read from the config).
    "dinov2_with_registers": dataclasses.replace(
        _DINOV2,
        name="dinov2_with_registers",
        model_types=("dinov2_with_registers",),
        config_class="Dinov2WithRegistersConfig",
        model_class="Dinov2WithRegistersModel",
    ),
    "siglip": _Family(
        name="siglip",
        # "siglip" is the full vision+text model; only its vision_config/vision tower is used.
        model_types=("siglip", "siglip_vision_model"),
        config_class="SiglipVisionConfig",
        model_class="SiglipVisionModel",
        layers="encoder.layers",
        norm1="layer_norm1",
        final_norm="post_layernorm",
        attention=(
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.out_proj",
        ),
        class_token=False,
        interpolate_flag=True,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
    ),
}


def _family_of(model_type: str) -> _Family | None:
    return next((f for f in _FAMILIES.values() if model_type in f.model_types), None)


def _grid_side(image_size: Any, what: str) -> int:
    """A square side from an ``int`` or ``[h, w]`` config value."""
    if isinstance(image_size, (list, tuple)):
        if len(image_size) != 2 or image_size[0] != image_size[1]:
            raise XaibenchError(f"only square inputs are supported, the {what} is {image_size}")
        image_size = image_size[0]
    return int(image_size)


class HFVisionAdapter(BackboneAdapter):
    """Adapter around a bare ``transformers`` ViT encoder (DINOv2, DINOv2 with registers, SigLIP).

    Attributes:
        model: The ``transformers`` model (``Dinov2Model``, ``Dinov2WithRegistersModel`` or
            ``SiglipVisionModel``), so module names relative to the adapter start with ``model.``.
        family: The architecture family name.
        pooling: How :meth:`forward_features` pools tokens.
        patch_size: Side of one patch in pixels.
        num_prefix_tokens: Tokens in front of the patch tokens (class and register tokens).
        native_size: The input size the position embeddings were made for.
    """

    def __init__(
        self,
        model: nn.Module,
        family: _Family,
        input_spec: InputSpec,
        pooling: Pooling,
        *,
        random_init: bool,
    ) -> None:
        config: Any = getattr(model, "config")  # noqa: B009 (transformers attribute)
        super().__init__(input_spec, int(config.hidden_size), "vit", random_init=random_init)
        # Typed loosely: the module layout differs by family and is reached by path.
        self.model: Any = model
        self._family = family
        self.family = family.name
        self.pooling: Pooling = pooling
        self.patch_size = _grid_side(config.patch_size, "patch size")
        self.num_prefix_tokens = int(family.class_token) + int(
            getattr(config, "num_register_tokens", 0) or 0
        )
        self.native_size = _grid_side(config.image_size, "config image_size")

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patch grid ``(h, w)`` at the adapter's input size."""
        side = self.input_spec.size // self.patch_size
        return side, side

    def _layers(self) -> nn.ModuleList:
        layers: nn.ModuleList = self.model.get_submodule(self._family.layers)
        return layers

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``[B, hidden_size]`` of preprocessed input (see ``pooling``)."""
        kwargs: dict[str, Any] = {}
        if self._family.interpolate_flag and tuple(x.shape[-2:]) != (
            self.native_size,
            self.native_size,
        ):
            # SigLIP adds fixed-size position embeddings unless told to resample them.
            kwargs["interpolate_pos_encoding"] = True
        out = self.model(pixel_values=x, **kwargs)
        if self.pooling == "pooler":
            pooled: torch.Tensor = out.pooler_output
            return pooled
        hidden: torch.Tensor = out.last_hidden_state  # after the final norm
        if self.pooling == "cls":
            return hidden[:, 0]
        return hidden[:, self.num_prefix_tokens :].mean(dim=1)

    def attention_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Attention weights of every layer, from transformers' eager attention.

        SDPA never materialises the weights; the model is switched to eager attention for this
        call only and restored afterwards.
        """
        x = self.preprocess(images)
        kwargs: dict[str, Any] = {"output_attentions": True}
        if self._family.interpolate_flag and tuple(x.shape[-2:]) != (
            self.native_size,
            self.native_size,
        ):
            kwargs["interpolate_pos_encoding"] = True
        previous = self.model.config._attn_implementation
        self.model.set_attn_implementation("eager")
        try:
            out = self.model(pixel_values=x, **kwargs)
        finally:
            self.model.set_attn_implementation(previous)
        return [a.detach() for a in out.attentions]

    def capture_attention(self, capture: Capture) -> AbstractContextManager[None]:
        """Each layer's softmax attention through ``capture``, via a capturing eager attention."""
        return hf_attention_capture(self.model, capture)

    def cam_layer(self) -> nn.Module:
        """The last block's first layer norm: the normalised tokens entering its attention."""
        return self._layers()[-1].get_submodule(self._family.norm1)

    def activation_to_grid(self, activation: torch.Tensor) -> torch.Tensor:
        """Drop the class/register tokens and reshape ``[B, N, C]`` to ``[B, C, h, w]``."""
        return tokens_to_grid(activation, self.num_prefix_tokens, self.grid_size)

    def last_block_modules(self) -> list[nn.Module]:
        """Last block and final norm, plus SigLIP's attention-pooling head when it pools."""
        modules: list[nn.Module] = [
            self._layers()[-1],
            self.model.get_submodule(self._family.final_norm),
        ]
        if self.pooling == "pooler" and self._family.name == "siglip":
            modules.append(self.model.head)
        return modules

    def lora_target_modules(self) -> list[str]:
        """Every block's query, key, value and attention-output ``nn.Linear``.

        Raises:
            XaibenchError: A name does not resolve to an ``nn.Linear`` (a ``transformers``
                release changed the module layout).
        """
        names = [
            f"model.{self._family.layers}.{i}.{part}"
            for i in range(len(self._layers()))
            for part in self._family.attention
        ]
        for name in names:
            try:
                module = self.get_submodule(name)
            except AttributeError:
                module = None
            if not isinstance(module, nn.Linear):
                raise XaibenchError(
                    f"{name!r} is not an nn.Linear in this transformers version; "
                    "the LoRA targets of the family need updating"
                )
        return names
