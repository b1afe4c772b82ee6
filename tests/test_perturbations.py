import numpy as np
import pytest
import torch
from scipy import ndimage

from xaibench.component import build_component
from xaibench.errors import InvalidOptionsError
from xaibench.perturbations.blur import GaussianBlur, gaussian_blur
from xaibench.perturbations.fill import MeanFill, ZeroFill
from xaibench.perturbations.inpaint import BiharmonicInpaint
from xaibench.perturbations.noise import GaussianNoise
from xaibench.perturbations.shuffle import RegionShuffle
from xaibench.plugins import collect_components, get_plugin_manager

COMPONENTS = collect_components(get_plugin_manager(entry_points=False))
PERTURBATIONS = COMPONENTS.perturbations.names()
# Every registered perturbation with its defaults, plus the non-default modes worth checking.
CASES = [(name, {}) for name in PERTURBATIONS] + [
    ("blur", {"over": "region"}),
    ("mean", {"over": "image"}),
]
CASE_IDS = [name + "".join(f"-{v}" for v in options.values()) for name, options in CASES]


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


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_batch(b: int = 4, h: int = 24, w: int = 20, seed: int = 0):
    """Textured images with (the first ``b`` of) a box, a blob, a complement and a full mask."""
    g = gen(seed)
    images = torch.rand(4, 1, h, w, generator=g)
    masks = torch.zeros(4, h, w, dtype=torch.bool)
    masks[0, 4:12, 5:15] = True
    masks[1] = torch.rand(h, w, generator=g) > 0.6
    masks[2] = True
    masks[2, 10:14, 8:12] = False  # the complement of a small region
    masks[3] = True
    return images[:b], masks[:b]


# --- every registered perturbation -------------------------------------------------------------


def test_the_new_perturbations_are_registered():
    assert {"zero", "mean", "blur", "noise", "inpaint", "shuffle", "road"} <= set(PERTURBATIONS)
    for entry in COMPONENTS.perturbations.entries():
        assert entry.summary


@pytest.mark.parametrize(("name", "options"), CASES, ids=CASE_IDS)
def test_contract_outside_untouched_range_shape_dtype(name, options):
    perturbation = COMPONENTS.perturbations.create(name, options)
    assert type(perturbation).display_name
    images, masks = random_batch()
    before = images.clone()
    out = perturbation.apply(images, masks, gen(1))
    assert out.shape == images.shape
    assert out.dtype == images.dtype
    assert out.device == images.device
    assert torch.equal(images, before)  # input not modified in place
    outside = ~masks.unsqueeze(1).expand_as(images)
    assert torch.equal(out[outside], images[outside])  # bit-identical
    assert out.min() >= 0
    assert out.max() <= 1
    assert not torch.equal(out, images)  # it did something inside the regions


@pytest.mark.parametrize(("name", "options"), CASES, ids=CASE_IDS)
def test_contract_deterministic_for_a_seed_and_batched(name, options):
    perturbation = COMPONENTS.perturbations.create(name, options)
    images, masks = random_batch()
    first = perturbation.apply(images, masks, gen(7))
    torch.testing.assert_close(perturbation.apply(images, masks, gen(7)), first, rtol=0, atol=0)
    if name in {"noise", "shuffle", "road"}:
        return  # random draws depend on the batch shape by design; checked in their own tests
    for i in range(images.shape[0]):
        alone = perturbation.apply(images[i : i + 1], masks[i : i + 1], gen(7))
        torch.testing.assert_close(alone, first[i : i + 1], rtol=0, atol=1e-6)


