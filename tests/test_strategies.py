from pathlib import Path

import numpy as np
import pytest
import torch

from xaibench.cache import TensorCache
from xaibench.config import resolve_config
from xaibench.data.arrays import materialize
from xaibench.data.phantom import PhantomDataset
from xaibench.data.who import who_class
from xaibench.engine.benchmark import run_benchmark
from xaibench.errors import XaibenchError
from xaibench.models.timm_backbone import TimmBackbone
from xaibench.strategies.base import FitContext, TrainSettings
from xaibench.strategies.last_block import LastBlock
from xaibench.strategies.linear_probe import LinearProbe
from xaibench.strategies.lora import LoRA
from xaibench.strategies.training import changing_state, class_weights

SETTINGS = TrainSettings(epochs=2, batch_size=8, lr=1e-2)


@pytest.fixture(scope="module")
def splits():
    ds = PhantomDataset(n_images=48, image_size=32, class_shares=(0.4, 0.3, 0.3))
    labels = who_class(ds.table()["t_score"].to_numpy())
    return (
        materialize(ds, "train", range(32), labels[:32]),
        materialize(ds, "val", range(32, 48), labels[32:48]),
    )


def adapter(arch: str):
    torch.manual_seed(0)
    return TimmBackbone(arch=arch, img_size=32, random_init=True).create_adapter()


def context(**kwargs) -> FitContext:
    return FitContext(generator=torch.Generator().manual_seed(0), positive_class=2, **kwargs)


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def changed(before: dict, model: torch.nn.Module) -> set[str]:
    after = model.state_dict()
    return {k for k, v in before.items() if not torch.equal(v, after[k])}


def test_lora_trains_only_adapters_and_head(splits):
    model = LoRA(rank=4).prepare(adapter("test_vit"), 3)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable, "nothing to train"
    assert all("lora_" in n or n.startswith("head.") for n in trainable)
    assert any(".attn.qkv.lora_A" in n for n in trainable)
    torch.nn.functional.cross_entropy(model(splits[0].images[:8]), splits[0].labels[:8]).backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == trainable  # every adapter gets a gradient, no frozen weight does
    model.zero_grad(set_to_none=True)
    before = snapshot(model)
    LoRA(rank=4).fit(model, *splits, SETTINGS, context())
    for key in changed(before, model):
        assert "lora_" in key or key.startswith("head."), key  # no frozen base weight moved


def test_lora_rejects_unknown_targets():
    with pytest.raises(XaibenchError, match="LoRA targets not found"):
        LoRA(targets=["model.blocks.0.attn.nope"]).prepare(adapter("test_vit"), 3)


@pytest.mark.parametrize(
    ("arch", "allowed"),
    [
        ("test_vit", ("backbone.model.blocks.5.", "backbone.model.norm.", "head.")),
        ("test_resnet", ("backbone.model.layer4.", "head.")),
    ],
)
def test_last_block_changes_only_the_last_block_norm_and_head(splits, arch, allowed):
    model = LastBlock().prepare(adapter(arch), 3)
    before = snapshot(model)
    LastBlock().fit(model, *splits, SETTINGS, context())
    moved = changed(before, model)
    assert moved, "training changed nothing"
    assert all(key.startswith(allowed) for key in moved), sorted(moved)[:5]
    # batch-norm statistics of frozen stages stay put (model.train() must not update them)
    assert not any("running_mean" in k and not k.startswith(allowed) for k in moved)


def test_linear_probe_reuses_cached_features(splits, tmp_path):
    cache = TensorCache(tmp_path)
    for seed in (0, 1):
        model = LinearProbe(steps=20).prepare(adapter("test_resnet"), 3)
        calls: list[int] = []
        model.backbone.register_forward_hook(lambda *a, store=calls: store.append(1))
        ctx = FitContext(torch.Generator().manual_seed(seed), 2, cache=cache, feature_key="k")
        LinearProbe(steps=20).fit(model, *splits, SETTINGS, ctx)
        if seed == 0:
            assert (cache.hits, cache.misses) == (0, 2)
            assert len(calls) > 0
        else:
            assert (cache.hits, cache.misses) == (2, 2)
            assert calls == []  # the backbone never ran


def test_second_linear_probe_cell_on_a_backbone_hits_the_cache(components, tmp_path: Path):
    task = components.tasks.create("osteoporosis")
    cfg = resolve_config(
        task.defaults(),
        {
            "dataset": {"options": {"n_images": 60, "image_size": 32,
                                    "class_shares": [0.4, 0.3, 0.3]}},
            "backbones": [{"name": "test_resnet.random", "options": {"img_size": 32}}],
            "strategies": ["linear_probe", {"name": "linear_probe", "label": "probe_b",
                                            "options": {"lr": 0.05}}],
            "saliency": [], "perturbations": [], "metrics": ["auc"],
            "cache_dir": str(tmp_path / "cache"),
        },
    )  # fmt: skip
    outcome = run_benchmark(cfg, components, tmp_path / "run")
    assert [c["status"] for c in outcome.document["cells"]] == ["ok", "ok"]
    files = list((tmp_path / "cache" / "features").glob("*.xbc"))
    assert len(files) == 2  # train and val, extracted once for both cells


def test_balanced_class_weights_by_hand():
    labels = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 1, 2])  # 6 / 3 / 1
    weights = class_weights(labels, 3, "balanced")
    np.testing.assert_allclose(weights.numpy(), [10 / 18, 10 / 9, 10 / 3], rtol=1e-6)
    assert class_weights(labels, 3, "none") is None
    with pytest.raises(XaibenchError, match=r"\[3\]"):
        class_weights(labels, 4, "balanced")


def test_best_epoch_checkpoint_holds_what_training_can_change_and_restores_it():
    model = LoRA(rank=4).prepare(adapter("test_resnet"), 3)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    buffers = set(model.state_dict()) - frozen - trainable  # persistent buffers only
    assert frozen
    assert trainable
    assert any("running_mean" in b for b in buffers)
    state = changing_state(model)
    assert set(state) == trainable | buffers
    saved = {k: v.clone() for k, v in state.items()}
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(1.0)
        for b in model.buffers():
            if b.is_floating_point():
                b.mul_(2.0)
    assert any(not torch.equal(saved[k], v) for k, v in model.state_dict().items() if k in saved)
    model.load_state_dict(state, strict=False)
    after = model.state_dict()
    for key, value in saved.items():
        assert torch.equal(after[key], value), key  # a copy, not a view the update moved
