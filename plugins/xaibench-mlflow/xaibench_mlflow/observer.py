"""``mlflow``: an xaibench run logged to an MLflow tracking server as it goes.

One MLflow run per study (the *parent*, found again by its ``xaibench.run_id`` tag when the run
folder is resumed) and one nested MLflow run per cell (a *child*: tag ``mlflow.parentRunId``,
de-duplicated by the tag ``xaibench.cell_key``). See the package README for what is logged where.

MLflow is used only through an explicit ``MlflowClient(tracking_uri=...)``: no global tracking
URI, no fluent active run, so several observers, notebooks or threads do not interfere. MLflow is
imported inside the methods; importing this module imports none of it.

Every failure leaves here as one :class:`MlflowObserverError` line with the tracking URI's
credentials and the user's folders taken out (MLflow's own messages quote the URI); the run's
dispatcher reports it and stops calling the observer, and the run goes on.
"""

from __future__ import annotations

import contextlib
import functools
import os
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, PrivateAttr

from xaibench import __version__ as xaibench_version
from xaibench.errors import XaibenchError
from xaibench.observers.base import CellFinished, Observer, RunFinished, RunStarted
from xaibench_mlflow import naming

#: The environment variable MLflow itself reads for the tracking URI.
URI_ENV = "MLFLOW_TRACKING_URI"

NO_URI = "observer mlflow: no tracking URI; give --tracking-uri URI or set MLFLOW_TRACKING_URI"

#: MLflow run status per xaibench cell status, and per run status.
CELL_STATUS = {"ok": "FINISHED", "failed": "FAILED"}
RUN_STATUS = {"ok": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}

#: The run's results files logged to the parent (under ``results/``).
RESULT_FILES = ("results.json", "config.yaml")

#: Metrics of a child that are not records (reserved: no record's name may take them).
SECONDS = "xaibench.seconds"

F = TypeVar("F", bound=Callable[..., Any])


class MlflowObserverError(RuntimeError):
    """A failure of the ``mlflow`` observer, one line, with no credentials in it."""


