"""Known-answer tests of the saliency methods, plus the contract every registered method keeps."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from xaibench.errors import XaibenchError
from xaibench.models.base import BackboneAdapter, Classifier, InputSpec
from xaibench.models.timm_backbone import TimmBackbone
from xaibench.plugins import collect_components, get_plugin_manager
from xaibench.saliency.attention import AttentionRollout, attention_rollout
from xaibench.saliency.base import SaliencyMethod
from xaibench.saliency.controls import CenterMap, EdgeMap, RandomMap
from xaibench.saliency.gradcam import GradCAM, GradCAMPlusPlus
from xaibench.saliency.gradient import (
    GradientShap,
    InputXGradient,
    IntegratedGradients,
    SmoothGrad,
    VanillaGradient,
)
from xaibench.saliency.occlusion import Occlusion

SIZE = 16
#: Cheap options so that every registered method runs in well under a second on the test models.
FAST = {
    "integrated_gradients": {"n_steps": 8},
    "gradient_shap": {"n_samples": 4},
    "smoothgrad": {"n_samples": 4},
    "occlusion": {"window": 0.25, "stride": 0.25},
}
CONTROLS = {"random", "edge", "center"}
#: Methods that need attention maps (CNNs are skipped with a reason).
VIT_ONLY = {"attention_rollout", "chefer_gae", "cp_lrp"}
#: The built-in registrations (the registry is lazy: listing names imports nothing).
NAMES = sorted(collect_components(get_plugin_manager(entry_points=False)).saliency.names())
#: xaibench's own methods; the bridged ones (captum:, gradcam:, zennit:) are checked against
#: their libraries in tests/test_bridge_*.py and run in the conformance kit and the pipeline.
NATIVE = [n for n in NAMES if ":" not in n]


class LinearAdapter(BackboneAdapter):
    """Feature ``k`` is ``sum(w_k * x)``: every attribution method has a closed form on it."""

    def __init__(self, weights: torch.Tensor) -> None:
        size = weights.shape[-1]
        super().__init__(
            InputSpec(size=size, mean=(0.0,), std=(1.0,), channels=1),
            weights.shape[0],
            "cnn",
            random_init=True,
        )
        self.w = nn.Parameter(weights.clone())
        self.grid = nn.Identity()  # the CAM layer: the image itself, [B, 1, H, W]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return (self.grid(x).unsqueeze(1) * self.w).flatten(2).sum(-1)

    def cam_layer(self) -> nn.Module:
        return self.grid

    def activation_to_grid(self, activation: torch.Tensor) -> torch.Tensor:
        return activation

    def last_block_modules(self) -> list[nn.Module]:
        return []

    def lora_target_modules(self) -> list[str]:
        return []


def linear_model(weights: torch.Tensor) -> Classifier:
    """Logit ``k`` is exactly ``sum(weights[k] * x)`` (identity head, no bias)."""
    model = Classifier(LinearAdapter(weights), weights.shape[0])
    with torch.no_grad():
        model.head.weight.copy_(torch.eye(weights.shape[0]))
        model.head.bias.zero_()
    return model.eval()


def make_model(arch: str, size: int = 32) -> Classifier:
    torch.manual_seed(0)
    return Classifier(
        TimmBackbone(arch=arch, img_size=size, random_init=True).create_adapter(), 3
    ).eval()


def hook_dicts(model: nn.Module) -> dict[str, int]:
    """Every kind of module hook on every submodule, plus torch's global module hooks."""
    names = [
        "_forward_hooks",
        "_forward_pre_hooks",
        "_backward_hooks",
        "_backward_pre_hooks",
        "_forward_hooks_with_kwargs",
        "_forward_pre_hooks_with_kwargs",
    ]
    counts = {
        f"{mod_name or 'model'}.{name}": len(getattr(module, name))
        for mod_name, module in model.named_modules()
        for name in names
    }
    glob = nn.modules.module
    for name in (
        "_global_forward_hooks",
        "_global_forward_pre_hooks",
        "_global_backward_hooks",
        "_global_backward_pre_hooks",
    ):
        counts[name] = len(getattr(glob, name))
    return {k: v for k, v in counts.items() if v}


