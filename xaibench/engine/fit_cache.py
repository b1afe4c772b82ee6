"""The trained model of a cell, cached: a cell killed after training does not train again.

Training is most of a cell's cost. After a strategy has fitted, the model's trainable
parameters and buffers, the fit report and the random-number states are stored in the disk
cache (namespace ``fits``) under a hash of everything training depends on (:func:`fit_key`).
A later run of the same cell — a resumed run whose cell died while explaining, or another run
with the same models and other explanation settings — loads them instead of training. The
random states matter: saliency methods with noise (SmoothGrad, GradientSHAP, the random
control) draw from torch's and NumPy's generators after training, so restoring the states the
training left makes every later number identical to the run that trained.

One entry per fit, ``fits/<key>.xbc`` (:class:`xaibench.cache.CacheNamespace`): a safetensors
payload of the tensors with the fit report, the random states' other fields and the names of
the trainable parameters as JSON in a ``meta.json`` byte tensor — nothing pickled. One file
means one atomic rename and one checksum: weights and report are never mixed from two writes.
A corrupt entry is logged, deleted and trained again.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from xaibench import __version__
from xaibench.cache import CacheNamespace, content_key
from xaibench.strategies.base import FitReport

NAMESPACE = "fits"
#: The byte tensor holding the fit's JSON metadata.
META = "meta.json"


def fit_key(*parts: Any) -> str:
    """Content key of a fit: the caller passes everything training depends on.

    ``fit-v2``: checkpoint selection breaks validation-AUC ties by validation loss and the
    report carries the ``selection_curve`` (issue 17 item 7), so fits cached by the earlier
    rule (which may hold another epoch) are not reused.
    """
    return content_key("fit-v2", __version__, *parts)


def _trained_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters that train, and every persistent buffer (running statistics move too)."""
    return {
        name: value.detach().cpu().contiguous()
        for name, value in model.state_dict(keep_vars=True).items()
        if not isinstance(value, nn.Parameter) or value.requires_grad
    }


def _rng_states() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    np_state = cast(tuple[Any, ...], np.random.get_state(legacy=True))
    py_state = random.getstate()
    tensors = {
        "rng.torch": torch.get_rng_state(),
        "rng.numpy": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
        "rng.python": torch.tensor(py_state[1], dtype=torch.int64),
    }
    meta = {
        "numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], py_state[2]],
    }
    return tensors, meta


def _restore_rng(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    name, pos, has_gauss, cached = meta["numpy"]
    keys = tensors["rng.numpy"].numpy().astype(np.uint32)
    np.random.set_state((name, keys, pos, has_gauss, cached))
    version, gauss_next = meta["python"]
    random.setstate((version, tuple(int(v) for v in tensors["rng.python"].tolist()), gauss_next))


class FitCache:
    """Trained states on disk under ``root/fits/<key>.xbc``."""

    def __init__(self, root: Path) -> None:
        self.store = CacheNamespace(NAMESPACE, root)
        self.root = self.store.folder

    def save(self, key: str, model: nn.Module, report: FitReport) -> None:
        """Store the trained state, the report and the current random states.

        Nothing is stored when the cache is not writable (reported once).
        """
        from safetensors.torch import save

        if not self.store.writable:
            return
        rng, rng_meta = _rng_states()
        tensors = {f"model.{k}": v for k, v in _trained_state(model).items()}
        tensors.update(rng)
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        meta = {"report": asdict(report), "rng": rng_meta, "requires_grad": trainable}
        blob = json.dumps(meta).encode()
        tensors[META] = torch.frombuffer(bytearray(blob), dtype=torch.uint8)
        self.store.write(key, save(tensors))

    def load(self, key: str, model: nn.Module) -> FitReport | None:
        """Load a stored fit into ``model`` and restore the random states; None on a miss.

        A missing entry is a miss; a corrupt one is logged, deleted and a miss (the cell
        trains and stores it again); an entry whose tensors do not fit the model is a miss too.
        """
        from safetensors.torch import load

        def parse(data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
            tensors = load(data)
            meta = json.loads(tensors.pop(META).numpy().tobytes())
            # a payload that could not be restored whole is corrupt: checked before any change
            FitReport(**meta["report"])
            if not (
                {"rng.torch", "rng.numpy", "rng.python"} <= set(tensors)
                and len(meta["rng"]["numpy"]) == 4
                and len(meta["rng"]["python"]) == 2
                and isinstance(meta["requires_grad"], list)
            ):
                raise ValueError("incomplete fit entry")
            return tensors, meta

        entry = self.store.read(key, parse)
        if entry is None:
            return None
        tensors, meta = entry
        state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
        # A strategy may set what trains in ``fit`` rather than ``prepare``: compare with
        # the model's full state, and restore the flags the fit left.
        current = model.state_dict()
        if not set(state) <= set(current) or any(state[k].shape != current[k].shape for k in state):
            return None
        model.load_state_dict(state, strict=False)
        trainable = set(meta["requires_grad"])
        for name, param in model.named_parameters():
            param.requires_grad_(name in trainable)
        _restore_rng(tensors, meta["rng"])
        return FitReport(**meta["report"])
