"""OpenCLIP image towers: tiny random towers, weights saved and loaded back, LoRA reachability."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from xaibench.errors import InputRangeError, XaibenchError
from xaibench.models.open_clip_adapter import (
    OpenCLIPAdapter,
    SplitProjectionAttention,
    open_clip_state_dict,
)
from xaibench.models.open_clip_backbone import STUDY_BACKBONES, TINY_CONFIG, OpenCLIPBackbone
from xaibench.models.weights import MissingWeightsError

LAION_REPO = "laion/CLIP-ViT-B-16-laion2B-s34B-b88K"
TIMM_TOWER = {
    "embed_dim": 32,
    "vision_cfg": {
        "timm_model_name": "test_vit",
        "timm_pool": "",
        "timm_proj": "linear",
        "image_size": 128,
    },
}


def tiny(**options: Any) -> OpenCLIPAdapter:
    torch.manual_seed(0)
    options.setdefault("model_cfg_overrides", TINY_CONFIG)
    adapter = OpenCLIPBackbone(model_name="ViT-B-16", random_init=True, **options).create_adapter()
    assert isinstance(adapter, OpenCLIPAdapter)
    return adapter


def images(n: int = 3, size: int = 128) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(1))


def hooked_cam(adapter: OpenCLIPAdapter, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and the cam layer's output for raw images ``x``."""
    captured: list[torch.Tensor] = []
    handle = adapter.cam_layer().register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        with torch.no_grad():
            features = adapter(x)
    finally:
        handle.remove()
    return features, captured[-1]


