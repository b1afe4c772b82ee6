"""``gradcam:<Name>``: pytorch-grad-cam through the adapter, against direct library calls.

Every reference here is pytorch-grad-cam itself, called directly on the same model and images
with the target layer and a token reshape written out by hand (class + register tokens
counted explicitly), as a user of the library would.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from bridge_run import bridge_run, run_values
from cli_run import xaibench_cli

pytest.importorskip("pytorch_grad_cam")

import pytorch_grad_cam
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from xaibench.bridges.extras import BRIDGE_BY_PREFIX, Bridge
from xaibench.bridges.gradcam import GradCAMBridge
from xaibench.bridges.gradcam_names import NAMES
from xaibench.errors import InvalidOptionsError, XaibenchError
from xaibench.metrics.localisation import PixelAUC
from xaibench.models.base import Classifier
from xaibench.plugins import collect_components, get_plugin_manager
from xaibench.saliency.gradcam import GradCAMPlusPlus

#: Exported with a ``target_layers`` parameter, yet not a CAM method.
NOT_METHODS = {"ActivationsAndGradients"}


@pytest.fixture(scope="module")
def components():
    return collect_components(get_plugin_manager(entry_points=False))


def _model(components, name: str, options: dict, *, frozen: bool = False) -> Classifier:
    torch.manual_seed(0)
    backbone = components.backbones.create(name, options).create_adapter(name)
    model = Classifier(backbone, 3).eval()
    if frozen:
        model.backbone.requires_grad_(False)
    return model


@pytest.fixture(scope="module")
def resnet(components):
    return _model(components, "test_resnet.random", {"img_size": 96})  # a 3x3 CAM grid


@pytest.fixture(scope="module")
def dinov2(components):
    """DINOv2 with a class token and 4 register tokens, 4x4 patches at 56 px."""
    return _model(components, "dinov2_tiny.random", {"img_size": 56})


IMAGES = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(3))
TARGETS = torch.tensor([0, 2, 1])


def _by_hand_reshape(prefix: int, side: int):
    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        grid = tokens[:, prefix:, :].reshape(tokens.shape[0], side, side, tokens.shape[2])
        return grid.permute(0, 3, 1, 2)

    return reshape


def _direct(cls_name: str, model: Classifier, reshape=None, **kwargs) -> torch.Tensor:
    cls = getattr(pytorch_grad_cam, cls_name)
    with cls(model, [model.backbone.cam_layer()], reshape_transform=reshape, **kwargs) as cam:
        out = cam(IMAGES.clone(), [ClassifierOutputTarget(int(t)) for t in TARGETS])
    return torch.from_numpy(out)


def test_names_table_is_every_exported_cam_method():
    exported = {
        name
        for name, obj in vars(pytorch_grad_cam).items()
        if isinstance(obj, type) and "target_layers" in inspect.signature(obj).parameters
    }
    assert {entry.name for entry in NAMES} == exported - NOT_METHODS


@pytest.mark.parametrize("name", ["GradCAM", "HiResCAM", "EigenCAM"])
def test_bridge_equals_the_library_on_a_vit_with_registers(components, dinov2, name):
    """The adapter's reshape drops 1 class + 4 register tokens, as the hand-written one does."""
    assert dinov2.backbone.num_prefix_tokens == 5
    ours = components.saliency.create(f"gradcam:{name}").explain(dinov2, IMAGES, TARGETS)
    theirs = _direct(name, dinov2, _by_hand_reshape(5, 4))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    assert float(ours.std()) > 0.01


def test_bridge_equals_the_library_on_a_cnn_and_under_a_frozen_backbone(components, resnet):
    frozen = _model(components, "test_resnet.random", {"img_size": 96}, frozen=True)
    method = components.saliency.create("gradcam:LayerCAM")
    theirs = _direct("LayerCAM", resnet)
    torch.testing.assert_close(method.explain(resnet, IMAGES, TARGETS), theirs, rtol=0, atol=1e-6)
    # The library alone records no gradient under a frozen backbone; the bridge starts the
    # graph at the CAM layer, which changes nothing else.
    torch.testing.assert_close(method.explain(frozen, IMAGES, TARGETS), theirs, rtol=0, atol=1e-6)


def test_finer_cam_explains_each_image_s_own_target(components, resnet):
    ours = components.saliency.create("gradcam:FinerCAM").explain(resnet, IMAGES, TARGETS)
    for i, target in enumerate(TARGETS.tolist()):
        with pytorch_grad_cam.FinerCAM(resnet, [resnet.backbone.cam_layer()]) as cam:
            theirs = cam(IMAGES[i : i + 1].clone(), None, target_idx=target)
        torch.testing.assert_close(ours[i], torch.from_numpy(theirs[0]), rtol=0, atol=1e-6)


def _min_max(maps: torch.Tensor) -> torch.Tensor:
    low = maps.amin(dim=(1, 2), keepdim=True)
    high = maps.amax(dim=(1, 2), keepdim=True)
    return (maps - low) / (high - low)


@pytest.mark.parametrize("arch", ["resnet", "dinov2"])
def test_native_gradcam_pp_with_epsilon_equals_pytorch_grad_cam(request, arch):
    """xaibench's Grad-CAM++ with ``epsilon=1e-6`` is the library's, after its min-max scaling.

    The library scales each map to [0, 1] before and after resizing (bilinear, as xaibench),
    so xaibench's map is compared after the same per-image min-max scaling.
    """
    model = request.getfixturevalue(arch)
    reshape = _by_hand_reshape(5, 4) if arch == "dinov2" else None
    theirs = _direct("GradCAMPlusPlus", model, reshape)
    ours = GradCAMPlusPlus(epsilon=1e-6).explain(model, IMAGES, TARGETS)
    torch.testing.assert_close(_min_max(ours), theirs, rtol=0, atol=2e-5)


