"""Gaussian-blur perturbation: the region loses its fine structure but keeps its coarse intensity.

Blurring is the "meaningful perturbation" of Fong & Vedaldi: unlike a constant fill it introduces
no artificial edge or out-of-distribution value, so a drop in the score is more plausibly caused by
the lost detail (trabecular texture, cortical edges) than by a shortcut on an unnatural patch. It
also removes less than a fill does: low frequencies, including the mean intensity of a large region,
survive, so Delta_region under ``blur`` is expected to be smaller than under ``mean``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from xaibench.perturbations.base import Perturbation

#: Kernel half-width in standard deviations (scipy.ndimage's default ``truncate``).
TRUNCATE = 4.0


def gaussian_kernel1d(sigma: float, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Return the normalised 1-D Gaussian kernel of standard deviation ``sigma`` pixels.

    The radius is ``int(4 * sigma + 0.5)``, as in ``scipy.ndimage.gaussian_filter``, so results can
    be checked against it. The weights are computed in float64 and then cast, so the kernel sums to
    one to the precision of ``dtype``.
    """
    radius = int(TRUNCATE * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return (kernel / kernel.sum()).to(dtype=dtype, device=device)


def _symmetric_indices(n: int, radius: int, device: torch.device) -> torch.Tensor:
    """Indices that pad an axis of length ``n`` by ``radius`` with half-sample symmetric reflection.

    This is scipy.ndimage's ``"reflect"`` mode (``d c b a | a b c d | d c b a``), which treats the
    image as continuing beyond its border the way it looks at the border. Unlike
    ``F.pad(mode="reflect")`` it works for any ``radius``, including one longer than the axis (a
    large sigma on a small image): the reflection is periodic with period ``2 n``.
    """
    i = torch.arange(-radius, n + radius, device=device)
    j = i.remainder(2 * n)
    return torch.where(j >= n, 2 * n - 1 - j, j)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur ``[B, C, H, W]`` images with an isotropic Gaussian of ``sigma`` pixels.

    Separable (one horizontal and one vertical 1-D convolution), batched, on the images' device,
    with the same kernel and border handling as ``scipy.ndimage.gaussian_filter(mode="reflect")``.
    Half-precision inputs are computed in float32 (CPU convolutions may not support them) and cast
    back.
    """
    dtype = images.dtype
    work = images.float() if dtype in (torch.float16, torch.bfloat16) else images
    b, c, h, w = work.shape
    kernel = gaussian_kernel1d(sigma, dtype=work.dtype, device=work.device)
    radius = (kernel.numel() - 1) // 2
    x = work.reshape(b * c, 1, h, w)
    x = x.index_select(3, _symmetric_indices(w, radius, work.device))
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    x = x.index_select(2, _symmetric_indices(h, radius, work.device))
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))
    return x.reshape(b, c, h, w).to(dtype)


class GaussianBlur(Perturbation):
    """Replace the region with a Gaussian-blurred copy of the image.

    ``sigma`` is a fraction of the image's shorter side, not pixels, so the same option removes the
    same anatomical scale whatever resolution a task loads its images at (0.04 is about 5 pixels at
    128 and 10 at 256, close to the 10 pixels at 224 of Fong & Vedaldi). The kernel is truncated at
    4 sigma and the image border is mirrored, as in ``scipy.ndimage.gaussian_filter``.

    With ``over="image"`` (the default and the usual definition) the whole image is blurred and the
    blurred pixels are pasted into the region, so pixels near the region's border mix in intensity
    from *outside* the region, up to about 2-3 sigma away. That is what a viewer with a blurred
    lens over the region would see, and it keeps the region's border seamless. It also means that
    in the complement test (the runner passes ``~mask``), the kept region leaks a blurred halo into
    the perturbed surroundings.

    ``over="region"`` uses only the region's own pixels (normalised convolution: the blur of the
    masked image divided by the blur of the mask), so nothing from outside enters the region and,
    for the complement test, nothing of the kept region leaks out. The price is a visible seam at
    the region's border, and for a thin region (a rib) little more than its own mean survives.
    """

    display_name = "Gaussian blur"
    citation = (
        "Fong & Vedaldi, Interpretable Explanations of Black Boxes by Meaningful Perturbation, "
        "ICCV 2017, arXiv:1704.03296"
    )

    sigma: float = Field(
        0.04,
        gt=0,
        le=1,
        description="Standard deviation of the Gaussian as a fraction of the image's shorter side.",
    )
    over: Literal["image", "region"] = Field(
        "image",
        description=(
            "Pixels the blur averages: the whole image (region border mixes in outside pixels) or "
            "only the region's own pixels (normalised convolution)."
        ),
    )

    def sigma_pixels(self, height: int, width: int) -> float:
        """Return the standard deviation in pixels for an image of ``height`` x ``width``."""
        return self.sigma * min(height, width)

    def apply(
        self, images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """Paste the blurred image into the masked pixels (deterministic: ``generator`` unused)."""
        m = masks.unsqueeze(1)
        sigma = self.sigma_pixels(images.shape[-2], images.shape[-1])
        if self.over == "image":
            blurred = gaussian_blur(images, sigma)
        else:
            # Normalised convolution in float64: dividing by a small blurred-mask weight (far from
            # the region's bulk) would otherwise amplify float32 rounding.
            weight = m.to(torch.float64)
            numerator = gaussian_blur(images.to(torch.float64) * weight, sigma)
            denominator = gaussian_blur(weight, sigma)
            # Inside the region the denominator is at least the kernel's centre weight (> 0).
            blurred = (numerator / denominator.clamp_min(1e-300)).to(images.dtype)
        # Positive weights summing to one keep values in [0, 1]; clamp away rounding overshoot.
        return torch.where(m, blurred.clamp(0.0, 1.0), images)
