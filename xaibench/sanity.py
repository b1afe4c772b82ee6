"""Sanity checks for saliency methods (Adebayo et al., NeurIPS 2018), run on a sample per cell.

A saliency method that returns nearly the same map for a trained model and for one whose
weights are random, or for the explained class and another class, is explaining the image (its
edges, its intensity), not the model. Two checks catch that:

* **cascading model-parameter randomisation** — parameters are re-drawn group by group from the
  output towards the input (the head first, then the backbone's layers in reverse order of
  execution), the maps recomputed after each step and compared with the originals by Spearman
  rank correlation per image; the method passes when the similarity after the last step (the
  whole model random) is below the threshold;
* **target randomisation** — maps for a randomly chosen *other* class compared with the maps for
  the explained class. Adebayo et al.'s data-randomisation test retrains on permuted labels,
  which costs a full training per cell; explaining a different class is the affordable check of
  the same property (the map must depend on what is explained), and it is what runs here.

Re-drawn parameters keep their tensor's scale: ``N(0, s)`` with ``s`` the tensor's standard
deviation, or its mean magnitude for constant tensors (LayerNorm weights of ones), so the random
model stays numerically alive instead of collapsing to zero maps. Buffers (BatchNorm statistics)
are kept. The checks run on a deep copy: the cell's model is never modified.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.stats import rankdata
from torch import nn

from xaibench.models.base import Classifier
from xaibench.saliency.base import SaliencyMethod


def spearman_per_image(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Spearman rank correlation between maps ``a[i]`` and ``b[i]`` (ties get average ranks).

    Returns:
        ``[B]`` float64; NaN where either map is constant (no ranking to compare).
    """
    x = rankdata(a.flatten(1).double().cpu().numpy(), axis=1)
    y = rankdata(b.flatten(1).double().cpu().numpy(), axis=1)
    x = x - x.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=1, keepdims=True)
    denom = np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (x * y).sum(axis=1) / denom
    return np.where(denom > 0, rho, np.nan)


def _mean(values: np.ndarray) -> float | None:
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else None


@dataclass
class SanityResult:
    """The outcome of both checks for one method on one cell.

    Attributes:
        cascade: ``(parameter group, mean Spearman similarity)`` after each randomisation step,
            head first.
        model_similarity: Similarity after the last step (the whole model random).
        target_similarity: Similarity between maps for the explained and for another class.
        threshold: Pass when a similarity is below it.
        images: How many images the checks ran on.
    """

    cascade: list[tuple[str, float | None]] = field(default_factory=list)
    model_similarity: float | None = None
    target_similarity: float | None = None
    threshold: float = 0.5
    images: int = 0

    @property
    def model_passed(self) -> bool | None:
        """Whether the maps changed enough when the model was randomised."""
        if self.model_similarity is None:
            return None
        return self.model_similarity < self.threshold

    @property
    def target_passed(self) -> bool | None:
        """Whether the maps changed enough when another class was explained."""
        if self.target_similarity is None:
            return None
        return self.target_similarity < self.threshold


def parameter_groups(model: Classifier, images: torch.Tensor, steps: int) -> list[list[str]]:
    """Names of modules with parameters, output to input, in ``steps`` cascading groups.

    The first group is the head; the backbone's modules are ordered by reverse execution order
    (found with one forward pass) and split into ``steps - 1`` contiguous groups.
    """
    order: list[str] = []
    handles = []
    for name, module in model.backbone.named_modules():
        if any(True for _ in module.parameters(recurse=False)):
            handles.append(module.register_forward_hook(lambda m, i, o, n=name: order.append(n)))
    try:
        with torch.no_grad():
            model(images[:1])
    finally:
        for handle in handles:
            handle.remove()
    seen: list[str] = []
    for name in reversed(order):  # a module called twice keeps its last call
        if name not in seen:
            seen.append(name)
    backbone_groups = [
        [f"backbone.{n}" if n else "backbone" for n in chunk]
        for chunk in np.array_split(np.array(seen, dtype=object), max(1, steps - 1))
        if len(chunk)
    ]
    return [["head"], *[list(g) for g in backbone_groups]]


@torch.no_grad()
def randomise(module: nn.Module, generator: torch.Generator) -> None:
    """Re-draw ``module``'s own parameters from ``N(0, s)`` at the tensor's scale."""
    for param in module.parameters(recurse=False):
        values = param.detach().float()
        scale = float(values.std()) if values.numel() > 1 else 0.0
        if not scale > 0:
            scale = float(values.abs().mean()) or 0.02
        draw = torch.randn(param.shape, generator=generator, dtype=torch.float32) * scale
        param.copy_(draw.to(param.device, param.dtype))


def run_sanity_checks(
    model: Classifier,
    method: SaliencyMethod,
    images: torch.Tensor,
    targets: torch.Tensor,
    num_classes: int,
    *,
    steps: int,
    threshold: float,
    generator: torch.Generator,
) -> SanityResult:
    """Both checks for ``method`` on ``images`` (explaining ``targets``)."""
    result = SanityResult(threshold=threshold, images=len(images))
    original = method.explain(model, images, targets).cpu()

    other = (targets.cpu() + torch.randint(1, num_classes, targets.shape, generator=generator)) % (
        num_classes
    )
    swapped = method.explain(model, images, other.to(targets.device)).cpu()
    result.target_similarity = _mean(spearman_per_image(original, swapped))

    clone = copy.deepcopy(model).eval()
    for group in parameter_groups(clone, images, steps):
        for name in group:
            randomise(clone.get_submodule(name), generator)
        maps = method.explain(clone, images, targets).cpu()
        result.cascade.append((group[0], _mean(spearman_per_image(original, maps))))
    result.model_similarity = result.cascade[-1][1] if result.cascade else None
    return result
