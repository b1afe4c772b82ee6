"""Transformer attribution: gradient-weighted attention relevance and conservative LRP (ViTs).

Written here because captum has no transformer-specific attribution and neither method needs more
than the adapter's :meth:`~xaibench.models.base.BackboneAdapter.capture_attention`, which the timm,
open_clip and Hugging Face ViT adapters implement (CNNs and adapters without it are skipped with a
reason).

* :class:`CheferRelevance` (``chefer_gae``): Chefer, Gur & Wolf, ICCV 2021, eq. (5)-(6):
  ``R = I``; for every block, first to last, ``R <- R + mean_h((dy_t/dA ⊙ A)^+) R``; the class
  token's row of ``R`` over the patch tokens is the map. Their CVPR 2021 method ("Transformer
  Interpretability Beyond Attention Visualization") weights the *LRP relevance* of ``A`` (from
  their own LRP rules for every layer) instead of ``A`` itself and multiplies ``I + Ā`` over the
  blocks; the ICCV rule needs no LRP pass and is what is implemented and tested here.
* :class:`ConservativeLRP` (``cp_lrp``): Ali et al., ICML 2022: LRP computed as Gradient x Input
  after making the attention heads and LayerNorms locally linear, i.e. the softmax attention
  probabilities (AH rule) and LayerNorm's ``sqrt(var + eps)`` (LN rule) are treated as constants
  (detached). Element-wise activations (GELU) use AttnLRP's identity rule by default (Achtibat
  et al., ICML 2024: ``act(x) = x * (act(x) / x)`` with the ratio detached), which makes the
  propagation exactly conservative: on a model without biases the relevance sums to the logit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from xaibench.errors import XaibenchError
from xaibench.models.base import BackboneAdapter, Classifier
from xaibench.saliency.attention import Query, token_row_map
from xaibench.saliency.base import SaliencyMethod, check_maps


def gradient_weighted_relevance(
    attentions: list[torch.Tensor], gradients: list[torch.Tensor]
) -> torch.Tensor:
    """Chefer et al.'s relevance ``R`` ``[B, N, N]``: ``R <- R + mean_h((G ⊙ A)^+) R`` from ``I``.

    Args:
        attentions: Per-block attention probabilities ``[B, heads, N, N]``, first block first.
        gradients: The target score's gradient with respect to each of them.
    """
    if not attentions:
        raise XaibenchError("gradient-weighted attention relevance needs at least one layer")
    first = attentions[0]
    n = first.shape[-1]
    relevance = torch.eye(n, device=first.device).expand(first.shape[0], n, n)
    for attn, grad in zip(attentions, gradients, strict=True):
        weighted = (grad.float() * attn.float()).clamp(min=0).mean(dim=1)
        relevance = relevance + weighted @ relevance
    return relevance


def _captures_attention(backbone: Any) -> bool:
    method = getattr(type(backbone), "capture_attention", None)
    return method is not None and method is not BackboneAdapter.capture_attention


def _unsupported(model: nn.Module, what: str, architectures: frozenset[str]) -> str | None:
    backbone = getattr(model, "backbone", None)
    arch = getattr(backbone, "architecture", None)
    if arch not in architectures:
        return f"{what} needs attention maps, which {arch} backbones do not have"
    if not _captures_attention(backbone):
        return (
            f"{what} needs attention with gradients, which {type(backbone).__name__} does not "
            "expose (capture_attention)"
        )
    return None


def _target_score(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum over the batch of each image's target logit (images are independent in eval mode)."""
    return logits.gather(1, targets.view(-1, 1).to(logits.device)).sum()