def test_gradcam_pp_epsilon_defaults_to_xaibench_s_convention(resnet):
    """Default: alpha is 0 only where its denominator is; a tiny epsilon changes the weights."""
    act = torch.tensor([[[[1.0, -3.0]]]])  # [1, 1, 1, 2], activation sum -2
    grad = torch.tensor([[[[1e-4, 1.0]]]])
    # denominators 2 g^2 + (-2) g^3: 2e-8 - 2e-12 and 2 - 2 = 0
    ours = GradCAMPlusPlus().channel_weights(act, grad)
    alpha0 = 1e-8 / (2e-8 - 2e-12)
    torch.testing.assert_close(ours.flatten(), torch.tensor([alpha0 * 1e-4]))
    lib = GradCAMPlusPlus(epsilon=1e-6).channel_weights(act, grad)
    expected = 1e-8 / (2e-8 - 2e-12 + 1e-6) * 1e-4 + 1.0 / (0 + 1e-6) * 1.0
    torch.testing.assert_close(lib.flatten(), torch.tensor([expected]))
    assert GradCAMPlusPlus().options()["epsilon"] == 0.0


def test_end_to_end_run_equals_the_library_on_the_run_s_model():
    """``xaibench run`` with gradcam:GradCAMPlusPlus: the run's per-image pixel AUC is the
    same metric on the maps of a direct pytorch-grad-cam call on the run's fitted model."""
    run = bridge_run()
    record = run.explained["gradcam:GradCAMPlusPlus"]
    model = record.model
    model.backbone.requires_grad_(True)  # a linear probe froze it; the library needs gradients
    with pytorch_grad_cam.GradCAMPlusPlus(model, [model.backbone.cam_layer()]) as cam:
        direct = cam(
            record.images.clone(), [ClassifierOutputTarget(int(t)) for t in record.targets]
        )
    direct_maps = torch.from_numpy(direct)
    torch.testing.assert_close(record.maps, direct_maps, rtol=0, atol=1e-6)
    (masks,) = record.masks
    expected = PixelAUC().per_sample(direct_maps, masks).double()
    got = run_values(run, "gradcam:GradCAMPlusPlus")
    assert len(got) == len(record.images) == 4
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_ablation_layer_is_put_back_when_the_model_raises(components, resnet):
    layer = resnet.backbone.cam_layer()
    calls = []

    def boom(*_args):
        calls.append(1)
        if len(calls) == 3:  # the first forward pass with the ablation layer in place
            raise RuntimeError("boom")

    handle = resnet.head.register_forward_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            components.saliency.create("gradcam:AblationCAM").explain(resnet, IMAGES, TARGETS)
    finally:
        handle.remove()
    assert resnet.backbone.cam_layer() is layer
    assert all(not m._forward_hooks for m in resnet.modules())


def test_random_cam_is_seeded_by_torch_and_leaves_numpy_alone(components, resnet):
    method = components.saliency.create("gradcam:RandomCAM")
    assert method.control
    runs = []
    for _ in range(2):
        torch.manual_seed(5)
        np.random.seed(1)
        runs.append(method.explain(resnet, IMAGES, TARGETS))
        assert np.random.rand() == np.random.RandomState(1).rand()
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)


def test_cnn_only_methods_say_why_on_a_vit(components, dinov2):
    reason = components.saliency.create("gradcam:FullGrad").supports(dinov2)
    assert reason is not None
    assert "bias" in reason
    assert "reshape_transform" in components.saliency.create("gradcam:ShapleyCAM").supports(dinov2)


def test_options_are_checked_against_the_library(components):
    with pytest.raises(InvalidOptionsError, match=r"unknown key\(s\) kk for FEM \(valid: k\)"):
        components.saliency.create("gradcam:FEM", {"library_options": {"kk": 3}})
    with pytest.raises(InvalidOptionsError, match="batch_size: GradCAM has none"):
        components.saliency.create("gradcam:GradCAM", {"batch_size": 4})
    with pytest.raises(InvalidOptionsError, match="base_method: 'SESS' is not a CAM method"):
        components.saliency.create("gradcam:RefineCAM", {"base_method": "SESS"})
    method = components.saliency.create("gradcam:FEM", {"library_options": {"k": 3}})
    assert isinstance(method, GradCAMBridge)


def test_a_missing_extra_is_one_line_naming_it(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(Bridge, "installed", lambda self: self.prefix != "gradcam")
    assert BRIDGE_BY_PREFIX["gradcam"].install_hint() == "pip install 'xaibench[grad-cam]'"
    components = collect_components(get_plugin_manager(entry_points=False))
    assert not [n for n in components.saliency.names() if n.startswith("gradcam:")]
    with pytest.raises(XaibenchError, match=r"grad-cam.*pip install 'xaibench\[grad-cam\]'"):
        components.saliency.create("gradcam:GradCAM")
    code, out = xaibench_cli(
        capsys, "run", "osteoporosis", "--saliency", "gradcam:GradCAM", "--out", str(tmp_path / "r")
    )
    assert code != 0
    assert "Traceback" not in out
    (line,) = [ln for ln in out.splitlines() if "gradcam:GradCAM" in ln]
    assert "pip install 'xaibench[grad-cam]'" in line
