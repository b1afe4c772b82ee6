"""The ``captum:`` bridge: its names against captum, its options, and its maps against captum.

Every reference is captum itself, called directly on the same tiny model and images; xaibench's
part (the target, baselines, masks, the layer-to-grid step, seeding) is rebuilt by hand in each
test from what the docs promise. Options are small (few steps, samples and patches) so the whole
file stays within a few seconds.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytest.importorskip("captum")

import captum.attr as A

from tests.cli_run import xaibench_cli
from xaibench.bridges import captum_names
from xaibench.bridges.captum import CaptumMethod
from xaibench.bridges.extras import Bridge
from xaibench.errors import InvalidOptionsError
from xaibench.plugins import collect_components, get_plugin_manager
from xaibench.testing.checks._support import (
    model_state,
    random_images,
    reference_model,
    state_diff,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore:Setting forward, backward hooks:UserWarning",
    "ignore:Setting backward hooks on ReLU:UserWarning",
    "ignore:You are providing multiple inputs:UserWarning",
)

NAMES = [entry.name for entry in captum_names.NAMES]
TARGETS = torch.tensor([0, 2, 1])

#: Small options per name, so each runs in milliseconds on the tiny models.
CHEAP: dict[str, dict[str, Any]] = {
    "IntegratedGradients": {"attribute": {"n_steps": 4}},
    "LayerIntegratedGradients": {"attribute": {"n_steps": 4}},
    "LayerConductance": {"attribute": {"n_steps": 4}},
    "InternalInfluence": {"attribute": {"n_steps": 4}},
    "ShapleyValueSampling": {"grid": 2, "attribute": {"n_samples": 2}},
    "ShapleyValues": {"grid": 2},
    "Lime": {"grid": 2, "attribute": {"n_samples": 8}},
    "KernelShap": {"grid": 2, "attribute": {"n_samples": 8}},
    "FeatureAblation": {"grid": 2},
    "FeaturePermutation": {"grid": 2},
    "Occlusion": {"window": 0.5, "stride": 0.5},
}

#: (name, architecture) pairs ``supports()`` refuses, and a word of the reason.
REFUSED = {
    ("DeepLift", "vit"): "attention",
    ("DeepLiftShap", "vit"): "attention",
    ("LayerDeepLift", "vit"): "attention",
    ("LayerDeepLiftShap", "vit"): "attention",
    ("GuidedBackprop", "vit"): "nn.ReLU",
    ("Deconvolution", "vit"): "nn.ReLU",
    ("GuidedGradCam", "vit"): "nn.ReLU",
    ("LayerGradCam", "vit"): "channels",
    ("LRP", "vit"): "GELU, LayerNorm",
    ("LayerLRP", "vit"): "GELU, LayerNorm",
    ("LayerLRP", "cnn"): "Sequential",
}


@pytest.fixture(scope="module")
def components():
    return collect_components(get_plugin_manager(entry_points=False))


@pytest.fixture(scope="module")
def models(components):
    return {arch: reference_model(components, arch) for arch in ("cnn", "vit")}


@pytest.fixture(scope="module")
def images():
    return random_images(3, seed=11)


def explain(name: str, model, images, seed: int = 0, **options: Any) -> torch.Tensor:
    torch.manual_seed(seed)
    return CaptumMethod(bridged=name, **options).explain(model, images, TARGETS)


def seed_like_the_bridge(seed: int) -> None:
    """What the bridge does for a random method after the runner's ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    drawn = int(torch.randint(0, 2**31 - 1, (1,)).item())
    torch.manual_seed(drawn)
    np.random.seed(drawn)
    random.seed(drawn)


def leaf(images: torch.Tensor) -> torch.Tensor:
    return images.clone().requires_grad_(True)


def patch_mask(side: int, grid: int) -> torch.Tensor:
    """``[1, 1, side, side]`` ids of a grid x grid split, by hand (side divisible by grid)."""
    cell = side // grid
    ids = torch.arange(grid * grid).view(grid, grid)
    return ids.repeat_interleave(cell, 0).repeat_interleave(cell, 1)[None, None]