def save_checkpoint(adapter: OpenCLIPAdapter, path: Path) -> None:
    """Save like a full CLIP checkpoint: ``visual.`` keys plus text-tower keys to be ignored."""
    packed = open_clip_state_dict(adapter.visual)
    state = {f"visual.{k}": v.contiguous() for k, v in packed.items()}
    state["text_projection"] = torch.zeros(4, 4)
    state["logit_scale"] = torch.ones(())
    save_file(state, str(path))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fake_hf_snapshot(cache: Path, repo: str) -> Path:
    """An empty snapshot folder of ``repo`` laid out like the Hugging Face cache."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    return snapshot


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_tiny_tower_shapes_and_cam_grid():
    adapter = tiny()
    assert adapter.architecture == "vit"
    assert adapter.random_init
    assert adapter.feature_dim == TINY_CONFIG["embed_dim"]
    assert not adapter.training
    features, activation = hooked_cam(adapter, images(3))
    assert features.shape == (3, 32)
    assert activation.shape == (3, 1 + 8 * 8, 64)  # batch first in open_clip >= 2.24
    grid = adapter.activation_to_grid(activation)
    assert grid.shape == (3, 64, 8, 8)
    # Exactly the class token is dropped, and patches are laid out row by row.
    for i, j in [(0, 0), (0, 7), (3, 5), (7, 7)]:
        assert torch.equal(grid[:, :, i, j], activation[:, 1 + i * 8 + j, :])


def test_tokens_first_layout_gives_the_same_grid():
    adapter = tiny()
    features, activation = hooked_cam(adapter, images(2))
    grid = adapter.activation_to_grid(activation)
    # Run the blocks sequence-first, as open_clip did before batch_first (same maths).
    adapter.visual.transformer.batch_first = False
    for block in adapter.visual.transformer.resblocks:
        block.attn.batch_first = False
    assert adapter.tokens_first
    features_lnd, activation_lnd = hooked_cam(adapter, images(2))
    assert activation_lnd.shape == (1 + 64, 2, 64)
    torch.testing.assert_close(features_lnd, features)
    torch.testing.assert_close(adapter.activation_to_grid(activation_lnd), grid)


def test_pre_projection_features():
    adapter = tiny(projected=False)
    assert adapter.feature_dim == 64
    with torch.no_grad():
        assert adapter(images(2)).shape == (2, 64)
    assert adapter.visual.proj is None
    assert all(not isinstance(m, nn.Module) or m is not None for m in adapter.last_block_modules())


def test_raw_range_is_checked():
    adapter = tiny()
    with pytest.raises(InputRangeError, match="0-255"):
        adapter(images(2) * 255)


def test_weights_file_roundtrip_is_identical(tmp_path: Path):
    adapter = tiny()
    path = tmp_path / "tiny_clip.safetensors"
    save_checkpoint(adapter, path)
    factory = OpenCLIPBackbone(
        model_name="ViT-B-16", model_cfg_overrides=TINY_CONFIG, weights=str(path)
    )
    resolved = factory.locate_weights("tiny")
    assert resolved.source == "file"
    assert resolved.sha256 == sha256(path)
    torch.manual_seed(123)  # different RNG state: the loaded weights must not depend on it
    loaded = factory.build(resolved)
    assert not loaded.random_init
    x = images(4)
    with torch.no_grad():
        assert torch.equal(loaded(x), adapter(x))


def test_local_dir_with_config_picks_the_open_clip_checkpoint(tmp_path: Path):
    adapter = tiny()
    folder = tmp_path / "tiny-clip"
    folder.mkdir()
    config = {
        "model_cfg": {"embed_dim": 32, "vision_cfg": TINY_CONFIG["vision_cfg"], "text_cfg": {}},
        "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
    }
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    save_checkpoint(adapter, folder / "open_clip_model.safetensors")
    # A transformers-format copy, as Hugging Face CLIP repositories carry: must be ignored.
    save_file(
        {"vision_model.embeddings.class_embedding": torch.zeros(64)}, folder / "model.safetensors"
    )

    factory = OpenCLIPBackbone(model_name=f"local-dir:{folder}")
    resolved = factory.locate_weights("tiny")
    assert resolved.files == (folder / "open_clip_model.safetensors",)
    assert resolved.sha256 == sha256(folder / "open_clip_model.safetensors")
    loaded = factory.build(resolved)
    assert loaded.input_spec.mean == (0.5, 0.5, 0.5)
    assert loaded.input_spec.std == (0.25, 0.25, 0.25)
    x = images(2)
    z = torch.randn(2, 3, 128, 128)  # already preprocessed: compares the towers alone
    with torch.no_grad():
        assert torch.equal(loaded.forward_features(z), adapter.forward_features(z))
    # The same folder through the normal `weights` option of an hf-hub: name.
    via_weights = OpenCLIPBackbone(model_name="hf-hub:org/tiny-clip", weights=str(folder))
    with torch.no_grad():
        assert torch.equal(via_weights.create_adapter()(x), loaded(x))


def test_study_backbone_loads_from_the_hf_cache(hf_cache: Path):
    options = STUDY_BACKBONES["openclip_vit_b16"]
    assert OpenCLIPBackbone(**options).hf_repo() == (LAION_REPO, None)
    adapter = tiny()
    snapshot = fake_hf_snapshot(hf_cache, LAION_REPO)
    save_checkpoint(adapter, snapshot / "open_clip_model.safetensors")
    factory = OpenCLIPBackbone(**options, model_cfg_overrides=TINY_CONFIG)
    resolved = factory.locate_weights("openclip_vit_b16")
    assert resolved.path == snapshot
    assert resolved.sha256 == sha256(snapshot / "open_clip_model.safetensors")
    x = images(2)
    with torch.no_grad():
        assert torch.equal(factory.build(resolved)(x), adapter(x))


def test_missing_weights_name_the_repository(hf_cache: Path):
    factory = OpenCLIPBackbone(**STUDY_BACKBONES["openclip_vit_b16"])
    with pytest.raises(MissingWeightsError, match=LAION_REPO) as info:
        factory.create_adapter("openclip_vit_b16")
    assert "open_clip_model.safetensors" in str(info.value)
    with pytest.raises(MissingWeightsError, match="pretrained_tag"):
        OpenCLIPBackbone(model_name="ViT-B-16").locate_weights("untagged")


def test_unknown_names_are_user_errors():
    with pytest.raises(XaibenchError, match="did you mean"):
        OpenCLIPBackbone(model_name="ViT-B-61", random_init=True).create_adapter()
    with pytest.raises(XaibenchError, match="laion2b_s34b_b88k"):
        OpenCLIPBackbone(model_name="ViT-B-16", pretrained_tag="laion2b_s34b").locate_weights("x")


def test_other_img_size_resizes_position_embeddings(tmp_path: Path):
    adapter = tiny()
    path = tmp_path / "tiny_clip.safetensors"
    save_checkpoint(adapter, path)
    small = OpenCLIPBackbone(
        model_name="ViT-B-16", model_cfg_overrides=TINY_CONFIG, weights=str(path), img_size=64
    ).create_adapter()
    assert small.input_spec.size == 64
    features, activation = hooked_cam(small, images(2, size=64))
    assert features.shape == (2, 32)
    assert small.activation_to_grid(activation).shape == (2, 64, 4, 4)


def test_last_block_modules_include_the_projection_without_new_state_keys():
    adapter = tiny()
    keys = set(adapter.state_dict())
    adapter.requires_grad_(False)
    modules = adapter.last_block_modules()
    assert modules[0] is adapter.visual.transformer.resblocks[-1]
    assert any(p is adapter.visual.proj for m in modules for p in m.parameters())
    for module in modules:
        module.requires_grad_(True)
    assert adapter.visual.proj.requires_grad
    assert not adapter.visual.transformer.resblocks[0].mlp.c_fc.weight.requires_grad
    assert set(adapter.state_dict()) == keys


def called_modules(model: nn.Module, names: list[str], x: torch.Tensor) -> set[str]:
    called: set[str] = set()
    handles = [
        model.get_submodule(name).register_forward_hook(lambda *_a, n=name: called.add(n))
        for name in names
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return called


def lora_gradients(adapter: OpenCLIPAdapter, targets: list[str]) -> dict[str, float]:
    """|grad| of every LoRA parameter on the second step (LoRA B starts at zero)."""
    from peft import LoraConfig, inject_adapter_in_model

    adapter.requires_grad_(False)
    model = inject_adapter_in_model(LoraConfig(r=4, lora_alpha=8, target_modules=targets), adapter)
    head = nn.Linear(adapter.feature_dim, 3)
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    optimiser = torch.optim.SGD([*lora.values(), *head.parameters()], lr=0.1)
    x, y = images(4), torch.tensor([0, 1, 2, 0])
    for _ in range(2):
        optimiser.zero_grad()
        nn.functional.cross_entropy(head(model(x)), y).backward()
        grads = {n: 0.0 if p.grad is None else float(p.grad.abs().sum()) for n, p in lora.items()}
        optimiser.step()
    return grads


@pytest.mark.parametrize("which", ["attention", "mlp", "all"])
def test_lora_targets_are_called_and_receive_gradients(which: str):
    adapter = tiny(lora_targets=which)
    targets = adapter.lora_target_modules()
    per_block = {"attention": 4, "mlp": 2, "all": 6}[which]
    assert len(targets) == per_block * len(adapter.visual.transformer.resblocks)
    for name in targets:
        assert isinstance(adapter.get_submodule(name), nn.Linear)
    assert called_modules(adapter, targets, images(2)) == set(targets)
    grads = lora_gradients(adapter, targets)
    assert adapter.lora_target_modules() == targets  # still listed once peft wrapped them
    expected = 2 * len(targets)  # one A and one B per Linear
    assert len(grads) == expected
    assert all(g > 0 for g in grads.values()), grads


def test_lora_on_multihead_out_proj_gets_no_gradient():
    """Why open_clip's attention is split into called Linear layers before LoRA."""
    from peft import LoraConfig, inject_adapter_in_model

    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 2, batch_first=True)
    x = torch.rand(2, 5, 16)
    called: list[int] = []
    mha.out_proj.register_forward_hook(lambda *_a: called.append(1))
    mha(x, x, x)
    assert called == []  # applied via F.linear, never called
    mha.requires_grad_(False)
    wrapped = inject_adapter_in_model(LoraConfig(r=4, target_modules=["out_proj"]), mha)
    assert any("lora_" in n for n, _ in wrapped.named_parameters())
    assert not wrapped(x, x, x)[0].requires_grad  # LoRA parameters are not in the graph


