"""Experiment tracking with TensorBoard (optional: `pip install 'vlprompt[tensorboard]'`).

A run trained with `tensorboard=True` (CLI: `--tensorboard`) writes, under
`<run folder>/tensorboard/`, its per-epoch training loss, learning rate and running accuracy
(step = epoch) and the accuracy of each final evaluation, tagged `eval/<data set>/<classes>/<split>`
(step = the run's epochs). `tensorboard --logdir <sweep or run folder>` shows them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlprompt.errors import TrackingError
from vlprompt.run_folder import TENSORBOARD_DIR as TENSORBOARD_DIR
from vlprompt.run_folder import tensorboard_dir


class TensorBoardLog:
    """Scalars of one run, appended to its `tensorboard/` folder."""

    def __init__(self, run_dir: str | Path) -> None:
        folder = tensorboard_dir(run_dir)  # never a link: FolderError
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise TrackingError(
                "--tensorboard needs the tensorboard package: pip install 'vlprompt[tensorboard]'"
                " (or: pip install tensorboard)"
            ) from None
        self.writer = SummaryWriter(log_dir=str(folder))

    def epoch(self, stats: Any) -> None:
        """One `vlprompt.engine.EpochStats`."""
        self.writer.add_scalar("train/loss", stats.loss, stats.epoch)
        self.writer.add_scalar("train/lr", stats.lr, stats.epoch)
        self.writer.add_scalar("train/accuracy", stats.accuracy, stats.epoch)
        self.writer.flush()

    def evaluation(self, record: dict[str, Any]) -> None:
        """One evaluation record (`vlprompt.evaluate`'s result)."""
        tag = f"eval/{record['dataset']}/{record['subsample']}/{record['split']}"
        self.writer.add_scalar(tag, record["accuracy"], int(record.get("epochs") or 0))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def log_evaluations(run_dir: str | Path, records: list[dict[str, Any]]) -> None:
    """Append evaluation records to a run's TensorBoard log."""
    if not records:
        return
    board = TensorBoardLog(run_dir)
    try:
        for record in records:
            board.evaluation(record)
    finally:
        board.close()
