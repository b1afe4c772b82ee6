"""The saliency-method contract.

``explain(model, images, targets) -> maps [B, H, W]``: batched, in the raw image grid (so maps and
region masks align without the caller resizing), deterministic for a seed, and leaving no hooks or
gradient state on the model, even when it raises.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import torch

from xaibench.component import Component
from xaibench.models.base import Classifier


class SaliencyMethod(Component):
    """Base class of saliency methods.

    Attributes:
        architectures: Backbone architectures the method supports; the runner skips the others
            with a recorded reason instead of crashing.
        control: ``True`` for baselines that do not explain the model (random, edge, centre
            maps): a method must beat them to mean anything, and leaderboards label them so.
        method_name: The built-in registry name, used to name the method in errors.
    """

    architectures: ClassVar[frozenset[str]] = frozenset({"cnn", "vit"})
    control: ClassVar[bool] = False
    method_name: ClassVar[str] = ""

    def supports(self, model: Classifier) -> str | None:
        """Return ``None`` when ``model`` is supported, else the reason it is not."""
        arch = model.backbone.architecture
        if arch not in self.architectures:
            return f"{type(self).__name__} does not support {arch} backbones"
        return None

    @abstractmethod
    def explain(
        self, model: Classifier, images: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """Return attribution maps ``[B, H, W]`` (float) for class ``targets[b]`` of image ``b``.

        Args:
            model: Classifier in eval mode taking raw images.
            images: ``[B, 1, H, W]`` raw images.
            targets: ``[B]`` class indices to explain.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement explain()")


def check_maps(maps: torch.Tensor, images: torch.Tensor, method: str) -> torch.Tensor:
    """Validate a method's output shape and finiteness, returning it detached as float32."""
    expected = (images.shape[0], images.shape[-2], images.shape[-1])
    if tuple(maps.shape) != expected:
        raise ValueError(
            f"saliency method {method} returned {tuple(maps.shape)}, expected {expected}"
        )
    if maps.is_floating_point() and maps.numel():
        # NaN propagates to both extremes and an infinity is one of them: one reduction, several
        # times cheaper than isfinite over every value (a boolean map per pixel, then all()).
        low, high = torch.aminmax(maps.detach())
        if not (torch.isfinite(low) and torch.isfinite(high)):
            raise ValueError(f"saliency method {method} returned non-finite values")
    return maps.detach().float()
