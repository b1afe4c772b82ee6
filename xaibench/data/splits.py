"""Patient-level train/validation/test splits.

Repeat images of one patient must never straddle splits, or a model is tested on people it was
trained on. Patients are stratified by label so a rare class (5% osteoporosis in the reference
cohort) reaches every split.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xaibench.errors import XaibenchError

SPLITS: tuple[str, str, str] = ("train", "val", "test")


def patient_split(
    patient_ids: Sequence[str] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    seed: int = 0,
) -> np.ndarray:
    """Assign every image to ``train``, ``val`` or ``test`` so that no patient is in two splits.

    Patients are grouped by the label of their first image and each group is shuffled with
    ``seed`` and cut by ``fractions`` of its patients (largest-remainder rounding), which keeps
    class shares close to the cohort's in every split.

    Args:
        patient_ids: One id per image.
        labels: One integer label per image.
        fractions: Train, validation and test shares of patients; must sum to 1.
        seed: Seed of the shuffle.

    Returns:
        An array of split names, one per image.

    Raises:
        XaibenchError: Bad fractions, or inputs of different lengths.
    """
    pids = np.asarray(patient_ids).astype(str)
    labs = np.asarray(labels)
    if len(pids) != len(labs):
        raise XaibenchError(f"{len(pids)} patient ids but {len(labs)} labels")
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise XaibenchError(
            f"split fractions must be three non-negative shares summing to 1, got {fractions}"
        )
    rng = np.random.default_rng(seed)
    first_label: dict[str, int] = {}
    for pid, lab in zip(pids, labs, strict=True):
        first_label.setdefault(pid, int(lab))
    assignment: dict[str, str] = {}
    for label in sorted(set(first_label.values())):
        group = np.array(sorted(p for p, lab in first_label.items() if lab == label))
        rng.shuffle(group)
        counts = _largest_remainder(len(group), fractions)
        start = 0
        for split, count in zip(SPLITS, counts, strict=True):
            for pid in group[start : start + count]:
                assignment[str(pid)] = split
            start += count
    return np.array([assignment[p] for p in pids])


def _largest_remainder(n: int, fractions: tuple[float, float, float]) -> list[int]:
    raw = [n * f for f in fractions]
    counts = [int(np.floor(r)) for r in raw]
    order = np.argsort([-(r - c) for r, c in zip(raw, counts, strict=True)], kind="stable")
    for i in order[: n - sum(counts)]:
        counts[int(i)] += 1
    return counts
