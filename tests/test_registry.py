import sys

import pytest

from xaibench.component import Component
from xaibench.errors import (
    InvalidOptionsError,
    RegistryCollisionError,
    UnknownComponentError,
    XaibenchError,
)
from xaibench.registry import Provider, Registry

A = Provider("plugin_a", "dist-a", "1.0")
B = Provider("plugin_b", "dist-b", "2.3")


class Thing(Component):
    size: int = 1


class NotAComponent:
    pass


def make() -> Registry:
    return Registry("widget", f"{__name__}:Thing")


def test_collision_names_both_providers():
    reg = make()
    reg.add("gradcam", Thing, A)
    with pytest.raises(RegistryCollisionError) as info:
        reg.add("gradcam", Thing, B)
    message = str(info.value)
    assert "plugin_a (dist-a 1.0)" in message
    assert "plugin_b (dist-b 2.3)" in message
    assert reg.get("gradcam").provider == A  # the first registration is untouched


def test_unknown_name_suggests_close_matches():
    reg = make()
    for name in ("gradcam", "gradcam_pp", "saliency"):
        reg.add(name, Thing, A)
    with pytest.raises(UnknownComponentError) as info:
        reg.get("gradcm")
    assert info.value.suggestions[0] == "gradcam"
    assert "did you mean 'gradcam'" in str(info.value)
    assert "available: gradcam, gradcam_pp, saliency" in str(info.value)


def test_unknown_name_without_close_match_lists_available():
    reg = make()
    reg.add("gradcam", Thing, A)
    with pytest.raises(UnknownComponentError) as info:
        reg.get("zzzzzz")
    assert info.value.suggestions == []
    assert "did you mean" not in str(info.value)


def test_wildcard_listing_with_exclude():
    reg = make()
    for name in ("vit_small.a", "vit_base.a", "resnet50.b", "vit_base.b"):
        reg.add(name, Thing, A)
    assert reg.names() == ["resnet50.b", "vit_base.a", "vit_base.b", "vit_small.a"]
    assert reg.names("vit_*") == ["vit_base.a", "vit_base.b", "vit_small.a"]
    assert reg.names("vit_*", exclude="*.b") == ["vit_base.a", "vit_small.a"]


def test_lazy_target_is_imported_only_when_created(tmp_path, monkeypatch):
    (tmp_path / "lazy_widgets.py").write_text(
        f"from {__name__} import Thing\n\nclass Lazy(Thing):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("lazy_widgets", None)
    reg = make()
    reg.add("lazy", "lazy_widgets:Lazy", A)
    assert reg.names() == ["lazy"]
    assert "lazy_widgets" not in sys.modules
    assert type(reg.create("lazy")).__name__ == "Lazy"
    assert "lazy_widgets" in sys.modules


def test_missing_lazy_target_names_the_provider():
    reg = make()
    reg.add("ghost", "no_such_module_xyz:Ghost", A)
    with pytest.raises(
        XaibenchError, match=r"'ghost' from plugin_a \(dist-a 1.0\) cannot be loaded"
    ):
        reg.create("ghost")


def test_preset_options_and_overrides():
    reg = make()
    reg.add("big", Thing, A, options={"size": 10})
    assert reg.create("big").size == 10
    assert reg.create("big", {"size": 3}).size == 3


def test_bad_option_is_a_clear_error():
    reg = make()
    reg.add("thing", Thing, A)
    with pytest.raises(InvalidOptionsError, match=r"widget 'thing'.*colour: unknown option"):
        reg.create("thing", {"colour": "red"})
    with pytest.raises(InvalidOptionsError, match=r"size: Input should be a valid integer"):
        reg.create("thing", {"size": "huge"})


def test_target_of_the_wrong_type_is_rejected():
    reg = make()
    reg.add("wrong", f"{__name__}:NotAComponent", B)
    with pytest.raises(XaibenchError, match=r"plugin_b \(dist-b 2.3\).*not a subclass"):
        reg.create("wrong")


@pytest.mark.parametrize("name", ["", "has space", "tab\tname"])
def test_invalid_names_are_rejected(name):
    with pytest.raises(XaibenchError, match="invalid name"):
        make().add(name, Thing, A)


def test_malformed_lazy_target_is_rejected():
    with pytest.raises(XaibenchError, match=r"package\.module:ClassName"):
        make().add("x", "no_colon_here", A)
