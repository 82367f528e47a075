"""The run folder and the sweep folder: their layout, who may write them, and every write.

This module names every path of both layouts and reads and writes their small JSON files; the
rest of vlprompt asks it (docs/architecture.md, "The run folder (a public format)", describes
each file). Eval, predict, export and serve read this format.

A user's files are never deleted or appended to. vlprompt writes only into a folder it created
itself, which it marks first, before anything else, with `.vlprompt-folder`: a JSON file holding
a fixed format tag, the folder's kind (`run`, `sweep` or `export`) and a random id. A user file
can take that name but not that content by accident, so the marker, not file names such as
`config.json`, decides whether a folder is ours. A folder that is missing or empty becomes ours;
a folder holding anything else without a valid marker is refused before it is touched.

vlprompt never writes, truncates or deletes through a symbolic link inside its folders: an entry
of the layout that is a link is refused with a `FolderError` naming it (`refuse_links`), appends
and the lock are opened with `O_NOFOLLOW`, and atomic writes (temp file + rename) replace a
name rather than writing through it. The folder itself may be a link (e.g. `runs/latest`).

`folder_lock(folder)` holds an exclusive lock on a marked folder while a run trains or a sweep
runs: a second process gets "in use by PID N" at once. The lock is an OS file lock (`flock` on
POSIX, `msvcrt.locking` on Windows) on `.vlprompt-lock`, so the operating system releases it when
its holder dies, even by `kill -9`: a stale lock file is simply locked again. OS file locks on
network file systems depend on the server (NFS needs its lock service).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vlprompt.errors import FolderError, RunError
from vlprompt.io import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    read_jsonl,
    remove_stale_temps,
)

# ---- the layout ---------------------------------------------------------------------------------
MARKER_FILE = ".vlprompt-folder"  # both kinds: written first, JSON (MARKER_FORMAT, kind, id)
LOCK_FILE = ".vlprompt-lock"  # both kinds: the OS lock; JSON of the holder (pid, host, since)
CONFIG_FILE = "config.json"  # run: the resolved RunConfig
STATUS_FILE = "status.json"  # run: written last; a run is finished when it says so
LOG_FILE = "log.txt"  # run: human log, one time-stamped line per event
RESULTS_FILE = "results.jsonl"  # run and sweep: one JSON line per evaluation
PROMPTS_FILE = "prompts.safetensors"  # run: the learned tensors (never the backbone)
METHOD_FILE = "method.json"  # run: method name, config, class names, backbone facts
CHECKPOINT_DIR = "checkpoints"  # run: epoch-NNNN/ folders and latest.json
LATEST_FILE = "latest.json"  # in checkpoints/: {"epoch": N, "path": "epoch-NNNN"}
TENSORBOARD_DIR = "tensorboard"  # run: TensorBoard event files (with --tensorboard)
SPLITS_FILE = "splits.json"  # run: the files of its train/val/test splits and what read them
CALIBRATION_FILE = "calibration.json"  # run: temperature and conformal thresholds (val split)
EVAL_DIR = "eval"  # run: `eval --report` folders, one per (data set, classes, split)
SUMMARY_MD = "summary.md"  # sweep: tables
SUMMARY_CSV = "summary.csv"  # sweep: the aggregated numbers
SUMMARY_TEX = "summary.tex"  # sweep: the tables as booktabs LaTeX
PLOTS_DIR = "plots"  # sweep: PNG and PDF plots
EXPORT_MODELS = ("model.onnx", "model.pt")  # export: the model, ONNX or TorchScript
EXPORT_LABELS = "labels.json"  # export: the class names in logit order
EXPORT_PREPROCESS = "preprocess.json"  # export: the eval transform as data
EXPORT_MODEL_INFO = "model.json"  # export: method, backbone, format, inputs, outputs, temperature

MARKER_FORMAT = "vlprompt-folder/1"
KINDS = ("run", "sweep", "export")
# what a run writes and `--overwrite` removes (with checkpoints/; tensorboard/ is kept)
RUN_FILES = (
    CONFIG_FILE,
    PROMPTS_FILE,
    METHOD_FILE,
    RESULTS_FILE,
    LOG_FILE,
    STATUS_FILE,
    SPLITS_FILE,
    CALIBRATION_FILE,
)
LAYOUT = {
    "run": (MARKER_FILE, LOCK_FILE, *RUN_FILES, CHECKPOINT_DIR, TENSORBOARD_DIR, EVAL_DIR),
    "sweep": (
        MARKER_FILE,
        LOCK_FILE,
        RESULTS_FILE,
        SUMMARY_MD,
        SUMMARY_CSV,
        SUMMARY_TEX,
        PLOTS_DIR,
    ),
    "export": (
        MARKER_FILE,
        LOCK_FILE,
        *EXPORT_MODELS,
        EXPORT_LABELS,
        EXPORT_PREPROCESS,
        EXPORT_MODEL_INFO,
    ),
}

# locks this process holds: path -> (open file, depth); one OS lock per folder and process
_HELD: dict[str, tuple[object, int]] = {}
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # absent on Windows: the lstat check stands alone


# ---- links ------------------------------------------------------------------------------------
def is_link(path: Path) -> bool:
    """True when `path` itself is a symbolic link (or a Windows junction), dangling or not."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return False
    return stat.S_ISLNK(mode) or bool(getattr(path, "is_junction", lambda: False)())


