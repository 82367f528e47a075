"""Atomic writes (temp file + rename) and JSON-lines files.

The layout of run and sweep folders, and every write into them, is `vlprompt.run_folder`'s; the
on-disk format of learned prompts lives with the methods (`vlprompt.methods.saving`)."""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

from vlprompt.errors import ResultsFileError, VlpromptError

log = logging.getLogger(__name__)


def _current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


# read once at import (single-threaded): os.umask can only be read by setting it
_UMASK = _current_umask()


def publish_temp_file(tmp: str | Path, path: str | Path) -> None:
    """Give a finished temp file the mode a plain open() would (mkstemp makes 0o600) and
    rename it over `path` (atomic)."""
    os.chmod(tmp, 0o666 & ~_UMASK)
    os.replace(tmp, path)


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


# mkstemp's random part: 8 of "a-z0-9_" (tempfile._RandomNameSequence)
_TEMP_TAIL = r"[a-z0-9_]{8}\.tmp"


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Remove the temp files that an atomic write of `path` left when it was killed: regular
    files named exactly as `atomic_write_bytes` names them (`.<name>.XXXXXXXX.tmp`), nothing
    else. Call it only where no other process writes `path` (a folder's lock holder). Returns
    what was removed."""
    path = Path(path)
    pattern = re.compile(re.escape(_temp_prefix(path)) + _TEMP_TAIL)
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        if pattern.fullmatch(entry.name) and stat.S_ISREG(
            entry.stat(follow_symlinks=False).st_mode
        ):
            Path(entry.path).unlink(missing_ok=True)
            removed.append(Path(entry.path))
    return removed


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` via a temp file in the same folder and a rename (a link at `path`
    is replaced, never written through)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        publish_temp_file(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Records as JSON lines (sorted keys), written atomically: the file `read_jsonl` reads."""
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def atomic_save_tensors(
    path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
        publish_temp_file(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_jsonl(
    path: str | Path, error: type[VlpromptError] = ResultsFileError
) -> list[dict[str, Any]]:
    """The JSON lines of a results file ([] when there is none). A truncated last line (a
    write cut by a kill) is ignored with a warning; a broken line elsewhere raises `error`
    naming the file and the line."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if number == len(lines):
                log.warning("%s: ignoring a truncated last line (%s)", path, exc)
                continue
            raise error(
                f"{path}, line {number}: not a JSON object ({exc}); remove or fix that line"
            ) from exc
    return records


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON line; a single write call so a line is never half-written by us. A link
    at `path` is not followed (OSError ELOOP); run and sweep folders append through
    `vlprompt.run_folder`, which names such a link."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def non_finite_tensors(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors that hold a NaN or an infinity, sorted."""
    import torch

    return sorted(
        name
        for name, value in tensors.items()
        if value.is_floating_point() and not bool(torch.isfinite(value).all())
    )