class CheferRelevance(SaliencyMethod):
    """Gradient-weighted attention relevance (Chefer, Gur & Wolf, ICCV 2021); ViTs only.

    For every block the attention probabilities ``A`` (``[heads, N, N]``) are weighted by the
    target logit's gradient with respect to them, negative products are clipped, and heads are
    averaged: ``Ā = mean_h((∂y_t/∂A ⊙ A)^+)``. Starting from ``R = I`` each block adds
    ``Ā R``. The class token's row of ``R`` (or the mean of the prefix rows, or of all rows for
    models without prefix tokens such as SigLIP) over the patch tokens is reshaped to the patch
    grid and upsampled bilinearly. Non-negative and class-specific, unlike attention rollout.
    Costs one forward and one backward pass with attention weights materialised.
    """

    display_name = "Chefer et al. gradient-weighted attention relevance"
    citation = (
        "Chefer, Gur & Wolf, Generic Attention-model Explainability for Interpreting Bi-Modal "
        "and Encoder-Decoder Transformers, ICCV 2021 (rule of eq. 5-6; CVPR 2021's Transformer "
        "Interpretability Beyond Attention Visualization weights LRP relevance instead of A)"
    )
    method_name = "chefer_gae"
    architectures = frozenset({"vit"})

    query: Query = Field(
        "class",
        description="Row read out: the class token's ('class', the first prefix token) or the "
        "mean over class and register tokens ('prefix_mean'). Models without prefix tokens "
        "always use the mean over all token rows.",
    )

    def supports(self, model: Classifier) -> str | None:
        """A reason for backbones without attention with gradients (CNNs), else ``None``."""
        return _unsupported(model, "Chefer et al.'s relevance", self.architectures)

    def explain(
        self, model: Classifier, images: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """Relevance maps ``[B, H, W]`` for class ``targets[b]``, ≥ 0."""
        reason = self.supports(model)
        if reason is not None:
            raise XaibenchError(reason)
        attentions: list[torch.Tensor] = []

        def record(attn: torch.Tensor) -> torch.Tensor:
            attentions.append(attn)
            return attn

        # The input requires grad so the attention is in the graph even with frozen parameters;
        # torch.autograd.grad leaves no .grad on the parameters.
        x = images.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            with model.backbone.capture_attention(record):
                logits = model(x)
            if not attentions:
                raise XaibenchError(f"{self.method_name}: the backbone captured no attention")
            grads = torch.autograd.grad(
                _target_score(logits, targets), attentions, allow_unused=True
            )
        gradients = [
            torch.zeros_like(a) if g is None else g for a, g in zip(attentions, grads, strict=True)
        ]
        with torch.no_grad():
            relevance = gradient_weighted_relevance([a.detach() for a in attentions], gradients)
            maps = token_row_map(
                relevance,
                model.backbone.num_prefix_tokens,
                self.query,
                (images.shape[-2], images.shape[-1]),
                self.method_name,
            )
        return check_maps(maps, images, self.method_name)


# --- Conservative LRP: the detach rules as forward hooks ---------------------------------------

_TORCH_ACTIVATIONS = (nn.GELU, nn.ReLU, nn.SiLU, nn.Mish, nn.LeakyReLU, nn.ELU)
_ACTIVATION_NAMES = ("gelu", "relu", "silu", "swish", "mish", "activation")


def is_activation(module: nn.Module) -> bool:
    """Whether ``module`` is an element-wise activation the identity rule applies to.

    torch's activation modules, and parameter-free leaves whose class name says so
    (``transformers``' ``GELUActivation``/``GELUTanh``, open_clip's ``QuickGELU``).
    """
    if isinstance(module, _TORCH_ACTIVATIONS):
        return True
    name = type(module).__name__.lower()
    leaf = not any(True for _ in module.children()) and not any(True for _ in module.parameters())
    return leaf and any(part in name for part in _ACTIVATION_NAMES)


def _layer_norm_rule(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> torch.Tensor:
    """LN rule: the same LayerNorm with ``sqrt(var + eps)`` detached (centring stays linear)."""
    assert isinstance(module, nn.LayerNorm)
    x = inputs[0]
    dims = tuple(range(-len(module.normalized_shape), 0))
    centred = x - x.mean(dim=dims, keepdim=True)
    scale = torch.sqrt(x.var(dim=dims, unbiased=False, keepdim=True) + module.eps).detach()
    y = centred / scale
    if module.weight is not None:
        y = y * module.weight
    if module.bias is not None:
        y = y + module.bias
    return y.to(output.dtype)


def _identity_rule(_module: nn.Module, inputs: tuple[Any, ...], output: Any) -> torch.Tensor:
    """Identity rule: ``act(x) = x * (act(x) / x)`` with the ratio detached (0 where ``x = 0``)."""
    x = inputs[0]
    with torch.no_grad():
        gate = torch.where(x == 0, torch.zeros_like(output), output / x)
    return x * gate


def _multihead_attention_rule(
    module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], _output: Any
) -> tuple[torch.Tensor, None]:
    """AH rule for ``nn.MultiheadAttention`` (SigLIP's pooling head): softmax detached."""
    assert isinstance(module, nn.MultiheadAttention)
    names = ("query", "key", "value")
    q, k, v = (*args[:3], *(kwargs[n] for n in names[len(args[:3]) :]))
    masked = any(kwargs.get(n) is not None for n in ("key_padding_mask", "attn_mask"))
    if masked or len(args) > 3 or module.bias_k is not None or module.add_zero_attn:
        raise XaibenchError(
            "cp_lrp: nn.MultiheadAttention with masks, bias_k/bias_v or zero attention is not "
            "supported"
        )
    if not module.batch_first:
        q, k, v = (t.transpose(0, 1) for t in (q, k, v))
    if module._qkv_same_embed_dim:
        wq, wk, wv = module.in_proj_weight.chunk(3)
    else:
        wq, wk, wv = module.q_proj_weight, module.k_proj_weight, module.v_proj_weight
    biases = module.in_proj_bias.chunk(3) if module.in_proj_bias is not None else (None, None, None)
    heads = module.num_heads

    def project(t: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        out = F.linear(t, w, b)
        return out.reshape(out.shape[0], out.shape[1], heads, -1).transpose(1, 2)

    qh, kh, vh = (project(t, w, b) for t, w, b in zip((q, k, v), (wq, wk, wv), biases, strict=True))
    weights = ((qh @ kh.transpose(-2, -1)) * qh.shape[-1] ** -0.5).softmax(dim=-1).detach()
    out = (weights @ vh).transpose(1, 2).reshape(qh.shape[0], -1, module.embed_dim)
    out = F.linear(out, module.out_proj.weight, module.out_proj.bias)
    return (out if module.batch_first else out.transpose(0, 1)), None


@contextmanager
def conservative_rules(model: nn.Module, activation_rule: str) -> Iterator[None]:
    """Hooks that make every LayerNorm, ``nn.MultiheadAttention`` and activation locally linear.

    The blocks' own attention is detached through the adapter's ``capture_attention``. All hooks
    are removed on exit, even on exceptions.
    """
    handles: list[Any] = []
    try:
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                handles.append(module.register_forward_hook(_layer_norm_rule))
            elif isinstance(module, nn.MultiheadAttention):
                handles.append(
                    module.register_forward_hook(_multihead_attention_rule, with_kwargs=True)
                )
            elif activation_rule == "identity" and is_activation(module):
                handles.append(module.register_forward_hook(_identity_rule))
        yield
    finally:
        for handle in handles:
            handle.remove()


class ConservativeLRP(SaliencyMethod):
    """LRP for transformers by conservative propagation (Ali et al., ICML 2022); ViTs only.

    Gradient x Input at the network input (the preprocessed image) after the AH rule (attention
    probabilities detached, in every block and in attention-pooling heads) and the LN rule
    (LayerNorm's ``sqrt(var + eps)`` detached), summed over channels. With the default
    ``activation_rule='identity'`` (AttnLRP's rule for GELU) the network is linear given the
    detached quantities, so the relevance sums to the target logit minus what biases, position
    embeddings and class/register tokens contribute. Signed (``absolute`` for magnitudes). The
    map is relevance per input pixel of the network, resampled bilinearly to the raw image grid
    when the adapter resizes. Costs one forward and one backward pass.
    """

    display_name = "Conservative LRP for transformers (AH + LN rules)"
    citation = (
        "Ali et al., XAI for Transformers: Better Explanations through Conservative Propagation, "
        "ICML 2022; identity rule for activations: Achtibat et al., AttnLRP, ICML 2024"
    )
    method_name = "cp_lrp"
    architectures = frozenset({"vit"})

    activation_rule: Literal["identity", "gradient"] = Field(
        "identity",
        description="Element-wise activations (GELU): 'identity' passes relevance through "
        "unchanged (AttnLRP; conservative), 'gradient' keeps their ordinary gradient (Ali et "
        "al.'s code).",
    )
    absolute: bool = Field(False, description="Return the magnitude of the relevance.")

    def supports(self, model: Classifier) -> str | None:
        """A reason for backbones without attention with gradients, or non-Classifier models."""
        reason = _unsupported(model, "conservative LRP", self.architectures)
        if reason is None and not isinstance(model, Classifier):
            return "conservative LRP needs a backbone adapter with a linear head (Classifier)"
        return reason

    def explain(
        self, model: Classifier, images: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """Relevance maps ``[B, H, W]`` for class ``targets[b]``, signed unless ``absolute``."""
        reason = self.supports(model)
        if reason is not None:
            raise XaibenchError(reason)
        backbone = model.backbone
        x = backbone.preprocess(images).detach().requires_grad_(True)
        with torch.enable_grad():
            with ExitStack() as stack:
                stack.enter_context(backbone.capture_attention(lambda attn: attn.detach()))
                stack.enter_context(conservative_rules(model, self.activation_rule))
                logits = model.head(backbone.forward_features(x))
            (grad,) = torch.autograd.grad(_target_score(logits, targets), x)
        with torch.no_grad():
            relevance = (x * grad).sum(dim=1, keepdim=True)
            if relevance.shape[-2:] != images.shape[-2:]:
                relevance = F.interpolate(
                    relevance, size=images.shape[-2:], mode="bilinear", align_corners=False
                )
            maps = relevance[:, 0]
            if self.absolute:
                maps = maps.abs()
        return check_maps(maps, images, self.method_name)
