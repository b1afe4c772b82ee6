"""Phantom generation speed: images per second, uncached, at 256 and 128 px.

Target: at least 50 images/s at 256 x 256 on two CPU cores. Each round renders a fresh chunk of
64 images (new patients, so nothing is reused between rounds) with the disk cache bypassed
(``PhantomDataset.generate``). Run ``python -m pytest benchmarks/test_phantom_speed.py
--benchmark-only``; the rate is printed and stored in each row's ``extra_info``.
"""

import itertools

import pytest

from xaibench.data.phantom import PhantomDataset

CHUNK = 64


@pytest.mark.benchmark(group="phantom_generation")
@pytest.mark.parametrize("size", [256, 128])
def test_phantom_images_per_second(benchmark, size):
    ds = PhantomDataset(n_images=CHUNK * 40, image_size=size, seed=0)
    ds.table()  # the cohort is drawn once, outside the timing
    starts = itertools.count(0, CHUNK)

    def render_chunk():
        start = next(starts) % len(ds)
        return ds.generate(range(start, start + CHUNK))

    images, _labels = benchmark.pedantic(render_chunk, rounds=5, warmup_rounds=1)
    assert images.shape == (CHUNK, size, size)
    rate = CHUNK / benchmark.stats.stats.median
    benchmark.extra_info["images_per_second"] = round(rate, 1)
    print(f"\nphantom {size} px: {rate:.0f} images/s (target at 256 px: >= 50)")
    if size == 256:
        assert rate >= 50
