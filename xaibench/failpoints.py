"""Named points where a test can kill the process, to prove that runs survive being killed.

``XAIBENCH_FAILPOINT=name[:n]`` makes the process SIGKILL itself the ``n``-th time (default the
first) execution reaches :func:`hit` with that name — mid-checkpoint, between two results files —
moments a kill from outside would only hit by luck. Unset (always, outside tests) it costs one
dictionary lookup per call.
"""

from __future__ import annotations

import os
import signal

ENV = "XAIBENCH_FAILPOINT"

_counts: dict[str, int] = {}


def hit(name: str) -> None:
    """Kill this process with SIGKILL if the failpoint ``name`` is armed and due."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    wanted, _, nth = spec.partition(":")
    if wanted != name:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] == (int(nth) if nth else 1):
        os.kill(os.getpid(), signal.SIGKILL)
