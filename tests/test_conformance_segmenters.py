"""The conformance kit's segmenter checks: each catches the fault it is for, naming the segmenter.

Broken segmenters are registered through a temporary plugin on a fresh plugin manager, as in
``tests/test_conformance.py``; each breaks one rule of :mod:`xaibench.segmenters.base`.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import pytest
import torch
import torch.nn.functional as F
from conformance_outcomes import outcomes

from xaibench.errors import InputRangeError, XaibenchError
from xaibench.hookspecs import hookimpl
from xaibench.plugins import get_plugin_manager
from xaibench.segmenters.base import Segmenter, check_raw


class Sound(Segmenter):
    """Bright pixels are "bone", dark ones "lungs": crude, but honours every rule."""

    regions: ClassVar[tuple[str, ...]] = ("lungs", "bone")
    weights_hint: ClassVar[str] = "none: a fixed threshold"

    def load(self, device: torch.device) -> None:
        pass

    def segment(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        check_raw(images, "segmenter 'sound'")
        x = images[:, 0]
        return {r: x < 0.3 if i == 0 else x > 0.6 for i, r in enumerate(self.regions)}

    def provenance(self) -> dict[str, Any]:
        return {"segmenter": "sound", "version": self.version, "weights": None}


class Hashed(Sound):
    """Sound, with a weight file named by its hash."""

    def provenance(self):
        return {"weights": {"file": "seg.safetensors", "sha256": "0123456789abcdef" * 4}}


class BadNames(Sound):
    regions: ClassVar[tuple[str, ...]] = ("Lungs", "bone")


class Twice(Sound):
    regions: ClassVar[tuple[str, ...]] = ("lungs", "bone", "lungs")


class NoHint(Sound):
    weights_hint: ClassVar[str] = ""


class NetworkGrid(Sound):
    """Returns masks on a 32 x 32 network grid instead of the images' own."""

    def segment(self, images):
        small = F.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False)
        return super().segment(small)


class FloatMasks(Sound):
    def segment(self, images):
        return {k: v.float() for k, v in super().segment(images).items()}


class ExtraRegion(Sound):
    def segment(self, images):
        return {**super().segment(images), "heart": images[:, 0] > 0.4}


class MissingRegion(Sound):
    def segment(self, images):
        return {"lungs": super().segment(images)["lungs"]}


class InPlace(Sound):
    def segment(self, images):
        masks = super().segment(images)
        images.clamp_(0.1, 0.9)
        return masks


class DropoutLeftOn(Sound):
    """Thresholds at a random level: the masks change from call to call."""

    def segment(self, images):
        check_raw(images, "x")
        level = float(torch.rand(()))
        return {"lungs": images[:, 0] < level, "bone": images[:, 0] > level}


class NoRangeCheck(Sound):
    def segment(self, images):
        x = images[:, 0]
        return {"lungs": x < 0.3, "bone": x > 0.6}


class WrongRangeError(Sound):
    def segment(self, images):
        if float(images.max()) > 1:
            raise ValueError("too bright")
        return super().segment(images)


class AbsolutePath(Sound):
    def provenance(self):
        return {"weights": {"file": "/home/alice/models/seg.pt", "sha256": "a" * 64}}


class NoHash(Sound):
    def provenance(self):
        return {"segmenter": "no_hash", "weights": {"file": "seg.safetensors"}}


class BadHash(Sound):
    def provenance(self):
        return {"weights": {"file": "seg.safetensors", "sha256": "ABC"}}


class NotJson(Sound):
    def provenance(self):
        return {"weights": None, "threshold": float("nan")}


class MissingWeights(Sound):
    weights_hint: ClassVar[str] = "seg.safetensors: place it in ~/.cache/seg/"

    def load(self, device):
        raise XaibenchError("segmenter 'missing_weights': no seg.safetensors in ~/.cache/seg/")


BROKEN = {
    "sound": Sound,
    "hashed": Hashed,
    "bad_names": BadNames,
    "twice": Twice,
    "no_hint": NoHint,
    "network_grid": NetworkGrid,
    "float_masks": FloatMasks,
    "extra_region": ExtraRegion,
    "missing_region": MissingRegion,
    "in_place": InPlace,
    "dropout_left_on": DropoutLeftOn,
    "no_range_check": NoRangeCheck,
    "wrong_range_error": WrongRangeError,
    "absolute_path": AbsolutePath,
    "no_hash": NoHash,
    "bad_hash": BadHash,
    "not_json": NotJson,
    "missing_weights": MissingWeights,
}