@pytest.fixture(scope="module")
def vit() -> Classifier:
    return make_model("test_vit")


@pytest.fixture(scope="module")
def cnn() -> Classifier:
    return make_model("test_resnet")


@pytest.fixture(scope="module")
def weights() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(3, 1, SIZE, SIZE)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    torch.manual_seed(2)
    return torch.rand(4, 1, SIZE, SIZE)


TARGETS = torch.tensor([0, 2, 1, 2])


def contributions(weights: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """``w_target * x`` per image, ``[B, H, W]``: the exact per-pixel share of the logit."""
    return (weights[TARGETS] * images)[:, 0]


def method(components, name: str) -> SaliencyMethod:
    return components.saliency.get(name).create(FAST.get(name, {}))


# --- The contract, for every registered method ---


def test_every_method_is_registered_with_citation_and_display_name(components):
    names = set(components.saliency.names())
    assert {
        "gradcam", "gradcam_pp", "saliency", "input_x_gradient", "integrated_gradients",
        "gradient_shap", "smoothgrad", "occlusion", "attention_rollout", *CONTROLS,
    } <= names  # fmt: skip
    for name in names:
        entry = components.saliency.get(name)
        cls = entry.load()
        assert entry.summary, name
        assert cls.citation, name
        assert cls.display_name, name
        if name in NATIVE:  # a bridge's class serves every name of its library
            assert cls.method_name == name
            assert cls.control == (name in CONTROLS), name


@pytest.mark.parametrize("arch", ["vit", "cnn"])
@pytest.mark.parametrize("name", NATIVE)
def test_every_method_returns_finite_maps_and_leaves_the_model_clean(
    components, name, arch, request
):
    model = request.getfixturevalue(arch)
    images = torch.rand(2, 1, 32, 32)
    targets = torch.tensor([0, 2])
    m = method(components, name)
    reason = m.supports(model)
    if name in VIT_ONLY and arch == "cnn":
        assert reason is not None
        assert "cnn" in reason
        with pytest.raises(XaibenchError, match="attention maps"):
            m.explain(model, images, targets)
        return
    assert reason is None
    maps = m.explain(model, images, targets)
    assert maps.shape == (2, 32, 32)
    assert maps.dtype == torch.float32
    assert torch.isfinite(maps).all()
    assert not maps.requires_grad
    assert hook_dicts(model) == {}
    assert all(p.grad is None for p in model.parameters())
    assert not model.training


@pytest.mark.parametrize("arch", ["vit", "cnn"])
def test_no_hooks_are_left_when_the_model_raises_mid_forward(
    components, arch, request, monkeypatch
):
    model = request.getfixturevalue(arch)
    # A module after the CAM layer and after every attention block: hooks are registered by then.
    late = model.backbone.model.norm if arch == "vit" else model.backbone.model.global_pool

    def boom(*_args: object, **_kwargs: object) -> torch.Tensor:
        raise RuntimeError("boom mid-forward")

    monkeypatch.setattr(late, "forward", boom)
    images = torch.rand(2, 1, 32, 32)
    targets = torch.tensor([0, 1])
    for name in NAMES:
        m = method(components, name)
        if m.supports(model) is not None:
            continue
        if name in CONTROLS:  # they never call the model
            m.explain(model, images, targets)
        else:
            with pytest.raises(RuntimeError, match="boom"):
                m.explain(model, images, targets)
        assert hook_dicts(model) == {}, name
        assert all(p.grad is None for p in model.parameters()), name


@pytest.mark.parametrize(
    "cls",
    [GradCAM, GradCAMPlusPlus, InputXGradient, IntegratedGradients, SmoothGrad, Occlusion],
)
def test_non_finite_maps_raise_naming_the_method(cls, images):
    model = linear_model(torch.full((3, 1, SIZE, SIZE), float("nan")))
    with pytest.raises(ValueError, match=f"saliency method {cls.method_name} returned non-finite"):
        cls().explain(model, images, TARGETS)


@pytest.mark.parametrize(
    ("cls", "options"),
    [
        (IntegratedGradients, {"n_steps": 16}),
        (SmoothGrad, {"n_samples": 8}),
        (GradientShap, {"n_samples": 8}),
        (Occlusion, {"window": 4, "stride": 4, "units": "pixels"}),
    ],
)
def test_internal_batch_size_bounds_the_rows_per_forward_pass(cls, options, weights, images):
    model = linear_model(weights)
    rows: list[int] = []
    handle = model.head.register_forward_pre_hook(lambda _m, args: rows.append(len(args[0])))
    try:
        torch.manual_seed(0)
        small = cls(internal_batch_size=3, **options).explain(model, images, TARGETS)
        assert max(rows) <= 3
        rows.clear()
        torch.manual_seed(0)
        large = cls(internal_batch_size=1000, **options).explain(model, images, TARGETS)
        assert max(rows) > 3
    finally:
        handle.remove()
    if cls is not GradientShap and cls is not SmoothGrad:  # random draws differ by chunking
        torch.testing.assert_close(small, large)


# --- Known answers on a linear model ---


def test_input_x_gradient_is_each_pixels_contribution(weights, images):
    maps = InputXGradient().explain(linear_model(weights), images, TARGETS)
    torch.testing.assert_close(maps, contributions(weights, images))
    absolute = InputXGradient(absolute=True).explain(linear_model(weights), images, TARGETS)
    torch.testing.assert_close(absolute, contributions(weights, images).abs())


def test_input_x_gradient_differentiates_the_raw_image_of_a_vit(vit):
    images, targets = torch.rand(2, 1, 32, 32), torch.tensor([1, 2])
    x = images.clone().requires_grad_(True)
    vit(x).gather(1, targets.view(-1, 1)).sum().backward()
    expected = (x.grad * images)[:, 0]
    torch.testing.assert_close(InputXGradient().explain(vit, images, targets), expected)


def test_integrated_gradients_is_complete_and_exact_on_a_linear_model(weights, images):
    model = linear_model(weights)
    maps = IntegratedGradients(n_steps=5).explain(model, images, TARGETS)
    torch.testing.assert_close(maps, contributions(weights, images))
    logits = model(images).gather(1, TARGETS.view(-1, 1))[:, 0]
    zero = model(torch.zeros_like(images)).gather(1, TARGETS.view(-1, 1))[:, 0]
    torch.testing.assert_close(maps.sum(dim=(1, 2)), (logits - zero).detach())


def test_integrated_gradients_from_the_mean_image(weights, images):
    maps = IntegratedGradients(baseline="mean").explain(linear_model(weights), images, TARGETS)
    expected = (weights[TARGETS] * (images - images.mean(0, keepdim=True)))[:, 0]
    torch.testing.assert_close(maps, expected)


def test_gradient_shap_without_noise_equals_input_minus_baseline_times_weight(weights, images):
    model = linear_model(weights)
    zero = GradientShap(baselines=("zero",), n_samples=3).explain(model, images, TARGETS)
    torch.testing.assert_close(zero, contributions(weights, images))
    mean_img = images.mean(0, keepdim=True)
    mean = GradientShap(baselines=("mean",), n_samples=3).explain(model, images, TARGETS)
    torch.testing.assert_close(mean, (weights[TARGETS] * (images - mean_img))[:, 0])
    # Both baselines: each image's map is w * (x - f * mean) with f the share of 'mean' draws.
    torch.manual_seed(0)
    both = GradientShap(n_samples=8).explain(model, images, TARGETS)
    shift = (weights[TARGETS] * mean_img)[:, 0]
    for b in range(len(images)):
        diff = contributions(weights, images)[b] - both[b]
        f = float((diff * shift[b]).sum() / shift[b].pow(2).sum())
        torch.testing.assert_close(both[b], contributions(weights, images)[b] - f * shift[b])
        assert abs(8 * f - round(8 * f)) < 1e-4  # a whole number of the 8 draws
        assert -1e-4 <= f <= 1 + 1e-4


def test_gradient_shap_expectation_with_noise(weights, images):
    # Linear model: the attribution is w * (x + mean noise - b); the noise averages out.
    torch.manual_seed(0)
    model = linear_model(weights)
    maps = GradientShap(baselines=("zero",), n_samples=256, stdevs=0.05).explain(
        model, images, TARGETS
    )
    err = (maps - contributions(weights, images)) / weights[TARGETS][:, 0]
    assert err.abs().max() < 0.05 * 5 / 256**0.5  # five standard errors of the noise mean


def test_gradient_shap_is_seeded_by_torch_and_leaves_numpy_alone(vit):
    images, targets = torch.rand(2, 1, 32, 32), torch.tensor([0, 1])
    m = GradientShap(n_samples=4, stdevs=0.1)
    np.random.seed(123)
    torch.manual_seed(7)
    a = m.explain(vit, images, targets)
    after = np.random.random()
    np.random.seed(123)
    torch.manual_seed(7)
    b = m.explain(vit, images, targets)
    assert np.random.random() == after  # NumPy's global stream untouched
    torch.testing.assert_close(a, b)
    torch.manual_seed(8)
    assert not torch.allclose(a, m.explain(vit, images, targets))


def test_smoothgrad_without_noise_is_saliency(vit):
    images, targets = torch.rand(2, 1, 32, 32), torch.tensor([2, 0])
    smooth = SmoothGrad(stdev=0.0, n_samples=3).explain(vit, images, targets)
    torch.testing.assert_close(smooth, VanillaGradient().explain(vit, images, targets))


def test_smoothgrad_of_a_linear_model_is_the_absolute_weight_whatever_the_noise(weights, images):
    # Noise large enough to push pixels out of [0, 1]: the clip keeps the adapter happy and the
    # straight-through gradient keeps the answer.
    maps = SmoothGrad(stdev=0.5, n_samples=5).explain(linear_model(weights), images, TARGETS)
    torch.testing.assert_close(maps, weights[TARGETS][:, 0].abs())


def test_smoothgrad_is_deterministic_for_a_seed(vit):
    images, targets = torch.rand(2, 1, 32, 32), torch.tensor([0, 1])
    m = SmoothGrad(n_samples=3)
    torch.manual_seed(3)
    a = m.explain(vit, images, targets)
    torch.manual_seed(3)
    torch.testing.assert_close(a, m.explain(vit, images, targets))
    assert not torch.allclose(a, m.explain(vit, images, targets))


def test_occlusion_of_a_linear_model_is_the_window_sum(weights, images):
    model = linear_model(weights)
    maps = Occlusion(window=4, stride=4, units="pixels").explain(model, images, TARGETS)
    sums = F.avg_pool2d(contributions(weights, images).unsqueeze(1), 4) * 16
    expected = sums.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)[:, 0]
    torch.testing.assert_close(maps, expected)
    fraction = Occlusion(window=0.25, stride=0.25).explain(model, images, TARGETS)
    torch.testing.assert_close(fraction, expected)