def link_error(path: Path) -> FolderError:
    try:
        target = f" (to {os.readlink(path)})"
    except OSError:
        target = ""
    return FolderError(
        f"{path} is a symbolic link{target}; vlprompt never writes, truncates or deletes through "
        "a link in its folders, so nothing was changed there: replace the link with a real file "
        "or folder of its own (or remove it), or choose another output folder"
    )


def refuse_link(path: Path) -> Path:
    """`path`, or FolderError when it is a symbolic link."""
    if is_link(path):
        raise link_error(path)
    return path


def refuse_links(folder: str | Path, kind: str) -> Path:
    """`folder`, or FolderError naming the first entry of the `kind` layout that is a link (and,
    in a run, the first link among `checkpoints/`'s entries)."""
    folder = Path(folder)
    for name in LAYOUT[kind]:
        refuse_link(folder / name)
    checkpoints = folder / CHECKPOINT_DIR
    if kind == "run" and checkpoints.is_dir():
        for entry in sorted(checkpoints.iterdir()):
            refuse_link(entry)
    return folder


def refuse_links_below(top: str | Path, path: str | Path) -> None:
    """FolderError when a folder between `top` (excluded) and `path` (included) is a link, e.g. a
    sweep's `base2new/` pointing into a user's folder."""
    top, path = Path(top), Path(path)
    for part in path.relative_to(top).parts:
        top = refuse_link(top / part)


