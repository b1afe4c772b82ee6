"""Quantus's faithfulness, robustness, randomisation and axiomatic metrics as explainer metrics.

These call the model, and some explain again (robustness: noisy copies of the image;
randomisation: a model with randomised weights, another class), so they are
:class:`~xaibench.metrics.base.ExplainerMetric` s: the runner hands them the cell's model, the
saliency method, the explained images and classes, and the maps it made.

What goes to Quantus:

* ``model``: the cell's classifier, its input clamped to the backbone's raw intensity range
  (:func:`raw_range_model`). The adapters refuse images outside it, and Quantus's noise
  perturbations leave it; xaibench's own noise methods (SmoothGrad) clamp the same way.
* ``explain_func``: ``method.explain(model, inputs, targets)`` on the images' device, the
  inputs clamped likewise; Quantus passes the (possibly randomised) model it wants explained.
* ``x_batch``/``y_batch``/``a_batch``: images ``[B, 1, H, W]``, the explained classes and the
  maps (channel first).

One number per image: a per-image curve (``PixelFlipping`` with
``return_auc_per_sample=False``, ``RegionPerturbation``, ``Selectivity``) becomes its area by the
trapezoid rule at unit spacing, Quantus's own ``calculate_auc``, whose mean over images is
Quantus's ``get_auc_score``. ``ROAD`` reports a batch curve (the share of images whose class
survives each removal percentage), so it is called one image at a time and each image's curve
(0 or 1 per percentage) is averaged over the percentages: the mean over images equals the mean
of Quantus's curve. ``MPRT`` and ``SmoothMPRT`` return one similarity per layer; the bridge
sets ``return_average_correlation=True`` (their per-image average over layers) unless
``return_last_correlation`` or ``skip_layers`` is given (then ``return_last_correlation=True``,
the fully randomised model's similarity). ``RandomLogit`` gets
``num_classes`` from the model's output unless given.

The floor (``details["random_floor"]``) is the same Quantus call for an explanation that carries
no information: i.i.d. uniform noise maps as ``a_batch`` and, for the metrics that explain
again, an ``explain_func`` returning fresh seeded noise maps. For faithfulness metrics it is a
random ranking of the pixels; for robustness metrics the instability of an explanation
unrelated to its input; for randomisation metrics it is the score of an explanation that
ignores the model entirely, which passes those tests (low similarity), so there a method should
be compared with it rather than expected to beat it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field

from xaibench.bridges.quantus import (
    QuantusBridged,
    as_values,
    bridged_class,
    draw_seed,
    make_metric,
    quantus_context,
    run_quantus,
)
from xaibench.metrics.base import ExplainerMetric

ExplainFunc = Callable[..., np.ndarray]


_CLAMPED: dict[type, type] = {}


def _clamped_class(cls: type[torch.nn.Module]) -> type[torch.nn.Module]:
    """``cls`` with ``forward`` clamping its input to the raw range (one subclass per class)."""
    if cls in _CLAMPED:
        return _CLAMPED[cls]

    def forward(self: Any, images: torch.Tensor) -> torch.Tensor:
        low, high = _raw_range(self)
        return cls.forward(self, images.clamp(low, high))

    _CLAMPED[cls] = type(f"RawRange{cls.__name__}", (cls,), {"forward": forward})
    return _CLAMPED[cls]


def _raw_range(model: Any) -> tuple[float, float]:
    spec = getattr(getattr(model, "backbone", None), "input_spec", None)
    low, high = spec.raw_range if spec is not None else (-float("inf"), float("inf"))
    return float(low), float(high)


def raw_range_model(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` (sharing its weights) with its input clamped to the raw intensity range."""
    clamped = copy.copy(model)
    clamped.__class__ = _clamped_class(type(model))
    return clamped


def method_explainer(method: Any, device: torch.device) -> ExplainFunc:
    """Quantus's ``explain_func``: ``method.explain`` on ``device``, maps back as NumPy."""

    def explain(model: Any, inputs: Any, targets: Any, **_: Any) -> np.ndarray:
        low, high = _raw_range(model)
        images = torch.as_tensor(np.asarray(inputs), dtype=torch.float32, device=device)
        classes = torch.as_tensor(np.asarray(targets), dtype=torch.long, device=device)
        classes = classes.reshape(-1).expand(len(images)) if classes.numel() == 1 else classes
        maps = method.explain(model, images.clamp(low, high), classes.reshape(-1))
        return maps.detach().float().cpu().numpy()

    return explain


def noise_explainer(seed: int) -> ExplainFunc:
    """An ``explain_func`` returning i.i.d. uniform noise maps, seeded (the floor's)."""
    generator = torch.Generator().manual_seed(seed)

    def explain(model: Any, inputs: Any, targets: Any, **_: Any) -> np.ndarray:
        shape = np.asarray(inputs).shape
        maps = torch.rand((shape[0], *shape[2:]), generator=generator)
        return maps.numpy()

    return explain


