"""The built-in ``torchxrayvision_pspnet`` segmenter (issue 19 item 2).

TorchXRayVision's real ``PSPNet`` class and its real weight-loading code read a weight file this
module writes: random weights saved as TorchXRayVision's file is (a DataParallel state dict,
``module.``-prefixed keys, ``torch.save``) under the name and in the folder it reads
(``$HOME/.torchxrayvision/models_data/``, with ``HOME`` pointed at a temporary folder). The region
mapping is checked with the network's output replaced by planted logits, whose masks are known by
hand.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

xrv = pytest.importorskip("torchxrayvision")

from torchxrayvision.baseline_models.chestx_det import PSPNet  # noqa: E402
from torchxrayvision.baseline_models.chestx_det.ptsemseg.pspnet import pspnet  # noqa: E402

from xaibench.errors import XaibenchError  # noqa: E402
from xaibench.segmenters.torchxrayvision_pspnet import (  # noqa: E402
    REGIONS,
    WEIGHTS_NAME,
    TorchXRayVisionPSPNet,
)

CPU = torch.device("cpu")

#: TorchXRayVision's output channels (``PSPNet.targets``) and the xaibench name each must become,
#: written out here independently of the module's table.
CHANNELS: tuple[tuple[str, str], ...] = (
    ("Left Clavicle", "left_clavicle"),
    ("Right Clavicle", "right_clavicle"),
    ("Left Scapula", "left_scapula"),
    ("Right Scapula", "right_scapula"),
    ("Left Lung", "left_lung"),
    ("Right Lung", "right_lung"),
    ("Left Hilus Pulmonis", "left_hilus"),
    ("Right Hilus Pulmonis", "right_hilus"),
    ("Heart", "heart"),
    ("Aorta", "aorta"),
    ("Facies Diaphragmatica", "diaphragm"),
    ("Mediastinum", "mediastinum"),
    ("Weasand", "trachea"),
    ("Spine", "spine"),
)


def write_xrv_weights(folder: Path, seed: int = 0) -> tuple[Path, dict[str, torch.Tensor]]:
    """Random PSPNet weights saved as TorchXRayVision's release file is: DataParallel keys."""
    torch.manual_seed(seed)
    state = pspnet(len(PSPNet.targets)).state_dict()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / WEIGHTS_NAME
    torch.save(OrderedDict((f"module.{k}", v) for k, v in state.items()), path)
    return path, state


