"""Built-in tasks: task files shipped in :mod:`xaibench.tasks`, read by ``FileTask``."""

from __future__ import annotations

from xaibench.hookspecs import hookimpl
from xaibench.registry import Register

#: CheXlocalize's ten pathologies, as the finding columns of ``chexlocalize.yaml``.
CHEXLOCALIZE_FINDINGS: tuple[str, ...] = (
    "enlarged_cardiomediastinum",
    "cardiomegaly",
    "lung_lesion",
    "lung_opacity",
    "edema",
    "consolidation",
    "atelectasis",
    "pneumothorax",
    "pleural_effusion",
    "support_devices",
)


@hookimpl
def register_tasks(register: Register) -> None:
    """Register ``osteoporosis`` and the ``chexlocalize:<finding>`` family (task files)."""
    register(
        "osteoporosis",
        "xaibench.tasks.file_task:FileTask",
        summary="WHO T-score classes from chest X-rays; osteoporosis vs rest; region: bone",
        options={"file": "xaibench.tasks:osteoporosis.yaml"},
    )
    for finding in CHEXLOCALIZE_FINDINGS:
        register(
            f"chexlocalize:{finding}",
            "xaibench.tasks.file_task:FileTask",
            summary=f"CheXlocalize: {finding} vs none; saliency vs radiologists' segmentation",
            options={"file": "xaibench.tasks:chexlocalize.yaml", "finding": finding},
        )
