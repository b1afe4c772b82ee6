"""``zennit:<Composite>``: zennit's LRP and modified-gradient composites on CNN backbones.

zennit attaches a rule to each layer (a composite) and reads the relevance off the input's
modified gradient. What the bridge supplies, and why:

* **where relevance is read**: at the network's input, i.e. after the adapter's preprocessing
  (resize, grayscale repeat, mean/std). The classifier is run as ``head(forward_features(x))``
  on ``x = preprocess(images)``; the relevance ``x.grad`` is summed over channels and carried
  back to the raw grid by the *transpose* of the adapter's bilinear resize, which keeps its
  total (each resized pixel is a convex combination of raw ones). Differentiating through the
  normalisation instead would scale each channel's relevance by ``1/std``.
* **the output relevance**: one-hot on the explained class (zennit's own examples' convention),
  so the relevance of an image sums to about 1, not to the logit.
* **canonizers**: zennit's :class:`~zennit.canonizers.SequentialMergeBatchNorm` (folds each
  BatchNorm into the convolution before it) and :class:`TimmResNetCanonizer`: timm's ResNet
  blocks add their shortcut in place (``x += shortcut``) and name their activations
  ``act1``/``act2``/``act3``, so zennit's torchvision ``ResNetCanonizer`` does not match them
  and the residual sum would pass relevance by plain gradient to both branches.
  :class:`InplaceOff` switches in-place ReLUs off for the call (zennit's hooks need the
  activation's output intact).
* **EpsilonGammaBox's bounds** are the adapter's raw range pushed through its normalisation:
  ``low_c = (raw_low - mean_c) / std_c``, ``high_c = (raw_high - mean_c) / std_c`` per channel,
  the lowest and highest values the first convolution can receive.
* hooks and canonizers are removed in ``finally`` (zennit's composite context), so the model is
  left as found even when it raises.

The global pooling between the last stage and the head is a function, not a module, so zennit
passes relevance through it by its gradient (an even split over positions, which conserves it).
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from xaibench.bridges.zennit_names import NAMES
from xaibench.models.base import Classifier
from xaibench.saliency.base import SaliencyMethod, check_maps

_KNOWN = frozenset(entry.name for entry in NAMES)
#: Composite parameters the bridge supplies itself.
_SUPPLIED = frozenset({"self", "low", "high", "layer_map", "first_map", "canonizers"})


def _composite_class(name: str) -> Any:
    from zennit.composites import COMPOSITES

    return {cls.__name__: cls for cls in COMPOSITES.values()}[name]


def _residual_forward(block: Any, x: torch.Tensor) -> torch.Tensor:
    """A timm ResNet ``BasicBlock``/``Bottleneck`` forward with the shortcut added by ``Sum``.

    The same layers in the same order as timm's own forward; only ``x += shortcut`` becomes a
    ``zennit.layer.Sum`` module, which an LRP rule can attach to.
    """
    shortcut = x
    if hasattr(block, "conv3"):  # Bottleneck
        out = block.act1(block.bn1(block.conv1(x)))
        out = block.aa(block.act2(block.drop_block(block.bn2(block.conv2(out)))))
        out = block.bn3(block.conv3(out))
        last = block.act3
    else:  # BasicBlock
        out = block.aa(block.act1(block.drop_block(block.bn1(block.conv1(x)))))
        out = block.bn2(block.conv2(out))
        last = block.act2
    if block.se is not None:
        out = block.se(out)
    if block.drop_path is not None:
        out = block.drop_path(out)
    if block.downsample is not None:
        shortcut = block.downsample(x)
    return last(block.canonizer_sum(torch.stack([shortcut, out], dim=-1)))


def _timm_resnet_canonizer() -> Any:
    """A :class:`TimmResNetCanonizer` (built lazily: zennit is an optional extra)."""
    from timm.models.resnet import BasicBlock, Bottleneck
    from zennit.canonizers import AttributeCanonizer
    from zennit.layer import Sum

    class TimmResNetCanonizer(AttributeCanonizer):
        """Route timm ResNet blocks' residual sum through a ``Sum`` module (see module doc)."""

        def __init__(self) -> None:
            super().__init__(self._attributes)

        @staticmethod
        def _attributes(_name: str, module: nn.Module) -> dict[str, Any] | None:
            if not isinstance(module, (BasicBlock, Bottleneck)):
                return None
            return {
                "forward": lambda x, block=module: _residual_forward(block, x),
                "canonizer_sum": Sum(),
            }

        def copy(self) -> TimmResNetCanonizer:
            return TimmResNetCanonizer()

    return TimmResNetCanonizer()