class BrokenSegmenters:
    @hookimpl
    def register_segmenters(self, register):
        for name, cls in BROKEN.items():
            register(name, cls)


@pytest.fixture(scope="module")
def pm():
    manager = get_plugin_manager(entry_points=False)
    manager.register(BrokenSegmenters(), name="broken_segmenters")
    return manager


@pytest.mark.parametrize(
    ("name", "check", "message"),
    [
        ("bad_names", "declarations", r"not snake_case: \['Lungs'\]"),
        ("twice", "declarations", r"lists \['lungs'\] more than once"),
        ("no_hint", "declarations", "declares no `weights_hint`"),
        ("network_grid", "load_and_shape", r"shape \(2, 32, 32\).*expected \[2, 64, 48\]"),
        ("float_masks", "load_and_shape", "dtype torch.float32, expected torch.bool"),
        ("extra_region", "load_and_shape", r"undeclared \['heart'\]"),
        ("missing_region", "load_and_shape", r"missing \['bone'\]"),
        ("in_place", "load_and_shape", "modified the images in place"),
        ("dropout_left_on", "deterministic", "a second call on the same images"),
        ("no_range_check", "raw_range", "accepted images scaled to 0-255"),
        ("wrong_range_error", "raw_range", "raised ValueError: too bright; expected InputRange"),
        ("absolute_path", "provenance", "absolute path .*'/home/alice/models/seg.pt'"),
        ("no_hash", "provenance", "names no weights hash"),
        ("bad_hash", "provenance", "'sha256' = 'ABC', not 64 lowercase hex"),
        ("not_json", "provenance", "not JSON-able"),
    ],
)
def test_a_broken_segmenter_fails_the_check_meant_for_it(pm, name, check, message):
    results = outcomes(pm, name, ["segmenters"])
    assert results[check].startswith("failed"), results
    assert re.search(message, results[check]), results[check]
    assert f"segmenter '{name}'" in results[check]  # the message names the segmenter
    others = {k: v for k, v in results.items() if k != check and v.startswith("failed")}
    if name not in ("extra_region", "missing_region", "network_grid", "float_masks"):
        assert others == {}, others  # one fault, one failing check


@pytest.mark.parametrize("name", ["sound", "hashed"])
def test_a_sound_segmenter_passes_every_check(pm, name):
    assert outcomes(pm, name, ["segmenters"]) == {
        "declarations": "passed",
        "load_and_shape": "passed",
        "deterministic": "passed",
        "raw_range": "passed",
        "provenance": "passed",
    }


def test_missing_weights_skip_with_the_load_message(pm):
    results = outcomes(pm, "missing_weights", ["segmenters"])
    assert results.pop("declarations") == "passed"
    for check, result in results.items():
        assert result.startswith("skipped:"), (check, result)
        assert "segmenter 'missing_weights'" in result
        assert "no seg.safetensors in ~/.cache/seg/" in result


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (torch.full((1, 1, 4, 4), 255.0), r"in \[0, 1\], got values in \[255, 255\]"),
        (torch.full((1, 1, 4, 4), -0.5), r"got values in \[-0.5, -0.5\]"),
        (torch.full((1, 1, 4, 4), float("nan")), "contain NaN"),
        (torch.zeros(1, 3, 4, 4), r"expected images \[B, 1, H, W\], got \(1, 3, 4, 4\)"),
        (torch.zeros(4, 4), r"got \(4, 4\)"),
    ],
)
def test_check_raw_refuses_what_is_not_raw(images, message):
    with pytest.raises(InputRangeError, match=message) as info:
        check_raw(images, "segmenter 'x'")
    assert str(info.value).startswith("segmenter 'x': ")


def test_check_raw_accepts_raw_images_and_float_rounding():
    check_raw(torch.tensor([0.0, 1.0 + 5e-5, -5e-5]).view(1, 1, 1, 3), "x")
    check_raw(torch.zeros(0, 1, 4, 4), "x")
