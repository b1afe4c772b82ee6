"""Built-in adaptation strategies (the study's three, plus full fine-tuning)."""

from __future__ import annotations

from xaibench.hookspecs import hookimpl
from xaibench.registry import Register


@hookimpl
def register_strategies(register: Register) -> None:
    """Register ``linear_probe``, ``last_block``, ``lora`` and ``full``."""
    register(
        "linear_probe",
        "xaibench.strategies.linear_probe:LinearProbe",
        summary="frozen backbone, linear head on cached features (own options steps, lr, "
        "eval_every; ignores train.epochs and train.lr)",
    )
    register(
        "last_block",
        "xaibench.strategies.last_block:LastBlock",
        summary="train the last block, final norm and head (CNN: last stage)",
    )
    register(
        "lora",
        "xaibench.strategies.lora:LoRA",
        summary="low-rank adapters (peft, rank 8) on the backbone, plus the head",
    )
    register("full", "xaibench.strategies.full:FullFineTuning", summary="fine-tune every parameter")