def _contained(method: F) -> F:
    """Re-raise any failure of ``method`` as one scrubbed :class:`MlflowObserverError` line."""

    @functools.wraps(method)
    def wrapper(self: MlflowObserver, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except MlflowObserverError:
            raise
        except Exception as exc:
            text = str(exc) or type(exc).__name__
            if str(exc):
                text = f"{type(exc).__name__}: {text}"
            raise MlflowObserverError(self._scrub(text)) from None

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def _quiet_urls() -> Iterator[None]:
    """MLflow's ``set_terminated`` prints run URLs (with the URI's credentials) to stdout: not."""
    name = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"
    saved = os.environ.get(name)
    os.environ[name] = "true"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class MlflowObserver(Observer):
    """Log the run to MLflow: a parent run for the study, a nested run per cell."""

    display_name = "MLflow"
    external = True  # a tracking server: the conformance kit never sends it made-up runs

    tracking_uri: str | None = Field(
        None,
        repr=False,
        description="The tracking server (default: MLFLOW_TRACKING_URI; one of them is required).",
    )
    experiment: str | None = Field(
        None, min_length=1, max_length=500, description="Experiment (default: xaibench-<task>)."
    )
    run_name: str | None = Field(
        None, min_length=1, description="The parent run's name (default: the run folder's name)."
    )
    log_artifacts: bool = Field(
        True, description="Log each cell's gallery and the run's leaderboards and results."
    )
    log_tables: bool = Field(
        False,
        description="Also log each cell's per-image tables (predictions.csv, explanations.csv; "
        "they name every test image).",
    )
    tags: dict[str, str] = Field(
        default_factory=dict, description="Extra tags on the parent and every cell's run."
    )
    param_max_length: int = Field(
        naming.MAX_PARAM_LENGTH,
        ge=100,
        le=naming.MAX_PARAM_LENGTH,
        description="Cut param values to this length (older servers allow 500 or 250).",
    )
    connect_timeout: float = Field(
        10.0, gt=0, le=600, description="Seconds to wait for the server's /health at run start."
    )

    _uri: str = PrivateAttr("")
    _client: Any = PrivateAttr(None)
    _experiment_id: str = PrivateAttr("")
    _parent: str | None = PrivateAttr(None)
    _run_dir: Path | None = PrivateAttr(None)
    _cells: int = PrivateAttr(0)
    _children: dict[str, list[tuple[str, str]]] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: Any, /) -> None:
        """Resolve the tracking URI now: none is a usage error before the run does any work."""
        uri = (self.tracking_uri or os.environ.get(URI_ENV) or "").strip()
        if not uri:
            raise XaibenchError(NO_URI)
        self._uri = uri

    def options(self) -> dict[str, Any]:
        """The options, the tracking URI without its credentials."""
        out = super().options()
        if out.get("tracking_uri"):
            out["tracking_uri"] = naming.redact_uri(out["tracking_uri"])
        return out

    # --- helpers ---------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        return naming.scrub_text(text, self._uri, self._run_dir)

    def _check_reachable(self) -> None:
        """Fail fast when an HTTP server is down (MLflow's own retries take minutes)."""
        parts = urlsplit(self._uri)
        if parts.scheme not in ("http", "https"):
            return
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        url = urlunsplit((parts.scheme, host, parts.path.rstrip("/") + "/health", "", ""))
        try:
            with urllib.request.urlopen(url, timeout=self.connect_timeout):
                pass
        except urllib.error.HTTPError:
            pass  # it answered: reachable (a proxy or an auth layer may refuse /health)
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, ssl.SSLError):
                return  # it answered TLS; MLflow has its own certificate settings
            raise MlflowObserverError(
                self._scrub(
                    f"MLflow tracking server {naming.redact_uri(self._uri)} is not reachable "
                    f"({reason}); nothing is logged to it in this run"
                )
            ) from None

    def _terminate(self, run_id: str, status: str) -> None:
        with _quiet_urls():
            self._client.set_terminated(run_id, status)

    def _log_params(self, run_id: str, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in sorted(params.items())]
        for chunk in _chunks(items, naming.PARAMS_PER_BATCH):
            self._client.log_batch(run_id, params=chunk)

    def _log_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, 0) for k, v in sorted(metrics.items())]
        for chunk in _chunks(items, naming.METRICS_PER_BATCH):
            self._client.log_batch(run_id, metrics=chunk)

    def _user_tags(self) -> dict[str, str]:
        return {naming.key_of([k]): str(v)[: naming.MAX_TAG_LENGTH] for k, v in self.tags.items()}

    def _experiment(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        found = self._client.get_experiment_by_name(name)
        if found is None:
            try:
                return str(self._client.create_experiment(name))
            except MlflowException:  # created meanwhile by another run: use that one
                found = self._client.get_experiment_by_name(name)
                if found is None:
                    raise
        if found.lifecycle_stage != "active":
            raise MlflowObserverError(
                f"MLflow experiment {name!r} is deleted; restore it (mlflow experiments restore "
                f"--experiment-id {found.experiment_id}) or log to another with "
                "--observer-option mlflow.experiment=NAME"
            )
        return str(found.experiment_id)

    def _search(self, filter_string: str) -> list[Any]:
        """Every active run of the experiment that matches, oldest first (all pages)."""
        from mlflow.entities import ViewType

        runs: list[Any] = []
        token = None
        while True:
            page = self._client.search_runs(
                [self._experiment_id],
                filter_string=filter_string,
                run_view_type=ViewType.ACTIVE_ONLY,
                max_results=1000,
                order_by=["attributes.start_time ASC"],
                page_token=token,
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    # --- events ----------------------------------------------------------------------------

    @_contained
    def run_started(self, run: RunStarted) -> None:
        """Find (resume) or create the study's parent run, and list its cells' runs."""
        self._run_dir = run.run_dir
        self._cells = len(run.cells)
        self._check_reachable()
        from mlflow.tracking import MlflowClient

        self._client = MlflowClient(tracking_uri=self._uri)
        self._experiment_id = self._experiment(self.experiment or f"xaibench-{run.task}")
        tags = {
            "xaibench.kind": "study",
            "xaibench.run_id": run.run_id,
            "xaibench.study_hash": run.study_hash,
            "xaibench.task": run.task,
            "xaibench.version": str(run.provenance.get("xaibench_version", xaibench_version)),
            "xaibench.started": run.started,
            "xaibench.run_folder": run.run_dir.name,
            "xaibench.cells": str(len(run.cells)),
            "xaibench.resumed": "true" if run.resumed else "false",
            **component_tags(run.provenance.get("components", {})),
            **self._user_tags(),
        }
        params = naming.flatten_params(run.config, self.param_max_length)
        found = self._search(
            f"tags.`xaibench.run_id` = '{run.run_id}' AND tags.`xaibench.kind` = 'study'"
        )
        if found:
            parent = found[0]
            self._parent = parent.info.run_id
            self._client.update_run(self._parent, status="RUNNING")
            for key, value in tags.items():
                if parent.data.tags.get(key) != value:
                    self._client.set_tag(self._parent, key, value)
            if "xaibench.error" in parent.data.tags:  # an earlier session's interruption
                self._client.delete_tag(self._parent, "xaibench.error")
            # params are immutable: log only those not there (a resume may change the executor)
            params = {k: v for k, v in params.items() if k not in parent.data.params}
        else:
            created = self._client.create_run(
                self._experiment_id, run_name=self.run_name or run.run_dir.name, tags=tags
            )
            self._parent = created.info.run_id
        self._log_params(self._parent, params)
        self._children = {}
        for child in self._search(f"tags.`mlflow.parentRunId` = '{self._parent}'"):
            key = child.data.tags.get("xaibench.cell_key")
            if key:
                self._children.setdefault(key, []).append((child.info.run_id, child.info.status))

    @_contained
    def cell_finished(self, cell: CellFinished) -> None:
        """Log the cell as a nested run, unless a complete one of it is there already."""
        if self._parent is None:
            return
        want = CELL_STATUS[cell.status]
        existing = self._children.get(cell.key, [])
        keep = next((r for r in existing if r[1] == want), None) if cell.from_checkpoint else None
        for run_id, _ in existing:
            if keep is None or run_id != keep[0]:
                self._client.delete_run(run_id)  # killed while logging, or a cell retried
        if keep is not None:
            self._children[cell.key] = [keep]
            return
        self._children[cell.key] = []
        child = self._client.create_run(
            self._experiment_id, run_name=cell.label, tags=self._cell_tags(cell)
        )
        child_id = child.info.run_id
        self._children[cell.key] = [(child_id, "RUNNING")]
        params = dict(cell.params)
        params.setdefault("seed", cell.seed)
        self._log_params(child_id, naming.flatten_params(params, self.param_max_length))
        self._log_metrics(child_id, cell_metrics(cell.records, cell.seconds))
        if self.log_artifacts:
            for path in cell.files:
                if path.suffix == ".png" and path.parent.name == "gallery":
                    self._client.log_artifact(child_id, str(path), "gallery")
                elif self.log_tables and path.suffix == ".csv":
                    self._client.log_artifact(child_id, str(path), "tables")
        self._terminate(child_id, want)
        self._children[cell.key] = [(child_id, want)]

    def _cell_tags(self, cell: CellFinished) -> dict[str, str]:
        logged = sum(naming.is_logged(r) for r in cell.records)
        tags = {
            "mlflow.parentRunId": str(self._parent),
            "xaibench.kind": "cell",
            "xaibench.run_id": cell.run_id,
            "xaibench.cell_key": cell.key,
            "xaibench.backbone": cell.backbone,
            "xaibench.strategy": cell.strategy,
            "xaibench.seed": str(cell.seed),
            "xaibench.status": cell.status,
            "xaibench.from_checkpoint": "true" if cell.from_checkpoint else "false",
            "xaibench.records": str(len(cell.records)),
            "xaibench.records_not_logged": str(len(cell.records) - logged),
            **self._user_tags(),
        }
        random_init = {r.get("random_init") for r in cell.records} - {None}
        if len(random_init) == 1:
            tags["xaibench.random_init"] = "true" if random_init.pop() else "false"
        if cell.error:
            tags["xaibench.error"] = self._scrub(cell.error)[: naming.MAX_TAG_LENGTH]
        return tags

    @_contained
    def run_finished(self, run: RunFinished) -> None:
        """The run's results files and cell counts on the parent, which ends with the run."""
        if self._parent is None:
            return
        if self.log_artifacts:
            for path in run.files:
                if path.name in RESULT_FILES or (
                    path.name.startswith("leaderboard_") and path.suffix in (".md", ".csv")
                ):
                    self._client.log_artifact(self._parent, str(path), "results")
        counts = {"cells": float(self._cells), "cells_failed": float(run.cells_failed)}
        latest = self._client.get_run(self._parent).data.metrics
        self._log_metrics(self._parent, {k: v for k, v in counts.items() if latest.get(k) != v})
        self._client.set_tag(self._parent, "xaibench.status", run.status)
        if run.error:
            error = self._scrub(run.error)[: naming.MAX_TAG_LENGTH]
            self._client.set_tag(self._parent, "xaibench.error", error)
        self._terminate(self._parent, RUN_STATUS[run.status])
        self._parent = None


def component_tags(components: dict[str, Any]) -> dict[str, str]:
    """Tags ``xaibench.component.<kind>.<name>``: ``<distribution> <version> (v<n>)``."""
    tags = {}
    for kind, entries in sorted(components.items()):
        for name, info in sorted((entries or {}).items()):
            if not isinstance(info, dict):
                continue
            value = f"{info.get('distribution', '?')} {info.get('version', '?')}"
            if info.get("component_version"):
                value += f" (v{info['component_version']})"
            tags[naming.key_of(["xaibench.component", kind, name])] = value
    return tags


def cell_metrics(records: tuple[dict[str, Any], ...], seconds: float | None) -> dict[str, float]:
    """The cell's metrics: each ``ok`` finite record, its CI bounds, and the cell's wall time."""
    logged = [r for r in records if naming.is_logged(r)]
    names = naming.metric_names(logged, reserved={SECONDS})
    metrics: dict[str, float] = {}
    for i, record in enumerate(logged):
        metrics[names[i]] = float(record["value"])
        for bound, suffix in zip(("ci_low", "ci_high"), naming.CI_SUFFIXES, strict=True):
            value = record.get(bound)
            if naming.is_logged({"status": "ok", "value": value}):
                metrics[names[i] + suffix] = float(value)  # type: ignore[arg-type]
    if seconds is not None:
        metrics[SECONDS] = float(seconds)
    return metrics
