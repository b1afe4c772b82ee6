"""Hugging Face transformers encoders: tiny random DINOv2 / DINOv2+registers / SigLIP models,
saved and reloaded offline through the normal weights path (no hub access anywhere)."""

import hashlib
import json
from pathlib import Path

import pytest
import torch
from hf_cache import fake_cache_repo
from torch import nn

from xaibench.errors import InputRangeError, InvalidOptionsError, XaibenchError
from xaibench.models.base import Classifier
from xaibench.models.hf_adapter import HFVisionAdapter
from xaibench.models.hf_backbone import STUDY_BACKBONES, TINY_CONFIGS, HFVisionBackbone
from xaibench.models.weights import MissingWeightsError
from xaibench.saliency.gradcam import GradCAM

#: architecture -> number of tokens in front of the patch tokens.
PREFIX = {"dinov2": 1, "dinov2_with_registers": 5, "siglip": 0}
ARCHS = list(PREFIX)
SIDE = 128 // 16  # tiny configs: image_size 128, patch 16


pytestmark = pytest.mark.usefixtures("empty_hf_cache")


def tiny(arch: str, **options) -> HFVisionBackbone:
    options.setdefault("random_init", True)
    return HFVisionBackbone(
        model_id=f"local/tiny-{arch}",
        architecture=arch,
        config_overrides=TINY_CONFIGS[arch],
        **options,
    )


def random_adapter(arch: str, **options) -> HFVisionAdapter:
    torch.manual_seed(0)
    adapter = tiny(arch, **options).create_adapter()
    assert isinstance(adapter, HFVisionAdapter)
    return adapter


def save(adapter: HFVisionAdapter, folder: Path, mean: float = 0.3, std: float = 0.2) -> Path:
    adapter.model.save_pretrained(folder, safe_serialization=True)
    processor = {"image_mean": [mean] * 3, "image_std": [std] * 3, "do_normalize": True}
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return folder


