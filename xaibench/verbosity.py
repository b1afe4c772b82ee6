"""How much xaibench, and the libraries it drives, write to standard error.

Quiet by default: the progress display and errors, nothing else. ``xaibench --verbose`` (or
``XAIBENCH_VERBOSE=1``, or an ``xaibench`` logger at INFO or below in Python) turns on the INFO
messages of xaibench's loggers and lets libraries keep their own log lines; each component that
starts such a library decides with :func:`is_verbose` (the ``ray`` executor passes it to
``ray.init``).
"""

from __future__ import annotations

import logging
import os

#: Environment variable that makes runs verbose; set by ``xaibench --verbose`` so worker
#: processes see it too.
VERBOSE_ENV = "XAIBENCH_VERBOSE"

#: The logger every xaibench module logs under (``xaibench.cache``, ...).
LOGGER = "xaibench"

_TRUE = {"1", "true", "yes", "on"}


def set_verbose() -> None:
    """Be verbose in this process and the processes it starts (what ``--verbose`` does).

    Sets :data:`VERBOSE_ENV`, lowers the ``xaibench`` logger to INFO and, unless it already has
    one, gives it a handler that writes to standard error.
    """
    os.environ[VERBOSE_ENV] = "1"
    logger = logging.getLogger(LOGGER)
    logger.setLevel(logging.INFO)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)


def is_verbose() -> bool:
    """Whether log lines beyond warnings and errors are wanted.

    True when :data:`VERBOSE_ENV` is ``1``/``true``/``yes``/``on``, or the ``xaibench`` logger
    lets INFO messages through (say after ``logging.basicConfig(level=logging.INFO)``).
    """
    if os.environ.get(VERBOSE_ENV, "").strip().lower() in _TRUE:
        return True
    return logging.getLogger(LOGGER).isEnabledFor(logging.INFO)