@pytest.mark.parametrize(("name", "options"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_contract_keeps_other_float_dtypes(name, options, dtype):
    images, masks = random_batch(h=12, w=12)
    perturbation = COMPONENTS.perturbations.create(name, options)
    out = perturbation.apply(images.to(dtype), masks, gen(1))
    assert out.dtype == dtype
    outside = ~masks.unsqueeze(1).expand_as(images)
    assert torch.equal(out[outside], images.to(dtype)[outside])
    assert out.min() >= 0
    assert out.max() <= 1


@pytest.mark.parametrize(("name", "options"), CASES, ids=CASE_IDS)
def test_contract_empty_mask_is_a_no_op(name, options):
    images, _ = random_batch(b=2)
    masks = torch.zeros(2, *images.shape[-2:], dtype=torch.bool)
    out = COMPONENTS.perturbations.create(name, options).apply(images, masks, gen(1))
    assert torch.equal(out, images)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(("name", "options"), CASES, ids=CASE_IDS)
def test_contract_on_cuda_matches_the_cpu(name, options):
    perturbation = COMPONENTS.perturbations.create(name, options)
    images, masks = random_batch()
    cpu = perturbation.apply(images, masks, gen(3))
    cuda = perturbation.apply(images.cuda(), masks.cuda(), gen(3))  # CPU generator, CUDA images
    assert cuda.device.type == "cuda"
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=0, atol=1e-5)


# --- blur ----------------------------------------------------------------------------------------


def test_blur_of_a_constant_image_is_the_constant():
    images = torch.full((2, 1, 32, 40), 0.3)
    masks = torch.zeros(2, 32, 40, dtype=torch.bool)
    masks[:, 5:30, 2:20] = True
    for over in ("image", "region"):
        out = GaussianBlur(sigma=0.1, over=over).apply(images, masks, gen())
        torch.testing.assert_close(out, images, rtol=0, atol=1e-6)


def test_blur_matches_scipy_gaussian_filter_including_borders():
    images = torch.rand(2, 1, 30, 41, generator=gen(3), dtype=torch.float64)
    for sigma in (0.7, 3.0, 20.0):  # 20 px: the kernel is longer than the image
        ours = gaussian_blur(images, sigma)
        for i in range(2):
            ref = ndimage.gaussian_filter(images[i, 0].numpy(), sigma, mode="reflect")
            np.testing.assert_allclose(ours[i, 0].numpy(), ref, rtol=0, atol=1e-10)


def test_blur_of_a_step_edge_is_monotone_and_matches_scipy_inside_the_region():
    h, w = 16, 64
    images = torch.zeros(1, 1, h, w)
    images[..., w // 2 :] = 1.0
    masks = torch.zeros(1, h, w, dtype=torch.bool)
    masks[:, :, 16:48] = True
    blur = GaussianBlur(sigma=0.25)  # 4 px on the 16 px shorter side
    out = blur.apply(images, masks, gen())
    row = out[0, 0, 8]
    assert torch.all(row[1:] >= row[:-1])  # monotone non-decreasing
    assert row[16] < 0.01  # 4 sigma from the edge: almost nothing mixed in
    assert row[47] > 0.99
    assert row[31] < 0.5 < row[32]
    ref = ndimage.gaussian_filter(images[0, 0].double().numpy(), 4.0, mode="reflect")
    np.testing.assert_allclose(out[0, 0][masks[0]].numpy(), ref[masks[0].numpy()], atol=1e-5)


def test_blur_sigma_is_a_fraction_of_the_shorter_side():
    assert GaussianBlur(sigma=0.05).sigma_pixels(128, 256) == pytest.approx(6.4)
    with pytest.raises(InvalidOptionsError, match="sigma"):
        build_component(GaussianBlur, {"sigma": 0}, label="perturbation 'blur'")


def test_blur_over_region_mixes_in_no_outside_pixels():
    # Region is a constant 0.2 plateau inside a bright image: blurring the whole image pulls the
    # region's border up; blurring only the region's pixels leaves the plateau exactly at 0.2.
    images = torch.ones(1, 1, 32, 32)
    images[..., 8:24, 8:24] = 0.2
    masks = torch.zeros(1, 32, 32, dtype=torch.bool)
    masks[:, 8:24, 8:24] = True
    whole = GaussianBlur(sigma=0.1, over="image").apply(images, masks, gen())
    region = GaussianBlur(sigma=0.1, over="region").apply(images, masks, gen())
    assert whole[0, 0, 8, 8] > 0.5  # corner of the region: most of its neighbourhood is bright
    torch.testing.assert_close(region, images, rtol=0, atol=1e-6)


# --- noise ---------------------------------------------------------------------------------------


def test_noise_has_the_requested_std_inside_and_no_effect_outside():
    images = torch.full((2, 1, 128, 128), 0.5)
    masks = torch.zeros(2, 128, 128, dtype=torch.bool)
    masks[:, 10:110, 20:120] = True  # 20 000 noisy pixels
    out = GaussianNoise(sigma=0.08).apply(images, masks, gen(5))
    delta = (out - images)[masks.unsqueeze(1)]
    assert delta.std().item() == pytest.approx(0.08, rel=0.03)
    assert abs(delta.mean().item()) < 0.003
    outside = ~masks.unsqueeze(1)
    assert torch.equal(out[outside], images[outside])


def test_noise_is_clipped_to_the_valid_range():
    images = torch.tensor([0.0, 1.0]).repeat_interleave(512).reshape(1, 1, 32, 32)
    masks = torch.ones(1, 32, 32, dtype=torch.bool)
    out = GaussianNoise(sigma=0.5).apply(images, masks, gen(2))
    assert out.min() == 0
    assert out.max() == 1
    assert (out[..., :16, :] > 0).any()  # the black half did get noise


def test_noise_depends_on_the_seed():
    images, masks = random_batch()
    a = GaussianNoise().apply(images, masks, gen(1))
    b = GaussianNoise().apply(images, masks, gen(2))
    assert not torch.equal(a, b)


# --- shuffle -------------------------------------------------------------------------------------


def test_shuffle_permutes_the_region_and_nothing_else():
    images = torch.rand(2, 1, 20, 30, generator=gen(4))  # distinct values almost surely
    masks = torch.zeros(2, 20, 30, dtype=torch.bool)
    masks[0, 2:15, 3:25] = True
    masks[1] = torch.rand(20, 30, generator=gen(9)) > 0.5
    out = RegionShuffle().apply(images, masks, gen(1))
    for i in range(2):
        before, after = images[i, 0][masks[i]], out[i, 0][masks[i]]
        assert torch.equal(torch.sort(after).values, torch.sort(before).values)  # same multiset
        assert (after != before).float().mean() > 0.9  # order destroyed
        assert torch.equal(out[i, 0][~masks[i]], images[i, 0][~masks[i]])


def test_shuffle_same_seed_same_result_different_seed_different():
    images, masks = random_batch()
    a = RegionShuffle().apply(images, masks, gen(1))
    assert torch.equal(RegionShuffle().apply(images, masks, gen(1)), a)
    assert not torch.equal(RegionShuffle().apply(images, masks, gen(2)), a)


def test_shuffle_of_a_single_pixel_region_changes_nothing():
    images, _ = random_batch(b=1)
    masks = torch.zeros(1, *images.shape[-2:], dtype=torch.bool)
    masks[0, 3, 4] = True
    assert torch.equal(RegionShuffle().apply(images, masks, gen(1)), images)


# --- inpaint -------------------------------------------------------------------------------------


def test_inpaint_recovers_a_linear_ramp_inside_a_hole():
    h, w = 32, 40
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ramp = (0.1 + 0.6 * xx / (w - 1) + 0.2 * yy / (h - 1)).float()
    images = torch.stack([ramp, ramp.flip(1)]).unsqueeze(1)
    masks = torch.zeros(2, h, w, dtype=torch.bool)
    masks[0, 8:24, 10:30] = True
    masks[1, 2:30, 2:38] = True  # a large hole: only a 2-pixel frame is known
    images_with_holes = images.masked_fill(masks.unsqueeze(1), 0.0)  # the hole's content is lost
    out = BiharmonicInpaint().apply(images_with_holes, masks, gen())
    torch.testing.assert_close(out, images, rtol=0, atol=1e-3)


def test_inpaint_at_the_image_border_is_close_but_not_exact():
    # scikit-image truncates the stencil at the image border, so a ramp is not reproduced exactly
    # in a hole that touches it (documented in the class docstring).
    h, w = 32, 40
    ramp = (0.1 + 0.6 * torch.arange(w) / (w - 1)).float().expand(h, w)
    images = ramp.reshape(1, 1, h, w).clone()
    masks = torch.zeros(1, h, w, dtype=torch.bool)
    masks[0, 0:12, 25:40] = True
    out = BiharmonicInpaint().apply(images.masked_fill(masks.unsqueeze(1), 0.0), masks, gen())
    error = (out - images).abs().max().item()
    assert 1e-3 < error < 0.15


def test_inpaint_of_a_full_mask_is_the_image_mean():
    images, _ = random_batch(b=2)
    masks = torch.zeros(2, *images.shape[-2:], dtype=torch.bool)
    masks[0] = True
    masks[1, 5:9, 5:9] = True
    out = BiharmonicInpaint().apply(images, masks, gen())
    torch.testing.assert_close(out[0], torch.full_like(out[0], images[0].mean().item()))
    assert out[1].std() > 0  # the other image was inpainted normally


def test_inpaint_result_is_clipped():
    # A steep slope towards the hole makes the biharmonic surface overshoot past 1.
    images = torch.zeros(1, 1, 24, 24)
    images[..., :, 10:] = torch.linspace(0.0, 1.0, 14)
    images[..., :, 20:] = 1.0
    masks = torch.zeros(1, 24, 24, dtype=torch.bool)
    masks[:, 6:18, 18:22] = True
    out = BiharmonicInpaint().apply(images, masks, gen())
    assert out.max() <= 1
    assert out.min() >= 0


def test_inpainting_in_threads_equals_inpainting_one_image_at_a_time():
    # Images are solved side by side in torch's thread count; each solve is independent, so
    # the result must not change with the number of threads.
    rng = np.random.default_rng(4)
    images = torch.from_numpy(rng.random((5, 1, 24, 24)).astype(np.float32))
    masks = torch.zeros(5, 24, 24, dtype=torch.bool)
    masks[:, 6:15, 4:18] = True
    masks[2] = False  # nothing to inpaint
    masks[3] = True  # everything: the mean fallback
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = BiharmonicInpaint().apply(images, masks, gen())
        torch.set_num_threads(3)
        threaded = BiharmonicInpaint().apply(images, masks, gen())
    finally:
        torch.set_num_threads(before)
    assert torch.equal(serial, threaded)
    assert torch.equal(threaded[2], images[2])
    assert not torch.equal(threaded[0], images[0])
