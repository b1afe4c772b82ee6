"""Registration of the ``mlflow`` observer (the ``xaibench`` entry point of xaibench-mlflow)."""

from __future__ import annotations

from xaibench.hookspecs import hookimpl
from xaibench.registry import Register


@hookimpl
def register_observers(register: Register) -> None:
    """Register ``mlflow`` (lazy: MLflow is imported only when a run uses the observer)."""
    register(
        "mlflow",
        "xaibench_mlflow.observer:MlflowObserver",
        summary="each cell a nested MLflow run (params, metrics with CIs, gallery) of the study",
    )
