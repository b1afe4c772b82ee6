"""Known answers for the transformer attribution methods (``chefer_gae``, ``cp_lrp``).

Chefer et al.'s rule is checked on a two-block toy whose attention and gradients are set by hand;
conservative LRP by conservation on every ViT family (bias-free, the relevance sums to the logit)
and against a hand-written forward of timm's ViT with the softmax, LayerNorm scale and GELU gate
detached explicitly (no hooks).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xaibench.errors import XaibenchError
from xaibench.models.base import BackboneAdapter, Classifier, InputSpec
from xaibench.plugins import collect_components, get_plugin_manager
from xaibench.saliency.transformer_attribution import CheferRelevance, ConservativeLRP

SIZE = 32


class ToyAttention(BackboneAdapter):
    """Blocks with fixed attention ``A_l``; feature ``k`` is ``sum_l <G_l[k], A_l>``.

    So ``d feature_k / d A_l = G_l[k]`` exactly: attention and gradients are both set by hand.
    """

    def __init__(
        self, attentions: list[torch.Tensor], gradients: list[torch.Tensor], prefix: int
    ) -> None:
        super().__init__(
            InputSpec(size=SIZE, mean=(0.0,), std=(1.0,), channels=1),
            gradients[0].shape[0],
            "vit",
            random_init=True,
        )
        self.attentions = attentions  # [heads, N, N] each
        self.gradients = gradients  # [classes, heads, N, N] each
        self.num_prefix_tokens = prefix
        self.capture = None

    @contextmanager
    def _capturing(self, capture) -> Iterator[None]:
        self.capture = capture
        try:
            yield
        finally:
            self.capture = None

    def capture_attention(self, capture):
        return self._capturing(capture)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.zeros(x.shape[0], self.feature_dim)
        for attn, grad in zip(self.attentions, self.gradients, strict=True):
            a = attn.expand(x.shape[0], *attn.shape) + 0 * x.sum()  # in the graph of the input
            if self.capture is not None:
                a = self.capture(a)
            features = features + (grad.unsqueeze(0) * a.unsqueeze(1)).sum(dim=(2, 3, 4))
        return features

    def cam_layer(self) -> nn.Module:
        raise NotImplementedError

    def activation_to_grid(self, activation: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def last_block_modules(self) -> list[nn.Module]:
        return []

    def lora_target_modules(self) -> list[str]:
        return []


def toy_model(attentions, gradients, prefix: int) -> Classifier:
    model = Classifier(ToyAttention(attentions, gradients, prefix), gradients[0].shape[0])
    with torch.no_grad():
        model.head.weight.copy_(torch.eye(gradients[0].shape[0]))
        model.head.bias.zero_()
    return model.eval()


def upsampled(grid: list[list[float]]) -> torch.Tensor:
    up = F.interpolate(torch.tensor(grid).view(1, 1, 2, 2), size=(SIZE, SIZE), mode="bilinear")
    return up[:, 0]


def test_chefer_matches_a_hand_computation():
    # 1 class token + 2x2 patches (tokens 1..4 row by row). Block 1: both heads send patch 2 to
    # patch 3, identity elsewhere; gradient 1 everywhere, so Ā1 = A1 and R1 = I + A1:
    # row 0 = 2 e0, row 2 = e2 + e3. Block 2: head 0 sends the class token to patch 2 (identity
    # elsewhere), head 1 is the identity.
    #   class 0: gradients +2 (head 0) and -1 (head 1, clipped): Ā2 = (2 A2h0 + 0) / 2 = A2h0;
    #     R2 = R1 + Ā2 R1, row 0 = 2 e0 + (row 2 of R1) = 2 e0 + e2 + e3: patches [0, 1, 1, 0].
    #     (The order R1 Ā2 would give row 0 = 2 e2: patches [0, 2, 0, 0].)
    #   class 1: gradients -1 (head 0, clipped) and +2 (head 1): Ā2 = I, R2 = 2 R1, row 0 = 4 e0:
    #     no patch relevance at all. (Without the clip Ā2 = I - A2h0 / 2 and row 0 would be
    #     4 e0 - (e2 + e3) / 2: patches [0, -1/2, -1/2, 0].) Rollout gives one map for both.
    e = torch.eye(5)
    a1 = e.clone()
    a1[2] = e[3]
    a2h0 = e.clone()
    a2h0[0] = e[2]
    attentions = [torch.stack([a1, a1]), torch.stack([a2h0, e])]
    ones = torch.ones(5, 5)
    g1 = torch.stack([torch.stack([ones, ones])] * 2)
    g2 = torch.stack([torch.stack([2 * ones, -ones]), torch.stack([-ones, 2 * ones])])
    model = toy_model(attentions, [g1, g2], prefix=1)
    images = torch.rand(2, 1, SIZE, SIZE)
    maps = CheferRelevance().explain(model, images, torch.tensor([0, 1]))
    torch.testing.assert_close(maps[0], upsampled([[0.0, 1.0], [1.0, 0.0]])[0])
    torch.testing.assert_close(maps[1], torch.zeros(SIZE, SIZE))


def test_chefer_without_prefix_tokens_averages_all_rows():
    # 2x2 patches, no class token (SigLIP). Two blocks of uniform attention U with gradient 1:
    # Ā = U, R = (I + U)^2 = I + 3U (U^2 = U); the mean of any column over the rows is
    # 1/4 + 3/4 = 1.
    uniform = torch.full((1, 4, 4), 0.25)
    grad = torch.ones(1, 1, 4, 4)
    model = toy_model([uniform, uniform], [grad, grad], prefix=0)
    maps = CheferRelevance().explain(model, torch.rand(1, 1, SIZE, SIZE), torch.tensor([0]))
    torch.testing.assert_close(maps, torch.ones(1, SIZE, SIZE))


# --- The real adapters -------------------------------------------------------------------------

FAMILIES = {
    "test_vit.random": {"img_size": SIZE},
    "openclip_tiny.random": {},
    "rad_dino_tiny.random": {},
    "dinov2_tiny.random": {},  # 4 registers
    "chexagent_siglip_tiny.random": {},  # no prefix tokens, attention-pooling head
}
#: Additive constants that Gradient x Input cannot attribute (besides biases).
CONSTANTS = (
    "pos_embed",
    "position_embedding",
    "positional_embedding",
    "cls_token",
    "class_embedding",
    "reg_token",
    "register_tokens",
    "mask_token",
)


def build(name: str) -> Classifier:
    components = collect_components(get_plugin_manager(entry_points=False))
    torch.manual_seed(0)
    backbone = components.backbones.create(name, FAMILIES[name]).create_adapter()
    return Classifier(backbone, 3).eval()


def hooks(model: nn.Module) -> list[int]:
    """Forward-hook counts per module (transformers installs output-capturing hooks of its own)."""
    return [len(m._forward_hooks) + len(m._forward_hooks_with_kwargs) for m in model.modules()]


def switches(model: Classifier) -> list[object]:
    """Every fused-attention flag and attention implementation on the model."""
    flags: list[object] = [getattr(m, "fused_attn", None) for m in model.modules()]
    config = getattr(getattr(model.backbone, "model", None), "config", None)
    return [*flags, getattr(config, "_attn_implementation", None)]


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_vit_family_captures_attention_and_cp_lrp_is_conservative(name):
    model = build(name)
    backbone = model.backbone
    size = backbone.input_spec.size
    images = torch.rand(1, 1, size, size)
    targets = torch.tensor([2])
    state = switches(model)
    with torch.no_grad():
        logits = model(images)
        recorded: list[torch.Tensor] = []
        with backbone.capture_attention(lambda a: recorded.append(a) or a):
            captured_logits = model(images)
        reference = backbone.attention_maps(images)
    hooked = hooks(model)  # after transformers' lazily installed output-capturing hooks
    torch.testing.assert_close(captured_logits, logits, rtol=1e-4, atol=1e-5)
    assert len(recorded) == len(reference) >= 2
    for got, want in zip(recorded, reference, strict=True):
        torch.testing.assert_close(got, want)

    chefer = CheferRelevance().explain(model, images, targets)
    assert chefer.shape == (1, size, size)
    assert (chefer >= 0).all()
    assert chefer.amax() > 0

    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if "bias" in param_name or any(c in param_name for c in CONSTANTS):
                param.zero_()
        target_logits = model(images).gather(1, targets.view(-1, 1))[:, 0]
    relevance = ConservativeLRP().explain(model, images, targets)
    torch.testing.assert_close(relevance.sum(dim=(1, 2)), target_logits, rtol=1e-4, atol=1e-5)
    # GELU's ordinary gradient is not conservative: the identity rule is what makes the sum hold.
    plain = ConservativeLRP(activation_rule="gradient").explain(model, images, targets)
    assert not torch.allclose(plain.sum(dim=(1, 2)), target_logits, rtol=1e-3, atol=1e-4)

    assert switches(model) == state
    assert not model.training
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())
    assert hooks(model) == hooked


def detached_vit_forward(model: Classifier, x: torch.Tensor, rule: str) -> torch.Tensor:
    """timm's ViT forward written out, with the AH/LN (and GELU gate) detachments explicit."""
    vit = model.backbone.model  # type: ignore[union-attr]

    def norm(t: torch.Tensor, ln: nn.LayerNorm) -> torch.Tensor:
        centred = t - t.mean(-1, keepdim=True)
        scale = torch.sqrt(t.var(-1, unbiased=False, keepdim=True) + ln.eps).detach()
        return centred / scale * ln.weight + ln.bias

    proj = vit.patch_embed.proj
    tokens = F.conv2d(x, proj.weight, proj.bias, stride=proj.stride).flatten(2).transpose(1, 2)
    b, n = tokens.shape[0], tokens.shape[1] + 1
    t = torch.cat([vit.cls_token.expand(b, -1, -1), tokens], dim=1) + vit.pos_embed
    for block in vit.blocks:
        attn = block.attn
        h = attn.num_heads
        qkv = F.linear(norm(t, block.norm1), attn.qkv.weight, attn.qkv.bias)
        q, k, v = qkv.reshape(b, n, 3, h, -1).permute(2, 0, 3, 1, 4)
        a = ((q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5).softmax(-1).detach()
        out = (a @ v).transpose(1, 2).reshape(b, n, -1)
        t = t + F.linear(out, attn.proj.weight, attn.proj.bias)
        z = block.mlp.fc1(norm(t, block.norm2))
        act = z * (F.gelu(z) / z).detach() if rule == "identity" else F.gelu(z)
        t = t + block.mlp.fc2(act)
    return model.head(norm(t, vit.norm)[:, 0])


@pytest.mark.parametrize("rule", ["identity", "gradient"])
def test_cp_lrp_equals_gradient_x_input_of_an_explicitly_detached_forward(rule):
    model = build("test_vit.random")
    images = torch.rand(3, 1, SIZE, SIZE)
    targets = torch.tensor([0, 1, 2])
    x = model.backbone.preprocess(images).detach().requires_grad_(True)
    logits = detached_vit_forward(model, x, rule)
    (grad,) = torch.autograd.grad(logits.gather(1, targets.view(-1, 1)).sum(), x)
    expected = (x * grad).sum(dim=1).detach()
    maps = ConservativeLRP(activation_rule=rule).explain(model, images, targets)
    torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-6)
    absolute = ConservativeLRP(activation_rule=rule, absolute=True).explain(model, images, targets)
    torch.testing.assert_close(absolute, expected.abs(), rtol=1e-4, atol=1e-6)


