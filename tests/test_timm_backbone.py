import hashlib
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from xaibench.errors import XaibenchError
from xaibench.models.timm_backbone import TimmBackbone
from xaibench.models.weights import MissingWeightsError


def random_adapter(arch: str, size: int = 32):
    torch.manual_seed(0)
    return TimmBackbone(arch=arch, img_size=size, random_init=True).create_adapter()


@pytest.mark.parametrize("arch", ["test_vit", "test_resnet"])
@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_weights_saved_to_a_file_load_back_identically(arch, suffix, tmp_path: Path):
    original = random_adapter(arch)
    file = tmp_path / f"weights{suffix}"
    state = {k: v.contiguous() for k, v in original.model.state_dict().items()}
    if suffix == ".safetensors":
        save_file(state, str(file))
    else:
        torch.save(state, file)
    factory = TimmBackbone(arch=arch, img_size=32, weights=str(file))
    located = factory.locate_weights("mine")
    assert located.sha256 == hashlib.sha256(file.read_bytes()).hexdigest()
    assert not located.random_init
    torch.manual_seed(123)  # a different RNG state: loaded weights must not depend on it
    loaded = factory.build(located)
    images = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), original(images), rtol=0, atol=0)


def test_pickled_objects_are_refused(tmp_path: Path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    file = tmp_path / "evil.pt"
    file.write_bytes(pickle.dumps({"w": Payload()}))
    factory = TimmBackbone(arch="test_resnet", img_size=32, weights=str(file))
    with pytest.raises(XaibenchError, match=r"cannot read weights file .*evil\.pt"):
        factory.create_adapter()


def test_missing_file_is_named(tmp_path: Path):
    factory = TimmBackbone(arch="test_resnet", weights=str(tmp_path / "nope.safetensors"))
    with pytest.raises(MissingWeightsError, match=r"nope\.safetensors.*no such file"):
        factory.locate_weights("x")


def test_found_offline_in_the_hugging_face_cache(tmp_path: Path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    repo = tmp_path / "models--timm--test_vit.r160_in1k"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    original = random_adapter("test_vit")
    save_file(dict(original.model.state_dict()), str(snapshot / "model.safetensors"))
    factory = TimmBackbone(arch="test_vit.r160_in1k", img_size=32)
    located = factory.locate_weights("x")
    assert located.path == snapshot
    images = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(factory.build(located)(images), original(images))


def test_missing_in_cache_says_where_it_looked(tmp_path: Path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(MissingWeightsError) as info:
        TimmBackbone(arch="vit_small_patch14_dinov2.lvd142m").locate_weights("dino")
    message = str(info.value)
    assert "timm/vit_small_patch14_dinov2.lvd142m" in message
    assert str(tmp_path) in message
    assert "--random-init" in message


def test_position_embeddings_resampled_to_another_size(tmp_path: Path):
    original = random_adapter("test_vit", size=32)
    file = tmp_path / "w.safetensors"
    save_file(dict(original.model.state_dict()), str(file))
    bigger = TimmBackbone(arch="test_vit", img_size=64, weights=str(file)).create_adapter()
    assert bigger.input_spec.size == 64
    assert bigger.model.pos_embed.shape[1] == 1 + (64 // 16) ** 2
    torch.testing.assert_close(
        bigger.model.blocks[0].attn.qkv.weight, original.model.blocks[0].attn.qkv.weight
    )


def test_lora_targets_are_called_linear_layers():
    model = random_adapter("test_vit")
    called: set[str] = set()
    handles = [
        model.get_submodule(name).register_forward_hook(lambda *a, n=name: called.add(n))
        for name in model.lora_target_modules()
    ]
    try:
        model(torch.rand(1, 1, 32, 32))
    finally:
        for h in handles:
            h.remove()
    targets = model.lora_target_modules()
    assert len(targets) == 2 * len(model.model.blocks)
    assert all(isinstance(model.get_submodule(n), torch.nn.Linear) for n in targets)
    assert called == set(targets)


def test_weight_hash_is_memoised_but_follows_file_changes(tmp_path: Path, monkeypatch):
    from xaibench.models import weights

    file = tmp_path / "w.bin"
    file.write_bytes(b"first")
    reads = []
    original_open = Path.open

    def counting_open(self, *args, **kwargs):
        if self == file.resolve():
            reads.append(1)
        return original_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", counting_open)
    first = weights.file_sha256(file)
    assert weights.file_sha256(file) == first == hashlib.sha256(b"first").hexdigest()
    assert len(reads) == 1  # the second call did not read the file again
    file.write_bytes(b"second, longer")
    assert weights.file_sha256(file) == hashlib.sha256(b"second, longer").hexdigest()
