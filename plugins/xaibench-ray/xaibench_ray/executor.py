"""The ``ray`` executor: every cell is one Ray task, on this machine or across a Ray cluster.

Why Ray and why this shape: cells are independent and each seeds itself, so they can run
anywhere, in any order, as long as each result reaches the driver exactly once. The job (the
configuration, plugin registries and prepared data every cell needs) is large and the same for
all cells, so it goes into Ray's object store once and every task receives a reference to it; the
cells are small and travel as task arguments. Results are collected with ``ray.wait`` as they
finish, not in cell order, so the driver's checkpoint keeps every finished cell even when the
run is stopped halfway. A worker that dies mid-cell (killed, out of memory, its node lost) is
retried by Ray itself (``max_retries``); once the retries are spent only that cell is lost, and
it is reported through ``job.lost`` as a failed result while the others carry on.

Quiet by default: Ray's own log lines (INFO and WARNING on the driver, the workers' output
forwarded to it) are shown only when xaibench is verbose (``xaibench --verbose``,
:func:`xaibench.verbosity.is_verbose`); errors always show, and the run's progress display is
xaibench's, in this process. A private instance writes nothing under the user's home: Ray would
save a generated token to ``~/.ray/auth_token``, so the executor gives it one through the
environment instead; Ray's session folders (logs, sockets, spilled objects) go where Ray puts
them, ``/tmp/ray`` unless ``TMPDIR``, ``RAY_TMPDIR`` or ``init_options: {_temp_dir: ...}``
says otherwise.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from pydantic import Field

from xaibench.errors import XaibenchError
from xaibench.executors.base import CellJob, Executor
from xaibench.verbosity import is_verbose

C = TypeVar("C")
R = TypeVar("R")

INSTALL_HINT = "pip install 'ray>=2.9' (or reinstall the plugin from plugins/xaibench-ray)"


def import_ray() -> ModuleType:
    """Import Ray, or explain in one line how to install it.

    Raises:
        XaibenchError: Ray is not installed in this environment.
    """
    try:
        import ray
    except ImportError as exc:
        raise XaibenchError(
            f"executor 'ray' needs the Ray library, which cannot be imported ({exc}); "
            f"install it with: {INSTALL_HINT}"
        ) from None
    return ray


#: Where Ray looks for a token before it generates one and saves it under the home folder.
_TOKEN_ENV = "RAY_AUTH_TOKEN"
_TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"


def _private_instance_environment() -> None:
    """Prepare this process's environment for a Ray instance it starts (its servers inherit it).

    Ray protects a new local instance with a token and, when it finds none, writes one to
    ``~/.ray/auth_token``; a random token in ``RAY_AUTH_TOKEN`` instead keeps the home folder
    untouched and the instance protected. It stays set for the life of the process (Ray reads
    it once and caches it). A token the user already has (the variable, ``RAY_AUTH_TOKEN_PATH``
    or the file) and ``RAY_AUTH_MODE=disabled`` are left to Ray. Usage statistics are off unless
    ``RAY_USAGE_STATS_ENABLED`` says otherwise.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if os.environ.get("RAY_AUTH_MODE", "").strip().lower() == "disabled":
        return
    if os.environ.get(_TOKEN_ENV) or os.environ.get(_TOKEN_PATH_ENV):
        return
    if (Path.home() / ".ray" / "auth_token").is_file():
        return
    os.environ[_TOKEN_ENV] = secrets.token_hex(32)


def _run_cell(job: CellJob[C, R], cell: C, torch_threads: int | None) -> R:
    """Run one cell on a Ray worker (module level, so workers import it instead of unpickling).

    Ray sets ``OMP_NUM_THREADS`` to the task's CPU count, and the number of threads torch uses
    changes the order of floating-point sums, hence the numbers; the thread count is set on every
    call because workers are reused across tasks.
    """
    if torch_threads is not None:
        import torch

        torch.set_num_threads(torch_threads)
    return job(cell)


def _driver_torch_threads() -> int | None:
    """How many intra-op threads torch uses in this process (None: torch is not installed)."""
    try:
        import torch
    except ImportError:
        return None
    return int(torch.get_num_threads())


