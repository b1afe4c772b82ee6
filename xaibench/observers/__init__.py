"""Run observers: plugins told when a run starts, as each cell finishes, and when it ends.

Experiment trackers (``xaibench-mlflow``, ``xaibench-wandb``) are observers. The contract is in
:mod:`xaibench.observers.base`; :mod:`xaibench.observers.dispatch` calls them so that an observer
that fails never costs a run its results.
"""