@pytest.mark.parametrize("batch_first", [True, False])
def test_split_projection_attention_equals_multihead_attention(batch_first):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
    split = SplitProjectionAttention(mha).eval()
    x = torch.rand(2, 7, 16) if batch_first else torch.rand(7, 2, 16)
    mask = torch.zeros(7, 7).masked_fill(torch.rand(7, 7) > 0.7, float("-inf"))
    mask.fill_diagonal_(0.0)
    for attn_mask in (None, mask):
        expected = mha(x, x, x, need_weights=False, attn_mask=attn_mask)[0]
        torch.testing.assert_close(split(x, x, x, attn_mask=attn_mask)[0], expected)


def test_tower_attention_is_split_and_packs_back():
    adapter = tiny()
    attn = adapter.visual.transformer.resblocks[0].attn
    assert isinstance(attn, SplitProjectionAttention)
    packed = open_clip_state_dict(adapter.visual)
    assert "transformer.resblocks.0.attn.in_proj_weight" in packed
    assert not any(".q_proj." in k for k in packed)


def test_timm_tower():
    torch.manual_seed(0)
    built = OpenCLIPBackbone(
        model_name="ViT-B-16", model_cfg_overrides=TIMM_TOWER, random_init=True
    ).create_adapter()
    assert isinstance(built, OpenCLIPAdapter)
    assert built.tower_kind == "timm"
    assert built.feature_dim == 32
    features, activation = hooked_cam(built, images(2))
    assert features.shape == (2, 32)
    grid = built.activation_to_grid(activation)
    assert grid.shape == (2, 64, 8, 8)
    assert torch.equal(grid[:, :, 2, 3], activation[:, 1 + 2 * 8 + 3, :])
    targets = built.lora_target_modules()
    assert called_modules(built, targets, images(2)) == set(targets)
    assert built.last_block_modules()[-1] is built.visual.head


