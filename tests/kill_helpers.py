"""Callables that Ray workers import by name (tests put this folder on their PYTHONPATH)."""

from __future__ import annotations

import os
import signal
from pathlib import Path


class KillOnce:
    """`on_epoch_end` that kills its own process with SIGKILL after `epoch` the first time it
    gets there (a file records that it did), like a worker lost mid-run."""

    def __init__(self, flag: str | Path, epoch: int) -> None:
        self.flag = str(flag)
        self.epoch = epoch

    def __call__(self, stats) -> None:
        if stats.epoch == self.epoch and not os.path.exists(self.flag):
            Path(self.flag).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