def _open_no_follow(path: Path, flags: int) -> int:
    """os.open of `path` that never follows a link at its last component (FolderError)."""
    refuse_link(path)
    try:
        return os.open(path, flags | _NOFOLLOW, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP or is_link(path):
            raise link_error(path) from None
        raise


def read_marker(folder: str | Path) -> dict | None:
    """The folder's marker if it is a valid one of ours, else None."""
    path = Path(folder) / MARKER_FILE
    if is_link(path):
        return None
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
    """ "run", "sweep" or "export" for a folder vlprompt marked, else None."""
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


def unmarked_kind(folder: str | Path) -> str | None:
    """ "run" or "sweep" for an unmarked folder whose files are vlprompt's (a run's config.json
    with its method settings, or a sweep's results.jsonl of protocol records): what an earlier
    release wrote before folders were marked. None for anything else."""
    folder = Path(folder)
    config = folder / CONFIG_FILE
    if config.is_file() and not is_link(config):
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            data = None
        if isinstance(data, dict) and {"method", "dataset", "method_config"} <= set(data):
            return "run"
    results = folder / RESULTS_FILE
    if results.is_file() and not is_link(results):
        try:
            first = results.read_text(encoding="utf-8").splitlines()[:1]
            record = json.loads(first[0]) if first else None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            record = None
        if isinstance(record, dict) and {"protocol", "key", "method"} <= set(record):
            return "sweep"
    return None


def _not_marked_hint(folder: Path, kind: str) -> str:
    """What to do about an unmarked or damaged-marker folder, when its files are vlprompt's."""
    marker = folder / MARKER_FILE
    found = unmarked_kind(folder)
    if marker.is_file() and not is_link(marker) and read_marker(folder) is None:
        head = f"its {MARKER_FILE} marker is damaged (not vlprompt's marker format)"
    elif found is not None:
        head = (f"it holds a vlprompt {found} of an earlier release, written before folders "
                "were marked")  # fmt: skip
    else:
        return ""
    if found is None:
        return f"; {head}: move your files to a new folder, or remove {marker} if you know the folder is yours"
    return f"; {head}: to carry it forward, mark it with `vlprompt adopt {folder}`"


def adopt_folder(folder: str | Path) -> str:
    """Mark an unmarked (or damaged-marker) folder whose files are vlprompt's run or sweep
    (`unmarked_kind`) so that this release writes into it again; returns its kind. Anything
    else is refused with one line, untouched."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FolderError(f"{folder} is not a folder; expected a run or sweep folder")
    found = folder_kind(folder)
    if found is not None:
        return found
    kind = unmarked_kind(folder)
    if kind is None:
        raise FolderError(
            f"{folder} holds neither a vlprompt run (config.json with method settings) nor a "
            "sweep (results.jsonl of protocol records), so it is not marked; nothing was changed"
        )
    refuse_links(folder, kind)
    atomic_write_json(
        folder / MARKER_FILE,
        {"format": MARKER_FORMAT, "kind": kind, "id": uuid.uuid4().hex,
         "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "adopted": True},
    )  # fmt: skip
    return kind


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
        refuse_link(folder / MARKER_FILE)
        found = folder_kind(folder)
        if found == kind:
            return refuse_links(folder, kind)
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
                f"valid {MARKER_FILE} marker); vlprompt writes only into a new or empty folder "
                "or one it created, so nothing was changed: choose a new or empty folder"
                + _not_marked_hint(folder, kind)
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
    refuse_link(folder / MARKER_FILE)
    if folder_kind(folder) != kind:
        raise FolderError(
            f"{folder} has no {MARKER_FILE} marker of a vlprompt {kind}, so vlprompt does not "
            f"{action} there (it writes only into folders it created)"
            + _not_marked_hint(folder, kind)
        )
    return refuse_links(folder, kind)


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
        fd = _open_no_follow(path, os.O_RDWR | os.O_CREAT)
        handle = os.fdopen(fd, "r+", encoding="utf-8")  # held until released
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


# ---- the files --------------------------------------------------------------------------------
def write_file(
    folder: str | Path,
    name: str,
    content: bytes | str | dict[str, Any] | list[Any],
    *,
    owner: str | Path | None = None,
) -> Path:
    """Write `folder/name` atomically (bytes, text, or JSON for a dict/list) and return its
    path. A link there is refused. While this process holds the lock of `owner` (the marked
    folder; default `folder`), the temp files that a killed earlier write of this file left are
    removed first (only vlprompt's own, by their exact name: io.remove_stale_temps)."""
    path = refuse_link(Path(folder) / name)
    if holds_lock(folder if owner is None else owner):
        remove_stale_temps(path)
    if isinstance(content, bytes):
        atomic_write_bytes(path, content)
    elif isinstance(content, str):
        atomic_write_text(path, content)
    else:
        atomic_write_json(path, content)
    return path


def append_line(path: str | Path, line: str) -> None:
    """Append one line to `path` (created if missing) in a single write, never through a link."""
    path = Path(path)
    fd = _open_no_follow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write(line.rstrip("\n") + "\n")
        f.flush()
        os.fsync(f.fileno())


def append_result(folder: str | Path, record: dict[str, Any]) -> None:
    """One evaluation's JSON line appended to `folder/results.jsonl` (a run's or a sweep's)."""
    append_line(Path(folder) / RESULTS_FILE, json.dumps(record, sort_keys=True))


def read_results(folder: str | Path, error: type[RunError] = RunError) -> list[dict[str, Any]]:
    """The records of `folder/results.jsonl` ([] when there is none; see io.read_jsonl)."""
    return read_jsonl(Path(folder) / RESULTS_FILE, error)


def append_log(run_dir: str | Path, message: str) -> None:
    """One time-stamped line appended to the run's `log.txt`."""
    append_line(Path(run_dir) / LOG_FILE, f"{time.strftime('%Y-%m-%d %H:%M:%S')}  {message}")


def read_config_data(run_dir: str | Path) -> dict[str, Any]:
    """The JSON object in a run's `config.json`; a folder that is not a run -> RunError."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_FILE
    if not run_dir.is_dir():
        raise RunError(
            f"{run_dir} is not a folder; expected a run folder written by `vlprompt train`"
        )
    if not path.is_file():
        raise RunError(
            f"{run_dir} is not a run folder: it has no {CONFIG_FILE} "
            "(expected the output folder of `vlprompt train` / vlprompt.train)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RunError(f"{path} is not valid JSON ({exc}); the run folder is damaged") from exc
    if not isinstance(data, dict):
        raise RunError(f"{path} does not hold a JSON object; the run folder is damaged")
    return data


def has_config(run_dir: str | Path) -> bool:
    return (Path(run_dir) / CONFIG_FILE).is_file()


def write_config(run_dir: str | Path, config: dict[str, Any]) -> None:
    write_file(run_dir, CONFIG_FILE, config)


def read_status(run_dir: str | Path) -> dict[str, Any]:
    """The run's `status.json` ({} when it is missing or not a JSON object)."""
    path = Path(run_dir) / STATUS_FILE
    try:
        status = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return status if isinstance(status, dict) else {}


def write_status(run_dir: str | Path, status: dict[str, Any]) -> None:
    """Written last, after the learned prompts: `{"finished": true, ...}` marks a finished run."""
    write_file(run_dir, STATUS_FILE, status)


def write_splits(run_dir: str | Path, splits: dict[str, Any]) -> None:
    write_file(run_dir, SPLITS_FILE, splits)


def read_splits(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's `splits.json`, or None (a run of an older vlprompt has none)."""
    return _read_json_or_none(Path(run_dir) / SPLITS_FILE)


def write_calibration(run_dir: str | Path, calibration: dict[str, Any]) -> None:
    write_file(run_dir, CALIBRATION_FILE, calibration)


def read_calibration(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's `calibration.json`, or None (not calibrated: `train --no-calibrate`, no
    validation images, or a run of an older vlprompt)."""
    return _read_json_or_none(Path(run_dir) / CALIBRATION_FILE)


def eval_report_dir(run_dir: str | Path, name: str) -> Path:
    """`eval/<name>/` of a run (not created); FolderError when `eval/` or it is a link."""
    refuse_link(Path(run_dir) / EVAL_DIR)
    return refuse_link(Path(run_dir) / EVAL_DIR / name)


def _read_json_or_none(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunError(f"{path} is not valid JSON ({exc}); the run folder is damaged") from None
    if not isinstance(data, dict):
        raise RunError(f"{path} does not hold a JSON object; the run folder is damaged")
    return data


def is_run_finished(run_dir: str | Path) -> bool:
    """True when `run_dir` holds a run whose training finished (its learned prompts are saved)."""
    return bool(read_status(run_dir).get("finished"))


def checkpoint_dir(run_dir: str | Path) -> Path:
    """The run's `checkpoints/` (not created), or FolderError when it is a link."""
    return refuse_link(Path(run_dir) / CHECKPOINT_DIR)


def tensorboard_dir(run_dir: str | Path) -> Path:
    """The run's `tensorboard/` (not created), or FolderError when it is a link."""
    return refuse_link(Path(run_dir) / TENSORBOARD_DIR)


def plots_dir(sweep_dir: str | Path) -> Path:
    """The sweep's `plots/` (not created), or FolderError when it is a link."""
    return refuse_link(Path(sweep_dir) / PLOTS_DIR)


_CHECKPOINT_TEMP = re.compile(r"\.epoch-\d{4,}\.[a-z0-9_]{8}\.tmp")  # train_state's mkdtemp names


def remove_stale_temps_of_run(run_dir: str | Path) -> None:
    """Remove the temp files and checkpoint temp folders that killed writes left in a run folder
    (only those named exactly as vlprompt names them). Only the lock holder calls this."""
    run_dir = Path(run_dir)
    if not holds_lock(run_dir):
        return
    for name in (*RUN_FILES, MARKER_FILE):
        remove_stale_temps(run_dir / name)
    checkpoints = checkpoint_dir(run_dir)
    if not checkpoints.is_dir():
        return
    remove_stale_temps(checkpoints / LATEST_FILE)
    for entry in checkpoints.iterdir():
        if _CHECKPOINT_TEMP.fullmatch(entry.name) and entry.is_dir() and not is_link(entry):
            shutil.rmtree(entry)


def undo_unstarted_run(run_dir: str | Path, *, marked: bool, created: bool) -> None:
    """Leave a run folder as a command refused before training found it: nothing happens once
    an epoch was saved or the run finished. Otherwise the files a run writes before training
    (config.json, splits.json, log.txt, results.jsonl, calibration.json) go; the marker and the
    lock too when this command `marked` the folder, and the folder itself when it `created` it. Only a folder
    marked as vlprompt's run is touched, and never through a link."""
    run_dir = Path(run_dir)
    if folder_kind(run_dir) != "run" or is_run_finished(run_dir):
        return
    checkpoints = run_dir / CHECKPOINT_DIR
    if checkpoints.is_dir() and any(checkpoints.iterdir()):
        return
    names = [CONFIG_FILE, SPLITS_FILE, LOG_FILE, RESULTS_FILE, CALIBRATION_FILE]
    if marked:
        names += [MARKER_FILE, LOCK_FILE]
    for name in names:
        path = run_dir / name
        if not is_link(path):
            path.unlink(missing_ok=True)
    for folder in (checkpoints, run_dir / TENSORBOARD_DIR):
        if folder.is_dir() and not is_link(folder) and not any(folder.iterdir()):
            folder.rmdir()
    if created and not any(run_dir.iterdir()):
        run_dir.rmdir()


def clear_run(run_dir: str | Path) -> None:
    """Remove what a run writes in its (marked) folder; other files in it stay. A link among
    them is refused before anything is removed."""
    run_dir = refuse_links(run_dir, "run")
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    for folder in (checkpoint_dir(run_dir), run_dir / EVAL_DIR):
        if folder.is_dir():
            shutil.rmtree(folder)
