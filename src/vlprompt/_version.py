"""The package version, in a module of its own so that any module can read it without
importing the package's top level."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

__version__ = "0.1.0"


@functools.cache
def code_version() -> str:
    """The version of the code that computes: `__version__`, plus `+g<commit>` (and `.dirty`
    with uncommitted changes) when vlprompt runs from a git checkout. Runs and results record
    it, so that a number can be traced to the code that made it."""
    here = Path(__file__).resolve().parent
    try:
        top, commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--show-toplevel", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.split()  # fmt: skip
        if Path(top).resolve() / "src" / "vlprompt" != here:  # another project's repository
            return __version__
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no", "."],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, ValueError, subprocess.SubprocessError):
        return __version__  # an installed wheel, or no git
    if not commit:
        return __version__
    return f"{__version__}+g{commit}" + (".dirty" if dirty else "")
