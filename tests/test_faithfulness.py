"""Deletion / insertion AUC and ROAD: known answers on a model whose score is computable by hand."""

import numpy as np
import pytest
import torch

from xaibench.errors import XaibenchError
from xaibench.metrics.faithfulness import (
    ROAD,
    DeletionAUC,
    InsertionAUC,
    linear_impute,
    relevance_rank,
)
from xaibench.perturbations.blur import gaussian_blur

SIDE = 8
REGION = torch.zeros(SIDE, SIDE, dtype=torch.bool)
REGION[:4, :4] = True  # a quarter of the image


def region_mean(x: torch.Tensor) -> torch.Tensor:
    """A 'model' whose explained-class probability is the mean intensity inside REGION."""
    return x[:, 0][:, REGION].mean(dim=1)


def images(b: int = 2) -> torch.Tensor:
    x = torch.zeros(b, 1, SIDE, SIDE)
    x[:, 0, REGION] = 1.0
    return x


def test_rank_breaks_ties_by_pixel_index():
    maps = torch.tensor([[[0.5, 1.0], [0.5, 0.5]]])
    assert relevance_rank(maps).tolist() == [[1, 0, 2, 3]]
    with pytest.raises(XaibenchError, match="not finite"):
        relevance_rank(torch.tensor([[[float("nan"), 1.0]]]))


def test_deletion_of_a_perfect_map_by_hand():
    # The perfect map ranks the region first: after the first quarter is deleted the score is 0.
    # Curve at fractions 0, 1/4, 1/2, 3/4, 1 = [1, 0, 0, 0, 0] -> trapezoid area 1/8.
    maps = REGION.float().expand(2, SIDE, SIDE)
    metric = DeletionAUC(steps=4)
    value, floor = metric.per_sample(region_mean, images(), maps, torch.Generator().manual_seed(0))
    torch.testing.assert_close(value, torch.full((2,), 0.125, dtype=torch.float64))
    assert (floor > 0.125).all()  # a random order deletes the region more slowly
    # The worst map ranks the region last: curve [1, 1, 1, 1, 0] -> 7/8.
    worst, _ = metric.per_sample(region_mean, images(), 1 - maps, torch.Generator())
    torch.testing.assert_close(worst, torch.full((2,), 0.875, dtype=torch.float64))


def test_insertion_of_a_perfect_map_by_hand():
    # Zero canvas, region revealed first: curve [0, 1, 1, 1, 1] -> 7/8.
    maps = REGION.float().expand(2, SIDE, SIDE)
    metric = InsertionAUC(steps=4, canvas="zero")
    value, floor = metric.per_sample(region_mean, images(), maps, torch.Generator().manual_seed(0))
    torch.testing.assert_close(value, torch.full((2,), 0.875, dtype=torch.float64))
    assert (floor < 0.875).all()


def test_random_floor_is_near_the_diagonal_and_seeded():
    # A random order removes region pixels at the average rate: deletion curve ~ 1 - f, area ~ 1/2.
    x = images(64)
    maps = torch.rand(64, SIDE, SIDE)
    metric = DeletionAUC(steps=16)
    _, floor = metric.per_sample(region_mean, x, maps, torch.Generator().manual_seed(0))
    assert abs(float(floor.mean()) - 0.5) < 0.03
    _, again = metric.per_sample(region_mean, x, maps, torch.Generator().manual_seed(0))
    assert torch.equal(floor, again)


def test_mean_and_blur_canvases():
    x = images(1)
    maps = REGION.float().unsqueeze(0)
    # Mean canvas: deleted region pixels become the image mean (1/4), so the curve is
    # [1, 1/4, 1/4, 1/4, 1/4] and its trapezoid area 1/4 * ((1 + 1/4) / 2 + 3/4) = 11/32.
    mean_value, _ = DeletionAUC(steps=4, canvas="mean").per_sample(
        region_mean, x, maps, torch.Generator()
    )
    torch.testing.assert_close(mean_value, torch.tensor([11 / 32], dtype=torch.float64))
    # Blur of a constant image is the constant: inserting onto it changes nothing.
    flat = torch.full((1, 1, SIDE, SIDE), 0.3)
    torch.testing.assert_close(gaussian_blur(flat, 1.5), flat)
    value, _ = InsertionAUC(steps=4).per_sample(region_mean, flat, maps, torch.Generator())
    torch.testing.assert_close(value, torch.tensor([0.3], dtype=torch.float64))


def test_linear_imputation_reproduces_a_ramp():
    yy, xx = np.mgrid[0:16, 0:16].astype(np.float64)
    ramp = 0.02 * yy + 0.03 * xx + 0.1
    missing = np.zeros((16, 16), dtype=bool)
    missing[4:9, 5:12] = True
    missing[11, 3] = True
    damaged = np.where(missing, 0.0, ramp)
    np.testing.assert_allclose(linear_impute(damaged, missing), ramp, atol=1e-10)
    with pytest.raises(XaibenchError, match="every pixel"):
        linear_impute(ramp, np.ones((16, 16), dtype=bool))


def test_road_by_hand_and_against_its_floor():
    # Region pixels are 1, the rest 0: imputing removed region pixels from their neighbours
    # pulls them towards 0, so removing the region first lowers the score more than random.
    x = images(4)
    maps = REGION.float().expand(4, SIDE, SIDE)
    metric = ROAD(levels=(0.25,), noise=0.0)
    value, floor = metric.per_sample(region_mean, x, maps, torch.Generator().manual_seed(0))
    # Removing exactly the region (all ones) with only zeros around: imputation gives 0.
    torch.testing.assert_close(value, torch.zeros(4, dtype=torch.float64))
    assert (floor > 0.3).all()
    with pytest.raises(XaibenchError, match="strictly between"):
        ROAD(levels=(1.0,)).per_sample(region_mean, x, maps, torch.Generator())


def test_aggregate_reports_the_floor():
    metric = DeletionAUC()
    mv = metric.aggregate(np.array([0.1, np.nan, 0.3]), np.array([0.5, 0.5, 0.6]))
    assert mv.value == pytest.approx(0.2)
    assert mv.n == 2
    assert mv.details["random_floor"] == pytest.approx(0.5333333)
