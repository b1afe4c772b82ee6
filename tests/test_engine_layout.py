"""The package layout shows the public/internal line (issue 20 item 4).

The run machinery lives in the internal package ``xaibench.engine``; its old flat top-level
modules are gone (no shims), importing the package is cheap, and it never shadows the public
function ``xaibench.run``.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import xaibench

ENGINE_MODULES = (
    "benchmark",
    "grid",
    "runner",
    "cell_job",
    "checkpoints",
    "fit_cache",
    "results",
    "validation",
)


@pytest.mark.parametrize("name", ENGINE_MODULES)
def test_run_machinery_lives_in_the_engine_package_only(name: str):
    package = Path(xaibench.__file__).parent
    assert (package / "engine" / f"{name}.py").is_file()
    assert not (package / f"{name}.py").exists()
    assert importlib.import_module(f"xaibench.engine.{name}").__file__ == str(
        package / "engine" / f"{name}.py"
    )


def test_importing_the_engine_package_imports_no_torch():
    code = (
        "import sys, xaibench.engine; "
        "assert 'torch' not in sys.modules, 'torch'; "
        "assert not [m for m in sys.modules if m.startswith('xaibench.engine.')]"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_the_engine_does_not_shadow_the_public_run_function():
    import xaibench.engine.benchmark  # binds xaibench.engine, never xaibench.run

    assert callable(xaibench.run)
    assert xaibench.run.__module__ == "xaibench.api"
    assert "engine" not in xaibench.__all__
