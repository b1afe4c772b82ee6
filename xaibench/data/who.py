"""WHO diagnostic classes of bone mineral density from the T-score.

One definition shared by the osteoporosis task (labels) and the phantom (which samples T-scores
per class), so the two can never disagree at a boundary. Source: WHO Technical Report Series 843
(1994): normal T >= -1, osteopenia -2.5 < T < -1, osteoporosis T <= -2.5.
"""

from __future__ import annotations

import numpy as np

from xaibench.errors import XaibenchError

#: Class names in label order.
WHO_CLASSES: tuple[str, str, str] = ("normal", "osteopenia", "osteoporosis")
#: T >= this is normal.
NORMAL_AT_OR_ABOVE: float = -1.0
#: T <= this is osteoporosis.
OSTEOPOROSIS_AT_OR_BELOW: float = -2.5


def who_class(t_score: float | np.ndarray) -> np.ndarray:
    """WHO class per T-score: 0 normal, 1 osteopenia, 2 osteoporosis.

    Raises:
        XaibenchError: A T-score is missing (NaN); the message counts them.
    """
    t = np.asarray(t_score, dtype=float)
    missing = int(np.isnan(t).sum())
    if missing:
        raise XaibenchError(f"{missing} T-score(s) are missing (NaN)")
    classes = np.where(t >= NORMAL_AT_OR_ABOVE, 0, np.where(t > OSTEOPOROSIS_AT_OR_BELOW, 1, 2))
    return classes.astype(np.int64)
