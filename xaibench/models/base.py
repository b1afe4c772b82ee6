"""The backbone adapter contract and the classifier every strategy produces.

One adapter API for every architecture, so nothing downstream special-cases ViTs or CNNs:

* the adapter owns preprocessing (resize, grayscale-to-3-channel, mean/std) and checks on every
  batch that raw images arrive in the expected range — an error, never a warning, because a model
  fed 0-255 images still returns confident, wrong numbers;
* it returns pooled features for heads, and the spatial feature grid for CAM-style saliency
  (ViT tokens reshaped with the class and register tokens removed), so saliency methods never see a
  ``reshape_transform``;
* it names the modules that last-block tuning and LoRA touch.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from xaibench.component import Component
from xaibench.errors import InputRangeError, XaibenchError
from xaibench.models.weights import ResolvedWeights


@dataclass(frozen=True)
class InputSpec:
    """What a backbone expects, and what raw images must look like on arrival.

    Attributes:
        size: Square input side in pixels after resizing.
        mean: Per-channel normalisation mean (after scaling raw to [0, 1]).
        std: Per-channel normalisation standard deviation.
        channels: Channels the network takes; grayscale input is repeated to match.
        raw_range: Allowed raw intensity range of incoming images.
    """

    size: int
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    channels: int = 3
    raw_range: tuple[float, float] = (0.0, 1.0)


class BackboneAdapter(nn.Module):
    """Uniform wrapper around a feature extractor.

    Subclasses implement :meth:`forward_features`, :meth:`cam_layer`, :meth:`activation_to_grid`,
    :meth:`last_block_modules` and :meth:`lora_target_modules`; ViTs also :meth:`attention_maps`
    and :attr:`num_prefix_tokens`. ``nn.Module`` is no ``ABC``, so the ``abstractmethod`` markers
    are not enforced when an adapter is built: a method left out raises ``NotImplementedError``
    naming the subclass when it is first called (the conformance kit calls every one).

    ``forward`` (``adapter(images)``, what every strategy and saliency method calls) takes *raw*
    images ``[B, 1, H, W]`` in ``input_spec.raw_range``, runs :meth:`preprocess` (range check,
    resize, channel repeat, mean/std) and hands the result to :meth:`forward_features`, which
    returns pooled features ``[B, feature_dim]``. ``docs/plugins/backbones.md`` is the reference.
    """

    _mean: torch.Tensor
    _std: torch.Tensor

    #: Range tolerance for float rounding in raw images.
    RANGE_TOLERANCE: ClassVar[float] = 1e-4

    def __init__(
        self,
        input_spec: InputSpec,
        feature_dim: int,
        architecture: Literal["cnn", "vit"],
        *,
        random_init: bool,
    ) -> None:
        super().__init__()
        self.input_spec = input_spec
        self.feature_dim = feature_dim
        self.architecture = architecture
        self.random_init = random_init
        self.register_buffer(
            "_mean",
            torch.tensor(input_spec.mean, dtype=torch.float32).view(1, -1, 1, 1),
            persistent=False,
        )
        self.register_buffer(
            "_std",
            torch.tensor(input_spec.std, dtype=torch.float32).view(1, -1, 1, 1),
            persistent=False,
        )

    def check_raw(self, images: torch.Tensor) -> None:
        """Raise :class:`InputRangeError` unless ``images`` is ``[B, 1|C, H, W]`` in raw range."""
        if images.ndim != 4 or images.shape[1] not in (1, self.input_spec.channels):
            raise InputRangeError(f"expected images shaped [B, 1, H, W], got {tuple(images.shape)}")
        lo, hi = self.input_spec.raw_range
        with torch.no_grad():
            low, high = torch.aminmax(images.detach())
            mn, mx = float(low), float(high)
        if not (mn >= lo - self.RANGE_TOLERANCE and mx <= hi + self.RANGE_TOLERANCE):
            if mn != mn or mx != mx:  # NaN
                raise InputRangeError("images contain NaN")
            raise InputRangeError(
                f"images must be raw intensities in [{lo}, {hi}], "
                f"got values in [{mn:.4g}, {mx:.4g}] (are they already normalised, or 0-255?)"
            )

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Check the raw range, resize, repeat channels and normalise (differentiable)."""
        self.check_raw(images)
        size = self.input_spec.size
        x = images
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        if x.shape[1] == 1 and self.input_spec.channels != 1:
            x = x.expand(-1, self.input_spec.channels, -1, -1)
        # Subtracting makes a new tensor; dividing it in place saves allocating (and, for batches
        # of several MB, page-faulting in) a second one: up to 10x faster on a CPU, same values.
        # Differentiable: the division's gradient needs only ``_std``.
        normalised = x - self._mean
        return normalised.div_(self._std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features of raw images."""
        return self.forward_features(self.preprocess(images))

    @abstractmethod
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``[B, feature_dim]`` of *preprocessed* input.

        ``x`` is what :meth:`preprocess` made of the raw images: ``[B, input_spec.channels,
        size, size]``, normalised with ``input_spec.mean``/``std``. Callers never call this
        directly with raw images; they call the adapter, whose ``forward`` preprocesses first.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement forward_features()")

    @abstractmethod
    def cam_layer(self) -> nn.Module:
        """The module whose output CAM-style methods weight by gradients.

        For ViTs this is the input to the last block (normalised), because the class token's
        output after the last block receives no gradient from patch tokens.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement cam_layer()")

    @abstractmethod
    def activation_to_grid(self, activation: torch.Tensor) -> torch.Tensor:
        """Turn the output of :meth:`cam_layer` into a grid ``[B, C, h, w]``."""
        raise NotImplementedError(f"{type(self).__name__} must implement activation_to_grid()")

    @abstractmethod
    def last_block_modules(self) -> list[nn.Module]:
        """Modules trained by last-block tuning (final block and norm; last stage for CNNs)."""
        raise NotImplementedError(f"{type(self).__name__} must implement last_block_modules()")

    #: Tokens in front of the patch tokens in attention maps (class and register tokens).
    num_prefix_tokens: int = 0

    def attention_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Attention weights of every layer for raw images, where the architecture has them.

        Returns:
            One ``[B, heads, N, N]`` tensor per layer, rows summing to 1; ``N`` counts the
            :attr:`num_prefix_tokens` prefix tokens first, then the patch tokens row by row.

        Raises:
            XaibenchError: The architecture has no attention (CNNs).
        """
        raise XaibenchError(f"{type(self).__name__} ({self.architecture}) has no attention maps")

    @abstractmethod
    def lora_target_modules(self) -> list[str]:
        """Qualified names, relative to this adapter, of the ``nn.Linear`` layers LoRA adapts.

        By default the attention projections of every block; CNNs name ``nn.Conv2d`` layers
        (the last stage's convolutions), which peft adapts too. Each named module must be an
        ``nn.Linear`` that is *called* in the forward pass: a projection applied through
        ``F.linear(x, module.weight)`` (as ``nn.MultiheadAttention`` does with ``out_proj``)
        would silently receive no LoRA update.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement lora_target_modules()")

    # -- Attention with gradients, for transformer attribution (issue 22) ----------------------

    def capture_attention(
        self, capture: Callable[[torch.Tensor], torch.Tensor]
    ) -> AbstractContextManager[None]:
        """Route every block's attention probabilities through ``capture`` inside a ``with``.

        While the returned context is active, each forward pass calls ``capture(A)`` once per
        block, first block first, with the softmax attention ``A`` ``[B, heads, N, N]`` still in
        the autograd graph (token order as in :meth:`attention_maps`), and multiplies the values
        by what it returns (``A`` itself to record, ``A.detach()`` for LRP's attention rule).
        Fused-attention switches, hooks and attention implementations are restored on exit, even
        on exceptions. Used by :mod:`xaibench.saliency.transformer_attribution`.

        Raises:
            NotImplementedError: The adapter does not expose attention with gradients.
        """
        raise NotImplementedError(
            f"{type(self).__name__} ({self.architecture}) does not implement capture_attention"
        )


def tokens_to_grid(tokens: torch.Tensor, prefix: int, grid: tuple[int, int]) -> torch.Tensor:
    """ViT tokens ``[B, N, C]`` with ``prefix`` leading class/register tokens -> ``[B, C, h, w]``.

    Raises:
        ValueError: The number of patch tokens does not match ``grid`` (e.g. patch dropout).
    """
    h, w = grid
    if tokens.ndim != 3:
        raise ValueError(f"expected ViT tokens [B, N, C], got {tuple(tokens.shape)}")
    patches = tokens[:, prefix:, :]
    if patches.shape[1] != h * w:
        raise ValueError(
            f"expected {h}x{w} patch tokens after {prefix} prefix token(s), "
            f"got {patches.shape[1]} (tokens {tuple(tokens.shape)})"
        )
    return patches.transpose(1, 2).reshape(tokens.shape[0], -1, h, w)


class Classifier(nn.Module):
    """A backbone adapter plus a linear head: raw images in, class logits out."""

    def __init__(self, backbone: BackboneAdapter, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.feature_dim, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes]`` for raw images ``[B, 1, H, W]``."""
        return self.head(self.backbone(images))


class BackboneFactory(Component):
    """A registered backbone: validated options, where its weights are, and :meth:`build`.

    Registry names follow timm's ``arch.weights_tag``. Weights come from ``weights`` (a local
    file or folder) or the family's entry in the local Hugging Face cache; random
    initialisation only when ``random_init`` is set, and then it is marked in every output.
    """

    #: The option a ``family:model`` backbone name fills (``arch`` for timm), if any.
    spec_option: ClassVar[str | None] = None

    weights: str | None = Field(
        None, description="Local weights file or folder (default: the local Hugging Face cache)."
    )
    random_init: bool = Field(
        False, description="Use untrained weights (explicit; marked in every result)."
    )

    @abstractmethod
    def locate_weights(self, name: str) -> ResolvedWeights:
        """Find the weights without loading them.

        Args:
            name: The registry name, for messages.

        Raises:
            MissingWeightsError: Nothing found; the message lists where it looked.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement locate_weights()")

    @abstractmethod
    def build(self, weights: ResolvedWeights) -> BackboneAdapter:
        """Create the adapter with ``weights`` loaded (or random), in eval mode."""
        raise NotImplementedError(f"{type(self).__name__} must implement build()")

    def create_adapter(self, name: str = "backbone") -> BackboneAdapter:
        """Locate the weights and build the adapter in one call (library use, tests)."""
        return self.build(self.locate_weights(name))
