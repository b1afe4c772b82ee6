"""Sanity checks for saliency methods (Adebayo et al., NeurIPS 2018), run on a sample per cell.

A saliency method that returns nearly the same map for a trained model and for one whose
weights are random, or for the explained class and another class, is explaining the image (its
edges, its intensity), not the model. Two checks catch that:

* **cascading model-parameter randomisation** — parameters are re-drawn group by group from the
  output towards the input (the head first, then the backbone's layers in reverse order of
  execution), the maps recomputed after each step and compared with the originals by Spearman
  rank correlation per image, the similarity after the last step (the whole model random)
  deciding the check;
* **target randomisation** — maps for a randomly chosen *other* class compared with the maps for
  the explained class. Adebayo et al.'s data-randomisation test retrains on permuted labels,
  which costs a full training per cell; explaining a different class is the affordable check of
  the same property (the map must depend on what is explained), and it is what runs here.

Both are judged against the method's own **run-to-run similarity**: the same images explained a
second time on the unchanged model, with the global random state reseeded differently (so the
``random`` control, SmoothGrad's noise and any other draw come out new; a deterministic method
gives 1). A low similarity alone proves nothing — two runs of a noise map are as dissimilar as a
noise map before and after randomisation. A check passes when

    similarity < threshold - (1 - run_to_run),

that is, when the maps moved away from the originals by more than ``1 - threshold`` beyond the
method's own run-to-run spread (``run_to_run - similarity > 1 - threshold``). For a deterministic
method (``run_to_run == 1``) this is exactly ``similarity < threshold``; a map that does not
depend on the model or the class (run-to-run and randomised similarity alike) fails.

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
        run_to_run: Similarity between two runs on the unchanged model (different random
            state): 1 for a deterministic method, near 0 for noise.
        threshold: A check passes when its similarity is below ``threshold - (1 -
            run_to_run)`` (see the module docstring).
        images: How many images the checks ran on.
    """

    cascade: list[tuple[str, float | None]] = field(default_factory=list)
    model_similarity: float | None = None
    target_similarity: float | None = None
    run_to_run: float | None = None
    threshold: float = 0.5
    images: int = 0

    def passes(self, similarity: float | None) -> bool | None:
        """The rule: ``similarity < threshold - (1 - run_to_run)``; None when either is undefined.

        Written so that ``run_to_run == 1`` gives exactly ``similarity < threshold`` (the
        rule without the run-to-run reference) in floating point.
        """
        if similarity is None or self.run_to_run is None:
            return None
        return bool(similarity < self.threshold - (1.0 - self.run_to_run))

    @property
    def model_passed(self) -> bool | None:
        """Whether the maps changed clearly more under model randomisation than run to run."""
        return self.passes(self.model_similarity)

    @property
    def target_passed(self) -> bool | None:
        """Whether the maps changed clearly more for another class than run to run."""
        return self.passes(self.target_similarity)


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


def explain_again(
    model: Classifier,
    method: SaliencyMethod,
    images: torch.Tensor,
    targets: torch.Tensor,
    seed: int,
) -> torch.Tensor:
    """``method``'s maps once more with the global random state reseeded to ``seed``.

    Methods draw their noise from torch's global generators (the CPU one, and the device's for
    noise drawn on it). Both are forked: reseeded for this call and restored afterwards, so the
    rest of the run draws exactly what it drew before this repeat existed.
    """
    device = images.device
    devices: list[int] = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.random.default_generator.manual_seed(seed)
        if devices:
            torch.cuda.manual_seed(seed)
        return method.explain(model, images, targets).cpu()


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
    """Both checks for ``method`` on ``images`` (explaining ``targets``), with run to run.

    The run-to-run similarity is what both checks are judged against. ``generator`` draws the
    other class, the random parameters and, last (so the draws before it are what they were
    before the run-to-run reference existed), the repeat's seed.
    """
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

    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    repeat = explain_again(model, method, images, targets, seed)
    result.run_to_run = _mean(spearman_per_image(original, repeat))
    return result
