"""An example xaibench plugin: one component of each common kind, registered through hooks.

A saliency method, a perturbation, a metric, and a backbone (torchvision's DenseNet).

Copy this package to start your own: rename it, change the entry point in ``pyproject.toml``,
and keep the tests (they run the conformance kit on every component the package registers).
"""

from __future__ import annotations

from xaibench.hookspecs import hookimpl
from xaibench.registry import Register

__version__ = "0.1.0"


@hookimpl
def register_saliency_methods(register: Register) -> None:
    """Register ``example_method`` (lazy: the module imports torch only when used)."""
    register(
        "example_method",
        "xaibench_example.method:GradientTimesInput",
        summary="|gradient x input| (example plugin)",
    )


@hookimpl
def register_perturbations(register: Register) -> None:
    """Register ``example_median``: fill the region with the median of the rest of the image."""
    register(
        "example_median",
        "xaibench_example.perturbation:MedianFill",
        summary="region set to the median outside it (example plugin)",
    )


@hookimpl
def register_metrics(register: Register) -> None:
    """Register ``example_top_hit``: share of the top 5% salient pixels inside the region."""
    register(
        "example_top_hit",
        "xaibench_example.metric:TopFractionHit",
        summary="share of the top 5% salient pixels inside the region (example plugin)",
    )


@hookimpl
def register_backbones(register: Register) -> None:
    """Register torchvision's DenseNet-121 and a tiny random DenseNet for tests."""
    register(
        "example_densenet121",
        "xaibench_example.backbone:DenseNetBackbone",
        summary="torchvision DenseNet-121; weights: option 'weights' (example plugin)",
    )
    register(
        "example_densenet_tiny.random",
        "xaibench_example.backbone:DenseNetBackbone",
        summary="tiny DenseNet (2 blocks of 2 layers), random init, for tests (example plugin)",
        options={
            "growth_rate": 8,
            "block_config": (2, 2),
            "num_init_features": 16,
            "bn_size": 2,
            "img_size": 64,
            "random_init": True,
        },
    )
