"""Which folders vlprompt may write into, and one writer per folder at a time.

A user's files are never deleted or appended to. vlprompt writes only into a folder it created
itself, which it marks first, before anything else, with `.vlprompt-folder`: a JSON file holding
a fixed format tag, the folder's kind (`run` or `sweep`) and a random id. A user file can take
that name but not that content by accident, so the marker, not file names such as
`config.json`, decides whether a folder is ours. A folder that is missing or empty becomes ours;
a folder holding anything else without a valid marker is refused before it is touched.

`folder_lock(folder)` holds an exclusive lock on a marked folder while a run trains or a sweep
runs: a second process gets "in use by PID N" at once. The lock is an OS file lock (`flock` on
POSIX, `msvcrt.locking` on Windows) on `.vlprompt-lock`, so the operating system releases it when
its holder dies, even by `kill -9`: a stale lock file is simply locked again. OS file locks on
network file systems depend on the server (NFS needs its lock service).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from vlprompt.errors import FolderError
from vlprompt.io import atomic_write_json

MARKER_FILE = ".vlprompt-folder"
LOCK_FILE = ".vlprompt-lock"
MARKER_FORMAT = "vlprompt-folder/1"
KINDS = ("run", "sweep")

# locks this process holds: path -> (open file, depth); one OS lock per folder and process
_HELD: dict[str, tuple[object, int]] = {}


def read_marker(folder: str | Path) -> dict | None:
    """The folder's marker if it is a valid one of ours, else None."""
    path = Path(folder) / MARKER_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if (
        isinstance(data, dict)
        and data.get("format") == MARKER_FORMAT
        and data.get("kind") in KINDS
        and isinstance(data.get("id"), str)
    ):
        return data
    return None


def folder_kind(folder: str | Path) -> str | None:
    """ "run" or "sweep" for a folder vlprompt marked, else None."""
    marker = read_marker(folder)
    return marker["kind"] if marker else None


def foreign_entries(folder: Path) -> list[str]:
    """The names in an unmarked folder. All count: vlprompt writes its lock only after its
    marker, so in a folder without a valid marker even a file named like them is the user's."""
    try:
        return sorted(p.name for p in folder.iterdir())
    except OSError as exc:
        raise FolderError(
            f"cannot read output folder {folder} ({exc.strerror or exc}); "
            "choose a folder you can read and write"
        ) from None


def claim_folder(folder: str | Path, kind: str, *, what: str = "output folder") -> Path:
    """Make `folder` a marked vlprompt folder of `kind` and return it, or refuse it untouched.

    Missing or empty: created and marked. Marked with `kind`: used as it is. Anything else (a
    file, a folder of the user's, a folder of the other kind): FolderError, and nothing is
    written.
    """
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise FolderError(f"{what} {folder} is a file; choose a folder")
    if folder.is_dir():
        found = folder_kind(folder)
        if found == kind:
            return folder
        if found is not None:
            raise FolderError(
                f"{what} {folder} holds a vlprompt {found}, not a {kind}; "
                f"choose another folder for the {kind}"
            )
        entries = foreign_entries(folder)
        if entries:
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise FolderError(
                f"{what} {folder} is not empty and holds no run of vlprompt (found {shown}; no "
                f"{MARKER_FILE} marker); vlprompt writes only into a new or empty folder or one "
                "it created, so nothing was changed: choose a new or empty folder"
            )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if folder_kind(folder) != kind:  # another process may have marked it meanwhile
            atomic_write_json(
                folder / MARKER_FILE,
                {"format": MARKER_FORMAT, "kind": kind, "id": uuid.uuid4().hex,
                 "created": time.strftime("%Y-%m-%dT%H:%M:%S")},
            )  # fmt: skip
    except OSError as exc:
        raise not_writable(folder, exc, what) from None
    return folder


def require_ours(folder: str | Path, kind: str, *, action: str) -> Path:
    """`folder` if vlprompt marked it as `kind`; else FolderError saying `action` was refused."""
    folder = Path(folder)
    if folder_kind(folder) != kind:
        raise FolderError(
            f"{folder} has no {MARKER_FILE} marker of a vlprompt {kind}, so vlprompt does not "
            f"{action} there (it writes only into folders it created)"
        )
    return folder


def not_writable(folder: Path, exc: OSError, what: str = "output folder") -> FolderError:
    reason = exc.strerror or str(exc)
    return FolderError(
        f"cannot write to {what} {folder} ({reason}); choose a folder you can write to, on a "
        "disk with free space"
    )


def _try_lock(handle) -> bool:
    try:
        if os.name == "nt":
            import msvcrt

            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return f"PID {int(info['pid'])} on {info.get('host', '?')} since {info.get('since', '?')}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def folder_lock(folder: str | Path) -> Iterator[None]:
    """Hold the exclusive lock of a marked folder for the duration (re-entrant in a process)."""
    folder = Path(folder)
    key = str(folder.resolve())
    if key in _HELD:
        handle, depth = _HELD[key]
        _HELD[key] = (handle, depth + 1)
        try:
            yield
        finally:
            _release(key)
        return
    path = folder / LOCK_FILE
    try:
        handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115  (held until released)
    except OSError as exc:
        raise not_writable(folder, exc) from None
    if not _try_lock(handle):
        handle.close()
        raise FolderError(
            f"{folder} is in use by {_holder(path)}: another vlprompt process is writing "
            "there. Wait for it to finish, or stop it; a killed process releases the lock"
        )
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), "host": os.uname().nodename if hasattr(
        os, "uname") else "", "since": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")  # fmt: skip
    handle.flush()
    _HELD[key] = (handle, 1)
    try:
        yield
    finally:
        _release(key)


def holds_lock(folder: str | Path) -> bool:
    """True when this process holds the lock of `folder`."""
    return str(Path(folder).resolve()) in _HELD


def _release(key: str) -> None:
    handle, depth = _HELD[key]
    if depth > 1:
        _HELD[key] = (handle, depth - 1)
        return
    del _HELD[key]
    handle.close()  # closing the file releases the OS lock
