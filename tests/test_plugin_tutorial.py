"""The plugin tutorial, executed: its files, installed with pip into a fresh virtual environment.

``docs/plugins/tutorial.md`` marks every file it builds with ``file=PATH`` on the code fence.
This test writes exactly those files, creates a new venv, installs the package with pip, and
runs the tutorial's commands: the plugin must be listed, used by ``xaibench run osteoporosis
--saliency vargrad`` and pass its own tests and ``pytest --xaibench-conformance``. The venv
reaches xaibench and its dependencies through a ``.pth`` file pointing at this interpreter's
site-packages (installing torch again would take minutes); the plugin itself is a real pip
install into the new venv (its build backend comes from the package index, the one network
access this test needs), invisible to the environment running this test.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "docs" / "plugins" / "tutorial.md"
FENCE = re.compile(r"^```\w+ file=(\S+)\n(.*?)^```$", re.M | re.S)


def tutorial_files() -> dict[str, str]:
    """``{relative path: content}`` of every ``file=`` code block in the tutorial."""
    return {m.group(1): m.group(2) for m in FENCE.finditer(TUTORIAL.read_text())}


def test_the_tutorial_names_its_files():
    files = tutorial_files()
    assert set(files) == {
        "xaibench-vargrad/pyproject.toml",
        "xaibench-vargrad/xaibench_vargrad/__init__.py",
        "xaibench-vargrad/xaibench_vargrad/method.py",
        "xaibench-vargrad/tests/test_vargrad.py",
        "small.yaml",
    }
    for path, text in files.items():
        if path.endswith(".py"):
            compile(text, path, "exec")  # every Python block is complete


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr}"
    return proc


@pytest.mark.slow
def test_tutorial_plugin_installs_runs_and_passes_the_conformance_kit(tmp_path):
    for rel, text in tutorial_files().items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("XAIBENCH_LOAD", "XAIBENCH_DISABLE", "XAIBENCH_PLUGINS", "PYTHON"))
        and k != "VIRTUAL_ENV"
    }
    env.update(HF_HUB_OFFLINE="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path, env)
    python = str(venv / "bin" / "python")
    site = _run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path, env
    ).stdout.strip()
    parent = sysconfig.get_paths()["purelib"]
    Path(site, "_xaibench_parent_env.pth").write_text(f"import site; site.addsitedir({parent!r})\n")
    # A normal pip install (its isolated build fetches setuptools from the package index, as
    # for any user); --no-deps because the dependencies come from the parent environment.
    _run([python, "-m", "pip", "install", "--no-deps", "./xaibench-vargrad"], tmp_path, env)

    plugins = json.loads(_run([python, "-m", "xaibench", "plugins"], tmp_path, env).stdout)
    vargrad = next(p for p in plugins if p["name"] == "vargrad")
    assert vargrad["distribution"] == "xaibench-vargrad"
    assert vargrad["components"] == {"saliency": ["vargrad"]}

    _run(
        [python, "-m", "xaibench", "run", "osteoporosis", "--config", "small.yaml",
         "--saliency", "vargrad", "--out", "runs/vargrad", "--quiet"],
        tmp_path,
        env,
    )  # fmt: skip
    results = json.loads((tmp_path / "runs" / "vargrad" / "results.json").read_text())
    iou = [
        r
        for r in results["records"]
        if r["metric"] == "iou_region" and r.get("saliency") == "vargrad" and r["status"] == "ok"
    ]
    assert iou, "no IoU record for vargrad"
    assert all(0.0 <= r["value"] <= 1.0 for r in iou)
    assert "vargrad" in json.dumps(results["components"])
    assert "xaibench-vargrad" in json.dumps(results["components"])

    package = tmp_path / "xaibench-vargrad"
    own = _run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider"], package, env)
    assert re.search(r"\b\d+ passed\b", own.stdout), own.stdout
    empty = tmp_path / "no_tests_here"
    empty.mkdir()
    kit = _run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "--xaibench-conformance", "--xaibench-component", "vargrad"],
        empty,
        env,
    )  # fmt: skip
    assert re.search(r"\b\d+ passed\b", kit.stdout), kit.stdout
    assert "failed" not in kit.stdout

    # the environment running this test never saw the plugin
    here = subprocess.run(
        [sys.executable, "-m", "xaibench", "ls", "saliency", "vargrad"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert "vargrad" not in here.stdout
