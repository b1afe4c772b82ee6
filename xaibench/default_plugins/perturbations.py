"""Built-in region perturbations."""

from __future__ import annotations

from xaibench.hookspecs import hookimpl
from xaibench.registry import Register


@hookimpl
def register_perturbations(register: Register) -> None:
    """Register ``zero``, ``mean``, ``blur``, ``noise``, ``inpaint``, ``shuffle`` and ``road``."""
    register("zero", "xaibench.perturbations.fill:ZeroFill", summary="region set to 0")
    register(
        "mean",
        "xaibench.perturbations.fill:MeanFill",
        summary="region set to the image mean (over pixels outside the region)",
    )
    register(
        "blur",
        "xaibench.perturbations.blur:GaussianBlur",
        summary="region replaced by a Gaussian-blurred copy of the image",
    )
    register(
        "noise",
        "xaibench.perturbations.noise:GaussianNoise",
        summary="Gaussian noise added inside the region, clipped to [0, 1]",
    )
    register(
        "inpaint",
        "xaibench.perturbations.inpaint:BiharmonicInpaint",
        summary="region filled from its surroundings by biharmonic inpainting",
    )
    register(
        "shuffle",
        "xaibench.perturbations.shuffle:RegionShuffle",
        summary="region's pixels randomly permuted within the region",
    )
    register(
        "road",
        "xaibench.perturbations.road:NoisyLinearImpute",
        summary="region filled by ROAD's noisy linear imputation (neighbours' mean + noise)",
    )
