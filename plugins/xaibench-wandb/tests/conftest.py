"""Tests of xaibench-wandb: offline W&B only, nothing written outside temporary folders.

No test needs network or an API key: W&B runs offline, and the tests read back its offline run
folders with :mod:`wandb_files` (wandb's own protobuf messages, decoded without network).
"""

import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "offline"
os.environ.pop("WANDB_API_KEY", None)  # a developer's key must not matter
sys.path.insert(0, str(Path(__file__).parent))