def per_image_value(score: Any) -> float:
    """One image's score: a curve becomes its area (unit spacing), a scalar or bool a float."""
    values = np.asarray(score, dtype=np.float64)
    if values.size == 1:
        return float(values.reshape(()))
    return float(np.trapezoid(values.reshape(-1), dx=1))


class QuantusExplainerMetric(QuantusBridged, ExplainerMetric):
    """A Quantus metric that calls the model and may explain again (module docstring).

    Attributes:
        explains_again: Whether Quantus calls ``explain_func`` (robustness, randomisation).
        bridge_defaults: Constructor arguments the bridge sets unless the user gives them.
        one_image_per_call: Call Quantus once per image (``ROAD``: its score is per batch).
    """

    explains_again: ClassVar[bool] = False
    bridge_defaults: ClassVar[dict[str, Any]] = {}
    one_image_per_call: ClassVar[bool] = False

    softmax: bool | None = Field(
        None, description="Quantus's softmax at call time (None: that metric's own default)."
    )

    def quantus_options(self) -> dict[str, Any]:
        """The user's constructor options over :attr:`bridge_defaults`."""
        options = {**self.bridge_defaults, **self.init_kwargs}
        given = self.init_kwargs
        if "return_average_correlation" in self.bridge_defaults and (
            "return_average_correlation" not in given
            and (given.get("return_last_correlation") or given.get("skip_layers"))
        ):  # MPRT: Quantus refuses the average with either; the last layer's is one per image
            options.pop("return_average_correlation")
            options.setdefault("return_last_correlation", True)
        return options

    def per_sample(
        self,
        model: torch.nn.Module,
        method: Any,
        images: torch.Tensor,
        targets: torch.Tensor,
        maps: torch.Tensor,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Quantus's scores of ``maps`` and of noise maps (the floor), float64 ``[B]`` each."""
        seed, floor_seed, noise_seed = (draw_seed(generator) for _ in range(3))
        noise = torch.rand(maps.shape, generator=generator)
        clamped = raw_range_model(model)
        values = self.score(
            clamped, method_explainer(method, images.device), images, targets, maps, seed
        )
        floor = self.score(clamped, noise_explainer(noise_seed), images, targets, noise, floor_seed)
        return values, floor

    def score(
        self,
        model: torch.nn.Module,
        explain_func: ExplainFunc,
        images: torch.Tensor,
        targets: torch.Tensor,
        maps: torch.Tensor,
        seed: int,
    ) -> torch.Tensor:
        """One Quantus evaluation of ``maps``, float64 ``[B]`` (seeded; globals restored)."""
        x = images.detach().float().cpu().numpy()
        y = targets.detach().cpu().numpy().astype(np.int64)
        a = maps.detach().float().cpu().numpy()[:, None]
        options = self.quantus_options()
        call: dict[str, Any] = {"device": str(images.device)}
        if self.softmax is not None:
            call["softmax"] = self.softmax
        with quantus_context(seed):
            options = self.model_options(model, images, options)
            if not self.one_image_per_call:
                scores = self._call(model, explain_func, x, y, a, options, call)
                return as_values(scores, self.bridged, len(x))
            out = [
                self.reduce_batch(self._call(model, explain_func, x[i : i + 1], y[i : i + 1],
                                             a[i : i + 1], options, call))
                for i in range(len(x))
            ]  # fmt: skip
        return torch.tensor(out, dtype=torch.float64)

    def model_options(
        self, model: torch.nn.Module, images: torch.Tensor, options: dict[str, Any]
    ) -> dict[str, Any]:
        """Options that depend on the model (``RandomLogit``'s ``num_classes``)."""
        return options

    def reduce_batch(self, scores: Any) -> float:
        """One image's value from a one-image call (``ROAD``)."""
        raise NotImplementedError(f"Quantus {self.bridged} is scored a batch at a time")

    def _call(
        self,
        model: torch.nn.Module,
        explain_func: ExplainFunc,
        x: np.ndarray,
        y: np.ndarray,
        a: np.ndarray,
        options: dict[str, Any],
        call: dict[str, Any],
    ) -> Any:
        metric = make_metric(self.bridged, options)
        scores = run_quantus(
            metric, self.bridged, model=model, x_batch=x, y_batch=y, a_batch=a, s_batch=None,
            explain_func=explain_func, explain_func_kwargs={}, batch_size=len(x), **call,
        )  # fmt: skip
        if isinstance(scores, dict):
            return scores
        return [per_image_value(s) for s in scores]


class _RandomLogit(QuantusExplainerMetric):
    """``num_classes`` defaults to the model's number of outputs (Quantus assumes 1000)."""

    def model_options(
        self, model: torch.nn.Module, images: torch.Tensor, options: dict[str, Any]
    ) -> dict[str, Any]:
        if "num_classes" in options:
            return options
        with torch.no_grad():
            classes = int(model(images[:1]).shape[-1])
        return {**options, "num_classes": classes}


class _ROAD(QuantusExplainerMetric):
    """One image per call; its value is the mean over percentages of its 0/1 curve."""

    one_image_per_call: ClassVar[bool] = True

    def reduce_batch(self, scores: Any) -> float:
        return float(np.mean([float(v) for v in dict(scores).values()]))


_AVERAGE = {"return_average_correlation": True}

#: Explainer metrics: base class and class variables (see the module docstring).
EXPLAINER_METRICS: dict[str, tuple[type[QuantusExplainerMetric], dict[str, Any]]] = {
    # faithfulness: perturb the pixels a map ranks first, read the model
    "FaithfulnessCorrelation": (QuantusExplainerMetric, {}),
    "FaithfulnessEstimate": (QuantusExplainerMetric, {}),
    "MonotonicityCorrelation": (QuantusExplainerMetric, {}),
    "Monotonicity": (QuantusExplainerMetric, {}),
    "PixelFlipping": (
        QuantusExplainerMetric,
        {"bridge_defaults": {"return_auc_per_sample": True}},
    ),
    "RegionPerturbation": (QuantusExplainerMetric, {}),
    "Selectivity": (QuantusExplainerMetric, {}),
    "IROF": (QuantusExplainerMetric, {}),
    "ROAD": (_ROAD, {}),
    "Infidelity": (QuantusExplainerMetric, {}),
    "Sufficiency": (QuantusExplainerMetric, {}),
    # robustness: explain perturbed copies of the image
    "LocalLipschitzEstimate": (QuantusExplainerMetric, {"explains_again": True}),
    "MaxSensitivity": (QuantusExplainerMetric, {"explains_again": True}),
    "AvgSensitivity": (QuantusExplainerMetric, {"explains_again": True}),
    "Continuity": (QuantusExplainerMetric, {"explains_again": True}),
    "Consistency": (QuantusExplainerMetric, {}),
    "RelativeInputStability": (QuantusExplainerMetric, {"explains_again": True}),
    "RelativeOutputStability": (QuantusExplainerMetric, {"explains_again": True}),
    "RelativeRepresentationStability": (QuantusExplainerMetric, {"explains_again": True}),
    # randomisation: explain a randomised model, or another class
    "MPRT": (QuantusExplainerMetric, {"explains_again": True, "bridge_defaults": _AVERAGE}),
    "SmoothMPRT": (QuantusExplainerMetric, {"explains_again": True, "bridge_defaults": _AVERAGE}),
    "EfficientMPRT": (QuantusExplainerMetric, {"explains_again": True}),
    "RandomLogit": (_RandomLogit, {"explains_again": True}),
    # axiomatic: read the model's output
    "Completeness": (QuantusExplainerMetric, {}),
    "NonSensitivity": (QuantusExplainerMetric, {}),
}


#: Small ``init_kwargs`` for smoke tests on tiny models (32 px, a few images): Quantus's defaults
#: are sized for real use (200 explanations per image, one model call per pixel, every layer
#: randomised in turn). Used as each class's ``smoke_options`` (see
#: :class:`~xaibench.component.Component`) by the conformance kit and the tests that run every
#: metric; never applied to a user's run. ``IROF`` (SLIC's ~100 superpixels, no option for their
#: number) and ``NonSensitivity`` (one model call per pixel; Quantus 0.6 fails for
#: ``features_in_step > 1``) have no cheap setting.
SMOKE_OPTIONS: dict[str, dict[str, Any]] = {
    "FaithfulnessCorrelation": {"nr_runs": 2, "subset_size": 16},
    "FaithfulnessEstimate": {"features_in_step": 128},
    "MonotonicityCorrelation": {"nr_samples": 2, "features_in_step": 128},
    "Monotonicity": {"features_in_step": 128},
    "PixelFlipping": {"features_in_step": 128},
    "RegionPerturbation": {"patch_size": 16, "regions_evaluation": 2},
    "Selectivity": {"patch_size": 16},
    "ROAD": {"percentages": [10, 90]},
    "Infidelity": {"n_perturb_samples": 1, "perturb_patch_sizes": [16]},
    "LocalLipschitzEstimate": {"nr_samples": 1},
    "MaxSensitivity": {"nr_samples": 1},
    "AvgSensitivity": {"nr_samples": 1},
    "Continuity": {"nr_steps": 2},
    "RelativeInputStability": {"nr_samples": 1},
    "RelativeOutputStability": {"nr_samples": 1},
    "RelativeRepresentationStability": {"nr_samples": 1},
    "MPRT": {"skip_layers": True},
    "SmoothMPRT": {"skip_layers": True, "nr_samples": 1},
}

_CLASSES: dict[str, type] = {
    f"Quantus{name}": bridged_class(
        base,
        name,
        smoke_options={"init_kwargs": SMOKE_OPTIONS[name]} if name in SMOKE_OPTIONS else {},
        **class_vars,
    )
    for name, (base, class_vars) in EXPLAINER_METRICS.items()
}
globals().update(_CLASSES)