def test_occlusion_options_are_validated():
    with pytest.raises(ValidationError, match="whole numbers"):
        Occlusion(window=2.5, units="pixels")
    with pytest.raises(ValidationError, match="at most 1"):
        Occlusion(window=8)


def test_gradcam_of_a_linear_model_with_constant_weight_is_the_scaled_image(images):
    c = 0.3
    model = linear_model(torch.full((3, 1, SIZE, SIZE), c))
    torch.testing.assert_close(GradCAM().explain(model, images, TARGETS), c * images[:, 0])


def test_gradcam_pp_of_a_linear_model_with_constant_weight(images):
    # Uniform gradient c: alpha = 1 / (2 + c S) with S the activation sum, so the channel weight
    # is H W c / (2 + c S) and the map is that weight times the image.
    c = 0.3
    model = linear_model(torch.full((3, 1, SIZE, SIZE), c))
    s = images.sum(dim=(1, 2, 3)).view(-1, 1, 1)
    expected = SIZE * SIZE * c / (2 + c * s) * images[:, 0]
    torch.testing.assert_close(GradCAMPlusPlus().explain(model, images, TARGETS), expected)


def test_gradcam_pp_on_a_pooled_cnn_matches_the_closed_form():
    # ResNet: layer4 -> global average pool -> head, so dlogit/dA_k = head_w[t, k] / (h w) at
    # every location, and the Grad-CAM++ weight is h w relu(g_k) / (2 + g_k S_k).
    model = make_model("test_resnet", size=64)
    images, targets = torch.rand(2, 1, 64, 64), torch.tensor([1, 2])
    acts: list[torch.Tensor] = []
    handle = model.backbone.cam_layer().register_forward_hook(lambda _m, _i, o: acts.append(o))
    try:
        with torch.no_grad():
            model(images)
    finally:
        handle.remove()
    act = acts[0]  # [B, C, 2, 2]
    hw = act.shape[-2] * act.shape[-1]
    g = (model.head.weight[targets] / hw).detach().view(2, -1, 1, 1)
    weights = hw * F.relu(g) / (2 + g * act.sum(dim=(2, 3), keepdim=True))
    cam = F.relu((weights * act).sum(1, keepdim=True))
    expected = F.interpolate(cam, size=(64, 64), mode="bilinear", align_corners=False)[:, 0]
    maps = GradCAMPlusPlus().explain(model, images, targets)
    torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(maps, GradCAM().explain(model, images, targets))


