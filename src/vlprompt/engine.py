"""The training loop: optimizer, schedule, precision, DDP, per-epoch checkpoints, progress.

The recipe follows CoOp/Dassl, which every paper's numbers use:

- SGD (momentum 0.9, weight decay 5e-4) or AdamW, from the method's config;
- the learning rate is set per epoch: `warmup_epochs` epochs at the constant `warmup_lr`, then
  cosine annealing from `lr` with `T_max = epochs` restarted at the end of warm-up. This is
  Dassl's `ConstantWarmupScheduler(CosineAnnealingLR(T_max=MAX_EPOCH))` with its default
  `WARMUP_RECOUNT=True` (see `lr_at_epoch`), so the last epoch never reaches lr 0;
- the training loader shuffles and drops the last incomplete batch when the training set holds at
  least one batch (Dassl: `drop_last=is_train and len(data_source) >= batch_size`);
- the last epoch is evaluated (no model selection on val).

A method computes its own gradients (`method.backward_step`, which may use torch.autograd.grad, as
ProGrad does), so under DDP the engine does not rely on DistributedDataParallel's backward hooks:
it averages the trainable parameters' gradients across processes with one all-reduce per step.
Each process takes `batch_size / world_size` images of the global batch (DistributedSampler).

Checkpoints are safetensors (learned tensors, optimizer tensors, RNG states) + JSON (epoch,
optimizer hyper-parameters, python RNG state, grad-scaler state), written into a temporary folder
that is renamed into place, then pointed at by `checkpoints/latest.json` (written atomically).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from vlprompt.config import EngineSettings, RunError, TrainingDivergedError
from vlprompt.io import atomic_write_json, non_finite_tensors

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
LATEST_FILE = "latest.json"
STATUS_FILE = "status.json"  # written last: a run is finished when it says so
AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
CHECKPOINT_NAME = re.compile(r"epoch-\d{4,}")  # the folder names save_checkpoint writes


# ---- schedule and optimizer -----------------------------------------------------------------
def lr_at_epoch(
    epoch: int, *, lr: float, warmup_lr: float, warmup_epochs: int, epochs: int
) -> float:
    """Learning rate of 0-based `epoch` (Dassl's constant warm-up + CosineAnnealingLR).

    Epochs `0 .. warmup_epochs-1` use `warmup_lr`; epoch `e >= warmup_epochs` uses
    `lr * (1 + cos(pi * (e - warmup_epochs) / epochs)) / 2` (eta_min = 0, T_max = epochs).
    """
    if epoch < warmup_epochs:
        return warmup_lr
    t = epoch - warmup_epochs
    return 0.5 * lr * (1.0 + math.cos(math.pi * t / epochs))


def build_optimizer(params: list[torch.nn.Parameter], config: Any) -> torch.optim.Optimizer:
    """SGD or AdamW with the method config's lr, weight decay and momentum."""
    if not params:
        raise RunError("the method has no trainable parameters; nothing to train")
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    raise RunError(f"unknown optimizer {config.optimizer!r}; choices: sgd, adamw")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


# ---- seeds and determinism ------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    """Seed python's `random`, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """DataLoader worker init: seed python/numpy from the worker's torch seed (PyTorch's recipe)."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


@contextlib.contextmanager
def deterministic_mode(enabled: bool) -> Iterator[None]:
    """torch.use_deterministic_algorithms for the duration (restored afterwards)."""
    if not enabled:
        yield
        return
    before = torch.are_deterministic_algorithms_enabled()
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn


# ---- distributed ----------------------------------------------------------------------------
@dataclass
class Dist:
    """Who this process is. `world_size == 1` means no process group is used."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def from_main(self, value: object) -> object:
        """Rank 0's `value` on every rank (the others pass anything, e.g. None)."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def init_distributed(device: str) -> Dist:
    """This process's place in a process group: an existing one (e.g. set up by the caller), or
    the one torchrun describes (WORLD_SIZE/RANK/LOCAL_RANK), joined with gloo on CPU and nccl on
    CUDA. Without either: a single process."""
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_available() and dist.is_initialized():
        return Dist(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist()
    backend = "nccl" if str(device).startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local)
    dist.init_process_group(backend=backend)
    return Dist(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local)


def resolve_device(device: str, ctx: Dist) -> torch.device:
    if str(device).startswith("cuda"):
        if not torch.cuda.is_available():
            raise RunError(
                f"device {device!r} asked for but CUDA is not available; use --device cpu"
            )
        if ctx.enabled:
            return torch.device("cuda", ctx.local_rank)
    return torch.device(device)


def all_reduce_gradients(params: list[torch.nn.Parameter], ctx: Dist) -> None:
    """Average `.grad` of `params` across processes (one flat all-reduce)."""
    if not ctx.enabled:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= ctx.world_size
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def all_finite(value: torch.Tensor, ctx: Dist) -> bool:
    """True when `value` is finite on every process."""
    flag = torch.tensor([0.0 if torch.isfinite(value).all() else 1.0], device=value.device)
    if ctx.enabled:
        dist.all_reduce(flag, op=dist.ReduceOp.SUM)
    return bool(flag.item() == 0)


def parameters_finite(params: list[torch.nn.Parameter], ctx: Dist) -> bool:
    """True when every value of every parameter is finite on every process."""
    device = params[0].device
    bad = sum(int(not bool(torch.isfinite(p.detach()).all())) for p in params)
    flag = torch.tensor([float(bad)], device=device)
    if ctx.enabled:
        dist.all_reduce(flag, op=dist.ReduceOp.SUM)
    return bool(flag.item() == 0)


def _kept_checkpoint(run_dir: str | Path | None) -> str:
    """What a diverged run keeps, for its error message."""
    try:
        where = latest_checkpoint(Path(run_dir)) if run_dir is not None else None
    except RunError:
        where = None
    return f"the last good checkpoint {where} is kept" if where else "no epoch had finished"


# ---- checkpoints ----------------------------------------------------------------------------
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
    folder = Path(run_dir) / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    name = f"epoch-{epoch:04d}"
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
        final = folder / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_json(folder / LATEST_FILE, {"epoch": epoch, "path": name})
    kept = sorted(p for p in folder.glob("epoch-*") if p.is_dir())
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


# ---- the loop -------------------------------------------------------------------------------
@dataclass
class EpochStats:
    epoch: int  # 1-based
    lr: float
    loss: float
    accuracy: float  # percent, running training accuracy
    images: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class FitResult:
    epochs: int
    start_epoch: int  # 0 for a fresh run, k when resumed after k epochs
    wall_s: float  # seconds of this call (not counting epochs done before a resume)
    history: list[EpochStats] = field(default_factory=list)


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context of an `effective_precision` (nothing for fp32). Training steps,
    view-pool building and evaluation all run under it."""
    dtype = AUTOCAST_DTYPES.get(effective_precision(device, precision))
    if dtype is None:  # fp32
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def effective_precision(device: torch.device, precision: str) -> str:
    """What actually runs for the asked `precision` on `device`:

    - CUDA: `auto` means fp16 autocast with a GradScaler (the papers' setting); fp16 and bf16
      (no scaler: bf16 has fp32's exponent range) as asked; fp32.
    - CPU: `auto` and fp32 run fp32. bf16 runs under CPU bf16 autocast: slow on most CPUs, it
      exists to check the mixed-precision path on a machine without a GPU. fp16 is refused: it is
      the CUDA setting that comes with a GradScaler, CPU fp16 kernels are slow or missing, and
      silently running fp32 would record "fp16" for a run that never used it (and that could be
      resumed on a GPU in real fp16, since the device is not part of a run's identity).
    - other devices (mps, ...): fp32; fp16/bf16 are refused.
    """
    if device.type == "cuda":
        return "fp16" if precision == "auto" else precision
    if precision in ("auto", "fp32"):
        return "fp32"
    if device.type == "cpu" and precision == "bf16":
        return "bf16"
    hint = "bf16 (checks the autocast path, slowly) or fp32" if device.type == "cpu" else "fp32"
    raise RunError(
        f"precision {precision!r} needs a CUDA device; on {device.type} use --precision {hint}"
    )


def _progress_enabled(progress: bool | None, ctx: Dist) -> bool:
    if not ctx.is_main:
        return False
    if progress is None:
        return sys.stderr.isatty()
    return progress


def train_loader(
    dataset: torch.utils.data.Dataset,
    *,
    batch_size: int,
    seed: int,
    settings: EngineSettings,
    ctx: Dist,
    device: torch.device,
) -> tuple[torch.utils.data.DataLoader, torch.utils.data.DistributedSampler, torch.Generator]:
    """Shuffled loader of this process's share of each global batch.

    The order comes from DistributedSampler (seeded with `seed`, re-shuffled by `set_epoch`) in
    every case, so 1 process and N processes walk the same permutation: N processes with
    `batch_size/N` images each see exactly the images of the single process's batch."""
    if batch_size % ctx.world_size:
        raise RunError(
            f"batch_size {batch_size} is not divisible by the {ctx.world_size} processes; "
            "choose a batch size that is a multiple of --nproc_per_node"
        )
    sampler = torch.utils.data.DistributedSampler(
        dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed
    )
    generator = torch.Generator()
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size // ctx.world_size,
        sampler=sampler,
        num_workers=settings.workers(),
        drop_last=len(dataset) >= batch_size,  # Dassl
        pin_memory=device.type == "cuda",
        worker_init_fn=seed_worker,
        generator=generator,
    )
    return loader, sampler, generator


def fit(
    method: Any,
    dataset: torch.utils.data.Dataset,
    *,
    settings: EngineSettings,
    seed: int,
    run_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool | None = None,
    ctx: Dist | None = None,
    on_epoch_end: Callable[[EpochStats], None] | None = None,
    logger: Callable[[str], None] | None = None,
) -> FitResult:
    """Train `method` (already on its device) on `dataset` ((image, label) pairs) with the
    recipe in `method.config`. With `run_dir`, a checkpoint is written after every epoch (rank 0)
    and `resume=True` continues from the latest one. Raises TrainingDivergedError on a NaN/inf
    loss or, at the end of an epoch (before its checkpoint is written), NaN/inf learned
    parameters, keeping the last good checkpoint."""
    ctx = ctx or Dist()
    say = logger or log.info
    cfg = method.config
    device = next(iter(method.trainable_parameters())).device
    precision = effective_precision(device, settings.precision)
    params = method.trainable_parameters()
    optimizer = build_optimizer(params, cfg)
    # fp16 (CUDA only) needs loss scaling against gradient underflow; bf16 has fp32's range
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    scale = scaler.scale if scaler is not None else (lambda t: t)
    pool = None
    if settings.view_pool:  # opt-in: N stored views per image, not fresh augmentations
        from vlprompt.view_pool import build_view_pool

        pool = build_view_pool(
            method, dataset, settings.view_pool, seed=seed,
            batch_size=settings.eval_batch_size, num_workers=settings.workers(),
            autocast=lambda: _autocast(device, precision), say=say,
        )  # fmt: skip
        dataset = pool.index_dataset()  # same length, so the loader walks the same order
    loader, sampler, generator = train_loader(
        dataset, batch_size=cfg.batch_size, seed=seed, settings=settings, ctx=ctx, device=device
    )
    if len(loader) == 0:
        raise RunError(f"the training set is empty ({len(dataset)} images); nothing to train on")

    start_epoch = 0
    if run_dir is not None and resume:
        folder = latest_checkpoint(Path(run_dir))
        if folder is not None:
            meta = load_checkpoint(folder, method, optimizer, scaler)
            start_epoch = int(meta["epoch"])
            say(f"resumed from {folder} (after epoch {start_epoch}/{cfg.epochs})")
            if not ctx.is_main:  # only rank 0's RNG state is saved
                seed_everything(seed + 1000 * ctx.rank + start_epoch)
    if ctx.enabled and ctx.rank > 0 and start_epoch == 0:
        # ranks draw different augmentations; rank 0 matches a single-process run
        seed_everything(seed + 1000 * ctx.rank)

    started = time.perf_counter()
    history: list[EpochStats] = []
    method.train()
    show = _progress_enabled(progress, ctx)
    for epoch in range(start_epoch, cfg.epochs):
        lr = lr_at_epoch(
            epoch,
            lr=cfg.lr,
            warmup_lr=cfg.warmup_lr,
            warmup_epochs=cfg.warmup_epochs,
            epochs=cfg.epochs,
        )
        set_lr(optimizer, lr)
        sampler.set_epoch(epoch)
        generator.manual_seed(seed * 100_003 + epoch * 1009 + ctx.rank)  # worker seeds
        stats = _run_epoch(
            method, loader, optimizer, scaler, scale, params, ctx, device, precision, epoch, show,
            lr, run_dir, pool,
        )  # fmt: skip
        if not parameters_finite(params, ctx):
            raise TrainingDivergedError(
                f"the learned parameters hold NaN or infinite values after epoch {epoch + 1}/"
                f"{cfg.epochs} (lr {lr:.3g}) although every training loss was finite: an update "
                f"overflowed. Training stopped and {_kept_checkpoint(run_dir)}. Lower the "
                "learning rate or use fp32 (--precision fp32), then restart with --overwrite "
                "(or --resume to continue from that checkpoint)"
            )
        history.append(stats)
        say(
            f"epoch {stats.epoch}/{cfg.epochs}  lr {lr:.3g}  loss {stats.loss:.4f}  "
            f"acc {stats.accuracy:.2f}%  {stats.images_per_s:.1f} img/s"
        )
        if run_dir is not None and ctx.is_main:
            save_checkpoint(
                Path(run_dir), epoch + 1, method, optimizer, scaler,
                {"lr": lr, "loss": stats.loss, "accuracy": stats.accuracy},
                keep=settings.keep_checkpoints,
            )  # fmt: skip
        ctx.barrier()
        if on_epoch_end is not None:
            on_epoch_end(stats)
    method.eval()
    return FitResult(cfg.epochs, start_epoch, time.perf_counter() - started, history)


def _run_epoch(
    method, loader, optimizer, scaler, scale, params, ctx, device, precision, epoch, show, lr,
    run_dir, pool=None,
) -> EpochStats:  # fmt: skip
    from tqdm.auto import tqdm

    epochs = method.config.epochs
    total_loss = correct = seen = 0.0
    started = time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", disable=not show, leave=False)
    for step, (images, labels) in enumerate(bar):
        if pool is not None:  # the loader gives image indices; the pool gives their views
            feed = pool.feed(method, pool.rows(images, epoch))
        else:
            feed = contextlib.nullcontext(images.to(device, non_blocking=True))
        labels = labels.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, precision), feed as inputs:
            out = method.backward_step(inputs, labels, scale)
        if not all_finite(out.loss, ctx):
            kept = _kept_checkpoint(run_dir)
            raise TrainingDivergedError(
                f"training loss is {out.loss.item()} (not finite) at epoch {epoch + 1}/{epochs}, "
                f"step {step + 1}/{len(loader)} (lr {lr:.3g}); training stopped and {kept}. "
                "Lower the learning rate or use fp32 (--precision fp32), then restart with "
                "--overwrite (or --resume to continue from that checkpoint)"
            )
        if not out.gradients_synced:
            all_reduce_gradients(params, ctx)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        n = labels.shape[0]
        total_loss += out.loss.item() * n
        correct += (out.logits.argmax(dim=-1) == labels).sum().item()
        seen += n
        elapsed = time.perf_counter() - started
        if show:
            bar.set_postfix(
                loss=f"{total_loss / seen:.4f}",
                acc=f"{100 * correct / seen:.1f}",
                ips=f"{seen * ctx.world_size / max(elapsed, 1e-9):.1f}",
            )
    bar.close()
    sums = torch.tensor([total_loss, correct, seen], dtype=torch.float64)
    if ctx.enabled:
        sums = sums.to(device)
        dist.all_reduce(sums, op=dist.ReduceOp.SUM)
        sums = sums.cpu()
    total_loss, correct, seen = sums.tolist()
    return EpochStats(
        epoch=epoch + 1,
        lr=lr,
        loss=total_loss / max(seen, 1),
        accuracy=100 * correct / max(seen, 1),
        images=int(seen),
        seconds=time.perf_counter() - started,
    )


# ---- run status -----------------------------------------------------------------------------
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