class RayExecutor(Executor):
    """Runs each cell as a Ray task and hands each result to ``job.done`` as soon as it arrives.

    Options map onto Ray's own: ``num_cpus_per_cell`` and ``num_gpus_per_cell`` are the task's
    resource request (Ray runs as many cells at once as the cluster has room for, and pins each
    to its GPUs through ``CUDA_VISIBLE_DEVICES``), ``max_retries`` and ``retry_exceptions`` are the
    task's retry policy. Each cell runs with as many torch threads as this process uses, so that
    the numbers equal the local executor's (``torch_threads`` overrides it).

    With ``address`` unset the executor starts a private Ray instance for the run and shuts it
    down afterwards; a Ray instance already initialised in this process (a notebook's
    ``ray.init()``) is used as it is and left running.
    """

    display_name = "Ray"

    address: str | None = Field(
        None,
        description="Ray cluster to join: None starts a local instance for the run (unless "
        "RAY_ADDRESS is set), 'auto' joins the cluster started on this machine with "
        "`ray start`, 'HOST:PORT' or 'ray://HOST:PORT' a remote one.",
    )
    num_cpus_per_cell: float = Field(
        1, ge=0, description="CPUs each cell reserves (Ray's task num_cpus; fractions allowed)."
    )
    num_gpus_per_cell: float = Field(
        0,
        ge=0,
        description="GPUs each cell reserves (Ray's task num_gpus; 0.5 puts two cells on a GPU). "
        "Set it to at least a fraction when the run's device is cuda.",
    )
    max_retries: int = Field(
        2,
        ge=-1,
        description="How often Ray reruns a cell whose worker died (-1: without limit); after "
        "that the cell is reported as failed and the others go on.",
    )
    retry_exceptions: bool = Field(
        False,
        description="Also retry when the job itself raised on the worker (cell failures are "
        "caught inside the job and never raise, so this only matters for broken installs).",
    )
    torch_threads: int | None = Field(
        None,
        ge=1,
        description="Intra-op threads torch uses in each cell. None: as many as torch uses in "
        "the calling process, as the local executor does; the thread count changes "
        "floating-point results, so other counts give numbers that differ from a local run's. "
        "Match num_cpus_per_cell to it to avoid oversubscribing a node.",
    )
    num_cpus: int | None = Field(
        None,
        ge=1,
        description="CPUs a locally started instance offers (default: all); ignored when "
        "joining a cluster.",
    )
    num_gpus: int | None = Field(
        None,
        ge=0,
        description="GPUs a locally started instance offers (default: all it finds); ignored "
        "when joining a cluster.",
    )
    init_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Further keyword arguments for ray.init (e.g. namespace, "
        "object_store_memory), for what the options above do not cover.",
    )

    def model_post_init(self, context: Any, /) -> None:
        """Fail when the executor is built, before any data is prepared, if Ray is missing."""
        import_ray()

    def run(self, cells: Sequence[C], job: CellJob[C, R]) -> list[R]:
        """Run every cell as a Ray task and return the results in the order of ``cells``.

        Raises:
            XaibenchError: Ray is missing, the cluster cannot be reached, or the job cannot be
                serialised for the workers.
        """
        ray = import_ray()
        cells = list(cells)
        if not cells:
            return []
        started = self._connect(ray)
        try:
            return self._run(ray, cells, job)
        finally:
            if started:
                ray.shutdown()

    def _connect(self, ray: ModuleType) -> bool:
        """Initialise Ray unless this process already has; return whether we did."""
        if ray.is_initialized():
            return False
        verbose = is_verbose()
        kwargs: dict[str, Any] = {
            "address": self.address,
            # Ray's logger on the driver, and the workers' stdout/stderr sent to it.
            "logging_level": logging.INFO if verbose else logging.ERROR,
            "log_to_driver": verbose,
        }
        joining = self.address is not None or bool(os.environ.get("RAY_ADDRESS"))
        if not joining:
            # A private instance: the plain ``ray`` package has no dashboard, so do not ask
            # for one; resource totals only apply to an instance this process starts.
            kwargs["include_dashboard"] = False
            _private_instance_environment()
            if self.num_cpus is not None:
                kwargs["num_cpus"] = self.num_cpus
            if self.num_gpus is not None:
                kwargs["num_gpus"] = self.num_gpus
        kwargs.update(self.init_options)
        try:
            ray.init(**kwargs)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            where = self.address or os.environ.get("RAY_ADDRESS") or "a local instance"
            raise XaibenchError(f"executor 'ray' cannot start or reach {where}: {exc}") from exc
        return True

    def _run(self, ray: ModuleType, cells: list[C], job: CellJob[C, R]) -> list[R]:
        """Submit one task per cell, then collect results as they finish."""
        try:
            job_ref = ray.put(job)
        except Exception as exc:  # Ray raises several types for an unserialisable object
            raise XaibenchError(
                f"executor 'ray' cannot send the cell job to its workers: {type(exc).__name__}: "
                f"{exc} (every component of the run must be picklable)"
            ) from exc
        threads = self.torch_threads or _driver_torch_threads()
        task = ray.remote(_run_cell)
        pending: dict[Any, int] = {
            task.options(
                name=f"xaibench-cell-{index}",
                num_cpus=self.num_cpus_per_cell,
                num_gpus=self.num_gpus_per_cell,
                max_retries=self.max_retries,
                retry_exceptions=self.retry_exceptions,
            ).remote(job_ref, cell, threads): index
            for index, cell in enumerate(cells)
        }
        results: dict[int, R] = {}
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    index = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        result = job.lost(cells[index], self._lost_message(ray, exc))
                    job.done(index, result)
                    results[index] = result
        except BaseException:
            # Interrupted (Ctrl-C) or the driver's bookkeeping failed: stop the cells still
            # queued or running rather than leave them busy on the cluster.
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        return [results[index] for index in range(len(cells))]

    def _lost_message(self, ray: ModuleType, exc: BaseException) -> str:
        """One line saying why a cell produced no result."""
        if isinstance(exc, ray.exceptions.RayTaskError):
            cause = getattr(exc, "cause", None) or exc
            detail = _first_line(f"{type(cause).__name__}: {cause}")
            return f"ray: the cell job raised on the worker: {detail}"
        attempts = "unlimited" if self.max_retries < 0 else str(self.max_retries + 1)
        detail = _first_line(f"{type(exc).__name__}: {exc}")
        return f"ray: no result after {attempts} attempt(s): {detail}"


def _first_line(text: str) -> str:
    """The first non-empty line of ``text`` (Ray's messages carry multi-line explanations)."""
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return text.strip()