# --- Attention rollout ---


def rows(n: int, overrides: dict[int, torch.Tensor]) -> torch.Tensor:
    """An ``n x n`` attention matrix: identity rows except ``overrides``."""
    a = torch.eye(n)
    for i, row in overrides.items():
        a[i] = row
    return a


def test_attention_rollout_matches_a_hand_computation(vit, monkeypatch):
    # 1 class token + 2x2 patches (tokens 1..4). Layer 1: patch p=2 attends to patch q=3 (both
    # heads). Layer 2: head 0 sends the class token to patch p, head 1 keeps it on itself.
    # Layer 1 + I, renormalised: row p = (e_p + e_q) / 2. Layer 2, head mean + I, renormalised:
    # row 0 = 3/4 e_0 + 1/4 e_p. Rollout row 0 = 3/4 e_0 + 1/4 (e_p + e_q) / 2, so patches p and
    # q get 1/8 each and the others 0. The reverse product would give p 1/4 and q 0.
    e = torch.eye(5)
    p, q = 2, 3
    layer1 = rows(5, {p: e[q]}).expand(1, 2, 5, 5)
    layer2 = torch.stack([rows(5, {0: e[p]}), torch.eye(5)]).unsqueeze(0)
    monkeypatch.setattr(vit.backbone, "attention_maps", lambda _images: [layer1, layer2])
    maps = AttentionRollout().explain(vit, torch.rand(1, 1, 32, 32), torch.tensor([0]))
    grid = torch.tensor([[0.0, 0.125], [0.125, 0.0]])  # patches 1..4 row by row: p=2, q=3
    expected = F.interpolate(grid.view(1, 1, 2, 2), size=(32, 32), mode="bilinear")[:, 0]
    torch.testing.assert_close(maps, expected)