def cnn_layer_map(attr: torch.Tensor, side: int) -> torch.Tensor:
    """A CNN layer attribution ``[B, C, h, w]`` summed over channels, upsampled: ``[B, H, W]``."""
    summed = attr.sum(dim=1, keepdim=True)
    return F.interpolate(summed, size=(side, side), mode="bilinear", align_corners=False)[:, 0]


# --- the name table ---


def test_names_and_exclusions_are_exactly_captums_attribution_classes():
    attribution = {
        n
        for n in A.__all__
        if isinstance(getattr(A, n), type) and issubclass(getattr(A, n), A.Attribution)
    }
    named, excluded = set(NAMES), set(captum_names.EXCLUDED)
    assert not named & excluded
    # A captum release that adds or drops an attribution class fails here: list it or exclude it.
    assert named | excluded == attribution, (
        sorted(attribution - named - excluded),
        sorted((named | excluded) - attribution),
    )
    assert all(e.target == "xaibench.bridges.captum:CaptumMethod" for e in captum_names.NAMES)
    assert not any(n.startswith("Neuron") for n in named)


def test_ls_saliency_lists_every_captum_name(capsys):
    code, out = xaibench_cli(capsys, "ls", "saliency")
    assert code == 0
    listed = {line.split()[0] for line in out.splitlines() if line.startswith("captum:")}
    assert listed == {f"captum:{n}" for n in NAMES}


def test_a_captum_name_without_captum_names_the_extra(capsys, tmp_path, monkeypatch):
    real = Bridge.installed
    monkeypatch.setattr(Bridge, "installed", lambda self: self.prefix != "captum" and real(self))
    code, out = xaibench_cli(
        capsys,
        "run",
        "osteoporosis",
        "--saliency",
        "captum:IntegratedGradients",
        "--out",
        str(tmp_path / "run"),
    )
    assert code == 2
    assert "Traceback" not in out
    (line,) = [x for x in out.splitlines() if "captum:IntegratedGradients" in x]
    assert "pip install 'xaibench[captum-all]'" in line
    assert not (tmp_path / "run").exists()


# --- options ---


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        (
            "IntegratedGradients",
            {"attribute": {"n_step": 4}},
            "IntegratedGradients.attribute() has no option 'n_step' (valid: n_steps, method, "
            "internal_batch_size)",
        ),
        ("IntegratedGradients", {"init": {"multiply_by_input": False}}, "'multiply_by_input'"),
        ("Saliency", {"attribute": {"target": 1}}, "'target' is set by xaibench"),
        ("IntegratedGradients", {"attribute": {"baselines": 0}}, "use the option 'baselines'"),
        ("LayerGradCam", {"init": {"layer": "x"}}, "cam_layer()"),
        ("Occlusion", {"attribute": {"strides": 2}}, "'window' and 'stride'"),
        ("IntegratedGradients", {"baselines": ["zero", "mean"]}, "takes one baseline, got 2"),
        ("GradientShap", {"baselines": ["zero"]}, "two or more baselines"),
        ("Saliency", {"baselines": ["zero"]}, "Saliency takes no baselines"),
        ("Saliency", {"grid": 4}, "Saliency takes no feature mask"),
        ("DeepLift", {"noise_tunnel": "smoothgrad"}, "needs the model itself"),
        ("LayerFeatureAblation", {"attribute": {"perturbations_per_eval": 4}}, "does not expand"),
        ("IntegratedGradients", {"baselines": ["black"]}, "baselines.0"),
        ("Lime", {"stepz": 1}, "stepz: unknown option"),
    ],
)
def test_bad_options_are_one_line_errors(components, name, options, message):
    with pytest.raises(InvalidOptionsError) as caught:
        components.saliency.create(f"captum:{name}", options)
    text = str(caught.value)
    assert "\n" not in text
    assert message in text


