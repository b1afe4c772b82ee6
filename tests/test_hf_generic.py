"""Any other transformers vision encoder (``hf:<id>``) through the probed layout: tiny random
ViT, CLIP, ConvNeXt, ResNet and Swin models, saved and reloaded offline, checked against the
models' own outputs and against the hand-written DINOv2 / SigLIP layouts."""

import json
from pathlib import Path

import pytest
import torch
import transformers
import yaml
from hf_cache import fake_cache_repo
from safetensors.torch import save_file
from torch import nn

from xaibench.errors import InvalidOptionsError, XaibenchError
from xaibench.models.base import Classifier
from xaibench.models.hf_adapter import HFVisionAdapter
from xaibench.models.hf_backbone import TINY_CONFIGS, HFVisionBackbone
from xaibench.models.hf_generic import GenericHFAdapter
from xaibench.saliency.gradcam import GradCAM
from xaibench.strategies.base import FitContext, TrainSettings
from xaibench.strategies.last_block import LastBlock
from xaibench.strategies.lora import LoRA

pytestmark = pytest.mark.usefixtures("empty_hf_cache")

VIT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
VIT_IMAGE = {"image_size": 64, "patch_size": 16}


def build_model(kind: str) -> nn.Module:
    """A tiny random model of ``kind`` as its authors' class builds it (the reference)."""
    torch.manual_seed(0)
    if kind == "vit":
        return transformers.ViTModel(transformers.ViTConfig(**VIT, **VIT_IMAGE))
    if kind == "clip":  # a full vision+text checkpoint: only the image tower is used
        config = transformers.CLIPConfig(
            vision_config={**VIT, **VIT_IMAGE},
            text_config={**VIT, "num_hidden_layers": 1},
        )
        return transformers.CLIPModel(config)
    if kind == "convnext":
        config = transformers.ConvNextConfig(
            hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], image_size=64
        )
        return transformers.ConvNextModel(config)
    if kind == "resnet":
        config = transformers.ResNetConfig(
            embedding_size=8, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1]
        )
        return transformers.ResNetModel(config)
    if kind == "swin":
        config = transformers.SwinConfig(
            image_size=64, embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=4
        )
        return transformers.SwinModel(config)
    raise AssertionError(kind)


