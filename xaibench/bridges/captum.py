"""captum's attribution classes as saliency methods, by name: ``captum:<Class>``.

One component, :class:`CaptumMethod`, runs every class listed in
:data:`xaibench.bridges.captum_names.NAMES`; the preset option ``bridged`` names the class. What
xaibench supplies, so no user code is needed:

* the model (raw images in, logits out) and the target class of each image;
* for layer methods (``Layer*``, ``InternalInfluence``, ``GuidedGradCam``) the backbone adapter's
  :meth:`~xaibench.models.base.BackboneAdapter.cam_layer`; the layer attribution is turned into
  the adapter's grid by ``activation_to_grid`` (ViT class and register tokens dropped), summed
  over channels and upsampled bilinearly to the image grid, as xaibench's own Grad-CAM does;
* baselines as named choices (``zero``, ``mean`` image of the batch, or a constant intensity)
  rather than tensors;
* for the perturbation methods a feature mask of ``grid x grid`` square patches (captum's default,
  one feature per pixel, means one forward pass per pixel or worse), ``Occlusion``'s window and
  stride as fractions of the side, and for the layer perturbation methods one feature per grid
  location of the layer (all its channels together);
* seeded randomness: a seed drawn from torch's global generator (which the runner seeds per
  cell) seeds torch, NumPy and Python for the call, and their states are restored afterwards.

Every other keyword goes through ``init`` (the class's constructor) and ``attribute`` (its
``attribute`` method), validated against their signatures when the method is built.

``NoiseTunnel`` is an option (``noise_tunnel: smoothgrad``), not a name: it wraps another method.
"""

from __future__ import annotations

import inspect
import random
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, JsonValue, model_validator
from torch import nn

from xaibench.bridges.captum_names import NAMES
from xaibench.models.base import Classifier
from xaibench.saliency.base import SaliencyMethod, check_maps
from xaibench.saliency.gradient import clipped_forward

#: A baseline: a black image, the batch's mean image, or a constant raw intensity.
BaselineChoice = Literal["zero", "mean"] | float

#: Methods whose ``baselines`` is a distribution to sample from (two or more references).
DISTRIBUTION_BASELINES = frozenset(
    {"DeepLiftShap", "GradientShap", "LayerDeepLiftShap", "LayerGradientShap"}
)

#: Methods that draw random numbers (their maps depend on the seed).
RANDOM = frozenset(
    {
        "GradientShap",
        "LayerGradientShap",
        "FeaturePermutation",
        "LayerFeaturePermutation",
        "ShapleyValueSampling",
        "Lime",
        "KernelShap",
    }
)

#: Methods whose results rest on overriding ``nn.ReLU`` modules' gradients.
RELU_OVERRIDE = frozenset({"GuidedBackprop", "Deconvolution", "GuidedGradCam"})

#: DeepLift's rescale rules: defined for the nonlinear modules captum lists, not for attention's
#: products of activations (a ViT's attention weights times its values).
DEEPLIFT = frozenset({"DeepLift", "DeepLiftShap", "LayerDeepLift", "LayerDeepLiftShap"})

#: Methods that interpolate or average the layer attribution as a CNN feature map ``[B, C, h, w]``
#: (over its trailing dimensions), which for ViT tokens ``[B, N, C]`` averages over channels.
CNN_LAYER_ONLY = frozenset({"LayerGradCam", "GuidedGradCam"})

#: Methods that permute features across the images of a batch.
PERMUTATION = frozenset({"FeaturePermutation", "LayerFeaturePermutation"})

#: Layer perturbation methods: one layer perturbation per forward pass (captum does not expand
#: the targets when it batches several).
LAYER_PERTURBATION = frozenset({"LayerFeatureAblation", "LayerFeaturePermutation"})

#: Default patch grid (``grid x grid`` features) of the mask-based perturbation methods.
DEFAULT_GRID = 8
#: Grids of the costlier methods: ``ShapleyValues`` enumerates every ordering of the features
#: (``F!``), ``ShapleyValueSampling`` takes ``n_samples`` (25) orderings, ``F + 1`` passes each.
GRID_OF = {"ShapleyValues": 2, "ShapleyValueSampling": 4}