def test_every_name_runs_or_says_why_on_both_reference_models(models, images):
    """supports() on the CNN and the ViT as documented; each name runs on one of them.

    Each name runs once, on the ViT where it supports it (the cheaper model), else on the CNN:
    maps of the image's shape, finite, detached, and the model left as it was. The conformance
    kit runs every name on both, twice.
    """
    ran = set()
    for name in NAMES:
        method = CaptumMethod(bridged=name, **CHEAP.get(name, {}))
        reasons = {arch: method.supports(model) for arch, model in models.items()}
        for arch, reason in reasons.items():
            if (name, arch) in REFUSED:
                assert reason is not None, (name, arch)
                assert REFUSED[name, arch] in reason, (name, arch, reason)
            else:
                assert reason is None, (name, arch, reason)
        runnable = [arch for arch in ("vit", "cnn") if reasons[arch] is None]
        if not runnable:
            with pytest.raises(ValueError, match=f"captum:{name}"):
                method.explain(models["cnn"], images, TARGETS)
            continue
        model = models[runnable[0]]
        before = model_state(model)
        torch.manual_seed(5)
        maps = method.explain(model, images, TARGETS)
        assert state_diff(before, model_state(model)) == [], name
        assert maps.shape == (3, 32, 32), name
        assert maps.dtype == torch.float32, name
        assert torch.isfinite(maps).all(), name
        assert not maps.requires_grad, name
        ran.add(name)
    assert ran == set(NAMES) - {"LayerLRP"}


# --- maps against direct captum calls ---


def test_primary_gradient_methods_equal_captum(models, images):
    arch = "cnn"  # the ViT's gradients are compared in the NoiseTunnel and layer tests
    model = models[arch]
    zero = torch.zeros_like(images)
    expected = {
        "Saliency": A.Saliency(model).attribute(leaf(images), target=TARGETS),
        "InputXGradient": A.InputXGradient(model).attribute(leaf(images), target=TARGETS),
        "IntegratedGradients": A.IntegratedGradients(model).attribute(
            leaf(images), baselines=zero, target=TARGETS, n_steps=4
        ),
    }
    if arch == "cnn":
        expected["GuidedBackprop"] = A.GuidedBackprop(model).attribute(leaf(images), TARGETS)
        expected["Deconvolution"] = A.Deconvolution(model).attribute(leaf(images), TARGETS)
        expected["DeepLift"] = A.DeepLift(model).attribute(
            leaf(images), baselines=zero, target=TARGETS
        )
        refs = torch.cat([zero[:1], images.mean(0, keepdim=True)])
        expected["DeepLiftShap"] = A.DeepLiftShap(model).attribute(
            leaf(images), baselines=refs, target=TARGETS
        )
    for name, attr in expected.items():
        got = explain(name, model, images, **CHEAP.get(name, {}))
        torch.testing.assert_close(got, attr[:, 0].detach(), rtol=1e-5, atol=1e-7, msg=name)
    # absolute and an explicit baseline
    got = explain("IntegratedGradients", model, images, baselines=[0.5], absolute=True,
                  attribute={"n_steps": 4})  # fmt: skip
    half = torch.full_like(images, 0.5)
    attr = A.IntegratedGradients(model).attribute(
        leaf(images), baselines=half, target=TARGETS, n_steps=4
    )
    torch.testing.assert_close(got, attr[:, 0].abs().detach(), rtol=1e-5, atol=1e-7)