def test_attention_rollout_of_uniform_attention_without_prefix_tokens(vit, monkeypatch):
    # Two layers of uniform attention U over N=4 tokens: ((U + I) / 2)^2 = (3U + I) / 4, and the
    # mean over all rows (no class token) of any column is 1/N.
    uniform = torch.full((1, 2, 4, 4), 0.25)
    monkeypatch.setattr(vit.backbone, "num_prefix_tokens", 0)
    monkeypatch.setattr(vit.backbone, "attention_maps", lambda _images: [uniform, uniform])
    maps = AttentionRollout().explain(vit, torch.rand(1, 1, 32, 32), torch.tensor([0]))
    torch.testing.assert_close(maps, torch.full((1, 32, 32), 0.25))


def test_attention_rollout_prefix_mean_averages_the_prefix_rows(vit, monkeypatch):
    # Two prefix tokens (class + register) and 2x2 patches: the class token attends to patch
    # token 2, the register to patch token 5; one layer + I, renormalised, halves each.
    e = torch.eye(6)
    attn = rows(6, {0: e[2], 1: e[5]}).view(1, 1, 6, 6)
    monkeypatch.setattr(vit.backbone, "num_prefix_tokens", 2)
    monkeypatch.setattr(vit.backbone, "attention_maps", lambda _images: [attn])
    images = torch.rand(1, 1, 32, 32)

    def grid_of(query: str) -> torch.Tensor:
        maps = AttentionRollout(query=query).explain(vit, images, torch.tensor([0]))
        return F.avg_pool2d(maps.unsqueeze(1), 16)[0, 0]  # quadrant means

    def expected(grid: list[list[float]]) -> torch.Tensor:
        up = F.interpolate(torch.tensor(grid).view(1, 1, 2, 2), size=(32, 32), mode="bilinear")
        return F.avg_pool2d(up, 16)[0, 0]

    # patch tokens 2..5 row by row: token 2 is the top-left patch, token 5 the bottom-right
    torch.testing.assert_close(grid_of("class"), expected([[0.5, 0.0], [0.0, 0.0]]))
    torch.testing.assert_close(grid_of("prefix_mean"), expected([[0.25, 0.0], [0.0, 0.25]]))


