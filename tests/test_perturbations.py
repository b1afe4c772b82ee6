import pytest
import torch

from xaibench.component import build_component
from xaibench.errors import InvalidOptionsError
from xaibench.perturbations.fill import MeanFill, ZeroFill


@pytest.fixture
def batch():
    images = torch.tensor([[[[0.2, 0.4], [0.6, 0.8]]], [[[1.0, 0.0], [0.5, 0.5]]]])
    masks = torch.tensor([[[True, False], [False, False]], [[False, False], [True, True]]])
    return images, masks


def test_zero_fill(batch):
    images, masks = batch
    out = ZeroFill().apply(images, masks, torch.Generator())
    expected = torch.tensor([[[[0.0, 0.4], [0.6, 0.8]]], [[[1.0, 0.0], [0.0, 0.0]]]])
    torch.testing.assert_close(out, expected)
    assert images[0, 0, 0, 0] == 0.2  # input untouched


def test_mean_fill_uses_the_pixels_outside_the_region(batch):
    images, masks = batch
    out = MeanFill().apply(images, masks, torch.Generator())
    # image 0: outside = 0.4, 0.6, 0.8 -> 0.6; image 1: outside = 1.0, 0.0 -> 0.5
    expected = torch.tensor([[[[0.6, 0.4], [0.6, 0.8]]], [[[1.0, 0.0], [0.5, 0.5]]]])
    torch.testing.assert_close(out, expected)


def test_mean_fill_over_the_whole_image(batch):
    images, masks = batch
    out = MeanFill(over="image").apply(images, masks, torch.Generator())
    assert out[0, 0, 0, 0].item() == pytest.approx(0.5)  # (0.2 + 0.4 + 0.6 + 0.8) / 4
    assert out[1, 0, 1, 0].item() == pytest.approx(0.5)
    torch.testing.assert_close(out[~masks.unsqueeze(1)], images[~masks.unsqueeze(1)])


def test_mean_fill_rejects_unknown_option_values():
    with pytest.raises(InvalidOptionsError, match="over"):
        build_component(MeanFill, {"over": "everywhere"}, label="perturbation 'mean'")