def test_lrp_on_a_timm_cnn_passes_relevance_through_identity_and_flatten(models, images):
    """captum has no rule for nn.Identity / nn.Flatten; with a pass-through set by hand it runs."""
    from captum.attr._utils.lrp_rules import EpsilonRule

    class PassThrough(EpsilonRule):
        def forward_hook(self, module, inputs, outputs):
            return outputs

    model = models["cnn"]
    got = explain("LRP", model, images)
    assert not any(hasattr(m, "rule") for m in model.modules())  # nothing left behind
    added = [m for m in model.modules() if isinstance(m, (nn.Identity, nn.Flatten))]
    assert added
    for m in added:
        m.rule = PassThrough()
    try:
        attr = A.LRP(model).attribute(leaf(images), target=TARGETS)
    finally:
        for m in added:
            if hasattr(m, "rule"):
                del m.rule
    torch.testing.assert_close(got, attr[:, 0].detach(), rtol=1e-5, atol=1e-7)


def test_random_methods_equal_captum_under_the_documented_seeding(models, images):
    model = models["vit"]
    refs = torch.cat([torch.zeros_like(images[:1]), images.mean(0, keepdim=True)])
    mask = patch_mask(32, 2)
    zero = torch.zeros_like(images)
    calls = {
        "GradientShap": lambda: A.GradientShap(model).attribute(
            leaf(images), baselines=refs, target=TARGETS
        ),
        "ShapleyValueSampling": lambda: A.ShapleyValueSampling(model).attribute(
            images,
            baselines=zero,
            target=TARGETS,
            feature_mask=mask,
            n_samples=2,
            perturbations_per_eval=21,
        ),
        "KernelShap": lambda: A.KernelShap(model).attribute(
            images,
            baselines=zero,
            target=TARGETS,
            feature_mask=mask,
            n_samples=8,
            perturbations_per_eval=21,
        ),
        "FeaturePermutation": lambda: A.FeaturePermutation(model).attribute(
            images, target=TARGETS, feature_mask=mask, perturbations_per_eval=21
        ),
    }
    for name, call in calls.items():
        got = explain(name, model, images, seed=7, **CHEAP.get(name, {}))
        seed_like_the_bridge(7)
        with torch.no_grad() if name != "GradientShap" else torch.enable_grad():
            attr = call()
        torch.testing.assert_close(got, attr[:, 0].detach(), rtol=1e-5, atol=1e-7, msg=name)
        other = explain(name, model, images, seed=8, **CHEAP.get(name, {}))
        assert not torch.equal(got, other), f"{name}: the seed changes nothing"


def test_perturbation_methods_equal_captum_with_the_documented_masks(models, images):
    model = models["vit"]
    zero = torch.zeros_like(images)
    with torch.no_grad():
        ablation = A.FeatureAblation(model).attribute(
            images, baselines=zero, target=TARGETS, feature_mask=patch_mask(32, 4),
            perturbations_per_eval=21,
        )  # fmt: skip
        # window 1/2 of the side (16 px), stride 1/4 (8 px): 3 x 3 positions
        occlusion = A.Occlusion(model).attribute(
            images, sliding_window_shapes=(1, 16, 16), strides=(1, 8, 8), baselines=zero,
            target=TARGETS, perturbations_per_eval=21,
        )  # fmt: skip
        exact = A.ShapleyValues(model).attribute(
            images, baselines=zero, target=TARGETS, feature_mask=patch_mask(32, 2),
            perturbations_per_eval=21,
        )  # fmt: skip
    torch.testing.assert_close(explain("FeatureAblation", model, images, grid=4), ablation[:, 0])
    got = explain("Occlusion", model, images, window=0.5, stride=0.25)
    torch.testing.assert_close(got, occlusion[:, 0])
    torch.testing.assert_close(explain("ShapleyValues", model, images), exact[:, 0])
    # the default masks: 8 x 8 patches, 4 x 4 for sampled, 2 x 2 for exact Shapley values
    sampled = CaptumMethod(bridged="ShapleyValueSampling")._feature_mask(images)
    assert torch.equal(sampled, patch_mask(32, 4))
    default = CaptumMethod(bridged="KernelShap")._feature_mask(images)
    assert torch.equal(default, patch_mask(32, 8))
    assert torch.equal(
        CaptumMethod(bridged="ShapleyValues")._feature_mask(images), patch_mask(32, 2)
    )