def reference_features(kind: str, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The pooled feature each model's own API gives, computed without xaibench."""
    with torch.no_grad():
        if kind == "vit":  # class token after the final norm (the dense pooler is not used)
            return model(pixel_values=x).last_hidden_state[:, 0]
        if kind == "clip":  # post-layernorm class token: CLIP's image embedding before projection
            return model.vision_model(pixel_values=x).pooler_output
        return model(pixel_values=x).pooler_output.flatten(1)


#: kind -> (architecture, prefix tokens, grid, CAM layer, modules after the last block, pooling)
LAYOUTS = {
    "vit": ("vit", 1, (4, 4), "layers.1.layernorm_before", ("layernorm",), "cls"),
    "clip": ("vit", 1, (4, 4), "encoder.layers.1.layer_norm1", ("post_layernorm",), "pooler"),
    "convnext": ("cnn", 0, (2, 2), "encoder.stages.3", ("layernorm",), "pooler"),
    "resnet": ("cnn", 0, (2, 2), "encoder.stages.3", (), "pooler"),
    "swin": (
        "vit",
        0,
        (8, 8),
        "encoder.layers.1.blocks.0.layernorm_before",
        ("layernorm",),
        "pooler",
    ),
}
KINDS = list(LAYOUTS)


def saved(kind: str, folder: Path, mean: float = 0.4, std: float = 0.3) -> tuple[nn.Module, Path]:
    model = build_model(kind).eval()
    model.save_pretrained(folder)
    processor = {"image_mean": [mean] * 3, "image_std": [std] * 3, "do_normalize": True}
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return model, folder


def load(folder: Path, **options) -> GenericHFAdapter:
    options.setdefault("img_size", 64)
    adapter = HFVisionBackbone(
        model_id="local/tiny", weights=str(folder), **options
    ).create_adapter()
    assert isinstance(adapter, GenericHFAdapter)
    return adapter


@pytest.mark.parametrize("kind", KINDS)
def test_reload_matches_the_models_own_features(kind, tmp_path):
    model, folder = saved(kind, tmp_path / kind)
    adapter = load(folder)
    torch.manual_seed(1)
    images = torch.rand(3, 1, 64, 64)
    x = adapter.preprocess(images)
    torch.testing.assert_close(x[:, :1], (images - 0.4) / 0.3)  # preprocessor mean/std
    with torch.no_grad():
        features = adapter(images)
    expected = reference_features(kind, model, x)
    assert features.shape == (3, adapter.feature_dim)
    torch.testing.assert_close(features, expected, rtol=0, atol=0)
    # a second load through the same weights path gives identical outputs
    with torch.no_grad():
        assert torch.equal(load(folder)(images), features)


@pytest.mark.parametrize("kind", KINDS)
def test_probed_layout(kind, tmp_path):
    _, folder = saved(kind, tmp_path / kind)
    adapter = load(folder)
    architecture, prefix, grid, cam, after, pooling = LAYOUTS[kind]
    layout = adapter.layout
    assert (adapter.architecture, adapter.num_prefix_tokens, layout.grid) == (
        architecture, prefix, grid,
    )  # fmt: skip
    assert (layout.cam_layer, layout.after_last_block, adapter.pooling) == (cam, after, pooling)
    targets = adapter.lora_target_modules()
    assert targets
    wanted = nn.Linear if architecture == "vit" else nn.Conv2d
    assert all(isinstance(adapter.get_submodule(t), wanted) for t in targets)
    if architecture == "vit":
        assert all("attn" in t or "attention" in t for t in targets)


@pytest.mark.parametrize("kind", KINDS)
def test_cam_grid_and_gradcam(kind, tmp_path):
    _, folder = saved(kind, tmp_path / kind)
    adapter = load(folder)
    captured: list[torch.Tensor] = []
    handle = adapter.cam_layer().register_forward_hook(lambda m, i, o: captured.append(o))
    with torch.no_grad():
        adapter(torch.rand(2, 1, 64, 64))
    handle.remove()
    grid = adapter.activation_to_grid(captured[0])
    assert grid.shape[0] == 2
    assert tuple(grid.shape[2:]) == adapter.layout.grid
    model = Classifier(adapter, 2).eval()
    maps = GradCAM().explain(model, torch.rand(2, 1, 64, 64), torch.tensor([0, 1]))
    assert maps.shape == (2, 64, 64)
    assert torch.isfinite(maps).all()
    assert maps.abs().sum() > 0


@pytest.mark.parametrize("arch", ["dinov2", "dinov2_with_registers", "siglip"])
def test_probe_finds_the_hand_written_layouts(arch, tmp_path):
    """The generic rules, run on the study's families, agree with their hand-written layouts."""
    torch.manual_seed(0)
    factory = HFVisionBackbone(
        model_id="x/y", architecture=arch, config_overrides=TINY_CONFIGS[arch], random_init=True
    )
    factory.create_adapter().model.save_pretrained(tmp_path)
    # without a preprocessor config the hand-written families know their mean/std, the probe
    # falls back to ImageNet's; real checkpoints ship one
    processor = {"image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(processor))
    pooling = "pooler" if arch == "siglip" else "cls"
    known = HFVisionBackbone(model_id="x/y", weights=str(tmp_path)).create_adapter()
    probed = HFVisionBackbone(
        model_id="x/y", weights=str(tmp_path), architecture="generic", pooling=pooling
    ).create_adapter()
    assert isinstance(known, HFVisionAdapter)
    assert isinstance(probed, GenericHFAdapter)
    images = torch.rand(2, 1, 128, 128)
    with torch.no_grad():
        assert torch.equal(known(images), probed(images))
    assert known.num_prefix_tokens == probed.num_prefix_tokens
    assert set(known.lora_target_modules()) == set(probed.lora_target_modules())

    def names(adapter, modules):
        ids = {id(m) for m in modules}
        return {n for n, m in adapter.named_modules() if id(m) in ids}

    assert names(known, [known.cam_layer()]) == names(probed, [probed.cam_layer()])
    assert names(known, known.last_block_modules()) == names(probed, probed.last_block_modules())
    if arch == "siglip":
        # by default the probe avoids poolers with dense layers: SigLIP falls back to the mean
        default = HFVisionBackbone(model_id="x/y", weights=str(tmp_path), architecture="generic")
        assert default.create_adapter().pooling == "mean"


def test_unused_weights_may_be_missing_but_not_the_feature_path(tmp_path):
    model, folder = saved("vit", tmp_path / "vit")
    state = model.state_dict()
    save_file(
        {k: v for k, v in state.items() if not k.startswith("pooler.")},
        str(folder / "model.safetensors"),
    )
    adapter = load(folder)  # class-token pooling never touches the dense pooler
    images = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        expected = reference_features("vit", model, adapter.preprocess(images))
        assert torch.equal(adapter(images), expected)
    with pytest.raises(XaibenchError, match="pooler"):
        load(folder, pooling="pooler")  # now the pooler is on the feature path
    save_file({k: v for k, v in state.items() if ".1." not in k}, str(folder / "model.safetensors"))
    with pytest.raises(XaibenchError, match=r"missing weight.*layers\.1\."):
        load(folder)


def test_missing_batch_norm_statistics_are_an_error(tmp_path):
    model, folder = saved("resnet", tmp_path / "resnet")
    state = {k: v for k, v in model.state_dict().items() if "running_mean" not in k}
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(XaibenchError, match="running_mean"):
        load(folder)


def test_attention_maps(tmp_path):
    _, folder = saved("vit", tmp_path / "vit")
    maps = load(folder).attention_maps(torch.rand(2, 1, 64, 64))
    assert len(maps) == 2
    assert maps[0].shape == (2, 2, 17, 17)
    torch.testing.assert_close(maps[-1].sum(-1), torch.ones(2, 2, 17))
    _, folder = saved("swin", tmp_path / "swin")
    with pytest.raises(XaibenchError, match="windowed"):
        load(folder).attention_maps(torch.rand(1, 1, 64, 64))
    _, folder = saved("resnet", tmp_path / "resnet")
    with pytest.raises(XaibenchError, match="no attention maps"):
        load(folder).attention_maps(torch.rand(1, 1, 64, 64))


def test_bad_pooling_and_sizes_are_errors(tmp_path):
    _, swin = saved("swin", tmp_path / "swin")
    with pytest.raises(InvalidOptionsError, match="no class token"):
        load(swin, pooling="cls")
    _, vit = saved("vit", tmp_path / "vit")
    with pytest.raises(InvalidOptionsError, match="multiple of the patch size 16"):
        load(vit, img_size=72)
    with pytest.raises(InvalidOptionsError, match="cannot tell what to build"):
        HFVisionBackbone(
            model_id="x/none", architecture="generic", random_init=True
        ).create_adapter()


def test_strategies_touch_only_what_they_should(tmp_path):
    _, folder = saved("convnext", tmp_path / "convnext")
    settings = TrainSettings(epochs=1, batch_size=4, lr=1e-2)
    torch.manual_seed(0)
    images, labels = torch.rand(8, 1, 64, 64), torch.tensor([0, 1, 2, 0, 1, 2, 0, 2])
    from xaibench.data.arrays import SplitArrays

    ids = tuple(str(i) for i in range(8))
    train = SplitArrays("train", images, labels, ids, {})
    val = SplitArrays("val", images, labels, ids, {})
    ctx = FitContext(generator=torch.Generator().manual_seed(0), positive_class=2)
    model = LastBlock().prepare(load(folder), 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    LastBlock().fit(model, train, val, settings, ctx)
    moved = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    allowed = ("backbone.model.encoder.stages.3.", "backbone.model.layernorm.", "head.")
    assert moved
    assert all(k.startswith(allowed) for k in moved), sorted(moved)[:5]

    _, folder = saved("vit", tmp_path / "vit")
    model = LoRA(rank=2).prepare(load(folder), 3)
    torch.nn.functional.cross_entropy(model(images), labels).backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad
    assert all("lora_" in n or n.startswith("head.") for n in with_grad)
    assert any("q_proj.lora_A" in n for n in with_grad)


def test_hf_id_from_the_local_cache_runs_end_to_end(tmp_path, empty_hf_cache):
    """``-b hf:org/tiny-vit`` with the model only in the (fake) local cache: a full CLI run."""
    import subprocess
    import sys

    _, folder = saved("vit", tmp_path / "saved")
    fake_cache_repo(empty_hf_cache, "org/tiny-vit", folder)
    config = tmp_path / "small.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "dataset": {"options": {"n_images": 120, "image_size": 64}},
                "train": {"epochs": 1},
                "saliency": ["gradcam"],
                "max_explain_images": 8,
                "gallery_images": 0,
            }
        )
    )
    out = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable, "-m", "xaibench", "run", "osteoporosis", "--config", str(config),
            "-b", "hf:org/tiny-vit", "-s", "lora", "-s", "last_block", "--out", str(out), "--quiet",
        ],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / "results.json").read_text())
    assert [c["status"] for c in doc["cells"]] == ["ok", "ok"]
    weights = doc["cells"][0]["weights"]
    assert weights["source"] == "directory"
    assert weights["path"].startswith(str(empty_hf_cache / "models--org--tiny-vit" / "snapshots"))
    assert len(weights["sha256"]) == 64
    assert not doc["cells"][0]["random_init"]
