"""Keep the tests' caches and model hub out of the user's home.

Set at import, before xaibench reads the environment: the phantom and feature caches go to a
throw-away folder (subprocesses inherit it) removed when the session ends, and nothing may wait
on a model hub.
"""

import atexit
import os
import shutil
import tempfile

_SCRATCH = tempfile.mkdtemp(prefix="xaibench-cardiomegaly-test-cache-")
os.environ["XAIBENCH_CACHE_DIR"] = _SCRATCH
os.environ["HF_HUB_OFFLINE"] = "1"
atexit.register(shutil.rmtree, _SCRATCH, ignore_errors=True)