def test_cnn_layer_methods_equal_captum_on_the_cam_layer(models, images):
    model = models["cnn"]
    layer = model.backbone.cam_layer()
    zero = torch.zeros_like(images)
    expected = {
        "LayerGradientXActivation": A.LayerGradientXActivation(model, layer).attribute(
            leaf(images), target=TARGETS
        ),
        "LayerIntegratedGradients": A.LayerIntegratedGradients(model, layer).attribute(
            leaf(images), baselines=zero, target=TARGETS, n_steps=4
        ),
        "LayerGradCam": A.LayerGradCam(model, layer).attribute(leaf(images), target=TARGETS),
        "LayerActivation": A.LayerActivation(model, layer).attribute(leaf(images)),
    }
    for name, attr in expected.items():
        got = explain(name, model, images, **CHEAP.get(name, {}))
        torch.testing.assert_close(got, cnn_layer_map(attr.detach(), 32), msg=name)
    # one feature per location of the 2 x 2 layer grid, all channels together
    c, h, w = expected["LayerActivation"].shape[1:]
    assert (h, w) == (2, 2)
    mask = torch.arange(h * w).view(1, 1, h, w).expand(1, c, h, w)
    with torch.no_grad():
        ablation = A.LayerFeatureAblation(model, layer).attribute(
            images, target=TARGETS, layer_mask=mask
        )
    torch.testing.assert_close(explain("LayerFeatureAblation", model, images),
                               cnn_layer_map(ablation, 32))  # fmt: skip


def test_vit_layer_methods_drop_the_class_token_and_use_the_patch_grid(models, images):
    model = models["vit"]
    layer = model.backbone.cam_layer()
    prefix = model.backbone.num_prefix_tokens
    attr = A.LayerGradientXActivation(model, layer).attribute(leaf(images), target=TARGETS)
    b, n, c = attr.shape
    side = round((n - prefix) ** 0.5)  # 64 px input, patch 16: 4 x 4 patches
    assert (prefix, side * side) == (1, n - prefix)
    assert side == 4
    grid = attr[:, prefix:].detach().transpose(1, 2).reshape(b, c, side, side)
    got = explain("LayerGradientXActivation", model, images)
    torch.testing.assert_close(got, cnn_layer_map(grid, 32))
    # layer ablation: each patch token its own feature, the class token one more
    mask = torch.cat([torch.tensor([side * side]), torch.arange(side * side)]).view(1, n, 1)
    with torch.no_grad():
        ablation = A.LayerFeatureAblation(model, layer).attribute(
            images, target=TARGETS, layer_mask=mask.expand(1, n, c)
        )
    grid = ablation[:, prefix:].transpose(1, 2).reshape(b, c, side, side)
    torch.testing.assert_close(explain("LayerFeatureAblation", model, images),
                               cnn_layer_map(grid, 32))  # fmt: skip


def test_noise_tunnel_is_an_option_equal_to_captums(models, images):
    from xaibench.saliency.gradient import clipped_forward

    model = models["vit"]
    options = {"noise_tunnel": "smoothgrad", "nt_samples": 3, "nt_stdev": 0.1}
    got = explain("Saliency", model, images, seed=3, **options)
    seed_like_the_bridge(3)
    attr = A.NoiseTunnel(A.Saliency(clipped_forward(model))).attribute(
        leaf(images), nt_type="smoothgrad", nt_samples=3, stdevs=0.1, target=TARGETS,
        nt_samples_batch_size=21,
    )  # fmt: skip
    torch.testing.assert_close(got, attr[:, 0].detach())
    assert not torch.equal(got, explain("Saliency", model, images))


def test_permutation_methods_need_two_images(models, images):
    for name in ("FeaturePermutation", "LayerFeaturePermutation"):
        with pytest.raises(ValueError, match="needs at least 2, got 1"):
            explain(name, models["vit"], images[:1], **CHEAP.get(name, {}))