@pytest.fixture(scope="module")
def xrv_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """A HOME whose TorchXRayVision cache folder holds written weights; downloads forbidden."""
    home = tmp_path_factory.mktemp("home")
    path, _ = write_xrv_weights(home / ".torchxrayvision" / "models_data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        mp.setattr(xrv.utils, "download", _no_download)
        yield home, path


def _no_download(url: str, filename: str) -> None:
    raise AssertionError(f"TorchXRayVision tried to download {url} to {filename}")


@pytest.fixture(scope="module")
def loaded(xrv_home: tuple[Path, Path]) -> TorchXRayVisionPSPNet:
    """The segmenter built from the written weights through TorchXRayVision's loader."""
    seg = TorchXRayVisionPSPNet()
    seg.load(CPU)
    return seg


def test_cache_folder_is_torchxrayvisions(xrv_home: tuple[Path, Path]) -> None:
    _home, path = xrv_home
    assert Path(xrv.utils.get_cache_dir()) == path.parent  # where TorchXRayVision itself looks
    assert TorchXRayVisionPSPNet().weights_file() == path


def test_loads_written_weights_through_torchxrayvisions_class(
    xrv_home: tuple[Path, Path], loaded: TorchXRayVisionPSPNet
) -> None:
    home, path = xrv_home
    model = loaded._model
    assert type(model) is PSPNet
    assert not model.training
    assert model.weights_filename_local == str(path)
    _, written = write_xrv_weights(home / "again", seed=0)  # the same seeded weights
    _, other = write_xrv_weights(home / "other", seed=1)
    got = model.model.state_dict()
    assert set(got) == set(written)  # TorchXRayVision stripped the "module." prefix
    assert all(torch.equal(got[k], written[k]) for k in written)
    conv = "classification.weight"
    assert not torch.equal(got[conv], other[conv])  # the file's weights, not any init


def test_provenance_names_file_hash_and_versions(
    xrv_home: tuple[Path, Path], loaded: TorchXRayVisionPSPNet
) -> None:
    home, path = xrv_home
    prov = loaded.provenance()
    assert prov["segmenter"] == "torchxrayvision_pspnet"
    assert prov["weights"] == {
        "file": WEIGHTS_NAME,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    assert prov["torchxrayvision"] == xrv.__version__
    assert prov["torch"] == torch.__version__
    assert prov["options"] == {"weights": None, "threshold": 0.5, "fit": "pad"}
    text = json.dumps(prov)
    assert str(home) not in text  # no folder, no user name
    given = TorchXRayVisionPSPNet(weights=path.parent).provenance()
    assert given["options"]["weights"] == WEIGHTS_NAME
    assert given["weights"] == prov["weights"]
    assert str(home) not in json.dumps(given)


def test_weights_option_takes_the_file_or_its_folder(
    xrv_home: tuple[Path, Path], tmp_path: Path
) -> None:
    _, path = xrv_home
    assert TorchXRayVisionPSPNet(weights=path).weights_file() == path
    assert TorchXRayVisionPSPNet(weights=path.parent).weights_file() == path
    renamed = tmp_path / "pspnet.pth"
    renamed.write_bytes(b"x")
    with pytest.raises(XaibenchError, match=rf"option weights: .*pspnet\.pth.*{WEIGHTS_NAME}"):
        TorchXRayVisionPSPNet(weights=renamed).weights_file()
    with pytest.raises(XaibenchError, match=r"option weights: .*nowhere.* does not exist"):
        TorchXRayVisionPSPNet(weights=tmp_path / "nowhere").load(CPU)


def test_missing_weights_is_one_line_naming_file_and_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(xrv.utils, "download", _no_download)
    folder = tmp_path / ".torchxrayvision" / "models_data"
    with pytest.raises(XaibenchError) as err:
        TorchXRayVisionPSPNet().load(CPU)
    message = str(err.value)
    assert "\n" not in message
    assert repr(str(folder / WEIGHTS_NAME)) in message
    assert repr(str(folder)) in message
    assert "cache folder" in message
    assert "never downloads" in message
    assert not folder.exists()  # TorchXRayVision's constructor (which would mkdir) never ran
    empty = tmp_path / "given"
    empty.mkdir()
    with pytest.raises(XaibenchError, match="folder given as option weights") as err:
        TorchXRayVisionPSPNet(weights=empty).load(CPU)
    assert repr(str(empty / WEIGHTS_NAME)) in str(err.value)


def test_unreadable_weights_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / WEIGHTS_NAME
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(XaibenchError, match="cannot load weights file") as err:
        TorchXRayVisionPSPNet(weights=bad).load(CPU)
    assert "\n" not in str(err.value)
    assert repr(str(bad)) in str(err.value)


# --- Region mapping with planted logits ---------------------------------------------------------

#: One rectangle per channel on the 512 grid (rows, cols), edges on multiples of 8 so that the
#: nearest-neighbour resize to 128 (scale 4) or 64 (scale 8) maps them exactly.
BOXES: dict[str, tuple[int, int, int, int]] = {
    label: (32 * i, 32 * i + 64, 8 * i + 64 + 16 * (i % 2), 8 * i + 200)
    for i, (label, _) in enumerate(CHANNELS)
}


def planted(batch: int, boxes: dict[str, tuple[int, int, int, int]] | None = None) -> torch.Tensor:
    logits = torch.full((batch, len(CHANNELS), 512, 512), -8.0)
    for i, (label, _) in enumerate(CHANNELS):
        r0, r1, c0, c1 = (boxes or BOXES)[label]
        logits[:, i, r0:r1, c0:c1] = 8.0
    return logits


def plant(
    seg: TorchXRayVisionPSPNet, monkeypatch: pytest.MonkeyPatch, logits: torch.Tensor
) -> list[torch.Tensor]:
    """Replace the network (not TorchXRayVision's preprocessing) by planted logits."""
    seen: list[torch.Tensor] = []

    def forward(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.clone())
        return logits.clone()

    monkeypatch.setattr(seg._model.model, "forward", forward)
    return seen


def expected_box(label: str, scale_r: int, scale_c: int, offset_c: int, shape: tuple[int, int]):
    """The planted box on the image grid, by hand: divide by the scale, shift, clip."""
    r0, r1, c0, c1 = BOXES[label]
    mask = np.zeros(shape, dtype=bool)
    lo_c, hi_c = max(c0 // scale_c - offset_c, 0), min(c1 // scale_c - offset_c, shape[1])
    mask[r0 // scale_r : r1 // scale_r, lo_c:hi_c] = True
    return mask


def test_every_region_maps_from_its_channel_on_a_padded_portrait_image(
    loaded: TorchXRayVisionPSPNet, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = plant(loaded, monkeypatch, planted(2))
    images = torch.ones(2, 1, 128, 96)  # portrait: padded to 128 x 128, 16 columns each side
    masks = loaded.segment(images)
    assert tuple(masks) == REGIONS
    assert list(PSPNet.targets) == [label for label, _ in CHANNELS]
    by_label = {}
    for label, name in CHANNELS:
        want = expected_box(label, 4, 4, 16, (128, 96))
        by_label[name] = want
        assert want.any(), label
        for b in range(2):
            assert np.array_equal(masks[name][b].numpy(), want), name
    union = {
        "clavicles": ("left_clavicle", "right_clavicle"),
        "scapulae": ("left_scapula", "right_scapula"),
        "lungs": ("left_lung", "right_lung"),
        "bone": ("left_clavicle", "right_clavicle", "left_scapula", "right_scapula", "spine"),
    }
    for name, parts in union.items():
        want = np.logical_or.reduce([by_label[p] for p in parts])
        assert np.array_equal(masks[name][0].numpy(), want), name
    for m in masks.values():
        assert m.dtype == torch.bool
        assert m.shape == (2, 128, 96)
    # TorchXRayVision's preprocessing ran: 3 channels at 512, [-1024, 1024] -> [0, 1] -> ImageNet
    (x,) = seen
    assert x.shape == (2, 3, 512, 512)
    mean = torch.tensor([0.485, 0.456, 0.406])
    std = torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(x[0, :, 256, 256], (1.0 - mean) / std, atol=1e-4)  # the image
    assert torch.allclose(x[0, :, 256, 10], (0.0 - mean) / std, atol=1e-4)  # the black pad


def test_left_means_the_patients_left_on_the_image_right(
    loaded: TorchXRayVisionPSPNet, monkeypatch: pytest.MonkeyPatch
) -> None:
    image_right, image_left = (0, 512, 256, 512), (0, 512, 0, 256)
    boxes = {label: (0, 0, 0, 0) for label, _ in CHANNELS}
    boxes |= {"Left Lung": image_right, "Left Clavicle": image_right}
    boxes |= {"Right Lung": image_left, "Right Scapula": image_left}
    plant(loaded, monkeypatch, planted(1, boxes))
    masks = loaded.segment(torch.full((1, 1, 64, 64), 0.5))
    half = np.zeros((64, 64), dtype=bool)
    half[:, 32:] = True
    assert np.array_equal(masks["left_lung"][0].numpy(), half)
    assert np.array_equal(masks["left_clavicle"][0].numpy(), half)
    assert np.array_equal(masks["right_lung"][0].numpy(), ~half)
    assert np.array_equal(masks["right_scapula"][0].numpy(), ~half)
    assert masks["lungs"][0].all()
    assert masks["bone"][0].all()
    assert not masks["right_clavicle"].any()
    assert not masks["heart"].any()


def test_stretch_fit_resizes_each_axis(
    loaded: TorchXRayVisionPSPNet, monkeypatch: pytest.MonkeyPatch
) -> None:
    seg = loaded.model_copy(update={"fit": "stretch"})
    seg._model, seg._device = loaded._model, CPU
    seen = plant(seg, monkeypatch, planted(1))
    masks = seg.segment(torch.ones(1, 1, 64, 128))  # landscape: rows x8, columns x4
    for label, name in CHANNELS:
        want = expected_box(label, 8, 4, 0, (64, 128))
        assert np.array_equal(masks[name][0].numpy(), want), name
    assert seen[0].shape == (1, 3, 512, 512)


@pytest.mark.parametrize(("height", "width"), [(150, 200), (700, 610), (976, 880)])
def test_resize_back_matches_scikit_image_nearest_neighbour(
    loaded: TorchXRayVisionPSPNet, monkeypatch: pytest.MonkeyPatch, height: int, width: int
) -> None:
    """Non-integer scales (down and up): scikit-image's order-0 resize is the reference.

    976 has 15 rows where torch's float ``nearest-exact`` rounds a tie the other way.
    """
    from skimage.transform import resize

    gen = torch.Generator().manual_seed(height)
    logits = torch.randn(1, len(CHANNELS), 512, 512, generator=gen)
    plant(loaded, monkeypatch, logits)
    masks = loaded.segment(torch.full((1, 1, height, width), 0.25))
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    for i, (_, name) in enumerate(CHANNELS):
        square = resize(logits[0, i].numpy() > 0, (side, side), order=0, anti_aliasing=False)
        want = square[top : top + height, left : left + width]
        assert np.array_equal(masks[name][0].numpy(), want), name


def test_threshold_applies_to_the_sigmoid(
    loaded: TorchXRayVisionPSPNet, monkeypatch: pytest.MonkeyPatch
) -> None:
    logits = torch.full((1, len(CHANNELS), 512, 512), 0.2)  # sigmoid(0.2) = 0.5498
    plant(loaded, monkeypatch, logits)
    assert loaded.segment(torch.zeros(1, 1, 32, 32))["heart"].all()
    strict = loaded.model_copy(update={"threshold": 0.56})
    strict._model, strict._device = loaded._model, CPU
    plant(strict, monkeypatch, logits)
    assert not strict.segment(torch.zeros(1, 1, 32, 32))["heart"].any()


def test_bad_images_are_one_line_errors(loaded: TorchXRayVisionPSPNet) -> None:
    with pytest.raises(XaibenchError, match=r"\[B, 1, H, W\]"):
        loaded.segment(torch.zeros(1, 3, 8, 8))
    with pytest.raises(XaibenchError, match=r"\[0, 1\]"):
        loaded.segment(torch.full((1, 1, 8, 8), 255.0))
    with pytest.raises(XaibenchError, match=r"\[0, 1\]"):
        loaded.segment(torch.full((1, 1, 8, 8), float("nan")))
    with pytest.raises(XaibenchError, match=r"\[0, 1\]"):
        loaded.segment(torch.full((1, 1, 8, 8), -0.01))
    with pytest.raises(XaibenchError, match="load"):
        TorchXRayVisionPSPNet().segment(torch.zeros(1, 1, 8, 8))


@pytest.mark.slow
def test_real_network_segments_on_the_image_grid_deterministically(
    loaded: TorchXRayVisionPSPNet,
) -> None:
    """One real 512 x 512 forward pass of the random-weight network (about 10 s on a CPU)."""
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(1, 1, 72, 60, generator=gen)
    first = loaded.segment(images)
    again = loaded.segment(images)
    assert tuple(first) == REGIONS
    for name in REGIONS:
        assert first[name].dtype == torch.bool
        assert first[name].shape == (1, 72, 60)
        assert torch.equal(first[name], again[name]), name
    found = torch.stack([first[name] for name in REGIONS])
    assert found.any()
    assert not found.all()
    bone = first["left_clavicle"] | first["right_clavicle"] | first["left_scapula"]
    bone |= first["right_scapula"] | first["spine"]
    assert torch.equal(first["bone"], bone)
