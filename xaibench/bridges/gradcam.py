"""``gradcam:<Name>``: pytorch-grad-cam's CAM methods through the backbone adapter.

pytorch-grad-cam asks its user for the target layer and, for a ViT, a ``reshape_transform``
that turns tokens into a grid: its most common complaint is getting that reshape wrong for
models with register tokens. Here both come from the adapter: the target layer is
:meth:`~xaibench.models.base.BackboneAdapter.cam_layer` and the reshape is
:meth:`~xaibench.models.base.BackboneAdapter.activation_to_grid` (class and register tokens
dropped), so every adapter that supports xaibench's own Grad-CAM supports these too.

What the bridge adds around a direct library call, and why:

* the target is :class:`~pytorch_grad_cam.utils.model_targets.ClassifierOutputTarget` of the
  explained class; the maps are the library's own (ReLU'd, min-max scaled to [0, 1] per image,
  resized to the raw image grid, which is the grid of the input it receives);
* under a frozen backbone the autograd graph starts at the CAM layer, as in xaibench's own
  Grad-CAM (pytorch-grad-cam records gradients only on outputs that require grad);
* the library's hooks are released, the model's modes and parameter gradients restored and
  AblationCAM's layer swap undone in ``finally``, so the model is left as found even on error
  (the library itself leaves its ablation layer in the model when a forward pass raises);
* NumPy's global RNG (RandomCAM, scikit-learn's randomized KernelPCA solver) is seeded from
  torch's for the call and restored, so the runner's seed fixes the maps;
* its tqdm progress bars are silenced (one per image for AblationCAM and ScoreCAM);
* ``aug_smooth``'s x1.1 brightness copy is clipped to the raw range in the forward pass
  (straight-through), because the adapter refuses out-of-range images.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from xaibench.bridges.gradcam_names import NAMES
from xaibench.errors import XaibenchError
from xaibench.models.base import Classifier
from xaibench.saliency.base import SaliencyMethod, check_maps
from xaibench.saliency.gradient import numpy_rng_from_torch

#: Constructor parameters the bridge supplies (or refuses) itself.
_SUPPLIED = frozenset(
    {"self", "model", "target_layers", "reshape_transform", "ablation_layer", "base_method",
     "batch_size", "kwargs", "args", "tta_transforms", "detach", "compute_input_gradient",
     "uses_gradients"}
)  # fmt: skip
#: ``FinerCAM.forward`` keyword arguments a user may set through ``library_options``.
_FINER_FORWARD = ("alpha", "comparison_categories")
#: Methods with a ``batch_size`` (AblationCAM, SESS: constructor; ScoreCAM: attribute).
_BATCHED = frozenset({"AblationCAM", "ScoreCAM", "SESS"})
#: Meta-methods that run another CAM method (``base_method``).
_META = frozenset({"FinerCAM", "RefineCAM", "SESS"})
#: Methods pytorch-grad-cam 1.5.7 cannot run on a ViT, and why.
_CNN_ONLY = {
    "FullGrad": (
        "FullGrad sums bias gradients of Conv2d/BatchNorm2d layers only; a ViT's biases sit in "
        "Linear and LayerNorm layers, so it would see only the patch embedding"
    ),
    "ShapleyCAM": (
        "pytorch-grad-cam's ShapleyCAM does not apply reshape_transform to the activations it "
        "weights, so ViT tokens fail"
    ),
}
_KNOWN = frozenset(entry.name for entry in NAMES)


def _library_class(name: str) -> Any:
    import pytorch_grad_cam

    return getattr(pytorch_grad_cam, name)


class _RawRangeClip(nn.Module):
    """The classifier on its input clipped to the raw range, gradient passed straight through."""

    def __init__(self, model: Classifier) -> None:
        super().__init__()
        self.model = model
        self.low, self.high = model.backbone.input_spec.raw_range

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x + (x.clamp(self.low, self.high) - x).detach())


@contextmanager
def _quiet_tqdm() -> Iterator[None]:
    """Replace the ``tqdm`` module seen by AblationCAM and ScoreCAM with a silent one."""
    from pytorch_grad_cam import ablation_cam, score_cam

    silent = SimpleNamespace(tqdm=lambda iterable, *_a, **_k: iterable)
    saved = [(module, module.tqdm) for module in (ablation_cam, score_cam)]
    for module, _ in saved:
        module.tqdm = silent
    try:
        yield
    finally:
        for module, original in saved:
            module.tqdm = original


@contextmanager
def _model_restored(
    model: nn.Module, layer: nn.Module, ablation: nn.Module | None
) -> Iterator[None]:
    """Restore hooks, modes, parameter gradients and an ablated layer of ``model`` on exit."""
    from pytorch_grad_cam.utils.find_layers import replace_layer_recursive

    modules = list(model.modules())
    hooks = [(m, set(m._forward_hooks)) for m in modules]
    modes = [(m, m.training) for m in modules]
    grads = [(p, p.grad) for p in model.parameters()]
    try:
        yield
    finally:
        if ablation is not None and any(m is ablation for m in model.modules()):
            replace_layer_recursive(model, ablation, layer)
        for module, keep in hooks:
            for key in set(module._forward_hooks) - keep:
                del module._forward_hooks[key]
        for module, training in modes:
            module.training = training
        for param, grad in grads:
            param.grad = grad


def _graph_start(_module: nn.Module, _inputs: object, output: Any) -> Any:
    """Let gradients start at the CAM layer when nothing below it requires grad.

    pytorch-grad-cam records a gradient only on a layer output that requires grad; under a
    frozen backbone (a linear probe) none does. As in xaibench's own Grad-CAM, the graph then
    starts here (a copy, so an in-place operation downstream stays legal).
    """
    if isinstance(output, torch.Tensor) and not output.requires_grad and torch.is_grad_enabled():
        return output.detach().requires_grad_(True).clone()
    return None


def _release(cam: Any) -> None:
    """Release the hooks of ``cam`` and of the CAMs a meta-method holds."""
    owners = [cam, getattr(cam, "base_cam", None), *getattr(cam, "base_cam_per_layer", ())]
    for owner in owners:
        recorder = getattr(owner, "activations_and_grads", None)
        if recorder is not None:
            recorder.release()


class GradCAMBridge(SaliencyMethod):
    """A pytorch-grad-cam method by name (``gradcam:GradCAM``, ``gradcam:ScoreCAM``, ...).

    Maps are the library's: non-negative, min-max scaled to [0, 1] per image, on the raw grid.
    EigenCAM, KPCA_CAM, FEM and SegEigenCAM's principal component do not depend on the target.
    """

    display_name = "pytorch-grad-cam"
    citation = (
        "Gildenblat and contributors, PyTorch library for CAM methods, 2021, "
        "https://github.com/jacobgil/pytorch-grad-cam"
    )
    method_name = "gradcam:"

    bridged: str = Field(description="pytorch-grad-cam's class name (set by the registry).")
    aug_smooth: bool = Field(
        False, description="Test-time augmentation smoothing (flip, x0.9/1/1.1 brightness)."
    )
    eigen_smooth: bool = Field(
        False, description="Replace the channel sum by the first principal component."
    )
    batch_size: int | None = Field(
        None,
        ge=1,
        description="AblationCAM/ScoreCAM/SESS forward batch (default: the library's 32/16/32).",
    )
    base_method: str | None = Field(
        None, description="FinerCAM/RefineCAM/SESS: the pytorch-grad-cam method they run."
    )
    library_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Further keyword arguments of the library class (checked by name).",
    )

    @model_validator(mode="after")
    def _check(self) -> GradCAMBridge:
        name = self.bridged
        if name not in _KNOWN:
            raise ValueError(f"bridged: unknown pytorch-grad-cam method {name!r}")
        if self.batch_size is not None and name not in _BATCHED:
            raise ValueError(f"batch_size: {name} has none (only {', '.join(sorted(_BATCHED))})")
        if self.base_method is not None:
            if name not in _META:
                raise ValueError(
                    f"base_method: {name} runs no other method (only {', '.join(sorted(_META))})"
                )
            if self.base_method in _META or self.base_method not in _KNOWN:
                valid = sorted(_KNOWN - _META)
                raise ValueError(
                    f"base_method: {self.base_method!r} is not a CAM method "
                    f"(valid: {', '.join(valid)})"
                )
        if self.aug_smooth and name in _META:
            raise ValueError(f"aug_smooth: {name} does not take it (a meta-method)")
        valid = self._valid_options()
        unknown = sorted(set(self.library_options) - set(valid))
        if unknown:
            raise ValueError(
                f"library_options: unknown key(s) {', '.join(unknown)} for {name} "
                f"(valid: {', '.join(valid) or 'none'})"
            )
        return self

    def _valid_options(self) -> list[str]:
        """Keyword arguments of the library class a user may pass, by name."""
        params = inspect.signature(_library_class(self.bridged).__init__).parameters
        names = [p for p in params if p not in _SUPPLIED]
        if self.bridged == "FinerCAM":
            names += list(_FINER_FORWARD)
        return names

    @property
    def label(self) -> str:
        """The registry name, for messages."""
        return f"gradcam:{self.bridged}"

    def supports(self, model: Classifier) -> str | None:
        """Refuse architectures the method cannot run on, with the reason."""
        reason = super().supports(model)
        if reason is not None:
            return reason
        if model.backbone.architecture == "vit":
            for name in (self.bridged, self.base_method):
                if name in _CNN_ONLY:
                    return f"{self.label}: {_CNN_ONLY[name]}"
        try:
            model.backbone.cam_layer()
        except XaibenchError as exc:
            return f"{self.label}: {exc}"
        return None

    def _constructor_kwargs(self, vit: bool) -> tuple[dict[str, Any], nn.Module | None]:
        from pytorch_grad_cam import AblationLayer, AblationLayerVit

        kwargs = {k: v for k, v in self.library_options.items() if k not in _FINER_FORWARD}
        ablation: nn.Module | None = None
        if self.bridged == "AblationCAM":
            # A fresh layer per call: the library's default is one instance shared by all.
            ablation = AblationLayerVit() if vit else AblationLayer()
            kwargs["ablation_layer"] = ablation
        if self.batch_size is not None and self.bridged in ("AblationCAM", "SESS"):
            kwargs["batch_size"] = self.batch_size
        if self.base_method is not None:
            kwargs["base_method"] = _library_class(self.base_method)
        return kwargs, ablation

    def explain(
        self, model: Classifier, images: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """The library's maps ``[B, H, W]`` for ``targets``, on the raw image grid."""
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        cls = _library_class(self.bridged)
        layer = model.backbone.cam_layer()
        kwargs, ablation = self._constructor_kwargs(model.backbone.architecture == "vit")
        net: nn.Module = _RawRangeClip(model) if self.aug_smooth else model
        if self.bridged == "FullGrad":
            # FullGrad picks its own layers (every conv/BN bias) and maps conv outputs.
            layers, reshape = [], None
        else:
            layers, reshape = [layer], model.backbone.activation_to_grid
        x = images.detach().clone()
        with _model_restored(model, layer, ablation), numpy_rng_from_torch(), _quiet_tqdm():
            cam = None
            try:
                # Registered before the library's hooks, so they see its output (the sweep
                # in _model_restored removes it).
                layer.register_forward_hook(_graph_start)
                cam = cls(net, layers, reshape_transform=reshape, **kwargs)
                if self.bridged == "ScoreCAM" and self.batch_size is not None:
                    cam.batch_size = self.batch_size
                with torch.enable_grad():
                    if self.bridged == "FinerCAM":
                        out = self._finer(cam, x, targets)
                    elif self.bridged in _META:
                        out = cam(x, [ClassifierOutputTarget(int(t)) for t in targets],
                                  eigen_smooth=self.eigen_smooth)  # fmt: skip
                    else:
                        out = cam(
                            x,
                            [ClassifierOutputTarget(int(t)) for t in targets],
                            aug_smooth=self.aug_smooth,
                            eigen_smooth=self.eigen_smooth,
                        )
            finally:
                if cam is not None:
                    _release(cam)
        maps = torch.from_numpy(np.asarray(out, dtype=np.float32)).to(images.device)
        return check_maps(maps, images, self.label)

    def _finer(self, cam: Any, x: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
        """FinerCAM per group of images sharing a target (its ``target_idx`` is per call).

        FinerCAM compares the target with its most similar classes, which it finds itself only
        when ``targets`` is None; ``target_idx`` then names the explained class for the batch.
        """
        forward = {k: self.library_options[k] for k in _FINER_FORWARD if k in self.library_options}
        out = np.zeros((x.shape[0], x.shape[-2], x.shape[-1]), dtype=np.float32)
        for target in torch.unique(targets).tolist():
            rows = (targets == target).nonzero()[:, 0]
            part = x.detach()[rows].clone().requires_grad_(True)
            out[rows.cpu().numpy()] = cam(
                part, None, eigen_smooth=self.eigen_smooth, target_idx=int(target), **forward
            )
        return out


class GradCAMControlBridge(GradCAMBridge):
    """pytorch-grad-cam's RandomCAM: random channel weights, a control map (seeded)."""

    control: ClassVar[bool] = True
