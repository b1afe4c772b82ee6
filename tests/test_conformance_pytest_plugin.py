"""The kit's pytest plugin, run in pytest sessions of its own (pytester).

Sessions that run checks go to a subprocess: an in-process session restores ``sys.modules``
afterwards, and torch and NumPy cannot be imported twice in one process. Sessions that only
collect (or fail to) stay in this process, which is fast because listing imports nothing heavy.
"""

import importlib.metadata
import subprocess
import sys

import pytest

from xaibench.testing import CHECKS

pytest_plugins = ["pytester"]

#: Built-ins only, whatever is installed next to xaibench.
BUILTINS_ONLY = {"XAIBENCH_LOAD_PLUGINS": ""}


@pytest.fixture(autouse=True)
def _builtins_only(monkeypatch):
    for key, value in BUILTINS_ONLY.items():
        monkeypatch.setenv(key, value)


def test_the_flag_adds_items_next_to_the_collected_tests(pytester):
    pytester.makepyfile(test_own="def test_own():\n    assert True\n")
    result = pytester.runpytest_subprocess(
        "--xaibench-conformance", "--xaibench-component", "center", "-p", "no:cacheprovider", "-v"
    )
    result.assert_outcomes(passed=6)  # the file's test and the five saliency checks
    result.stdout.fnmatch_lines(
        [
            "*test_own.py::test_own PASSED*",
            "xaibench-conformance::saliency:center:output_shape PASSED*",
            "xaibench-conformance::saliency:center:capabilities PASSED*",
        ]
    )


def test_with_no_test_files_it_runs_the_checks_alone_and_reports_skips(pytester):
    result = pytester.runpytest_subprocess(
        "--xaibench-conformance",
        "--xaibench-component",
        "zero",
        "--xaibench-component",
        "manifest",
        "-p",
        "no:cacheprovider",
        "-rs",
    )
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=5, skipped=3)
    result.stdout.fnmatch_lines(["*dataset 'manifest' (xaibench *): it needs option(s) path*"])


def test_component_and_kind_filter_and_keywords_select(pytester):
    result = pytester.runpytest(
        "--xaibench-component",
        "gradcam",
        "--xaibench-component",
        "gradcam_p*",
        "--xaibench-component",
        "zero",
        "--collect-only",
        "-q",
    )
    ids = [line for line in result.outlines if line.startswith("xaibench-conformance::")]
    assert {i.split(":")[-2] for i in ids} == {"gradcam", "gradcam_pp", "zero"}
    assert len(ids) == 5 + 5 + 5
    result = pytester.runpytest(
        "--xaibench-kind", "metrics", "-k", "auc and direction", "--collect-only", "-q"
    )
    ids = sorted(line for line in result.outlines if line.startswith("xaibench-conformance::"))
    assert ids == [
        "xaibench-conformance::metrics:auc:direction",
        "xaibench-conformance::metrics:deletion_auc:direction",
        "xaibench-conformance::metrics:insertion_auc:direction",
        "xaibench-conformance::metrics:macro_auc:direction",
        "xaibench-conformance::metrics:pixel_auc:direction",
        "xaibench-conformance::metrics:quantus:AUC:direction",  # -k is case-insensitive
    ]
    result = pytester.runpytest(
        "--xaibench-component", "zero", "-m", "not xaibench_conformance", "--collect-only", "-q"
    )
    assert not any(line.startswith("xaibench-conformance::") for line in result.outlines)


def test_an_unknown_component_is_a_usage_error_with_suggestions(pytester):
    result = pytester.runpytest("--xaibench-component", "gradcm")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*no component named 'gradcm'*did you mean 'gradcam'*"])


def test_a_plugins_own_parametrised_test_skips_and_fails_like_the_items(pytester):
    pytester.makepyfile(
        test_mine="""
        import pytest
        from xaibench.testing import ConformanceSkip, conformance_checks

        @pytest.mark.parametrize(
            "check", conformance_checks(["center", "timm"], kinds=["saliency", "backbones"]),
            ids=lambda c: c.id,
        )
        def test_conformance(check):
            check.run()

        def test_raised_directly():
            raise ConformanceSkip("not here")
        """
    )
    result = pytester.runpytest_subprocess("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=5, skipped=len(CHECKS["backbones"]) + 1)  # timm needs arch
    result.stdout.fnmatch_lines(["*test_mine.py:*: not here"])


FAKE_PLUGIN = """
import torch
from xaibench.hookspecs import hookimpl
from xaibench.saliency.base import SaliencyMethod


class LeavesHook(SaliencyMethod):
    def explain(self, model, images, targets):
        model.head.register_forward_hook(lambda *_: None)
        return torch.zeros(images.shape[0], *images.shape[-2:])


@hookimpl
def register_saliency_methods(register):
    register("leaky_method", LeavesHook)
"""


def install_fake_distribution(pytester, monkeypatch):
    """A third-party plugin found through its ``xaibench`` entry point, as pip would leave it."""
    pytester.makepyfile(xb_leaky=FAKE_PLUGIN)
    info = pytester.path / "xb_leaky-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: xb-leaky\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[xaibench]\nleaky = xb_leaky\n")
    monkeypatch.setenv("PYTHONPATH", str(pytester.path))


def test_a_broken_third_party_component_fails_the_session(pytester, monkeypatch):
    install_fake_distribution(pytester, monkeypatch)
    monkeypatch.setenv("XAIBENCH_LOAD_PLUGINS", "leaky")
    result = pytester.runpytest_subprocess(
        "--xaibench-conformance", "--xaibench-component", "leaky_method", "-p", "no:cacheprovider"
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=3, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*saliency method 'leaky_method' (xb-leaky 0.1): explain() left the reference cnn "
            "(test_resnet.random) changed: _forward_hooks: None -> 1 on head*",
            "FAILED xaibench-conformance::saliency:leaky_method:no_hooks_left - *",
        ]
    )
    # XAIBENCH_LOAD_PLUGINS leaves it out: then the name is unknown.
    monkeypatch.setenv("XAIBENCH_LOAD_PLUGINS", "")
    result = pytester.runpytest_subprocess("--xaibench-component", "leaky_method")
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_without_the_flag_the_plugin_is_inert_and_imports_nothing_heavy(pytester):
    pytester.makepyfile(
        test_light="""
        import sys

        def test_nothing_heavy_was_imported(request):
            assert request.config.pluginmanager.has_plugin("xaibench")
            assert "torch" not in sys.modules
            assert "xaibench.plugins" not in sys.modules
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=1)
    assert not any("xaibench-conformance" in line for line in result.outlines)
    code = "import sys, xaibench.testing.pytest_plugin; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_plugin_is_registered_through_its_entry_point():
    (entry,) = [
        e for e in importlib.metadata.entry_points(group="pytest11") if e.name == "xaibench"
    ]
    assert entry.value == "xaibench.testing.pytest_plugin"
    assert (entry.load().__doc__ or "").startswith("The kit's pytest plugin")