def test_rollout_of_real_attention_is_row_stochastic(vit):
    with torch.no_grad():
        rollout = attention_rollout(vit.backbone.attention_maps(torch.rand(2, 1, 32, 32)))
    assert rollout.shape == (2, 5, 5)
    torch.testing.assert_close(rollout.sum(-1), torch.ones(2, 5))
    assert (rollout >= 0).all()


# --- Controls ---


def test_center_map_peaks_at_the_centre_and_is_symmetric():
    maps = CenterMap(sigma=0.2).explain(None, torch.rand(2, 1, 31, 31), torch.tensor([0, 0]))
    assert maps.shape == (2, 31, 31)
    assert divmod(int(maps[0].argmax()), 31) == (15, 15)
    assert maps[0, 15, 15] == 1
    torch.testing.assert_close(maps, maps.flip(-1))
    torch.testing.assert_close(maps, maps.flip(-2))
    torch.testing.assert_close(maps, maps.transpose(-1, -2))
    even = CenterMap().explain(None, torch.rand(1, 1, 8, 8), torch.tensor([0]))[0]
    torch.testing.assert_close(even[3:5, 3:5], torch.full((2, 2), even.max().item()))


def test_edge_map_is_zero_on_a_constant_image_and_peaks_on_a_step():
    flat = EdgeMap().explain(None, torch.full((1, 1, 16, 16), 0.7), torch.tensor([0]))
    assert (flat == 0).all()
    step = torch.zeros(1, 1, 16, 16)
    step[..., 8:] = 1.0
    maps = EdgeMap().explain(None, step, torch.tensor([0]))[0]
    assert set(maps.argmax(dim=1).tolist()) <= {7, 8}  # every row peaks at the step
    torch.testing.assert_close(maps[:, 7], torch.full((16,), 4.0))  # Sobel: 1 + 2 + 1
    assert (maps[:, :6] == 0).all()
    assert (maps[:, 10:] == 0).all()


def test_random_maps_follow_the_torch_seed():
    images = torch.rand(2, 1, 8, 8)
    torch.manual_seed(5)
    a = RandomMap().explain(None, images, torch.tensor([0, 0]))
    b = RandomMap().explain(None, images, torch.tensor([0, 0]))
    torch.manual_seed(5)
    c = RandomMap().explain(None, images, torch.tensor([0, 0]))
    assert not torch.equal(a, b)
    assert torch.equal(a, c)
    assert (a >= 0).all()
    assert (a < 1).all()


def test_gradcam_of_a_frozen_backbone_equals_that_of_a_trainable_one():
    # With nothing trainable below the CAM layer, the graph starts at the CAM layer: the map
    # must not change, and a batch made under inference mode must still be explainable when the
    # layers below do train (LoRA, last block).
    model = make_model("test_resnet", size=64)
    images, targets = torch.rand(2, 1, 64, 64), torch.tensor([1, 2])
    for p in model.parameters():
        p.requires_grad_(True)
    trainable = GradCAM().explain(model, images, targets)
    with torch.inference_mode():
        inference_batch = images.clone()
    torch.testing.assert_close(GradCAM().explain(model, inference_batch, targets), trainable)
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    frozen = GradCAM().explain(model, images, targets)
    torch.testing.assert_close(frozen, trainable, rtol=0, atol=0)
    assert all(p.grad is None for p in model.parameters())