def _inplace_off() -> Any:
    """An :class:`InplaceOff` canonizer (built lazily)."""
    from zennit.canonizers import Canonizer

    class InplaceOff(Canonizer):
        """Set ``inplace=False`` on every module that has the flag; restore it on removal."""

        def __init__(self) -> None:
            self.saved: list[tuple[nn.Module, bool]] = []

        def apply(self, root_module: nn.Module) -> list[Any]:
            instance = InplaceOff()
            instance.register(root_module)
            return [instance]

        def register(self, root_module: nn.Module) -> None:
            for module in root_module.modules():
                if getattr(module, "inplace", False) is True:
                    self.saved.append((module, True))
                    module.inplace = False  # type: ignore[assignment]

        def remove(self) -> None:
            for module, flag in self.saved:
                module.inplace = flag  # type: ignore[assignment]
            self.saved.clear()

        def copy(self) -> InplaceOff:
            return InplaceOff()

    return InplaceOff()


def canonizers() -> list[Any]:
    """The canonizers a timm CNN needs: in-place off, BatchNorm merge, timm residual sums."""
    from zennit.canonizers import SequentialMergeBatchNorm

    return [_inplace_off(), SequentialMergeBatchNorm(), _timm_resnet_canonizer()]


def box_bounds(model: Classifier) -> tuple[torch.Tensor, torch.Tensor]:
    """EpsilonGammaBox's ``(low, high)``: the raw range after normalisation, ``[1, C, 1, 1]``."""
    spec = model.backbone.input_spec
    lo, hi = spec.raw_range
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(1, -1, 1, 1)
    return (lo - mean) / std, (hi - mean) / std


def to_raw_grid(relevance: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """``[B, S, S]`` relevance on the network grid to ``[B, H, W]`` on the raw grid.

    The transpose of the adapter's bilinear resize (its vector-Jacobian product), so the total
    relevance of each image is kept.
    """
    if relevance.shape[-2:] == images.shape[-2:]:
        return relevance
    leaf = torch.zeros_like(images[:, :1], requires_grad=True)
    with torch.enable_grad():
        resized = F.interpolate(
            leaf, size=relevance.shape[-2:], mode="bilinear", align_corners=False
        )
        (back,) = torch.autograd.grad(resized, leaf, relevance[:, None])
    return back[:, 0]


class ZennitBridge(SaliencyMethod):
    """A zennit composite by name (``zennit:EpsilonPlusFlat``, ...), on CNN backbones.

    Maps are signed relevance (LRP) or modified gradients summed over the network's input
    channels, on the raw image grid.
    """

    display_name = "zennit"
    citation = (
        "Anders, Neumann, Samek, Müller, Lapuschkin, Software for Dataset-wide XAI: From Local "
        "Explanations to Global Insights with Zennit, CoRelAy, and ViRelAy, arXiv:2106.13200, 2021"
    )
    method_name = "zennit:"
    architectures: ClassVar[frozenset[str]] = frozenset({"cnn"})

    bridged: str = Field(description="zennit's composite class name (set by the registry).")
    composite_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments of the composite (epsilon, gamma, ...; checked by name).",
    )

    @model_validator(mode="after")
    def _check(self) -> ZennitBridge:
        if self.bridged not in _KNOWN:
            raise ValueError(f"bridged: unknown zennit composite {self.bridged!r}")
        params = inspect.signature(_composite_class(self.bridged).__init__).parameters
        valid = [p for p in params if p not in _SUPPLIED]
        unknown = sorted(set(self.composite_options) - set(valid))
        if unknown:
            raise ValueError(
                f"composite_options: unknown key(s) {', '.join(unknown)} for {self.bridged} "
                f"(valid: {', '.join(valid) or 'none'})"
            )
        return self

    @property
    def label(self) -> str:
        """The registry name, for messages."""
        return f"zennit:{self.bridged}"

    def composite(self, model: Classifier) -> Any:
        """The zennit composite, with the canonizers and (EpsilonGammaBox) the input bounds."""
        kwargs = dict(self.composite_options)
        if self.bridged == "EpsilonGammaBox":
            kwargs["low"], kwargs["high"] = box_bounds(model)
        return _composite_class(self.bridged)(canonizers=canonizers(), **kwargs)

    def explain(
        self, model: Classifier, images: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """Relevance ``[B, H, W]`` of class ``targets`` (one-hot output relevance)."""
        composite = self.composite(model)
        with torch.no_grad():
            x = model.backbone.preprocess(images.detach())
        x = x.detach().clone().requires_grad_(True)
        with composite.context(model), torch.enable_grad():
            logits = model.head(model.backbone.forward_features(x))
            onehot = F.one_hot(targets.to(logits.device), logits.shape[1]).to(logits.dtype)
            (relevance,) = torch.autograd.grad(logits, x, onehot)
        maps = to_raw_grid(relevance.detach().sum(dim=1), images)
        return check_maps(maps, images, self.label)
