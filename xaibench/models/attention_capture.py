"""Attention probabilities *with* gradients, per ViT family, for transformer attribution.

:meth:`~xaibench.models.base.BackboneAdapter.capture_attention` routes every block's softmax
attention ``A`` (``[B, heads, N, N]``) through a callable ``capture(A) -> A'`` for the forward
passes run inside a ``with`` block, and ``A'`` is what multiplies the values. Chefer et al.'s
relevance records ``A`` (still in the autograd graph) and returns it unchanged; conservative LRP
returns ``A.detach()`` (Ali et al.'s AH rule). The per-family plumbing is here, so the adapters
stay small:

* timm ``Attention``: its fused SDPA path never materialises ``A``; the explicit path is switched
  on and ``A`` is replaced at the output of ``attn_drop`` (a forward hook), as
  :meth:`~xaibench.models.timm_backbone.TimmAdapter.attention_maps` does;
* open_clip towers: :class:`~xaibench.models.open_clip_adapter.SplitProjectionAttention` calls its
  ``capture`` attribute in its explicit path;
* Hugging Face ``transformers``: an attention implementation registered with
  ``AttentionInterface`` (eager attention with the capture applied), switched on for the call.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from xaibench.errors import XaibenchError

#: What an adapter applies to each block's attention probabilities while capturing.
Capture = Callable[[torch.Tensor], torch.Tensor]

#: The ``transformers`` attention implementation that applies the active capture.
HF_CAPTURE_IMPLEMENTATION = "xaibench_capture"

_HF_CAPTURE: contextvars.ContextVar[Capture | None] = contextvars.ContextVar(
    "xaibench_hf_capture", default=None
)


@contextmanager
def timm_attention_capture(blocks: Sequence[Any], capture: Capture) -> Iterator[None]:
    """Capture the attention of timm ``Attention`` blocks (explicit softmax path forced).

    Raises:
        XaibenchError: A block's attention has no ``attn_drop`` (not timm's ``Attention``).
    """
    handles: list[Any] = []
    fused: list[tuple[Any, bool]] = []

    def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        return capture(output)

    try:
        for block in blocks:
            attn: Any = block.attn
            if not hasattr(attn, "attn_drop"):
                raise XaibenchError(f"{type(attn).__name__} exposes no attention weights")
            fused.append((attn, getattr(attn, "fused_attn", False)))
            attn.fused_attn = False
            handles.append(attn.attn_drop.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()
        for attn, value in fused:
            attn.fused_attn = value


def _hf_capture_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **_kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``transformers``' eager attention with the active capture applied to the probabilities."""
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    scores = (query @ key.transpose(-2, -1)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = scores.softmax(dim=-1)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    capture = _HF_CAPTURE.get()
    if capture is not None:
        weights = capture(weights)
    out = (weights @ value).transpose(1, 2).contiguous()
    return out, weights


_registered = False


@contextmanager
def hf_attention_capture(model: Any, capture: Capture) -> Iterator[None]:
    """Switch a ``transformers`` model to the capturing attention for the ``with`` block.

    Raises:
        XaibenchError: The model cannot switch its attention implementation.
    """
    global _registered
    if not hasattr(model, "set_attn_implementation"):
        raise XaibenchError(f"{type(model).__name__} cannot switch its attention implementation")
    if not _registered:
        from transformers import AttentionInterface

        AttentionInterface.register(HF_CAPTURE_IMPLEMENTATION, _hf_capture_attention)
        _registered = True
    previous = model.config._attn_implementation
    token = _HF_CAPTURE.set(capture)
    try:
        model.set_attn_implementation(HF_CAPTURE_IMPLEMENTATION)
        yield
    finally:
        _HF_CAPTURE.reset(token)
        model.set_attn_implementation(previous)
