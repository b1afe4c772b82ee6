"""The GPU path on the CPU: pinned non-blocking transfers, the ``compile`` option and its config.

The compiled-forward test needs a C compiler (inductor generates C++ on the CPU) and takes about
a minute on two cores, so it is marked slow; the CUDA transfer test runs only with a GPU.
"""

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

import xaibench.cli
from xaibench.config import resolve_config
from xaibench.device import Runtime, compiled_forward
from xaibench.models.base import Classifier
from xaibench.models.timm_backbone import TimmBackbone
from xaibench.plugins import collect_components, get_plugin_manager

HAS_COMPILER = any(shutil.which(cc) for cc in ("cc", "gcc", "clang"))


class FakeHostTensor:
    """Records what :meth:`Runtime.to` does with a host tensor bound for a CUDA device."""

    def __init__(self, pinned: bool = False, device: str = "cpu") -> None:
        self.device = torch.device(device)
        self.pinned = pinned
        self.calls: list[tuple[Any, ...]] = []

    def is_pinned(self) -> bool:
        return self.pinned

    def pin_memory(self) -> "FakeHostTensor":
        self.calls.append(("pin_memory",))
        return FakeHostTensor(pinned=True)

    def to(self, device: torch.device, non_blocking: bool = False) -> tuple[Any, ...]:
        return ("to", device, non_blocking, self.pinned, self.calls)


def test_to_on_the_cpu_returns_the_very_tensor():
    tensor = torch.rand(2, 1, 4, 4)
    assert Runtime().to(tensor) is tensor  # no copy: CPU runs stay bit-identical


def test_to_cuda_pins_host_memory_then_copies_without_blocking():
    runtime = Runtime(device=torch.device("cuda"))
    host = FakeHostTensor()
    op, device, non_blocking, pinned, _ = runtime.to(host)  # type: ignore[arg-type]
    assert (op, device.type, non_blocking, pinned) == ("to", "cuda", True, True)
    assert host.calls == [("pin_memory",)]
    already = FakeHostTensor(pinned=True)
    assert runtime.to(already)[3] is True
    assert already.calls == []
    on_device = FakeHostTensor(device="cuda")
    runtime.to(on_device)  # type: ignore[arg-type]
    assert on_device.calls == []  # already on the GPU: nothing to pin


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_to_cuda_moves_the_values():
    runtime = Runtime(device=torch.device("cuda"))
    host = torch.rand(3, 1, 8, 8)
    moved = runtime.to(host)
    assert moved.is_cuda
    assert not host.is_pinned()
    assert torch.equal(moved.cpu(), host)


def tiny_classifier(seed: int = 0) -> Classifier:
    torch.manual_seed(seed)
    adapter = TimmBackbone(arch="test_vit", img_size=32, random_init=True).create_adapter()
    return Classifier(adapter, 3).eval()


def test_forward_is_the_module_itself_without_compile():
    model = tiny_classifier()
    assert Runtime().forward(model) is model


def test_other_modules_are_compiled_whole():
    module = torch.nn.Linear(2, 2)
    assert isinstance(compiled_forward(module), torch._dynamo.eval_frame.OptimizedModule)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_COMPILER, reason="torch.compile on the CPU needs a C compiler")
def test_compiled_forward_matches_eager_without_graph_breaks():
    from torch._dynamo.utils import counters

    runtime = Runtime(compile=True)
    images = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    model = tiny_classifier()
    counters.clear()
    with torch.inference_mode():
        compiled, eager = runtime.forward(model)(images), model(images)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)  # rounding, not bits
    graphs = counters["stats"]["unique_graphs"]
    # A new model of the same architecture (the next cell) reuses the compiled graph.
    other = tiny_classifier(seed=1)
    with torch.inference_mode():
        torch.testing.assert_close(
            runtime.forward(other)(images), other(images), atol=1e-5, rtol=1e-4
        )
    assert counters["stats"]["unique_graphs"] == graphs
    # Training: same gradients.
    model.train()
    runtime.forward(model)(images).square().sum().backward()
    compiled_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    model(images).square().sum().backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(compiled_grads[name], param.grad, rtol=1e-3, atol=1e-5)
    # The backbone alone (linear-probe features).
    model.eval()
    with torch.inference_mode():
        torch.testing.assert_close(
            runtime.forward(model.backbone)(images), model.backbone(images), rtol=1e-4, atol=1e-5
        )
    assert not counters["graph_break"], dict(counters["graph_break"])


# --- the configuration field and the command-line option ----------------------------------


@pytest.fixture(scope="module")
def components():
    return collect_components(get_plugin_manager())


def test_compile_is_off_by_default_and_changes_the_hashes(components):
    defaults = components.tasks.create("osteoporosis").defaults()
    off = resolve_config(defaults)
    on = resolve_config(defaults, {"compile": True})
    assert off.compile is False
    assert on.compile is True
    assert off.model_dump(mode="json")["compile"] is False  # recorded with every config
    assert off.config_hash() != on.config_hash()
    assert off.study_hash() != on.study_hash()


@pytest.mark.parametrize(("flag", "expected"), [([], False), (["--compile"], True)])
def test_run_compile_option(monkeypatch, tmp_path: Path, flag: list[str], expected: bool):
    seen = []

    def fake_execute(config, *args, **kwargs):
        seen.append(config)
        return 0

    monkeypatch.setattr(xaibench.cli.run_command, "_execute", fake_execute)
    with pytest.raises(SystemExit) as exit_info:
        xaibench.cli.main(["run", "osteoporosis", *flag, "--quiet", "-o", str(tmp_path / "r")])
    assert exit_info.value.code in (0, None)
    assert seen[0].compile is expected


def test_compile_off_leaves_every_hash_as_before_the_field_existed():
    """Runs started before `compile` existed still resume: off, it is not hashed.

    Nor are the later `chance` and `controls` sections at their defaults (issue 17).
    """
    import hashlib
    import json

    from xaibench.config import resolve_config

    base = {"task": "osteoporosis", "dataset": "phantom", "backbones": ["test_vit.random"],
            "strategies": ["lora"], "metrics": ["auc"]}  # fmt: skip
    config = resolve_config(base)
    settings = config.model_dump(mode="json")
    for later in ("compile", "chance", "controls"):
        settings.pop(later)
    old = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    assert config.config_hash() == old
    compiled = resolve_config(base, {"compile": True})
    assert compiled.config_hash() != old
    assert compiled.study_hash() != config.study_hash()