#: Keywords xaibench supplies itself, and why a user cannot set them.
SUPPLIED_INIT = {
    "forward_func": "xaibench supplies the classifier",
    "model": "xaibench supplies the classifier",
    "layer": "xaibench supplies the backbone adapter's cam_layer()",
    "device_ids": "xaibench runs the model on one device",
    "attr_method": "xaibench supplies the method",
}
SUPPLIED_ATTRIBUTE = {
    "inputs": "xaibench supplies the images",
    "target": "xaibench supplies each image's target class",
    "additional_forward_args": "the classifier takes the images only",
    "baselines": "use the option 'baselines' (zero, mean or a number)",
    "feature_mask": "use the option 'grid' (a patch grid)",
    "layer_mask": "xaibench ablates each location of the layer's grid",
    "layer_baselines": "the layer baseline is captum's default (zero)",
    "sliding_window_shapes": "use the options 'window' and 'stride'",
    "strides": "use the options 'window' and 'stride'",
    "return_convergence_delta": "xaibench records maps, not deltas",
    "attribute_to_layer_input": "maps come from the layer's output grid",
    "return_input_shape": "maps have the image's shape",
    "custom_attribution_func": "not expressible as an option",
    "grad_kwargs": "not expressible as an option",
}


def bridged_names() -> tuple[str, ...]:
    """Every class name the bridge runs."""
    return tuple(entry.name for entry in NAMES)


@cache
def _captum_class(name: str) -> Any:
    import captum.attr

    return getattr(captum.attr, name)


