"""Scores that keep a confident model's order, read back from ``predictions.csv``.

A confident model's probabilities saturate: with a logit margin beyond about 17 (float32) or 37
(float64) the positive-class probability is exactly 1.0, so confident images tie and an AUC
computed from the probabilities is wrong (issue 17 item 7). The runner therefore records the
float64 log-softmax of the logits beside the probabilities, one ``log_prob_<class>`` column per
class, and every rank-based score recomputed from the files (AUC, Δ, their intervals and paired
tests, strata, per-class tables, ROC curves) ranks by the class-vs-rest log-odds derived from
them (:func:`class_log_odds`) — the same values
:attr:`xaibench.metrics.base.Predictions.ranking_scores` gives the runner. The module imports
neither torch nor the metrics, so leaderboards and reports stay light.

Files written before the column existed (results schema < 1.5) have only ``prob_<class>``;
their rows rank by the probabilities, as before. The choice is made per table passed in, so a
cell's rows are never ranked half by one and half by the other.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = [
    "LOG_PROB_PREFIX",
    "PROB_PREFIX",
    "class_log_odds",
    "log_prob_matrix",
    "ranking_matrix",
    "ranking_scores",
]

#: Column prefix of the class probabilities in ``predictions.csv`` (thresholds, calibration).
PROB_PREFIX = "prob_"
#: Column prefix of the float64 log-softmax per class in ``predictions.csv`` (ranks).
LOG_PROB_PREFIX = "log_prob_"


def class_log_odds(log_probs: np.ndarray, k: int) -> np.ndarray:
    """``log p_k - log(1 - p_k)`` per row of float64 log-probabilities ``[N, C]``, stably.

    Monotone in ``p_k``, and finite where ``p_k`` rounds to 1.0: ``log(1 - p_k)`` is the
    log-sum-exp of the other classes' log-probabilities, which keep their precision (a class
    at ``log p = -40`` is exact, while ``1 - p_k`` would round to 0).
    """
    from scipy.special import logsumexp

    values = np.asarray(log_probs, dtype=np.float64)
    others = np.delete(values, k, axis=1)
    return np.asarray(values[:, k] - logsumexp(others, axis=1), dtype=np.float64)


def log_prob_matrix(frame: pd.DataFrame, class_names: Sequence[str]) -> np.ndarray | None:
    """The ``[N, C]`` float64 log-probabilities of ``frame``, or None where it has none.

    None when a ``log_prob_<class>`` column is missing (a file from before they were recorded)
    or any of its values is not a finite number (rows of such a file merged with newer ones).
    """
    columns = [f"{LOG_PROB_PREFIX}{name}" for name in class_names]
    if not all(column in frame.columns for column in columns):
        return None
    values = frame[columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    if values.size and not np.isfinite(values).all():
        return None
    return values


def ranking_matrix(frame: pd.DataFrame, class_names: Sequence[str]) -> np.ndarray:
    """Per class, the class-vs-rest scores to rank by: ``[N, C]`` float64.

    Log-odds from the ``log_prob_<class>`` columns when ``frame`` has them all, finite;
    otherwise the ``prob_<class>`` columns (older files). Either way each column orders the
    images as that class's probability does, without the probabilities' ties.
    """
    log_probs = log_prob_matrix(frame, class_names)
    if log_probs is None:
        columns = [f"{PROB_PREFIX}{name}" for name in class_names]
        return frame[columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    if not len(log_probs):
        return np.zeros((0, len(class_names)))
    return np.stack([class_log_odds(log_probs, k) for k in range(len(class_names))], axis=1)


def ranking_scores(frame: pd.DataFrame, class_names: Sequence[str], k: int) -> np.ndarray:
    """Class ``k``-vs-rest scores to rank by (see :func:`ranking_matrix`): ``[N]`` float64."""
    log_probs = log_prob_matrix(frame, class_names)
    if log_probs is None:
        column = f"{PROB_PREFIX}{class_names[k]}"
        return pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
    if not len(log_probs):
        return np.zeros(0)
    return class_log_odds(log_probs, k)