def test_timm_tower_weights_roundtrip(tmp_path: Path):
    torch.manual_seed(0)
    options: dict[str, Any] = {"model_name": "ViT-B-16", "model_cfg_overrides": TIMM_TOWER}
    adapter = OpenCLIPBackbone(**options, random_init=True).create_adapter()
    assert isinstance(adapter, OpenCLIPAdapter)
    path = tmp_path / "timm_clip.safetensors"
    save_checkpoint(adapter, path)
    loaded = OpenCLIPBackbone(**options, weights=str(path)).create_adapter()
    x = images(2)
    with torch.no_grad():
        assert torch.equal(loaded(x), adapter(x))


def test_unsupported_tower_is_a_clear_error():
    cnn = {"embed_dim": 32, "vision_cfg": {"timm_model_name": "test_resnet", "image_size": 128}}
    with pytest.raises(XaibenchError, match="only Vision Transformer towers"):
        OpenCLIPBackbone(
            model_name="ViT-B-16", model_cfg_overrides=cnn, random_init=True
        ).create_adapter()


def test_gradcam_through_the_tower():
    from xaibench.models.base import Classifier
    from xaibench.saliency.gradcam import GradCAM

    torch.manual_seed(0)
    model = Classifier(tiny(), 3).eval()
    maps = GradCAM().explain(model, images(2), torch.tensor([0, 2]))
    assert maps.shape == (2, 128, 128)
    assert bool((maps.flatten(1).std(dim=1) > 0).all())  # patch tokens got gradient