def _parameters(func: Callable[..., Any], skip_self: bool = True) -> list[str]:
    """Named parameters of ``func`` (no ``*args``/``**kwargs``)."""
    params = list(inspect.signature(func).parameters.values())
    if skip_self:
        params = params[1:]
    return [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _check_keys(
    given: dict[str, Any], valid: list[str], supplied: dict[str, str], where: str
) -> None:
    """One-line error for a key xaibench supplies or the signature lacks."""
    for key in given:
        if key in supplied and key in valid + list(SUPPLIED_INIT):
            raise ValueError(f"{where} option {key!r} is set by xaibench: {supplied[key]}")
        if key not in valid:
            allowed = [k for k in valid if k not in supplied]
            raise ValueError(
                f"{where} has no option {key!r} (valid: {', '.join(allowed) or 'none'})"
            )


class CaptumMethod(SaliencyMethod):
    """A captum attribution class run on raw images ``[B, 1, H, W]`` -> maps ``[B, H, W]``.

    See the module docstring for what xaibench supplies. Maps are captum's values (signed where
    captum's are) unless ``absolute``.
    """

    display_name = "captum"
    citation = (
        "Kokhlikyan et al., Captum: A unified and generic model interpretability library for "
        "PyTorch, arXiv:2009.07896, 2020"
    )
    method_name = "captum"

    bridged: str = Field(description="The captum.attr class to run.")
    init: dict[str, JsonValue] = Field(
        default_factory=dict, description="Keyword arguments of the class's constructor."
    )
    attribute: dict[str, JsonValue] = Field(
        default_factory=dict, description="Keyword arguments of its attribute() method."
    )
    baselines: tuple[BaselineChoice, ...] | None = Field(
        None,
        description="Reference image(s): 'zero', 'mean' (the batch's mean image) or a raw "
        "intensity; default ('zero',), and ('zero', 'mean') for the SHAP distributions.",
    )
    grid: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Patch grid side of the feature mask (perturbation methods): grid x grid "
        "features; default 8, 4 for ShapleyValueSampling, 2 for ShapleyValues (F! orderings).",
    )
    window: float = Field(0.125, gt=0, le=1, description="Occlusion window, fraction of the side.")
    stride: float = Field(0.0625, gt=0, le=1, description="Occlusion stride, fraction of the side.")
    noise_tunnel: Literal["smoothgrad", "smoothgrad_sq", "vargrad"] | None = Field(
        None, description="Wrap the method in captum's NoiseTunnel of this type."
    )
    nt_samples: int = Field(10, ge=1, le=4096, description="NoiseTunnel: noisy copies per image.")
    nt_stdev: float = Field(
        0.15, ge=0, le=1, description="NoiseTunnel: noise std, fraction of the raw range."
    )
    internal_batch_size: int = Field(
        64, ge=1, description="Rows per forward pass (integration steps, perturbations, noise)."
    )
    absolute: bool = Field(False, description="Return |attribution| instead of the signed value.")

    @model_validator(mode="after")
    def _check(self) -> CaptumMethod:
        if self.bridged not in bridged_names():
            raise ValueError(
                f"bridged: captum has no image attribution class {self.bridged!r} "
                f"(known: {', '.join(bridged_names())})"
            )
        cls = _captum_class(self.bridged)
        name = self.bridged
        init_params = _parameters(cls.__init__)
        attr_params = _parameters(cls.attribute)
        _check_keys(self.init, init_params, SUPPLIED_INIT, f"init: {name}()")
        _check_keys(
            self.attribute, attr_params, SUPPLIED_ATTRIBUTE, f"attribute: {name}.attribute()"
        )
        if self.baselines is not None:
            if "baselines" not in attr_params:
                raise ValueError(f"baselines: {name} takes no baselines")
            if name not in DISTRIBUTION_BASELINES and len(self.baselines) != 1:
                raise ValueError(f"baselines: {name} takes one baseline, got {len(self.baselines)}")
            if name in DISTRIBUTION_BASELINES and len(self.baselines) < 2:
                raise ValueError(f"baselines: {name} samples from two or more baselines")
        if name in LAYER_PERTURBATION and "perturbations_per_eval" in self.attribute:
            raise ValueError(
                f"attribute: {name}.attribute() option 'perturbations_per_eval' is set by "
                "xaibench: 1, as captum does not expand the targets for more"
            )
        if self.grid is not None and "feature_mask" not in attr_params:
            raise ValueError(f"grid: {name} takes no feature mask")
        if self.noise_tunnel is not None and "model" in init_params:
            raise ValueError(
                f"noise_tunnel: {name} needs the model itself (it overrides module gradients), so "
                "its input cannot be clipped to the raw range after the noise is added"
            )
        return self

    # --- what the method needs of the model ---

    def supports(self, model: Classifier) -> str | None:
        """None, or why captum's class cannot give a meaningful map on ``model``."""
        name = self.bridged
        arch = model.backbone.architecture
        leaves = [m for m in model.modules() if not list(m.children())]
        if name in RELU_OVERRIDE and not any(isinstance(m, nn.ReLU) for m in leaves):
            return (
                f"captum:{name} overrides the gradients of nn.ReLU modules and this {arch} has "
                "none: the map would be the plain gradient"
            )
        if name in CNN_LAYER_ONLY and arch != "cnn":
            return (
                f"captum:{name} averages the layer attribution over its trailing dimensions, "
                f"which for {arch} tokens [B, N, C] are the channels (use gradcam for ViTs)"
            )
        if name in DEEPLIFT and arch == "vit":
            return (
                f"captum:{name}'s rescale rules do not cover attention (products of "
                "activations) nor GELU/LayerNorm: on a ViT it is not DeepLift"
            )
        if name in ("LRP", "LayerLRP"):
            missing = sorted({type(m).__name__ for m in leaves if not _lrp_ready(m)})
            if missing:
                return f"captum:{name} has no LRP rule for {', '.join(missing)}"
        if name == "LayerLRP":
            layer = model.backbone.cam_layer()
            if list(layer.children()) or not _lrp_ready(layer):
                return (
                    f"captum:LayerLRP needs a CAM layer with an LRP rule; this {arch}'s is a "
                    f"{type(layer).__name__}"
                )
        return None

    # --- explaining ---

    def explain(
        self, model: Classifier, images: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """The captum class's attributions as maps ``[B, H, W]``."""
        reason = self.supports(model)
        if reason is not None:
            raise ValueError(reason)
        if self.bridged in PERMUTATION and len(images) < 2:
            raise ValueError(
                f"captum:{self.bridged} permutes features across the images of a batch: it "
                f"needs at least 2, got {len(images)}"
            )
        with _model_left_as_found(model), self._seeded(images.device), _quiet():
            attr = self._attribute(model, images, targets)
        maps = self._layer_to_maps(model, attr, images) if self._is_layer() else attr[:, 0]
        maps = maps.detach()
        return check_maps(maps.abs() if self.absolute else maps, images, f"captum:{self.bridged}")

    def _is_layer(self) -> bool:
        return self.bridged != "GuidedGradCam" and "layer" in _parameters(
            _captum_class(self.bridged).__init__
        )

    def _baselines(self, images: torch.Tensor) -> torch.Tensor:
        """The reference images: ``[B, 1, H, W]``, or ``[K, 1, H, W]`` for a distribution."""
        choices: tuple[BaselineChoice, ...] = self.baselines or (
            ("zero", "mean") if self.bridged in DISTRIBUTION_BASELINES else ("zero",)
        )
        refs = []
        for choice in choices:
            if choice == "zero":
                refs.append(torch.zeros_like(images[:1]))
            elif choice == "mean":
                refs.append(images.detach().mean(dim=0, keepdim=True))
            else:
                refs.append(torch.full_like(images[:1], float(choice)))
        ref = torch.cat(refs)
        if self.bridged in DISTRIBUTION_BASELINES:
            return ref
        return ref.expand_as(images).contiguous()

    def _feature_mask(self, images: torch.Tensor) -> torch.Tensor:
        """``[1, 1, H, W]`` patch ids of a ``grid x grid`` split of the image."""
        grid = self.grid or GRID_OF.get(self.bridged, DEFAULT_GRID)
        h, w = images.shape[-2:]
        rows = torch.div(torch.arange(h) * min(grid, h), h, rounding_mode="floor")
        cols = torch.div(torch.arange(w) * min(grid, w), w, rounding_mode="floor")
        ids = rows[:, None] * min(grid, w) + cols[None, :]
        return ids[None, None].to(images.device)

    def _kwargs(
        self, model: Classifier, images: torch.Tensor, targets: torch.Tensor
    ) -> dict[str, Any]:
        name = self.bridged
        params = _parameters(_captum_class(name).attribute)
        n = len(images)
        kwargs: dict[str, Any] = {}
        if "target" in params:
            kwargs["target"] = targets
        if "baselines" in params:
            kwargs["baselines"] = self._baselines(images)
        if "feature_mask" in params:
            kwargs["feature_mask"] = self._feature_mask(images)
        if "layer_mask" in params:
            kwargs["layer_mask"] = _location_mask(model, images)
        if "sliding_window_shapes" in params:
            h, w = images.shape[-2:]
            kwargs["sliding_window_shapes"] = (1, _side(self.window, h), _side(self.window, w))
            kwargs["strides"] = (1, _side(self.stride, h), _side(self.stride, w))
        if "perturbations_per_eval" in params:
            # captum's layer perturbation methods grow the layer's batch, not the targets'
            layer = name in LAYER_PERTURBATION
            kwargs["perturbations_per_eval"] = 1 if layer else max(1, self.internal_batch_size // n)
        if name == "LayerFeaturePermutation":
            # captum 0.9 selects the target logit twice (once in its layer forward, once in
            # FeaturePermutation), which fails; the forward below selects it once instead.
            del kwargs["target"]
        if "internal_batch_size" in params:
            kwargs["internal_batch_size"] = max(n, self.internal_batch_size)
        kwargs.update(self.attribute)
        return kwargs

    def _attribute(
        self, model: Classifier, images: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        name = self.bridged
        cls = _captum_class(name)
        init_params = _parameters(cls.__init__)
        forward = clipped_forward(model)
        if name == "LayerFeaturePermutation":
            clipped = forward

            def forward(x: torch.Tensor) -> torch.Tensor:
                return clipped(x).gather(1, targets.view(-1, 1))[:, 0]

        args: list[Any] = [model if "model" in init_params else forward]
        if "layer" in init_params:
            args.append(model.backbone.cam_layer())
        method = cls(*args, **self.init)
        kwargs = self._kwargs(model, images, targets)
        from captum.attr import PerturbationAttribution

        grad = not issubclass(cls, PerturbationAttribution)
        inputs = images.detach().clone().requires_grad_(grad)
        with torch.set_grad_enabled(grad), _lrp_rules(model, name):
            if self.noise_tunnel is None:
                return method.attribute(inputs, **kwargs)
            from captum.attr import NoiseTunnel

            lo, hi = model.backbone.input_spec.raw_range
            return NoiseTunnel(method).attribute(
                inputs,
                nt_type=self.noise_tunnel,
                nt_samples=self.nt_samples,
                nt_samples_batch_size=max(1, self.internal_batch_size // len(images)),
                stdevs=self.nt_stdev * (hi - lo),
                **kwargs,
            )

    def _layer_to_maps(
        self, model: Classifier, attr: torch.Tensor, images: torch.Tensor
    ) -> torch.Tensor:
        """Layer attribution -> adapter grid -> channel sum -> bilinear upsample ``[B, H, W]``."""
        if isinstance(attr, tuple):
            raise ValueError(f"captum:{self.bridged} attributed to several layer outputs")
        grid = model.backbone.activation_to_grid(attr.detach().float())
        summed = grid.sum(dim=1, keepdim=True)
        up = F.interpolate(summed, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return up[:, 0]

    @contextmanager
    def _seeded(self, device: torch.device) -> Iterator[None]:
        """Torch, NumPy and Python RNGs seeded from one draw of torch's, restored afterwards."""
        if self.bridged not in RANDOM and self.noise_tunnel is None:
            yield
            return
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
        devices = [device.index or 0] if device.type == "cuda" else []
        np_state, py_state = np.random.get_state(), random.getstate()
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            np.random.seed(seed)
            random.seed(seed)
            try:
                yield
            finally:
                np.random.set_state(np_state)
                random.setstate(py_state)


#: captum's notices of what it does on every call (hooks it sets and removes, Lime's per-image
#: models): not problems, and one per batch would flood a run's log. The last is torch's, under
#: the runner's ``use_deterministic_algorithms(True, warn_only=True)``: DeepLift's max-pool rule
#: unpools, which torch flags as non-deterministic on any device; on the CPU, where the runner
#: promises identical numbers, each image plane is unpooled by one thread in a fixed order, so
#: the maps repeat.
NOTICES = (
    "Setting forward, backward hooks and attributes on non-linear",
    "Setting backward hooks on ReLU activations",
    "You are providing multiple inputs for Lime",
    "max_unpooling2d_forward_out does not have a deterministic implementation",
)


@contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        for notice in NOTICES:
            warnings.filterwarnings("ignore", message=notice, category=UserWarning)
        yield


def _side(fraction: float, side: int) -> int:
    return max(1, min(side, round(fraction * side)))


def _location_mask(model: Classifier, images: torch.Tensor) -> torch.Tensor:
    """One feature per location of the CAM layer's grid (all channels together).

    Found by pushing the element indices of the layer output through ``activation_to_grid``: an
    element that lands at grid location ``i`` gets id ``i``; elements that land nowhere (ViT
    class and register tokens) share one extra id.
    """
    captured: list[torch.Tensor] = []

    def keep(_m: nn.Module, _i: object, output: torch.Tensor) -> None:
        captured.append(output.detach())

    handle = model.backbone.cam_layer().register_forward_hook(keep)
    try:
        with torch.no_grad():
            model(images[:1].detach())
    finally:
        handle.remove()
    shape = captured[-1].shape
    numel = int(np.prod(shape[1:]))
    index = torch.arange(numel, dtype=torch.float64, device=images.device).view(1, *shape[1:])
    grid = model.backbone.activation_to_grid(index)
    h, w = grid.shape[-2:]
    where = torch.arange(h * w, device=images.device).view(1, 1, h, w).expand_as(grid)
    mask = torch.full((numel,), h * w, dtype=torch.long, device=images.device)
    mask[grid.reshape(-1).long()] = where.reshape(-1)
    return mask.view(1, *shape[1:])


def _lrp_ready(module: nn.Module) -> bool:
    """Whether captum's LRP has (or xaibench adds) a rule for this leaf module."""
    from captum.attr._core.lrp import SUPPORTED_LAYERS_WITH_RULES, SUPPORTED_NON_LINEAR_LAYERS

    return (
        hasattr(module, "rule")
        or type(module) in SUPPORTED_LAYERS_WITH_RULES
        or type(module) in SUPPORTED_NON_LINEAR_LAYERS
        or type(module) in (nn.Identity, nn.Flatten)
    )


@contextmanager
def _lrp_rules(model: Classifier, name: str) -> Iterator[None]:
    """Let relevance pass ``nn.Identity`` and ``nn.Flatten`` unchanged (captum has no rule).

    Both leave values unchanged, so passing the relevance through is exact; timm's CNNs use them
    (empty attention and drop-path slots, the pooling's flatten). captum's ``IdentityRule`` does
    not serve: it hooks the input and the output tensor, which for ``nn.Identity`` are one tensor
    (its hooks then run in the wrong order), and for ``nn.Flatten`` differ in shape.
    """
    if name not in ("LRP", "LayerLRP"):
        yield
        return
    from captum.attr._utils.lrp_rules import EpsilonRule

    class PassThrough(EpsilonRule):
        def forward_hook(self, module: nn.Module, inputs: Any, outputs: Any) -> Any:
            return outputs

    added = [
        m
        for m in model.modules()
        if isinstance(m, (nn.Identity, nn.Flatten)) and not hasattr(m, "rule")
    ]
    for module in added:
        module.rule = PassThrough()
    try:
        yield
    finally:
        for module in added:
            if "rule" in module.__dict__:
                del module.rule


@contextmanager
def _model_left_as_found(model: nn.Module) -> Iterator[None]:
    """Restore hooks, attributes, modes and grads captum may leave behind when it raises.

    captum removes its hooks and attributes when ``attribute`` returns; on an exception some
    stay (LRP's rules and hooks, DeepLift's). Anything added is removed here.
    """
    modules = list(model.modules())
    hook_dicts = (
        "_forward_hooks",
        "_forward_pre_hooks",
        "_backward_hooks",
        "_backward_pre_hooks",
        "_forward_hooks_with_kwargs",
        "_forward_hooks_always_called",
    )
    hooks = [{a: set(getattr(m, a, {})) for a in hook_dicts} for m in modules]
    attrs = [set(m.__dict__) for m in modules]
    modes = [m.training for m in modules]
    glob = nn.modules.module
    global_dicts = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks")
    global_hooks = {a: set(getattr(glob, a, {})) for a in global_dicts}
    params = list(model.parameters())
    grads = [p.grad for p in params]
    flags = [p.requires_grad for p in params]
    try:
        yield
    finally:
        for module, before, names, mode in zip(modules, hooks, attrs, modes, strict=True):
            for attr, keys in before.items():
                current = getattr(module, attr, None)
                if current is not None:
                    for key in set(current) - keys:
                        del current[key]
            for extra in set(module.__dict__) - names:
                delattr(module, extra)
            module.training = mode
        for attr, keys in global_hooks.items():
            current = getattr(glob, attr, None)
            if current is not None:
                for key in set(current) - keys:
                    del current[key]
        for param, grad, flag in zip(params, grads, flags, strict=True):
            param.grad = grad
            param.requires_grad_(flag)
