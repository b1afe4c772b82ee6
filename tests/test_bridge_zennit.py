"""``zennit:<Composite>``: zennit's composites on timm CNNs, against direct zennit calls."""

from __future__ import annotations

import pytest
import torch
from bridge_run import bridge_run, run_values
from cli_run import xaibench_cli
from torch import nn

pytest.importorskip("zennit")

from zennit.attribution import Gradient
from zennit.composites import COMPOSITES

from xaibench.bridges.extras import Bridge
from xaibench.bridges.zennit import canonizers
from xaibench.bridges.zennit_names import NAMES
from xaibench.errors import InvalidOptionsError, XaibenchError
from xaibench.metrics.localisation import PixelAUC
from xaibench.models.base import Classifier
from xaibench.plugins import collect_components, get_plugin_manager

IMAGES = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(3))
TARGETS = torch.tensor([0, 2, 1])


@pytest.fixture(scope="module")
def components():
    return collect_components(get_plugin_manager(entry_points=False))


def _resnet(components, size: int) -> Classifier:
    torch.manual_seed(0)
    backbone = components.backbones.create("test_resnet.random", {"img_size": size})
    model = Classifier(backbone.create_adapter("test_resnet.random"), 3).eval()
    model.backbone.requires_grad_(False)
    return model


class _Features(nn.Module):
    """The backbone on preprocessed input, so zennit sees the network as a user would."""

    def __init__(self, model: Classifier) -> None:
        super().__init__()
        self.backbone = model.backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)


def _direct(model: Classifier, composite) -> torch.Tensor:
    """zennit's own attributor on ``head(features(preprocessed))``, summed over channels."""
    net = nn.Sequential(_Features(model), model.head)
    x = model.backbone.preprocess(IMAGES).detach()
    onehot = torch.eye(3)[TARGETS]
    with Gradient(model=net, composite=composite) as attributor:
        _, relevance = attributor(x, onehot)
    return relevance.sum(dim=1)


def test_names_table_is_every_registered_composite():
    assert {entry.name for entry in NAMES} == {cls.__name__ for cls in COMPOSITES.values()}


def test_timm_resnet_canonizer_keeps_the_function_and_is_removed(components):
    model = _resnet(components, 32)
    with torch.no_grad():
        before = model(IMAGES)
    handles = [h for c in canonizers() for h in c.apply(model)]
    summed = [m for m in model.modules() if hasattr(m, "canonizer_sum")]
    try:
        assert len(summed) == 4  # test_resnet's four residual blocks
        assert not any(getattr(m, "inplace", False) for m in model.modules())
        with torch.no_grad():
            torch.testing.assert_close(model(IMAGES), before, rtol=1e-5, atol=1e-6)
    finally:
        for handle in handles:
            handle.remove()
    assert not [m for m in model.modules() if hasattr(m, "canonizer_sum")]
    assert any(getattr(m, "inplace", False) for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(model(IMAGES), before, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["EpsilonPlusFlat", "EpsilonGammaBox"])
def test_bridge_equals_zennit_on_the_network_input(components, name):
    """Raw images at the network's size: the map is zennit's input relevance summed over RGB."""
    model = _resnet(components, 32)
    ours = components.saliency.create(f"zennit:{name}").explain(model, IMAGES, TARGETS)
    if name == "EpsilonGammaBox":
        # test_resnet normalises raw [0, 1] with mean 0.5 and std 0.5: the box is [-1, 1].
        spec = model.backbone.input_spec
        assert (spec.mean, spec.std, spec.raw_range) == ((0.5,) * 3, (0.5,) * 3, (0.0, 1.0))
        composite = COMPOSITES["epsilon_gamma_box"](
            low=torch.full((1, 3, 1, 1), -1.0),
            high=torch.full((1, 3, 1, 1), 1.0),
            canonizers=canonizers(),
        )
    else:
        composite = COMPOSITES["epsilon_plus_flat"](canonizers=canonizers())
    theirs = _direct(model, composite)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)
    assert float(ours.abs().max()) > 0


def test_resizing_back_to_the_raw_grid_keeps_each_image_s_total(components):
    model = _resnet(components, 64)  # the 32 px images are upsampled to 64
    ours = components.saliency.create("zennit:EpsilonPlus").explain(model, IMAGES, TARGETS)
    theirs = _direct(model, COMPOSITES["epsilon_plus"](canonizers=canonizers()))
    assert ours.shape == (3, 32, 32)
    torch.testing.assert_close(ours.sum(dim=(1, 2)), theirs.sum(dim=(1, 2)), rtol=1e-4, atol=1e-6)


def test_end_to_end_run_equals_zennit_on_the_run_s_model():
    """``xaibench run`` with zennit:EpsilonPlusFlat: the run's per-image pixel AUC equals
    the same metric on zennit's own attribution of the run's fitted model."""
    run = bridge_run()
    record = run.explained["zennit:EpsilonPlusFlat"]
    model = record.model
    net = nn.Sequential(_Features(model), model.head)
    x = model.backbone.preprocess(record.images).detach()
    composite = COMPOSITES["epsilon_plus_flat"](canonizers=canonizers())
    with Gradient(model=net, composite=composite) as attributor:
        _, relevance = attributor(x, torch.eye(3)[record.targets])
    # The run's images are 32 px, the backbone's input 64: back by the resize's transpose.
    leaf = torch.zeros_like(record.images, requires_grad=True)
    resized = nn.functional.interpolate(leaf, size=x.shape[-2:], mode="bilinear")
    (direct_maps,) = torch.autograd.grad(resized, leaf, relevance.sum(dim=1, keepdim=True))
    direct_maps = direct_maps[:, 0]
    torch.testing.assert_close(record.maps, direct_maps, rtol=1e-5, atol=1e-7)
    (masks,) = record.masks
    expected = PixelAUC().per_sample(direct_maps, masks).double()
    got = run_values(run, "zennit:EpsilonPlusFlat")
    assert len(got) == 4
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_vits_are_refused_with_a_reason(components):
    torch.manual_seed(0)
    vit = components.backbones.create("test_vit.random", {"img_size": 32}).create_adapter("v")
    reason = components.saliency.create("zennit:EpsilonPlus").supports(Classifier(vit, 3))
    assert reason is not None
    assert "vit" in reason


def test_composite_options_are_checked_against_zennit(components):
    with pytest.raises(InvalidOptionsError, match=r"unknown key\(s\) gama for EpsilonGammaBox"):
        components.saliency.create("zennit:EpsilonGammaBox", {"composite_options": {"gama": 1}})
    components.saliency.create("zennit:EpsilonGammaBox", {"composite_options": {"gamma": 0.5}})


def test_a_missing_extra_is_one_line_naming_it(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(Bridge, "installed", lambda self: self.prefix != "zennit")
    components = collect_components(get_plugin_manager(entry_points=False))
    with pytest.raises(XaibenchError, match=r"zennit.*pip install 'xaibench\[zennit\]'"):
        components.saliency.create("zennit:EpsilonPlus")
    code, out = xaibench_cli(
        capsys, "run", "osteoporosis", "--saliency", "zennit:EpsilonPlus", "--out", str(tmp_path)
    )
    assert code != 0
    assert "Traceback" not in out
    (line,) = [ln for ln in out.splitlines() if "zennit:EpsilonPlus" in ln]
    assert "pip install 'xaibench[zennit]'" in line
