"""Atomic writes and the on-disk format of learned prompts (safetensors + JSON, never pickle)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

if TYPE_CHECKING:
    from vlprompt.backbone import ClipBackbone
    from vlprompt.methods.base import PromptMethod

PROMPTS_FILE = "prompts.safetensors"
METHOD_FILE = "method.json"


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


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` via a temp file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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


def atomic_save_tensors(
    path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
        publish_temp_file(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON line; a single write call so a line is never half-written by us."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def save_learned(method: PromptMethod, directory: str | Path) -> None:
    """Save a method's learned tensors and the JSON needed to rebuild it."""
    directory = Path(directory)
    info = {
        "method": method.name,
        "config": method.config.to_dict(),
        "classnames": method.classnames,
        "backbone": method.clip.describe(),
    }
    atomic_save_tensors(directory / PROMPTS_FILE, method.learned_state_dict())
    atomic_write_json(directory / METHOD_FILE, info)


def read_method_info(directory: str | Path) -> dict[str, Any]:
    directory = Path(directory)
    info_path = directory / METHOD_FILE
    if not info_path.is_file():
        raise FileNotFoundError(
            f"{directory} holds no saved method: {METHOD_FILE} is missing "
            "(expected a folder written by method.save() or `vlprompt train`)"
        )
    return json.loads(info_path.read_text(encoding="utf-8"))


def load_learned(
    directory: str | Path,
    clip: ClipBackbone,
    classnames: list[str] | None = None,
    expected: type | None = None,
) -> PromptMethod:
    """Rebuild a saved method on `clip`; `classnames` defaults to the saved ones."""
    from vlprompt.methods import create_method, get_method_class

    directory = Path(directory)
    info = read_method_info(directory)
    cls = get_method_class(info["method"])
    if expected is not None and expected.name and not issubclass(cls, expected):
        raise ValueError(f"{directory} holds a {info['method']!r} method, not {expected.name!r}")
    names = list(classnames) if classnames is not None else info["classnames"]
    method = create_method(info["method"], clip, names, **info["config"])
    tensors = load_file(str(directory / PROMPTS_FILE))
    own = method.learned_state_dict()
    for key, value in tensors.items():
        if key not in own:
            raise ValueError(
                f"{directory / PROMPTS_FILE}: unexpected tensor {key!r} for {cls.name}"
            )
        if own[key].shape != value.shape:
            saved = info.get("backbone", {})
            raise ValueError(
                f"{directory / PROMPTS_FILE}: tensor {key!r} has shape {tuple(value.shape)} but this "
                f"backbone ({clip.name}) needs {tuple(own[key].shape)}; the prompts were saved for "
                f"{saved.get('name', 'another backbone')} — load them on that backbone"
            )
    missing = sorted(set(own) - set(tensors))
    if missing:
        raise ValueError(f"{directory / PROMPTS_FILE} lacks tensors {missing} needed by {cls.name}")
    method.load_state_dict({**tensors}, strict=False)
    return method
