"""A run folder's `status.json`: whether its training finished."""

from __future__ import annotations

import json
from pathlib import Path

STATUS_FILE = "status.json"  # written last: a run is finished when it says so


def is_run_finished(run_dir: str | Path) -> bool:
    """True when `run_dir` holds a run whose training finished (its learned prompts are saved)."""
    path = Path(run_dir) / STATUS_FILE
    if not path.is_file():
        return False
    try:
        status = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return False
    return bool(isinstance(status, dict) and status.get("finished"))