def test_a_method_that_raises_leaves_no_hooks_or_attributes(models, images):
    model = models["cnn"]
    before = model_state(model)
    attrs = [set(m.__dict__) for m in model.modules()]

    def boom(*_args):
        raise RuntimeError("boom")

    handle = model.head.register_forward_hook(boom)
    try:
        for name in ("DeepLift", "LRP", "GuidedBackprop", "LayerConductance"):
            with pytest.raises(RuntimeError, match="boom"):
                explain(name, model, images, **CHEAP.get(name, {}))
    finally:
        handle.remove()
    assert state_diff(before, model_state(model)) == []
    assert [set(m.__dict__) for m in model.modules()] == attrs


# --- acceptance: end to end through `xaibench run` ---


def test_a_run_records_the_maps_captum_gives_for_the_fitted_model(tmp_path, monkeypatch):
    """The maps a run keeps (the drift grid is the image grid here) equal captum's own call.

    The run's model and images are captured as the bridge receives them, then captum's
    ``IntegratedGradients`` is called directly on them; the run's region-metric values equal the
    metric on captum's maps too.
    """
    import copy

    import xaibench
    from xaibench.metrics.localisation import RelevanceMass

    seen: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] = []
    masks: list[dict[str, torch.Tensor]] = []
    explain_as_run, score_as_run = CaptumMethod.explain, RelevanceMass.per_sample_regions

    def spy_explain(self, model, images, targets):
        seen.append((copy.deepcopy(model), images.clone(), targets.clone()))
        return explain_as_run(self, model, images, targets)

    def spy_score(self, maps, region_masks, *args):
        masks.append({r: m.clone() for r, m in region_masks.items()})
        return score_as_run(self, maps, region_masks, *args)

    monkeypatch.setattr(CaptumMethod, "explain", spy_explain)
    monkeypatch.setattr(RelevanceMass, "per_sample_regions", spy_score)
    config = {
        "task": "osteoporosis",
        "dataset": {
            "name": "phantom",
            "options": {"n_images": 48, "image_size": 32, "class_shares": [0.4, 0.3, 0.3]},
        },
        "backbones": [{"name": "test_resnet.random", "options": {"img_size": 32}}],
        "strategies": ["linear_probe"],
        "saliency": [
            {"name": "captum:IntegratedGradients", "options": {"attribute": {"n_steps": 8}}}
        ],
        "perturbations": [],
        "metrics": ["relevance_mass"],
        "train": {"epochs": 1, "batch_size": 8},
        "max_explain_images": 4,
        "gallery_images": 0,
        "sanity": {"images": 0},
        "analysis": {"drift_grid": 32, "bootstrap": 0},
        "cache": False,
    }
    run = xaibench.run("osteoporosis", config=config, out=tmp_path / "run", progress=False)
    (drift,) = Path(run.path, "cells").glob("*/drift.npz")
    stored = np.load(drift)["captum:IntegratedGradients::maps"]
    assert len(seen) == 1
    assert len(masks) == 1
    assert stored.shape == (4, 32, 32)
    model, images, targets = seen[0]
    attr = (
        A.IntegratedGradients(model)
        .attribute(leaf(images), baselines=torch.zeros_like(images), target=targets, n_steps=8)[
            :, 0
        ]
        .detach()
    )
    np.testing.assert_allclose(stored, attr.numpy(), rtol=1e-5, atol=1e-7)
    # the run's per-image relevance mass equals the metric on captum's own maps
    values = pd.read_csv(Path(run.path, "explanations.csv"))
    values = values[values["metric"] == "relevance_mass"]
    assert len(values) == 4 * len(masks[0]) > 0
    for region, rows in values.groupby("region"):
        expected = score_as_run(RelevanceMass(), attr, {region: masks[0][region]})[region]
        np.testing.assert_allclose(rows["value"].to_numpy(), expected.double().numpy(),
                                   rtol=1e-6, equal_nan=True)  # fmt: skip
