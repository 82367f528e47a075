"""A run folder's `status.json`: whether its training finished (kept in `vlprompt.run_folder`)."""

from __future__ import annotations

from vlprompt.run_folder import STATUS_FILE as STATUS_FILE
from vlprompt.run_folder import is_run_finished as is_run_finished