def capture_cam(
    adapter: HFVisionAdapter, images: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    captured: list[torch.Tensor] = []
    handle = adapter.cam_layer().register_forward_hook(lambda m, i, o: captured.append(o))
    try:
        with torch.no_grad():
            features = adapter(images)
    finally:
        handle.remove()
    assert len(captured) == 1
    return features, captured[0]


@pytest.mark.parametrize("arch", ARCHS)
def test_shapes_grid_and_cam_layer(arch):
    adapter = random_adapter(arch)
    assert adapter.architecture == "vit"
    assert adapter.random_init
    assert adapter.num_prefix_tokens == PREFIX[arch]
    images = torch.rand(2, 1, 128, 128)
    features, tokens = capture_cam(adapter, images)
    assert features.shape == (2, 32) == (2, adapter.feature_dim)
    assert tokens.shape == (2, PREFIX[arch] + SIDE * SIDE, 32)
    grid = adapter.activation_to_grid(tokens)
    assert grid.shape == (2, 32, SIDE, SIDE)
    # Row-major patch order after exactly the prefix tokens.
    for i, j in ((0, 0), (0, 1), (3, 5), (SIDE - 1, SIDE - 1)):
        assert torch.equal(grid[:, :, i, j], tokens[:, PREFIX[arch] + i * SIDE + j])


@pytest.mark.parametrize("arch", ARCHS)
def test_activation_to_grid_drops_exactly_the_prefix(arch):
    adapter = random_adapter(arch)
    n = PREFIX[arch] + SIDE * SIDE
    tokens = torch.arange(n, dtype=torch.float32).view(1, n, 1).expand(2, n, 3)
    grid = adapter.activation_to_grid(tokens)
    expected = torch.arange(PREFIX[arch], n, dtype=torch.float32).view(SIDE, SIDE)
    assert torch.equal(grid[1, 2], expected)
    with pytest.raises(ValueError, match="patch tokens"):
        adapter.activation_to_grid(tokens[:, 1:])


def test_cam_layer_is_the_first_norm_of_the_last_block():
    dino, siglip = random_adapter("dinov2"), random_adapter("siglip")
    assert dino.cam_layer() is dino.model.encoder.layer[-1].norm1
    assert siglip.cam_layer() is siglip.model.encoder.layers[-1].layer_norm1
    assert isinstance(dino.cam_layer(), nn.LayerNorm)


@pytest.mark.parametrize("arch", ARCHS)
def test_other_input_size_interpolates_position_embeddings(arch):
    adapter = random_adapter(arch, img_size=96)
    assert adapter.input_spec.size == 96
    assert adapter.native_size == 128
    features, tokens = capture_cam(adapter, torch.rand(2, 1, 200, 200))
    assert features.shape == (2, 32)
    assert torch.isfinite(features).all()
    assert adapter.activation_to_grid(tokens).shape == (2, 32, 6, 6)


def test_img_size_must_be_a_multiple_of_the_patch():
    with pytest.raises(InvalidOptionsError, match=r"multiple of the patch size 16 \(try 96 or 112"):
        tiny("dinov2", img_size=100).create_adapter()


@pytest.mark.parametrize("arch", ARCHS)
def test_save_and_reload_gives_identical_outputs(arch, tmp_path):
    adapter = random_adapter(arch)
    folder = save(adapter, tmp_path / "saved")
    factory = HFVisionBackbone(model_id="local/whatever", weights=str(folder))
    resolved = factory.locate_weights("hf")
    assert resolved.source == "directory"
    assert [f.name for f in resolved.files] == ["model.safetensors"]
    expected_hash = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert resolved.sha256 == expected_hash
    loaded = factory.build(resolved)
    assert isinstance(loaded, HFVisionAdapter)
    assert not loaded.random_init
    assert not loaded.training
    assert loaded.family == arch
    # Mean/std come from the preprocessor config, the size from the model config.
    assert loaded.input_spec.mean == (0.3, 0.3, 0.3)
    assert loaded.input_spec.std == (0.2, 0.2, 0.2)
    assert loaded.input_spec.size == 128
    x = torch.randn(3, 3, 128, 128)
    raw = torch.rand(3, 1, 128, 128)
    with torch.no_grad():
        assert torch.equal(loaded.forward_features(x), adapter.forward_features(x))
        manual = adapter.forward_features((raw.expand(-1, 3, -1, -1) - 0.3) / 0.2)
        assert torch.equal(loaded(raw), manual)


@pytest.mark.parametrize(
    ("arch", "override"),
    [("dinov2_with_registers", {"drop_path_rate": 0.1}), ("siglip", {"attention_dropout": 0.1})],
)
def test_overrides_apply_to_a_loaded_config(arch, override, tmp_path):
    adapter = random_adapter(arch)
    folder = save(adapter, tmp_path / "saved")
    factory = HFVisionBackbone(model_id="local/x", weights=str(folder), config_overrides=override)
    loaded = factory.create_adapter()
    assert isinstance(loaded, HFVisionAdapter)
    ((key, value),) = override.items()
    assert getattr(loaded.model.config, key) == value
    assert loaded.model.config.num_hidden_layers == 2
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():  # dropout-type overrides do nothing in eval mode
        assert torch.equal(loaded.forward_features(x), adapter.forward_features(x))


def test_single_weights_file_uses_the_config_beside_it(tmp_path):
    adapter = random_adapter("dinov2_with_registers")
    folder = save(adapter, tmp_path / "saved")
    file = folder / "model.safetensors"
    factory = HFVisionBackbone(model_id="local/whatever", weights=str(file))
    resolved = factory.locate_weights("hf")
    assert resolved.source == "file"
    assert resolved.sha256 == hashlib.sha256(file.read_bytes()).hexdigest()
    loaded = factory.build(resolved)
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(loaded.forward_features(x), adapter.forward_features(x))


def test_full_siglip_checkpoint_loads_only_the_vision_tower(tmp_path):
    from transformers import SiglipConfig, SiglipModel

    vision = TINY_CONFIGS["siglip"]
    text = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "vocab_size": 64,
        "max_position_embeddings": 16,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    torch.manual_seed(0)
    full = SiglipModel(SiglipConfig(text_config=text, vision_config=vision)).eval()
    full.save_pretrained(tmp_path / "full")
    loaded = HFVisionBackbone(model_id="local/x", weights=str(tmp_path / "full")).create_adapter()
    assert isinstance(loaded, HFVisionAdapter)
    assert type(loaded.model).__name__ == "SiglipVisionModel"
    assert loaded.pooling == "pooler"
    assert loaded.input_spec.mean == (0.5, 0.5, 0.5)  # no preprocessor config: SigLIP default
    assert not any("text" in name for name, _ in loaded.named_parameters())
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        expected = full.vision_model(pixel_values=x).pooler_output
        assert torch.equal(loaded.forward_features(x), expected)


def test_pickled_bin_loads_with_weights_only(tmp_path):
    adapter = random_adapter("dinov2")
    folder = tmp_path / "bin"
    adapter.model.config.save_pretrained(folder)
    torch.save(adapter.model.state_dict(), folder / "pytorch_model.bin")
    factory = HFVisionBackbone(model_id="local/x", weights=str(folder))
    resolved = factory.locate_weights("hf")
    assert [f.name for f in resolved.files] == ["pytorch_model.bin"]
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(factory.build(resolved).forward_features(x), adapter.forward_features(x))


class _Sneaky:
    """Unpickling this with full pickle would create a file (stands in for arbitrary code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("as_folder", [True, False])
def test_pickled_code_is_never_executed(tmp_path, as_folder):
    adapter = random_adapter("dinov2")
    folder = tmp_path / "evil"
    adapter.model.config.save_pretrained(folder)
    marker = tmp_path / "pwned"
    state = dict(adapter.model.state_dict(), extra=_Sneaky(marker))
    torch.save(state, folder / "pytorch_model.bin")
    weights = folder if as_folder else folder / "pytorch_model.bin"
    with pytest.raises(XaibenchError, match=r"pytorch_model\.bin"):
        HFVisionBackbone(model_id="local/x", weights=str(weights)).create_adapter()
    assert not marker.exists()


def test_checkpoint_that_leaves_weights_random_is_an_error(tmp_path):
    from safetensors.torch import save_file

    adapter = random_adapter("dinov2")
    folder = tmp_path / "partial"
    adapter.model.config.save_pretrained(folder)
    state = {k: v for k, v in adapter.model.state_dict().items() if "layer.1." not in k}
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(XaibenchError, match=r"missing.*layer\.1\."):
        HFVisionBackbone(model_id="local/x", weights=str(folder)).create_adapter()
    # The mask token only serves masked-image pretraining: a checkpoint may lack it.
    state = {k: v for k, v in adapter.model.state_dict().items() if "mask_token" not in k}
    save_file(state, str(folder / "model.safetensors"))
    loaded = HFVisionBackbone(model_id="local/x", weights=str(folder)).create_adapter()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(loaded.forward_features(x), adapter.forward_features(x))


def test_missing_weights_name_the_repo_and_the_cache(empty_hf_cache):
    factory = HFVisionBackbone(model_id="org/absent-model", architecture="dinov2")
    with pytest.raises(MissingWeightsError) as info:
        factory.locate_weights("rad_dino")
    message = str(info.value)
    assert "org/absent-model" in message
    assert str(empty_hf_cache) in message
    assert "hf download org/absent-model" in message
    assert "--random-init" in message


def test_folder_without_transformers_weights_is_missing(tmp_path):
    random_adapter("dinov2").model.config.save_pretrained(tmp_path / "cfg")
    (tmp_path / "cfg" / "other.safetensors").write_bytes(b"")
    factory = HFVisionBackbone(model_id="local/x", weights=str(tmp_path / "cfg"))
    with pytest.raises(MissingWeightsError, match=r"no model\.safetensors"):
        factory.locate_weights("hf")


def test_model_in_the_local_cache_is_found_offline(tmp_path, empty_hf_cache):
    adapter = random_adapter("dinov2_with_registers")
    saved = save(adapter, tmp_path / "saved", mean=0.53, std=0.26)
    snapshot = fake_cache_repo(empty_hf_cache, "org/tiny-encoder", saved)
    factory = HFVisionBackbone(model_id="org/tiny-encoder")
    resolved = factory.locate_weights("hf")
    assert resolved.path == snapshot
    assert resolved.sha256 == hashlib.sha256((saved / "model.safetensors").read_bytes()).hexdigest()
    loaded = factory.build(resolved)
    assert loaded.input_spec.mean == (0.53,) * 3
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(loaded.forward_features(x), adapter.forward_features(x))
    # A random baseline of a cached model takes its config (and preprocessing), not its weights.
    torch.manual_seed(1)
    baseline = HFVisionBackbone(model_id="org/tiny-encoder", random_init=True).create_adapter()
    assert baseline.random_init
    assert isinstance(baseline, HFVisionAdapter)
    assert baseline.num_prefix_tokens == 5
    assert baseline.input_spec.mean == (0.53,) * 3
    with torch.no_grad():
        assert not torch.equal(baseline.forward_features(x), adapter.forward_features(x))


@pytest.mark.parametrize("arch", ARCHS)
def test_lora_targets_are_linear_layers_called_in_forward(arch):
    adapter = random_adapter(arch)
    names = adapter.lora_target_modules()
    assert len(names) == 4 * TINY_CONFIGS[arch]["num_hidden_layers"]
    called: set[str] = set()
    handles = []
    for name in names:
        module = adapter.get_submodule(name)
        assert type(module) is nn.Linear, name
        handles.append(module.register_forward_hook(lambda m, i, o, n=name: called.add(n)))
    try:
        with torch.no_grad():
            adapter(torch.rand(1, 1, 128, 128))
    finally:
        for handle in handles:
            handle.remove()
    assert called == set(names)


def test_lora_names_work_with_peft():
    from peft import LoraConfig, inject_adapter_in_model

    adapter = random_adapter("siglip")
    names = adapter.lora_target_modules()
    with torch.no_grad():
        before = adapter(torch.rand(1, 1, 128, 128))
    inject_adapter_in_model(LoraConfig(r=2, target_modules=names), adapter)
    lora = {n.rsplit(".lora_A", 1)[0] for n, _ in adapter.named_modules() if n.endswith("lora_A")}
    assert lora == set(names)
    assert adapter(torch.rand(1, 1, 128, 128)).shape == before.shape


def test_last_block_modules():
    dino = random_adapter("dinov2")
    assert dino.last_block_modules() == [dino.model.encoder.layer[-1], dino.model.layernorm]
    siglip = random_adapter("siglip")
    model = siglip.model
    assert siglip.last_block_modules() == [
        model.encoder.layers[-1],
        model.post_layernorm,
        model.head,
    ]
    mean = random_adapter("siglip", pooling="mean")
    assert mean.last_block_modules() == [mean.model.encoder.layers[-1], mean.model.post_layernorm]


@pytest.mark.parametrize("arch", ARCHS)
def test_raw_range_is_checked(arch):
    adapter = random_adapter(arch)
    with pytest.raises(InputRangeError, match="0-255"):
        adapter(torch.rand(1, 1, 128, 128) * 255)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("pooling", [None, "mean"])
def test_random_features_vary_between_inputs(arch, pooling):
    adapter = random_adapter(arch, pooling=pooling)
    torch.manual_seed(1)
    with torch.no_grad():
        features = adapter(torch.rand(8, 1, 128, 128))
    assert features.std(dim=0).mean() > 1e-3 * features.abs().mean()


def test_pooling_choices():
    dino = random_adapter("dinov2")
    assert dino.pooling == "cls"
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        hidden = dino.model(pixel_values=x).last_hidden_state
        assert torch.equal(dino.forward_features(x), hidden[:, 0])
        reg = random_adapter("dinov2_with_registers", pooling="mean")
        hidden = reg.model(pixel_values=x).last_hidden_state
        torch.testing.assert_close(reg.forward_features(x), hidden[:, 5:].mean(dim=1))
    with pytest.raises(InvalidOptionsError, match="no class token"):
        tiny("siglip", pooling="cls").create_adapter()
    overrides = dict(TINY_CONFIGS["siglip"], vision_use_head=False)
    headless = HFVisionBackbone(
        model_id="x/y", architecture="siglip", config_overrides=overrides, random_init=True
    )
    assert headless.create_adapter().pooling == "mean"


def test_bad_options_are_errors(tmp_path):
    with pytest.raises(InvalidOptionsError, match=r"unknown field.*intermediate_size"):
        HFVisionBackbone(  # DINOv2 sizes its MLP with mlp_ratio
            model_id="x/y",
            architecture="dinov2",
            config_overrides={"intermediate_size": 64},
            random_init=True,
        ).create_adapter()
    with pytest.raises(InvalidOptionsError, match="hidden_size"):
        HFVisionBackbone(
            model_id="x/y",
            architecture="dinov2",
            config_overrides={"hidden_size": "big"},
            random_init=True,
        ).create_adapter()
    with pytest.raises(InvalidOptionsError, match="architecture 'auto' cannot tell"):
        HFVisionBackbone(model_id="x/y", random_init=True).create_adapter()
    folder = save(random_adapter("siglip"), tmp_path / "siglip")
    with pytest.raises(InvalidOptionsError, match="does not match"):
        HFVisionBackbone(
            model_id="x/y", weights=str(folder), architecture="dinov2"
        ).create_adapter()


def test_gradcam_runs_through_the_cam_layer():
    torch.manual_seed(0)
    model = Classifier(tiny("dinov2_with_registers").create_adapter(), 2).eval()
    images = torch.rand(2, 1, 64, 64)
    maps = GradCAM().explain(model, images, torch.tensor([0, 1]))
    assert maps.shape == (2, 64, 64)
    assert torch.isfinite(maps).all()
    assert maps.abs().sum() > 0


def test_study_backbones_are_valid_options():
    for options in STUDY_BACKBONES.values():
        factory = HFVisionBackbone(**options)
        assert factory.img_size in (518, 384)
    assert set(TINY_CONFIGS) == set(PREFIX)
