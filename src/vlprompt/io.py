"""Atomic writes, JSON-lines results and the on-disk format of learned prompts (safetensors +
JSON, never pickle)."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

from vlprompt.errors import MethodError, VlpromptError

if TYPE_CHECKING:
    from vlprompt.backbone import ClipBackbone
    from vlprompt.methods.base import PromptMethod

PROMPTS_FILE = "prompts.safetensors"
METHOD_FILE = "method.json"
RESULTS_FILE = "results.jsonl"  # one JSON line per evaluation, in a run folder or a sweep folder
log = logging.getLogger(__name__)


class ResultsFileError(VlpromptError, ValueError):
    """A results file (JSON lines) with a broken line that is not the last."""


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
    """Append one JSON line; a single write call so a line is never half-written by us."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def save_learned(method: PromptMethod, directory: str | Path) -> None:
    """Save a method's learned tensors and the JSON needed to rebuild it. Tensors holding NaN or
    infinity are refused (MethodError): they would classify nothing."""
    directory = Path(directory)
    tensors = method.learned_state_dict()
    bad = non_finite_tensors(tensors)
    if bad:
        raise MethodError(
            f"refusing to save {method.name}'s learned tensors to {directory / PROMPTS_FILE}: "
            f"{', '.join(map(repr, bad))} hold NaN or infinite values; train again (e.g. with a "
            "lower learning rate)"
        )
    info = {
        "method": method.name,
        "config": method.config.to_dict(),
        "classnames": method.classnames,
        "backbone": method.clip.describe(),
    }
    atomic_save_tensors(directory / PROMPTS_FILE, tensors)
    atomic_write_json(directory / METHOD_FILE, info)


def non_finite_tensors(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors that hold a NaN or an infinity, sorted."""
    return sorted(
        name
        for name, value in tensors.items()
        if value.is_floating_point() and not bool(torch.isfinite(value).all())
    )


def _retrain(directory: Path) -> str:
    return f"train the run again or restore {directory} from a copy"


def read_method_info(directory: str | Path) -> dict[str, Any]:
    """The content of a saved method's `method.json`, checked: a JSON object naming the method,
    its config (an object) and its class names (a list of text). Otherwise MethodError."""
    directory = Path(directory)
    info_path = directory / METHOD_FILE
    if not info_path.is_file():
        raise MethodError(
            f"{directory} holds no saved method: {METHOD_FILE} is missing "
            "(expected a folder written by method.save() or `vlprompt train`)"
        )
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise MethodError(
            f"{info_path} is not readable JSON ({exc}); {_retrain(directory)}"
        ) from None
    if not isinstance(info, dict):
        raise MethodError(
            f"{info_path} holds {type(info).__name__}, not a JSON object with the keys method, "
            f"config and classnames; {_retrain(directory)}"
        )
    missing = [k for k in ("method", "config", "classnames") if k not in info]
    if missing:
        raise MethodError(
            f"{info_path} lacks the key(s) {', '.join(missing)}; {_retrain(directory)}"
        )
    names = info["classnames"]
    if not isinstance(info["method"], str):
        problem = f"its 'method' is {info['method']!r}, not a method name"
    elif not isinstance(info["config"], dict):
        problem = f"its 'config' is {info['config']!r}, not an object of settings"
    elif not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        problem = f"its 'classnames' is {names!r}, not a list of class names"
    elif not isinstance(info.get("backbone", {}), dict):
        problem = f"its 'backbone' is {info['backbone']!r}, not an object"
    else:
        return info
    raise MethodError(f"{info_path}: {problem}; {_retrain(directory)}")


def load_learned(
    directory: str | Path,
    clip: ClipBackbone,
    classnames: list[str] | None = None,
    expected: type | None = None,
) -> PromptMethod:
    """Rebuild a saved method on `clip`; `classnames` defaults to the saved ones. Saved files
    that are damaged, of another method or backbone, or hold NaN/inf raise MethodError."""
    from vlprompt.methods import get_method_class, list_methods, make_config

    directory = Path(directory)
    info = read_method_info(directory)
    info_path, prompts_path = directory / METHOD_FILE, directory / PROMPTS_FILE
    name = info["method"]
    try:
        cls = get_method_class(name)
    except ValueError:
        raise MethodError(
            f"{info_path} names the method {name!r}, which this vlprompt does not know "
            f"(known: {', '.join(list_methods())}); load it with the vlprompt version that "
            "saved it, or train it again"
        ) from None
    if expected is not None and expected.name and not issubclass(cls, expected):
        raise MethodError(f"{directory} holds a {name!r} method, not {expected.name!r}")
    try:
        config = make_config(name, **info["config"])
    except (TypeError, ValueError) as exc:
        raise MethodError(
            f"{info_path}: the saved {name} settings are not valid ({exc}); {_retrain(directory)}"
        ) from None
    names = list(classnames) if classnames is not None else info["classnames"]
    method = cls(clip, names, config)
    if not prompts_path.is_file():
        raise MethodError(f"{prompts_path} is missing; {_retrain(directory)}")
    try:
        tensors = load_file(str(prompts_path))
    except Exception as exc:  # safetensors raises SafetensorError, OSError, ValueError, ...
        raise MethodError(
            f"{prompts_path} is not a readable safetensors file ({type(exc).__name__}: "
            f"{_first_line(exc)}); it may be truncated or damaged: {_retrain(directory)}"
        ) from None
    own = method.learned_state_dict()
    unexpected = sorted(set(tensors) - set(own))
    if unexpected:
        raise MethodError(
            f"{prompts_path} holds tensor(s) {unexpected} that {cls.name} does not learn "
            f"({cls.name} learns {sorted(own)}), although {METHOD_FILE} says {name!r}: the two "
            f"files come from different runs or methods; {_retrain(directory)}"
        )
    for key, value in tensors.items():
        if own[key].shape != value.shape:
            raise MethodError(
                f"{prompts_path}: tensor {key!r} has shape {tuple(value.shape)} but this "
                f"backbone ({clip.name}) needs {tuple(own[key].shape)}; "
                + _shape_hint(info, clip, directory)
            )
    missing = sorted(set(own) - set(tensors))
    if missing:
        raise MethodError(
            f"{prompts_path} lacks tensors {missing} needed by {cls.name}; {_retrain(directory)}"
        )
    bad = non_finite_tensors(tensors)
    if bad:
        raise MethodError(
            f"{prompts_path}: tensor(s) {', '.join(map(repr, bad))} hold NaN or infinite values, "
            "so the prompts cannot classify anything; train the run again (e.g. with a lower "
            "learning rate)"
        )
    method.load_state_dict({**tensors}, strict=False)
    return method


def _shape_hint(info: dict[str, Any], clip: ClipBackbone, directory: Path) -> str:
    """Why a saved tensor has another shape: another backbone, or files of different runs."""
    saved = info.get("backbone", {}).get("name")
    if saved is None or saved != clip.name:
        return (
            f"the prompts were saved for {saved or 'another backbone'} — load them on that backbone"
        )
    return (
        f"the prompts were saved for this backbone, so {PROMPTS_FILE} does not fit the settings "
        f"in {METHOD_FILE} (files of different runs?); {_retrain(directory)}"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no detail"
