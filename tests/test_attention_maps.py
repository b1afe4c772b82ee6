import pytest
import torch

from xaibench.errors import XaibenchError
from xaibench.models.hf_backbone import TINY_CONFIGS, HFVisionBackbone
from xaibench.models.open_clip_backbone import TINY_CONFIG, OpenCLIPBackbone
from xaibench.models.timm_backbone import TimmBackbone


def factories():
    return {
        "timm_dinov2_reg": TimmBackbone(
            arch="vit_small_patch14_reg4_dinov2", img_size=56, random_init=True,
            model_kwargs={"embed_dim": 32, "depth": 2, "num_heads": 2, "init_values": 1.0},
        ),
        "open_clip": OpenCLIPBackbone(
            model_name="ViT-B-16", model_cfg_overrides=TINY_CONFIG, random_init=True
        ),
        "hf_dinov2_reg": HFVisionBackbone(
            model_id="x/dinov2-reg", architecture="dinov2_with_registers", img_size=128,
            config_overrides=TINY_CONFIGS["dinov2_with_registers"], random_init=True,
        ),
        "hf_siglip": HFVisionBackbone(
            model_id="x/siglip", architecture="siglip", img_size=128,
            config_overrides=TINY_CONFIGS["siglip"], random_init=True,
        ),
    }  # fmt: skip


@pytest.mark.parametrize("family", list(factories()))
def test_attention_maps_shapes_rows_and_no_side_effects(family):
    torch.manual_seed(0)
    adapter = factories()[family].create_adapter()
    images = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        before = adapter(images)
        maps = adapter.attention_maps(images)
        after = adapter(images)
    torch.testing.assert_close(after, before)  # the fast attention path is back
    tokens = adapter.num_prefix_tokens + _grid(adapter)
    assert len(maps) >= 2
    for layer in maps:
        assert layer.shape[0] == 2
        assert layer.shape[-2:] == (tokens, tokens)
        torch.testing.assert_close(layer.sum(-1), torch.ones_like(layer.sum(-1)))


def _grid(adapter) -> int:
    h, w = (
        adapter.grid_size if hasattr(adapter, "grid_size") else adapter.model.patch_embed.grid_size
    )
    return h * w


def test_timm_attention_equals_a_hand_computation():
    torch.manual_seed(0)
    adapter = factories()["timm_dinov2_reg"].create_adapter()
    images = torch.rand(1, 1, 56, 56)
    inputs = []
    block = adapter.model.blocks[0]
    handle = block.norm1.register_forward_hook(lambda _m, _i, out: inputs.append(out))
    try:
        maps = adapter.attention_maps(images)
    finally:
        handle.remove()
    x = inputs[0]
    attn = block.attn
    qkv = attn.qkv(x).reshape(1, x.shape[1], 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k = qkv[0], qkv[1]
    expected = ((q @ k.transpose(-2, -1)) * attn.head_dim**-0.5).softmax(-1)
    torch.testing.assert_close(maps[0], expected.detach())
    assert adapter.num_prefix_tokens == 5  # class token + 4 registers


def test_cnn_has_no_attention_maps():
    adapter = TimmBackbone(arch="test_resnet", img_size=32, random_init=True).create_adapter()
    with pytest.raises(XaibenchError, match="no attention maps"):
        adapter.attention_maps(torch.rand(1, 1, 32, 32))
