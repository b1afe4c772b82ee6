"""The ``road`` perturbation: ROAD's noisy linear imputation of a region (issue 17 item 2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xaibench.perturbations.road import NoisyLinearImpute


def _ramp(h: int = 24, w: int = 20) -> torch.Tensor:
    y, x = np.mgrid[0:h, 0:w]
    return torch.from_numpy(0.1 + 0.02 * y + 0.015 * x).float()[None, None]


def _hole(h: int = 24, w: int = 20) -> torch.Tensor:
    hole = torch.zeros(1, h, w, dtype=torch.bool)
    hole[0, 5:17, 4:12] = True  # away from the border
    hole[0, 8, 12:15] = True  # a thin arm
    return hole


def test_a_hole_in_a_linear_ramp_is_filled_exactly_without_noise():
    ramp, hole = _ramp(), _hole()
    damaged = ramp.masked_fill(hole.unsqueeze(1), 0.9)
    out = NoisyLinearImpute(noise=0.0).apply(damaged, hole, torch.Generator().manual_seed(0))
    np.testing.assert_allclose(out.numpy(), ramp.numpy(), atol=1e-6)


def test_a_saddle_is_filled_exactly_too():
    # 1/6 direct and 1/12 diagonal weights average x*y and x^2 - y^2 to their centre value
    y, x = np.mgrid[0:20, 0:20] / 20.0
    for surface in (0.2 + 0.5 * x * y, 0.5 + 0.3 * (x**2 - y**2)):
        image = torch.from_numpy(surface)[None, None]
        hole = torch.zeros(1, 20, 20, dtype=torch.bool)
        hole[0, 4:15, 6:13] = True
        out = NoisyLinearImpute(noise=0.0).apply(
            image.masked_fill(hole.unsqueeze(1), 0.0), hole, torch.Generator()
        )
        np.testing.assert_allclose(out.numpy(), surface[None, None], atol=1e-10)


def test_unmasked_pixels_are_unchanged_and_the_fill_is_seeded():
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.uniform(0, 1, (3, 1, 16, 16))).float()
    masks = torch.from_numpy(rng.uniform(0, 1, (3, 16, 16)) < 0.3)
    road = NoisyLinearImpute(noise=0.05)
    out = road.apply(images, masks, torch.Generator().manual_seed(1))
    assert out.dtype == images.dtype
    assert out.shape == images.shape
    keep = ~masks.unsqueeze(1)
    assert torch.equal(out[keep], images[keep])
    again = road.apply(images, masks, torch.Generator().manual_seed(1))
    assert torch.equal(out, again)
    other = road.apply(images, masks, torch.Generator().manual_seed(2))
    assert not torch.equal(out[~keep], other[~keep])
    assert out.min() >= 0
    assert out.max() <= 1


def test_the_noise_has_the_configured_spread():
    flat = torch.full((1, 1, 40, 40), 0.5)
    hole = torch.zeros(1, 40, 40, dtype=torch.bool)
    hole[0, 5:35, 5:35] = True
    out = NoisyLinearImpute(noise=0.02).apply(flat, hole, torch.Generator().manual_seed(0))
    residual = (out - 0.5)[hole.unsqueeze(1)].double()
    assert residual.mean().item() == pytest.approx(0.0, abs=0.002)
    assert residual.std().item() == pytest.approx(0.02, rel=0.08)


def test_empty_and_full_masks():
    rng = np.random.default_rng(3)
    images = torch.from_numpy(rng.uniform(0, 1, (2, 1, 8, 8))).float()
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[1] = True
    out = NoisyLinearImpute(noise=0.0).apply(images, masks, torch.Generator())
    assert torch.equal(out[0], images[0])
    np.testing.assert_allclose(out[1].numpy(), images[1].mean().item(), rtol=1e-6)


def test_road_is_registered(components):
    road = components.perturbations.create("road", {"noise": 0.0})
    assert isinstance(road, NoisyLinearImpute)
    with pytest.raises(Exception, match="noise"):
        components.perturbations.create("road", {"noise": -1})


def test_road_passes_the_perturbation_conformance_kit():
    from xaibench.plugins import get_plugin_manager
    from xaibench.testing.core import check_component

    check_component("road", "perturbations", plugin_manager=get_plugin_manager(entry_points=False))
