"""OpenMP's wait policy and thread count: set where unset, left alone where set, and recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from xaibench.threads import MAX_THREADS, configure_threads, default_threads, usable_cpus

_VARIABLES = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def test_unset_variables_are_set_and_attributed_to_xaibench():
    env: dict[str, str] = {"PATH": "/bin"}
    settings = configure_threads(env, cpus=3)
    assert env == {
        "PATH": "/bin",
        "OMP_WAIT_POLICY": "PASSIVE",
        "OMP_NUM_THREADS": "3",
        "MKL_NUM_THREADS": "3",
    }
    assert settings == {"omp_wait_policy": "PASSIVE", "omp_num_threads": "3", "set_by": "xaibench"}


def test_a_users_values_win():
    env = {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "4"}
    settings = configure_threads(env, cpus=8)
    assert env == {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "4"}
    assert settings == {"omp_wait_policy": "ACTIVE", "omp_num_threads": "1", "set_by": "user"}


def test_one_from_the_user_one_from_xaibench():
    env = {"OMP_NUM_THREADS": "1"}
    settings = configure_threads(env, cpus=2)
    # MKL gets the user's count, not the CPUs': torch would read MKL's over OMP's.
    assert env == {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "MKL_NUM_THREADS": "1"}
    assert settings["set_by"] == {"omp_wait_policy": "xaibench", "omp_num_threads": "user"}


def test_neither_set_nor_settable_is_recorded_as_none():
    from xaibench.threads import _describe

    assert _describe({}, []) == {"omp_wait_policy": None, "omp_num_threads": None, "set_by": None}


def test_an_empty_value_counts_as_unset():
    env = {"OMP_WAIT_POLICY": ""}
    configure_threads(env, cpus=1)
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"


@pytest.mark.parametrize(
    ("cpus", "threads"), [(0, 1), (1, 1), (2, 2), (16, 16), (128, MAX_THREADS)]
)
def test_thread_count_is_bounded(cpus, threads):
    assert default_threads(cpus) == threads


def _tiny_run(tmp_path: Path, name: str, env: dict[str, str]) -> dict:
    """A one-cell CLI run in a fresh interpreter; its ``environment.json`` and results' copy."""
    config = tmp_path / "tiny.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "dataset": {
                    "name": "phantom",
                    "options": {"n_images": 48, "image_size": 32, "class_shares": [0.4, 0.3, 0.3]},
                },
                "backbones": [{"name": "test_resnet.random", "options": {"img_size": 32}}],
                "strategies": ["linear_probe"],
                "saliency": ["saliency"],
                "perturbations": ["zero"],
                "train": {"epochs": 1, "batch_size": 16},
                "max_explain_images": 6,
                "gallery_images": 2,
                "sanity": {"images": 2, "steps": 2},
                "analysis": {"bootstrap": 100},
                "cache": False,
            }
        )
    )
    out = tmp_path / name
    command = [sys.executable, "-m", "xaibench", "run", "osteoporosis", "--config", str(config)]
    done = subprocess.run(
        [*command, "--out", str(out), "--quiet"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    environment = json.loads((out / "environment.json").read_text())
    results = json.loads((out / "results.json").read_text())
    assert results["environment"]["openmp"] == environment["openmp"]
    return environment


@pytest.mark.slow
def test_the_cli_sets_the_variables_before_torch_loads_and_records_them(tmp_path):
    clean = {k: v for k, v in os.environ.items() if k not in _VARIABLES}
    expected = str(default_threads(usable_cpus()))

    environment = _tiny_run(tmp_path, "unset", clean)
    assert environment["openmp"] == {
        "omp_wait_policy": "PASSIVE",
        "omp_num_threads": expected,
        "set_by": "xaibench",
    }
    # torch read the count: it was in the environment before torch loaded.
    assert environment["torch_threads"] == int(expected)

    user = {**clean, "OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "1"}
    environment = _tiny_run(tmp_path, "user", user)
    assert environment["openmp"] == {
        "omp_wait_policy": "ACTIVE",
        "omp_num_threads": "1",
        "set_by": "user",
    }
    assert environment["torch_threads"] == 1


def _topology(root: Path, cores: dict[int, tuple[int, int]]) -> Path:
    for cpu, (package, core) in cores.items():
        folder = root / f"cpu{cpu}" / "topology"
        folder.mkdir(parents=True)
        (folder / "physical_package_id").write_text(f"{package}\n")
        (folder / "core_id").write_text(f"{core}\n")
    return root


def test_hyperthreads_of_one_core_count_once(tmp_path):
    from xaibench.threads import physical_cores

    # Two packages, two cores each, two hyperthreads per core: 8 CPUs, 4 cores.
    layout = {cpu: (cpu // 4, cpu % 2) for cpu in range(8)}
    sysfs = _topology(tmp_path, layout)
    assert physical_cores(list(range(8)), sysfs) == 4
    assert physical_cores([0, 2], sysfs) == 1  # siblings of package 0's core 0
    assert physical_cores([0, 1, 4], sysfs) == 3
    assert physical_cores([0, 9], sysfs) == 2  # cpu9's topology unreadable: every CPU counts
