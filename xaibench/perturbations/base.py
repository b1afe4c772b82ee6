"""The perturbation contract.

``apply(images, masks, generator) -> images``: pixels inside ``masks`` are replaced, in
raw-intensity space (before any backbone normalisation), so ``zero`` means the same for every
backbone. Pixels outside the mask are returned unchanged. :func:`cpu_arrays` and
:func:`solve_in_threads` serve the per-image solves of the interpolating perturbations
(``inpaint``, ``road``).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import torch

from xaibench.component import Component


class Perturbation(Component):
    """Base class of region perturbations."""

    @abstractmethod
    def apply(
        self, images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """Return perturbed copies of ``images`` ``[B, 1, H, W]`` inside ``masks`` ``[B, H, W]``."""
        raise NotImplementedError(f"{type(self).__name__} must implement apply()")


_Job = TypeVar("_Job")


def cpu_arrays(images: torch.Tensor, masks: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``images`` as float64 and ``masks`` as bool NumPy arrays on the CPU, for per-image solves."""
    pixels = images.detach().to(device="cpu", dtype=torch.float64).numpy()
    holes = masks.detach().to(device="cpu", dtype=torch.bool).numpy()
    return pixels, holes


def solve_in_threads(solve: Callable[[_Job], None], jobs: Sequence[_Job]) -> None:
    """Call ``solve`` on every job, in threads when torch may use more than one.

    SciPy's sparse solvers release the GIL, so threads solve images side by side (1.8x on two
    cores); as many as torch may use, so a run limited to one thread stays on one. Each job
    must write its own result (one image and channel): the results then do not depend on the
    threads. A job's exception is raised here.
    """
    workers = max(1, min(torch.get_num_threads(), len(jobs)))
    if workers == 1:
        for job in jobs:
            solve(job)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(solve, jobs))  # list(): re-raises a solve's exception
