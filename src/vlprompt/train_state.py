"""The per-epoch training-state checkpoint of a run: its format, writing, finding and loading.

A checkpoint is the folder `checkpoints/epoch-NNNN/` (after NNNN epochs) holding
`state.safetensors` (learned tensors, optimizer tensors, RNG states) and `state.json` (epoch,
optimizer hyper-parameters, python RNG state, grad-scaler state). It is written into a temporary
folder that is renamed into place, then pointed at by `checkpoints/latest.json` (written
atomically). The learned prompts of a finished run are saved separately (`vlprompt.io`).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from vlprompt.errors import RunError
from vlprompt.io import atomic_write_json, non_finite_tensors
from vlprompt.run_folder import CHECKPOINT_DIR as CHECKPOINT_DIR
from vlprompt.run_folder import LATEST_FILE, checkpoint_dir, refuse_link

CHECKPOINT_NAME = re.compile(r"epoch-\d{4,}")  # the folder names save_checkpoint writes


def _optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{index}.{key}"] = value.detach().cpu()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _load_optimizer_state(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for index, values in meta["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    groups = []
    for group in meta["param_groups"]:
        group = dict(group)
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, py_state, py_gauss = random.getstate()
    meta = {
        "numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "gauss": gauss},
        "python": {"version": version, "state": list(py_state), "gauss": py_gauss},
    }
    return tensors, meta


def _restore_rng(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted(k for k in tensors if k.startswith("rng.cuda."))
    if cuda and torch.cuda.is_available():
        states = [tensors[k] for k in cuda]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    n = meta["numpy"]
    keys = tensors["rng.numpy"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["gauss"]))
    p = meta["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def save_checkpoint(
    run_dir: Path,
    epoch: int,
    method: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: Any,
    extra: dict[str, Any],
    keep: int = 1,
) -> Path:
    """Write `checkpoints/epoch-NNNN/` (after `epoch` epochs) atomically and point
    `checkpoints/latest.json` at it; remove older checkpoints beyond the newest `keep`."""
    folder = checkpoint_dir(run_dir)  # never a link: FolderError
    folder.mkdir(parents=True, exist_ok=True)
    name = f"epoch-{epoch:04d}"
    final = refuse_link(folder / name)
    tensors = {f"learned.{k}": v for k, v in method.learned_state_dict().items()}
    opt_tensors, opt_meta = _optimizer_state(optimizer)
    rng_tensors, rng_meta = _rng_state()
    meta = {
        "epoch": epoch,
        "optimizer": opt_meta,
        "rng": rng_meta,
        "scaler": scaler.state_dict() if scaler is not None else None,
        **extra,
    }
    tmp = Path(tempfile.mkdtemp(dir=folder, prefix=f".{name}.", suffix=".tmp"))
    try:
        save_file(
            {k: v.contiguous() for k, v in {**tensors, **opt_tensors, **rng_tensors}.items()},
            str(tmp / "state.safetensors"),
        )
        (tmp / "state.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_json(folder / LATEST_FILE, {"epoch": epoch, "path": name})
    kept = sorted(p for p in folder.glob("epoch-*") if p.is_dir() and not p.is_symlink())
    for old in kept[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return folder / name


def _damaged(path: Path, problem: str) -> RunError:
    """The error for a checkpoint file that cannot be used, with how to get going again."""
    checkpoints = path.parent if path.name == LATEST_FILE else path.parent.parent
    return RunError(
        f"{path}: {problem}; the checkpoint is damaged. Use --overwrite to restart, or delete "
        f"{checkpoints}/ to start the training again from epoch 0"
    )


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The folder `checkpoints/latest.json` points at, or None. A pointer that is not the JSON
    `save_checkpoint` writes, or points at a missing or incomplete folder -> RunError."""
    pointer = Path(run_dir) / CHECKPOINT_DIR / LATEST_FILE
    if not pointer.is_file():
        return None
    try:
        info = json.loads(pointer.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise _damaged(pointer, f"not readable JSON ({exc})") from None
    name = info.get("path") if isinstance(info, dict) else None
    if not isinstance(name, str) or not CHECKPOINT_NAME.fullmatch(name):
        raise _damaged(
            pointer,
            f'expected {{"epoch": N, "path": "epoch-NNNN"}}, got {json.dumps(info)[:200]}',
        )
    folder = pointer.parent / name
    if not (folder / "state.safetensors").is_file() or not (folder / "state.json").is_file():
        raise _damaged(pointer, f"it points at {folder}, which is missing or incomplete")
    return folder


def _read_checkpoint_files(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and the JSON of a checkpoint folder, checked for shape (RunError if not)."""
    state, state_json = folder / "state.safetensors", folder / "state.json"
    try:
        tensors = load_file(str(state))
    except Exception as exc:  # safetensors raises SafetensorError, OSError, ValueError, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "no detail"
        raise _damaged(
            state, f"not a readable safetensors file ({type(exc).__name__}: {first})"
        ) from None
    try:
        meta = json.loads(state_json.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise _damaged(state_json, f"not readable JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise _damaged(state_json, f"holds {type(meta).__name__}, not a JSON object")
    missing = [k for k in ("epoch", "optimizer", "rng") if k not in meta]
    if missing:
        raise _damaged(state_json, f"lacks the key(s) {', '.join(missing)}")
    epoch = meta["epoch"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
        raise _damaged(state_json, f"'epoch' is {epoch!r}, not a whole number >= 1")
    optimizer, rng = meta["optimizer"], meta["rng"]
    if not (
        isinstance(optimizer, dict)
        and isinstance(optimizer.get("param_groups"), list)
        and isinstance(optimizer.get("scalars"), dict)
    ):
        raise _damaged(state_json, "'optimizer' is not an object with param_groups and scalars")
    if not (
        isinstance(rng, dict)
        and isinstance(rng.get("numpy"), dict)
        and isinstance(rng.get("python"), dict)
    ):
        raise _damaged(state_json, "'rng' is not an object with the numpy and python states")
    for key in ("rng.torch", "rng.numpy"):
        if key not in tensors:
            raise _damaged(state, f"lacks the tensor {key!r}")
    if meta.get("scaler") is not None and not isinstance(meta["scaler"], dict):
        raise _damaged(state_json, f"'scaler' is {meta['scaler']!r}, not an object")
    return tensors, meta


def load_checkpoint(
    folder: Path, method: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: Any
) -> dict[str, Any]:
    """Restore learned tensors, optimizer, grad scaler and RNG states; return the JSON part.
    Files that are damaged, of another method or hold NaN/inf learned tensors -> RunError."""
    tensors, meta = _read_checkpoint_files(folder)
    state = folder / "state.safetensors"
    learned = {k[len("learned.") :]: v for k, v in tensors.items() if k.startswith("learned.")}
    own = method.learned_state_dict()
    if set(learned) != set(own):
        raise RunError(
            f"{folder}: checkpoint tensors {sorted(learned)} do not match the method's "
            f"{sorted(own)}; was it written by another method? Use --overwrite to restart"
        )
    for key, value in learned.items():
        if value.shape != own[key].shape:
            raise _damaged(
                state,
                f"tensor {key!r} has shape {tuple(value.shape)}, the method needs "
                f"{tuple(own[key].shape)}",
            )
    bad = non_finite_tensors(learned)
    if bad:
        raise _damaged(state, f"learned tensor(s) {', '.join(map(repr, bad))} hold NaN or infinity")
    device = next(iter(method.trainable_parameters())).device
    try:
        method.load_state_dict({k: v.to(device) for k, v in learned.items()}, strict=False)
        opt_tensors = {k: v.to(device) for k, v in tensors.items() if k.startswith("optimizer.")}
        _load_optimizer_state(optimizer, opt_tensors, meta["optimizer"])
        if scaler is not None and meta.get("scaler"):
            scaler.load_state_dict(meta["scaler"])
        _restore_rng(tensors, meta["rng"])
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as exc:
        raise _damaged(
            folder / "state.json",
            f"its optimizer, grad-scaler or RNG state cannot be restored "
            f"({type(exc).__name__}: {exc})",
        ) from None
    return meta
