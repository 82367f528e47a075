"""Experiment tracking with TensorBoard (optional: `pip install 'vlprompt[tensorboard]'`).

A run trained with `tensorboard=True` (CLI: `--tensorboard`) writes, under
`<run folder>/tensorboard/`, its per-epoch training loss, learning rate and running accuracy
(step = epoch) and the accuracy of each final evaluation, tagged `eval/<data set>/<classes>/<split>`
(step = the run's epochs). `tensorboard --logdir <sweep or run folder>` shows them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vlprompt.errors import FolderError, TrackingError
from vlprompt.run_folder import TENSORBOARD_DIR as TENSORBOARD_DIR
from vlprompt.run_folder import not_writable, tensorboard_dir

_INSTEAD = "or train without --tensorboard; nothing was changed"


def writable_log_folder(run_dir: str | Path) -> Path:
    """The run's `tensorboard/` (not created) when logs can be written there, else one
    FolderError. Checked before the run folder changes: TensorBoard's writer reports a failed
    write from its own thread, with a traceback."""
    folder = tensorboard_dir(run_dir)  # never a link: FolderError
    if folder.exists() and not folder.is_dir():
        raise FolderError(
            f"{folder} is a file, where --tensorboard writes its logs into a folder: move the "
            f"file away {_INSTEAD}"
        )
    if not folder.parent.is_dir():
        raise FolderError(
            f"cannot write TensorBoard logs into {folder}: {folder.parent} is not a folder; "
            f"choose another output folder {_INSTEAD}"
        )
    probe = folder if folder.is_dir() else folder.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise FolderError(
            f"cannot write TensorBoard logs into {probe} (not writable): make it writable "
            f"{_INSTEAD}"
        )
    return folder


class TensorBoardLog:
    """Scalars of one run, appended to its `tensorboard/` folder."""

    def __init__(self, run_dir: str | Path) -> None:
        folder = writable_log_folder(run_dir)
        SummaryWriter = summary_writer_class()
        try:
            self.writer = SummaryWriter(log_dir=str(folder))
        except OSError as exc:  # e.g. a full disk
            raise not_writable(folder, exc, "the TensorBoard folder") from None

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


def summary_writer_class() -> Any:
    """torch's SummaryWriter, or TrackingError when the tensorboard package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise TrackingError(
            "--tensorboard needs the tensorboard package: pip install 'vlprompt[tensorboard]'"
            " (or: pip install tensorboard)"
        ) from None
    return SummaryWriter
