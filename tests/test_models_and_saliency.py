import pytest
import torch

from xaibench.errors import InputRangeError, XaibenchError
from xaibench.models.base import Classifier
from xaibench.models.timm_backbone import TimmBackbone
from xaibench.saliency.gradcam import GradCAM
from xaibench.saliency.gradient import VanillaGradient


def make_model(arch: str, size: int = 32) -> Classifier:
    torch.manual_seed(0)
    return Classifier(
        TimmBackbone(arch=arch, img_size=size, random_init=True).create_adapter(), 3
    ).eval()


def hook_count(model: torch.nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


@pytest.fixture(scope="module")
def vit():
    return make_model("test_vit")


@pytest.fixture(scope="module")
def cnn():
    return make_model("test_resnet")


def test_adapters_report_architecture_and_grid(vit, cnn):
    assert vit.backbone.architecture == "vit"
    assert cnn.backbone.architecture == "cnn"
    images = torch.rand(2, 1, 32, 32)
    for model, grid in ((vit, (2, 2)), (cnn, (1, 1))):
        captured: list[torch.Tensor] = []
        handle = model.backbone.cam_layer().register_forward_hook(
            lambda m, i, o, store=captured: store.append(o)
        )
        try:
            model(images)
        finally:
            handle.remove()
        assert model.backbone.activation_to_grid(captured[0]).shape[-2:] == grid


def test_vit_grid_drops_the_class_token(vit):
    tokens = torch.arange(2 * 5 * 3, dtype=torch.float32).view(2, 5, 3)  # CLS + 2x2 patches
    grid = vit.backbone.activation_to_grid(tokens)
    assert grid.shape == (2, 3, 2, 2)
    torch.testing.assert_close(grid[0, :, 0, 0], tokens[0, 1])  # first patch, not CLS
    torch.testing.assert_close(grid[1, :, 1, 1], tokens[1, 4])


def test_raw_range_is_checked_on_every_batch(cnn):
    with pytest.raises(InputRangeError, match=r"raw intensities in \[0.0, 1.0\].*0-255"):
        cnn(torch.rand(2, 1, 32, 32) * 255)
    with pytest.raises(InputRangeError, match="NaN"):
        cnn(torch.full((1, 1, 32, 32), float("nan")))
    with pytest.raises(InputRangeError, match="shaped"):
        cnn(torch.rand(2, 32, 32))


def test_unknown_timm_arch_suggests():
    with pytest.raises(XaibenchError, match=r"did you mean.*test_resnet"):
        TimmBackbone(arch="test_resnt", random_init=True).create_adapter()


def test_same_seed_same_weights():
    a, b = make_model("test_vit"), make_model("test_vit")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name


@pytest.mark.parametrize("model_name", ["vit", "cnn"])
def test_gradcam_shapes_non_negative_and_no_hooks_left(model_name, request):
    model = request.getfixturevalue(model_name)
    before = hook_count(model)
    maps = GradCAM().explain(model, torch.rand(3, 1, 32, 32), torch.tensor([0, 1, 2]))
    assert maps.shape == (3, 32, 32)
    assert (maps >= 0).all()
    assert hook_count(model) == before


def test_gradcam_removes_its_hook_on_error(cnn):
    before = hook_count(cnn)
    with pytest.raises(InputRangeError):
        GradCAM().explain(cnn, torch.rand(1, 1, 32, 32) + 5, torch.tensor([0]))
    assert hook_count(cnn) == before


def test_gradcam_matches_a_hand_computation_on_the_cnn(cnn):
    images = torch.rand(2, 1, 32, 32)
    targets = torch.tensor([2, 0])
    layer = cnn.backbone.cam_layer()
    acts = []
    handle = layer.register_forward_hook(lambda m, i, o: acts.append(o))
    try:
        x = images.clone().requires_grad_(True)
        logits = cnn(x)
        act = acts[0]
        grad = torch.autograd.grad(logits.gather(1, targets.view(-1, 1)).sum(), act)[0]
    finally:
        handle.remove()
    weights = grad.mean(dim=(2, 3), keepdim=True)
    expected = torch.relu((weights * act).sum(1, keepdim=True))
    expected = torch.nn.functional.interpolate(expected, size=(32, 32), mode="bilinear")[:, 0]
    torch.testing.assert_close(GradCAM().explain(cnn, images, targets), expected.detach())


def test_saliency_is_the_absolute_input_gradient(vit):
    images = torch.rand(2, 1, 32, 32)
    targets = torch.tensor([1, 2])
    x = images.clone().requires_grad_(True)
    vit(x).gather(1, targets.view(-1, 1)).sum().backward()
    torch.testing.assert_close(VanillaGradient().explain(vit, images, targets), x.grad.abs()[:, 0])


def test_saliency_works_on_a_frozen_backbone(cnn):
    cnn.requires_grad_(False)
    try:
        maps = VanillaGradient().explain(cnn, torch.rand(2, 1, 32, 32), torch.tensor([0, 1]))
        assert maps.abs().sum() > 0
        maps = GradCAM().explain(cnn, torch.rand(2, 1, 32, 32), torch.tensor([0, 1]))
        assert maps.shape == (2, 32, 32)
    finally:
        cnn.requires_grad_(True)
