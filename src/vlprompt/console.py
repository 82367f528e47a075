"""What a person sees when they call the library from a script or a notebook: a run's lines
and progress bars by default, each once.

Python shows only warnings of a library's logger unless the program configured logging, and a
progress bar on a pipe is noise. So when nothing is configured, vlprompt's own logger gets one
handler that prints its lines (INFO) to stderr, and progress bars appear on a terminal and in
a Jupyter kernel (whose stderr is not a terminal). A program that configures logging itself
(`logging.basicConfig`, or handlers on the "vlprompt" logger) keeps full control.
"""

from __future__ import annotations

import logging
import sys

LOGGER = "vlprompt"


def interactive() -> bool:
    """A person is watching: stderr is a terminal, or this is a Jupyter kernel."""
    if "ipykernel" in sys.modules:
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def ensure_visible_logging() -> None:
    """Give the "vlprompt" logger one stderr handler at INFO when the program configured no
    logging at all (no handler here, none on the root logger). Called by the entry points
    (`train`, `evaluate`, `run_bench`); calling it again adds nothing."""
    logger = logging.getLogger(LOGGER)
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()  # sys.stderr at each write
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler._vlprompt_default = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    logger.propagate = False  # printed once, even if the root logger gets a handler later
