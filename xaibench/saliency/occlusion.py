"""Occlusion: how much the target logit drops when a window of the image is blanked out."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from xaibench.models.base import Classifier
from xaibench.saliency.base import SaliencyMethod, check_maps
from xaibench.saliency.gradient import BaselineKind, baseline_image, image_chunks


class Occlusion(SaliencyMethod):
    """Sliding-window occlusion (Zeiler & Fergus, ECCV 2014), via :class:`captum.attr.Occlusion`.

    Each window position replaces a patch with the baseline and records
    ``logit(image) - logit(occluded)``; a pixel's value is the mean over the windows covering it.
    Signed (positive where blanking lowers the target logit) unless ``absolute``. Needs no
    gradients, so it also probes models whose gradients are uninformative.

    Slow: one forward pass per window position and image — with the defaults (window 1/8 of the
    side, stride 1/16) that is 15 x 15 = 225 forward passes per image, about two orders of
    magnitude more than Grad-CAM's one forward and backward pass.
    ``internal_batch_size`` sets how many occluded images go through the model at once.
    """

    display_name = "Occlusion"
    citation = "Zeiler & Fergus, Visualizing and Understanding Convolutional Networks, ECCV 2014"
    method_name = "occlusion"

    window: float = Field(0.125, gt=0, description="Window side, in `units`.")
    stride: float = Field(0.0625, gt=0, description="Step between windows, in `units`.")
    units: Literal["fraction", "pixels"] = Field(
        "fraction", description="'fraction': of the image side; 'pixels': whole pixels."
    )
    baseline: BaselineKind = Field(
        "zero", description="What fills the window: 'zero' (black) or 'mean' (batch mean image)."
    )
    internal_batch_size: int = Field(
        64, ge=1, description="Occluded images per forward pass; bounds memory."
    )
    absolute: bool = Field(False, description="Return |attribution| instead of the signed value.")

    @model_validator(mode="after")
    def _check_units(self) -> Occlusion:
        if self.units == "fraction" and (self.window > 1 or self.stride > 1):
            raise ValueError("window and stride are fractions of the side: at most 1")
        if self.units == "pixels" and not (
            float(self.window).is_integer() and float(self.stride).is_integer()
        ):
            raise ValueError("window and stride in pixels must be whole numbers")
        return self

    def _pixels(self, value: float, side: int) -> int:
        px = round(value * side) if self.units == "fraction" else int(value)
        return max(1, min(side, px))

    def explain(
        self, model: Classifier, images: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """Occlusion maps ``[B, H, W]``."""
        from captum.attr import Occlusion as CaptumOcclusion

        h, w = images.shape[-2:]
        window = (1, self._pixels(self.window, h), self._pixels(self.window, w))
        strides = (1, self._pixels(self.stride, h), self._pixels(self.stride, w))
        base = baseline_image(self.baseline, images)
        occlusion = CaptumOcclusion(model)
        parts = []
        for s in image_chunks(len(images), 1, self.internal_batch_size):
            with torch.no_grad():
                attr = occlusion.attribute(
                    images[s].detach(),
                    sliding_window_shapes=window,
                    strides=strides,
                    baselines=base.expand_as(images[s]),
                    target=targets[s],
                    perturbations_per_eval=max(1, self.internal_batch_size // (s.stop - s.start)),
                )
            parts.append(attr)
        maps = torch.cat(parts)[:, 0]
        return check_maps(maps.abs() if self.absolute else maps, images, self.method_name)
