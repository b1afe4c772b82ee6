import torch

from xaibench.models.base import Classifier
from xaibench.models.timm_backbone import TimmBackbone
from xaibench.plugins import collect_components, get_plugin_manager


def test_registered_through_the_entry_point():
    pm = get_plugin_manager(load_plugins="example")
    entry = collect_components(pm).saliency.get("example_method")
    assert entry.provider.distribution == "xaibench-example"
    assert entry.provider.version == "0.1.0"


def test_method_is_gradient_times_input():
    torch.manual_seed(0)
    backbone = TimmBackbone(arch="test_resnet", img_size=32, random_init=True).create_adapter()
    model = Classifier(backbone, 3).eval()
    images = torch.rand(2, 1, 32, 32)
    targets = torch.tensor([0, 2])
    method = collect_components(get_plugin_manager(load_plugins="example")).saliency.create(
        "example_method"
    )
    maps = method.explain(model, images, targets)
    x = images.clone().requires_grad_(True)
    model(x).gather(1, targets.view(-1, 1)).sum().backward()
    torch.testing.assert_close(maps, (x.grad * images).abs()[:, 0])
