"""A torchvision DenseNet behind xaibench's backbone contract: a factory and its adapter.

Written from ``docs/plugins/backbones.md`` alone, as a template for wrapping any CNN. The factory
finds the weights (without loading them) and builds the adapter; the adapter owns the pooled
features, the CAM layer and the modules that last-block tuning and LoRA train. Preprocessing
(range check, resize, grayscale to RGB, mean/std) is inherited from ``BackboneAdapter``.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from xaibench.models.base import BackboneAdapter, BackboneFactory, InputSpec
from xaibench.models.weights import ResolvedWeights, load_state_dict, resolve_weights


class DenseNetAdapter(BackboneAdapter):
    """``torchvision.models.DenseNet.features`` with ReLU and global average pooling on top."""

    def __init__(self, features: nn.Sequential, input_spec: InputSpec, *, random_init: bool):
        norm: nn.BatchNorm2d = features[-1]  # torchvision names it ``norm5``
        super().__init__(input_spec, norm.num_features, "cnn", random_init=random_init)
        self.features = features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``[B, C]`` of preprocessed input, as torchvision's ``forward``.

        The ReLU is not in place (torchvision's is): an in-place ReLU would overwrite the CAM
        layer's output, which Grad-CAM keeps.
        """
        return F.adaptive_avg_pool2d(F.relu(self.features(x)), 1).flatten(1)

    def cam_layer(self) -> nn.Module:
        """The final batch norm: the last spatial map before pooling, ``[B, C, h, w]``."""
        return self.features[-1]

    def activation_to_grid(self, activation: torch.Tensor) -> torch.Tensor:
        """A CNN's activation is already a grid."""
        return activation

    def last_block_modules(self) -> list[nn.Module]:
        """The last dense block and the final norm."""
        return [self.features[-2], self.features[-1]]

    def lora_target_modules(self) -> list[str]:
        """Every convolution of the last dense block (peft adapts ``nn.Conv2d`` too)."""
        last, block = list(self.features.named_children())[-2]
        return [
            f"features.{last}.{name}"
            for name, module in block.named_modules()
            if isinstance(module, nn.Conv2d)
        ]


def _torchvision_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename old torchvision checkpoint keys (``norm.1``) to the module names (``norm1``)."""
    return {re.sub(r"\.(norm|relu|conv)\.(\d)\.", r".\1\2.", k): v for k, v in state.items()}


class DenseNetBackbone(BackboneFactory):
    """A torchvision DenseNet; ``densenet121`` by default, any size through the options.

    Weights: a torchvision checkpoint given as ``weights`` (``densenet121-a639ec97.pth``), or
    ``random_init``. ImageNet mean and std, as torchvision's weights were trained with.
    """

    display_name = "DenseNet (torchvision, example plugin)"
    citation = (
        "Huang, Liu, van der Maaten, Weinberger, Densely Connected Convolutional Networks, "
        "CVPR 2017"
    )

    growth_rate: int = Field(32, ge=1, description="Channels each dense layer adds.")
    block_config: tuple[int, ...] = Field((6, 12, 24, 16), description="Layers per dense block.")
    num_init_features: int = Field(64, ge=1, description="Channels of the stem convolution.")
    bn_size: int = Field(4, ge=1, description="Bottleneck width, in multiples of growth_rate.")
    img_size: int = Field(224, ge=16, le=2048, description="Square input side in pixels.")

    def locate_weights(self, name: str) -> ResolvedWeights:
        """The ``weights`` file, or random weights when ``random_init`` is set."""
        return resolve_weights(
            name,
            weights=self.weights,
            hf_repo=None,
            random_init=self.random_init,
            hint="pass torchvision's checkpoint (densenet121-a639ec97.pth) as option 'weights'",
        )

    def build(self, weights: ResolvedWeights) -> BackboneAdapter:
        """Create the network (drawing random weights from torch's seeded generator), load, wrap."""
        from torchvision.models import DenseNet

        net = DenseNet(
            growth_rate=self.growth_rate,
            block_config=self.block_config,  # type: ignore[arg-type]
            num_init_features=self.num_init_features,
            bn_size=self.bn_size,
        )
        if not weights.random_init:
            state = {}
            for file in weights.files:
                state.update(_torchvision_keys(load_state_dict(file)))
            net.load_state_dict(state)
        spec = InputSpec(size=self.img_size)  # ImageNet mean/std, 3 channels, raw range [0, 1]
        return DenseNetAdapter(net.features, spec, random_init=weights.random_init).eval()
