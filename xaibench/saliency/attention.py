"""Attention rollout for vision transformers.

Written here because captum has no attention-flow methods; it needs only the adapter's
``attention_maps``, which every ViT family in xaibench implements.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from xaibench.errors import XaibenchError
from xaibench.models.base import Classifier
from xaibench.saliency.base import SaliencyMethod, check_maps


def attention_rollout(layers: Sequence[torch.Tensor]) -> torch.Tensor:
    """Roll attention out through the layers: ``R = A_L ... A_2 A_1``, ``[B, N, N]``.

    Each layer's ``A`` is its heads' mean attention plus the identity (the residual connection
    carries a token's own information forward), with rows renormalised to sum to 1.

    Args:
        layers: Per-layer attention ``[B, heads, N, N]``, first layer first.
    """
    if not layers:
        raise XaibenchError("attention rollout needs at least one attention layer")
    result: torch.Tensor | None = None
    for attn in layers:
        a = attn.float().mean(dim=1)
        a = a + torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
        a = a / a.sum(dim=-1, keepdim=True)
        result = a if result is None else a @ result
    assert result is not None
    return result


Query = Literal["class", "prefix_mean"]


def token_row_map(
    relevance: torch.Tensor, prefix: int, query: Query, size: tuple[int, int], method: str
) -> torch.Tensor:
    """The read-out row of a token relevance ``[B, N, N]`` as a bilinear map ``[B, H, W]``.

    The class token's row (``query='class'``), the mean of the prefix-token rows
    (``'prefix_mean'``), or the mean of all rows when there are no prefix tokens; patch columns
    only, reshaped to the square patch grid.
    """
    if prefix == 0:
        row = relevance.mean(dim=1)
    elif query == "class":
        row = relevance[:, 0]
    else:
        row = relevance[:, :prefix].mean(dim=1)
    patches = row[:, prefix:]
    side = math.isqrt(patches.shape[1])
    if side * side != patches.shape[1]:
        raise XaibenchError(
            f"{method} expects a square patch grid, got {patches.shape[1]} patch tokens after "
            f"{prefix} prefix token(s)"
        )
    grid = patches.reshape(-1, 1, side, side)
    return F.interpolate(grid, size=size, mode="bilinear", align_corners=False)[:, 0]


class AttentionRollout(SaliencyMethod):
    """Attention rollout (Abnar & Zuidema, ACL 2020); ViTs only.

    Multiplies the head-averaged, identity-augmented attention of every layer, takes the row of
    the class token (or the mean of the prefix-token rows, or of all rows for models without
    prefix tokens, such as SigLIP) restricted to the patch tokens, reshapes it to the patch grid
    and upsamples it bilinearly to the image. Non-negative. It ignores ``targets``: rollout says
    where information flows from, not which class it supports, so it is the same map for every
    class. Costs one forward pass with attention weights materialised.
    """

    display_name = "Attention rollout"
    citation = "Abnar & Zuidema, Quantifying Attention Flow in Transformers, ACL 2020"
    method_name = "attention_rollout"
    architectures = frozenset({"vit"})

    query: Query = Field(
        "class",
        description="Row read out: the class token's ('class', the first prefix token) or the "
        "mean over class and register tokens ('prefix_mean'). Models without prefix tokens "
        "always use the mean over all token rows.",
    )

    def supports(self, model: Classifier) -> str | None:
        """A reason for backbones without attention (CNNs), else ``None``."""
        arch = model.backbone.architecture
        if arch not in self.architectures:
            return f"attention rollout needs attention maps, which {arch} backbones do not have"
        return None

    def explain(
        self, model: Classifier, images: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """Rollout maps ``[B, H, W]`` (the same for every target)."""
        reason = self.supports(model)
        if reason is not None:
            raise XaibenchError(reason)
        with torch.no_grad():
            rollout = attention_rollout(model.backbone.attention_maps(images))
        size = (images.shape[-2], images.shape[-1])
        maps = token_row_map(
            rollout, model.backbone.num_prefix_tokens, self.query, size, "attention rollout"
        )
        return check_maps(maps, images, self.method_name)