def test_cnns_and_adapters_without_attention_capture_are_skipped_with_a_reason():
    cnn = Classifier(
        collect_components(get_plugin_manager(entry_points=False))
        .backbones.create("test_resnet.random", {"img_size": SIZE})
        .create_adapter(),
        3,
    ).eval()
    images, targets = torch.rand(1, 1, SIZE, SIZE), torch.tensor([0])
    for method in (CheferRelevance(), ConservativeLRP()):
        assert "cnn backbones do not have" in (method.supports(cnn) or "")
        with pytest.raises(XaibenchError, match="attention maps"):
            method.explain(cnn, images, targets)
    with pytest.raises(NotImplementedError, match="TimmAdapter"):
        cnn.backbone.capture_attention(lambda a: a)

    class NoCapture(ToyAttention):
        capture_attention = BackboneAdapter.capture_attention  # type: ignore[assignment]

    uniform = torch.full((1, 4, 4), 0.25)
    model = toy_model([uniform], [torch.ones(1, 1, 4, 4)], prefix=0)
    model.backbone.__class__ = NoCapture
    assert "NoCapture does not expose" in (CheferRelevance().supports(model) or "")
    with pytest.raises(NotImplementedError, match="NoCapture"):
        model.backbone.capture_attention(lambda a: a)
