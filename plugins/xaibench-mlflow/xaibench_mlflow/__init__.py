"""The xaibench-mlflow plugin: the run observer ``mlflow`` (``xaibench run ... --observer mlflow``).

Importing this package imports no MLflow: :mod:`xaibench_mlflow.plugin` registers the lazy target
``xaibench_mlflow.observer:MlflowObserver``, and the observer imports MLflow inside its methods.
"""

from __future__ import annotations

__version__ = "0.1.0"
