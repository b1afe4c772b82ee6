"""A user's own classifier, or a registered backbone, as the model saliency methods take.

Saliency methods take a :class:`~xaibench.models.base.Classifier`: raw images ``[B, 1, H, W]``
in, logits out, and a ``backbone`` that names the CAM layer, turns its output into a grid and
gives the raw intensity range the noise-adding methods clip to. :func:`as_classifier` gives a
user's ``nn.Module`` that shape (:class:`UserClassifier`), so ``xaibench.explain`` runs the same
method code the benchmark runs, on any model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from xaibench.errors import XaibenchError
from xaibench.models.base import Classifier, InputSpec, tokens_to_grid


class UserBackbone:
    """What saliency methods ask of a backbone, for a user's model.

    Attributes:
        architecture: ``"cnn"`` (attention rollout, which needs a ViT's attention maps, is
            refused with the method's own reason).
        input_spec: No raw range to clip to: a user's images may be normalised.
        num_prefix_tokens: Class and register tokens of a ViT ``target_layer``.
    """

    architecture = "cnn"

    def __init__(
        self, net: nn.Module, target_layer: nn.Module | str | None, prefix_tokens: int
    ) -> None:
        self.net = net
        self.target_layer = target_layer
        self.num_prefix_tokens = prefix_tokens
        self.input_spec = InputSpec(size=0, channels=1, raw_range=(-math.inf, math.inf))

    def cam_layer(self) -> nn.Module:
        """The ``target_layer`` given to ``xaibench.explain``.

        Raises:
            XaibenchError: None was given, or no module of the model has that name.
        """
        layer = self.target_layer
        if layer is None:
            raise XaibenchError(
                "CAM methods need target_layer=<module or its name> on your own model "
                "(e.g. the last convolutional stage)"
            )
        if isinstance(layer, str):
            try:
                return self.net.get_submodule(layer)
            except AttributeError:
                raise XaibenchError(f"target_layer: the model has no module {layer!r}") from None
        if not isinstance(layer, nn.Module):
            raise XaibenchError(
                f"target_layer: expected a module or its name, not {type(layer).__name__}"
            )
        return layer

    def activation_to_grid(self, activation: torch.Tensor) -> torch.Tensor:
        """``[B, C, h, w]`` as is; ViT tokens ``[B, N, C]`` as a square grid after the prefix."""
        if activation.ndim == 4:
            return activation
        if activation.ndim == 3:
            side = math.isqrt(activation.shape[1] - self.num_prefix_tokens)
            return tokens_to_grid(activation, self.num_prefix_tokens, (side, side))
        raise XaibenchError(
            f"target_layer: output {tuple(activation.shape)} is neither [B, C, h, w] nor tokens "
            "[B, N, C]"
        )

    def attention_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Raises: a user's model does not expose its attention."""
        raise XaibenchError("attention maps need a registered ViT backbone")


class UserClassifier(nn.Module):
    """A user's classifier taking ``[B, 1, H, W]`` images: repeated to its input channels."""

    def __init__(self, net: nn.Module, target_layer: Any, prefix_tokens: int) -> None:
        super().__init__()
        self.net = net
        first = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
        self.channels = first.in_channels if first is not None else 1
        self.backbone = UserBackbone(net, target_layer, prefix_tokens)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, classes]``.

        Raises:
            XaibenchError: The model does not return a ``[B, classes]`` tensor.
        """
        x = images.expand(-1, self.channels, -1, -1) if self.channels != 1 else images
        logits = self.net(x)
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)
            raise XaibenchError(f"the model must return logits [B, classes], not {shape}")
        return logits


def as_classifier(
    model: nn.Module | str,
    components: Any,
    *,
    target_layer: Any,
    prefix_tokens: int,
    num_classes: int,
    backbone_options: Mapping[str, Any],
    seed: int,
) -> nn.Module:
    """``model`` (a module or a registered backbone name) as a classifier for saliency methods.

    A registered backbone gets a linear head of ``num_classes`` initialised from ``seed``
    (untrained: maps of an untrained head, for sanity checks and for comparing methods).

    Raises:
        XaibenchError: An unknown backbone or option, or ``model`` is neither.
    """
    if isinstance(model, str):
        if target_layer is not None:
            raise XaibenchError("target_layer: a registered backbone names its own CAM layer")
        factory = components.backbones.create(model, dict(backbone_options))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return Classifier(factory.create_adapter(model), num_classes)
    if backbone_options:
        raise XaibenchError("backbone_options: only for a registered backbone name")
    if not isinstance(model, nn.Module):
        raise XaibenchError(
            f"model: expected a torch.nn.Module or a registered backbone name, not "
            f"{type(model).__name__}"
        )
    return UserClassifier(model, target_layer, prefix_tokens)
