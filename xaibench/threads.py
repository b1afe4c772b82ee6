"""OpenMP settings that keep a run fast on a machine it shares with other processes.

torch's CPU kernels run on OpenMP threads, one per core by default, and an OpenMP thread that
reaches a barrier first *spins* while it waits for the others. On a machine where other
processes also want the cores, the thread waited for is often not running, and every small
operation pays a scheduler time slice: small-model torch runs 2-8 times slower (measured in
``docs/performance.md``). ``OMP_WAIT_POLICY=PASSIVE`` makes waiting threads sleep instead.

:func:`configure_threads` sets, before torch is imported and only where the user has not set
them:

* ``OMP_WAIT_POLICY=PASSIVE``;
* ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` to the number of physical cores among the CPUs
  this process may run on (``os.sched_getaffinity``, so a ``taskset`` or a container's CPU set
  counts; :func:`usable_cpus`), at most :data:`MAX_THREADS`; where the user set one of the
  two, the other gets the user's value (torch reads ``MKL_NUM_THREADS`` after
  ``OMP_NUM_THREADS``: a default there would override the user's count).

A user's explicit value always wins. Worker processes (Ray, the local executor's children)
inherit the environment. OpenMP reads these variables once, when torch's library loads: set
after ``import torch`` they do nothing, so :func:`configure_threads` then changes nothing and
records what is in effect. :func:`thread_settings` is what ``environment.json`` records.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

#: The wait policy set when the user has not chosen one.
WAIT_POLICY = "PASSIVE"
#: At most this many threads are set by default: beyond it small models gain nothing.
MAX_THREADS = 16
#: The variables :func:`configure_threads` may set, and the value each records under.
_RECORDED = {"OMP_WAIT_POLICY": "omp_wait_policy", "OMP_NUM_THREADS": "omp_num_threads"}
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")

_SYSFS_CPU = Path("/sys/devices/system/cpu")
#: What the last :func:`configure_threads` call found and did (``set_by`` per variable).
_SETTINGS: dict[str, Any] = {}


def usable_cpus(sysfs: Path = _SYSFS_CPU) -> int:
    """The physical cores among the CPUs this process may run on.

    The CPUs are the process's affinity set (``taskset``, a container's CPU set); of those,
    hyperthreads of one core count once, as torch's own default counts physical cores: on a
    machine with no CPU restriction the count is then torch's default, and so are the numbers
    a run computes (the thread count changes the order of floating-point sums). Without an
    affinity call (macOS, Windows) or CPU topology in ``sysfs``, every CPU counts.
    """
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
    return physical_cores(cpus, sysfs)


def physical_cores(cpus: list[int], sysfs: Path = _SYSFS_CPU) -> int:
    """The distinct (package, core) pairs of ``cpus`` in Linux's CPU topology under ``sysfs``.

    ``len(cpus)`` where a CPU's topology cannot be read.
    """
    cores = set()
    for cpu in cpus:
        topology = sysfs / f"cpu{cpu}" / "topology"
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
        except OSError:
            return max(len(cpus), 1)
        cores.add((package, core))
    return max(len(cores), 1)


def default_threads(cpus: int) -> int:
    """The thread count set when the user has not chosen one: ``cpus``, between 1 and 16."""
    return max(1, min(cpus, MAX_THREADS))


def configure_threads(
    env: MutableMapping[str, str] | None = None, *, cpus: int | None = None
) -> dict[str, Any]:
    """Set the OpenMP wait policy and thread count where the user has not; say who set them.

    Does nothing when torch is already imported (too late: OpenMP has read its settings), except
    record what is in effect.

    Args:
        env: The environment to read and change (default ``os.environ``).
        cpus: The CPUs to size the thread count for (default :func:`usable_cpus`).

    Returns:
        The settings in effect, as :func:`thread_settings` returns them.
    """
    if env is None and _SETTINGS:  # once per process: a second call keeps the first's record
        return thread_settings()
    env = os.environ if env is None else env
    too_late = "torch" in sys.modules and env is os.environ
    set_here: list[str] = []
    if not too_late:
        if not env.get("OMP_WAIT_POLICY"):
            env["OMP_WAIT_POLICY"] = WAIT_POLICY
            set_here.append("OMP_WAIT_POLICY")
        # A user's count in one of the two is copied to the other: torch reads MKL_NUM_THREADS
        # after OMP_NUM_THREADS, so a default in one would override the user's in the other.
        given = [env[n] for n in _THREAD_VARIABLES if env.get(n)]
        threads = (
            given[0] if given else str(default_threads(usable_cpus() if cpus is None else cpus))
        )
        for name in _THREAD_VARIABLES:
            if not env.get(name):
                env[name] = threads
                set_here.append(name)
    settings = _describe(env, set_here)
    if env is os.environ:
        _SETTINGS.update(settings)
    return settings


def _describe(env: MutableMapping[str, str], set_here: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {key: env.get(name) for name, key in _RECORDED.items()}
    who = {
        key: "xaibench" if name in set_here else "user" if env.get(name) else None
        for name, key in _RECORDED.items()
    }
    kinds = set(who.values())
    out["set_by"] = kinds.pop() if len(kinds) == 1 else who
    return out


def thread_settings() -> dict[str, Any]:
    """The OpenMP settings in effect and who set them, for ``environment.json``.

    ``{"omp_wait_policy": "PASSIVE", "omp_num_threads": "2", "set_by": "xaibench"}``;
    ``set_by`` is ``"user"`` when both came from the environment the process started with, a
    mapping per variable when one did, and ``None`` when neither is set (the library defaults).
    Without a :func:`configure_threads` call in this process (a run started from Python after
    torch was imported) it describes ``os.environ`` as the user's.
    """
    if not _SETTINGS:
        return _describe(os.environ, [])
    return dict(_SETTINGS)
