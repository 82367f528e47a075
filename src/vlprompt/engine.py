"""The training loop: `fit` trains a method for its epochs, with progress and a checkpoint per epoch.

The recipe follows CoOp/Dassl, which every paper's numbers use:

- the optimizer and the learning rate (set per epoch, or per step with `lr_schedule="step"`) come
  from `vlprompt.schedule`, and so does the training length (`epochs`, or `iterations` steps);
- the training loader shuffles and drops the last incomplete batch when the training set holds at
  least one batch (Dassl: `drop_last=is_train and len(data_source) >= batch_size`); opt-in,
  `batches="one_class"` gives each batch one class's images instead (Skip Tuning's official
  loader, `vlprompt.batching`);
- the last epoch is evaluated (no model selection on val).

Under DDP (`vlprompt.distributed`) each process takes `batch_size / world_size` images of the
global batch (DistributedSampler) and the gradients are averaged with one all-reduce per step.
Per-epoch checkpoints are `vlprompt.train_state`; seeds are `vlprompt.seeding`; mixed precision is
`vlprompt.precision`.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from vlprompt.config import EngineSettings
from vlprompt.distributed import Dist, all_finite, all_reduce_gradients, parameters_finite
from vlprompt.errors import RunError, TrainingDivergedError
from vlprompt.precision import autocast_for, effective_precision
from vlprompt.schedule import (
    build_optimizer,
    lr_at_epoch,
    lr_at_step,
    planned_epochs,
    set_lr,
    staged_lrs,
    steps_in_epoch,
    total_steps,
)
from vlprompt.seeding import seed_everything, seed_worker
from vlprompt.train_state import latest_checkpoint, load_checkpoint, save_checkpoint
from vlprompt.training_cost import long_recipe_note

log = logging.getLogger(__name__)


def _kept_checkpoint(run_dir: str | Path | None) -> str:
    """What a diverged run keeps, for its error message."""
    try:
        where = latest_checkpoint(Path(run_dir)) if run_dir is not None else None
    except RunError:
        where = None
    return f"the last good checkpoint {where} is kept" if where else "no epoch had finished"


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
    selected_epoch: int | None = None  # the epoch kept by selection on val (select_on "val")


def _progress_enabled(progress: bool | None, ctx: Dist) -> bool:
    if not ctx.is_main:
        return False
    if progress is None:
        from vlprompt.console import interactive

        return interactive()
    return progress


def train_loader(
    dataset: torch.utils.data.Dataset,
    *,
    batch_size: int,
    seed: int,
    settings: EngineSettings,
    ctx: Dist,
    device: torch.device,
) -> tuple[torch.utils.data.DataLoader, Any, torch.Generator]:
    """Shuffled loader of this process's share of each global batch.

    The order comes from DistributedSampler (seeded with `seed`, re-shuffled by `set_epoch`) in
    every case, so 1 process and N processes walk the same permutation: N processes with
    `batch_size/N` images each see exactly the images of the single process's batch."""
    if batch_size % ctx.world_size:
        raise RunError(
            f"batch_size {batch_size} is not divisible by the {ctx.world_size} processes; "
            "choose a batch size that is a multiple of --nproc_per_node"
        )
    generator = torch.Generator()
    if settings.batches == "one_class":  # opt-in: each batch one class's images
        from vlprompt.batching import OneClassBatchSampler, dataset_labels

        batch_sampler = OneClassBatchSampler(
            dataset_labels(dataset), batch_size, seed, world_size=ctx.world_size, rank=ctx.rank
        )
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=batch_sampler, num_workers=settings.workers(),
            pin_memory=device.type == "cuda", worker_init_fn=seed_worker, generator=generator,
        )  # fmt: skip
        return loader, batch_sampler, generator
    sampler = torch.utils.data.DistributedSampler(
        dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed
    )
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
    val_items: Any = None,
) -> FitResult:
    """Train `method` (already on its device) on `dataset` ((image, label) pairs) with the
    recipe in `method.config`. With `run_dir`, a checkpoint is written after every epoch (rank 0)
    and `resume=True` continues from the latest one. Raises TrainingDivergedError on a NaN/inf
    loss or, at the end of an epoch (before its checkpoint is written), NaN/inf learned
    parameters, keeping the last good checkpoint. `val_items` (with `settings.select_on ==
    "val"`): after every epoch the method is evaluated on them and the run ends with the
    weights of the best epoch (earliest on ties); without them, the last epoch's."""
    ctx = ctx or Dist()
    say = logger or log.info
    cfg = method.config
    device = next(iter(method.trainable_parameters())).device
    precision = effective_precision(device, settings.precision)
    params = method.trainable_parameters()
    optimizer = build_optimizer(method.optimizer_groups(), cfg)
    # fp16 (CUDA only) needs loss scaling against gradient underflow; bf16 has fp32's range
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    scale = scaler.scale if scaler is not None else (lambda t: t)
    pool = None
    if settings.view_pool:  # opt-in: N stored views per image, not fresh augmentations
        from vlprompt.view_pool import build_view_pool

        pool = build_view_pool(
            method, dataset, settings.view_pool, seed=seed,
            batch_size=settings.eval_batch_size, num_workers=settings.workers(),
            autocast=lambda: autocast_for(device, precision), say=say,
        )  # fmt: skip
        dataset = pool.index_dataset()  # same length, so the loader walks the same order
    loader, sampler, generator = train_loader(
        dataset, batch_size=cfg.batch_size, seed=seed, settings=settings, ctx=ctx, device=device
    )
    if len(loader) == 0:
        raise RunError(f"the training set is empty ({len(dataset)} images); nothing to train on")
    epochs = planned_epochs(cfg, len(loader))

    start_epoch = 0
    if run_dir is not None and resume:
        folder = latest_checkpoint(Path(run_dir))
        if folder is not None:
            meta = load_checkpoint(folder, method, optimizer, scaler)
            start_epoch = int(meta["epoch"])
            say(f"resumed from {folder} (after epoch {start_epoch}/{epochs})")
            if not ctx.is_main:  # only rank 0's RNG state is saved
                seed_everything(seed + 1000 * ctx.rank + start_epoch)
    if ctx.enabled and ctx.rank > 0 and start_epoch == 0:
        # ranks draw different augmentations; rank 0 matches a single-process run
        seed_everything(seed + 1000 * ctx.rank)

    started = time.perf_counter()
    history: list[EpochStats] = []
    method.train()
    from tqdm.auto import tqdm

    steps = [steps_in_epoch(cfg, e, len(loader)) for e in range(start_epoch, epochs)]
    say(f"training: {epochs - start_epoch} epoch(s), {sum(steps)} optimizer steps of batch "
        f"{cfg.batch_size}" + (f" (from epoch {start_epoch + 1})" if start_epoch else ""))  # fmt: skip
    if device.type == "cpu":
        note = long_recipe_note(method.name, type(method), cfg, len(dataset))
        if note is not None:
            say(note)
    show = _progress_enabled(progress, ctx)
    bar = tqdm(total=sum(steps), desc="training", unit="step", disable=not show,
               dynamic_ncols=True)  # fmt: skip
    run = _Training(
        method=method, loader=loader, optimizer=optimizer, scaler=scaler, scale=scale,
        params=params, ctx=ctx, device=device, precision=precision,
        show=show, run_dir=run_dir, pool=pool, epochs=epochs,
        lr_of_step=_lr_of_step(method, cfg, len(loader)), bar=bar,
        total_steps=total_steps(cfg, len(loader)),
    )  # fmt: skip
    selector = _BestOnVal(method, val_items, settings, ctx, say) if val_items else None
    with bar:
        _train_epochs(run, cfg, sampler, generator, seed, start_epoch, settings, run_dir,
                      on_epoch_end, say, history, started, steps, selector)  # fmt: skip
    method.eval()
    selected = selector.restore() if selector is not None else None
    return FitResult(epochs, start_epoch, time.perf_counter() - started, history, selected)


class _BestOnVal:
    """Model selection on the validation split: after each epoch, the validation accuracy; the
    learned state of the best epoch (earliest on ties) is kept and restored at the end."""

    def __init__(self, method: Any, items: Any, settings: EngineSettings, ctx: Dist, say) -> None:
        self.method, self.items, self.settings, self.ctx, self.say = (
            method,
            items,
            settings,
            ctx,
            say,
        )
        self.best: tuple[float, int, dict[str, torch.Tensor]] | None = None

    def after_epoch(self, epoch: int) -> None:
        from vlprompt.evaluation import evaluate_items

        result = evaluate_items(
            self.method, self.items, batch_size=self.settings.eval_batch_size,
            num_workers=self.settings.workers(), precision=self.settings.precision, ctx=self.ctx,
            split="val",
        )  # fmt: skip
        self.method.train()
        if self.best is None or result.accuracy > self.best[0]:
            self.best = (result.accuracy, epoch, self.method.learned_state_dict())
        self.say(f"epoch {epoch} validation accuracy {result.accuracy:.2f}% (best so far: epoch "
                 f"{self.best[1]}, {self.best[0]:.2f}%)")  # fmt: skip

    def restore(self) -> int | None:
        if self.best is None:
            return None
        accuracy, epoch, state = self.best
        device = self.method.clip.device
        self.method.load_state_dict({k: v.to(device) for k, v in state.items()}, strict=False)
        self.say(f"selected epoch {epoch} on the validation split ({accuracy:.2f}%)")
        return epoch


def _train_epochs(run, cfg, sampler, generator, seed, start_epoch, settings, run_dir,
                  on_epoch_end, say, history, started, steps, selector=None) -> None:  # fmt: skip
    """The epoch loop of `fit`: train, check, report (with the whole run's remaining time),
    checkpoint."""
    method, loader, optimizer, scaler = run.method, run.loader, run.optimizer, run.scaler
    params, ctx, epochs = run.params, run.ctx, run.epochs
    for epoch in range(start_epoch, epochs):
        warmup = False
        if run.lr_of_step is not None:  # set at every step; reported: the epoch's first
            lr = _reported(run.lr_of_step(epoch * len(loader)))
        else:
            warmup = epoch < cfg.warmup_epochs
            lr = lr_at_epoch(
                epoch,
                lr=cfg.lr,
                warmup_lr=cfg.warmup_lr,
                warmup_epochs=cfg.warmup_epochs,
                epochs=cfg.epochs,
            )
        set_lr(optimizer, lr, warmup)
        sampler.set_epoch(epoch)
        generator.manual_seed(seed * 100_003 + epoch * 1009 + ctx.rank)  # worker seeds
        stats = _run_epoch(run, epoch, lr)
        method.on_epoch_end(epoch + 1)
        if not parameters_finite(params, ctx):
            raise TrainingDivergedError(
                f"the learned parameters hold NaN or infinite values after epoch {epoch + 1}/"
                f"{epochs} (lr {lr:.3g}) although every training loss was finite: an update "
                f"overflowed. Training stopped and {_kept_checkpoint(run_dir)}. Lower the "
                "learning rate or use fp32 (--precision fp32), then restart with --overwrite "
                "(or --resume to continue from that checkpoint)"
            )
        history.append(stats)
        done = sum(steps[: epoch + 1 - start_epoch])
        left = (time.perf_counter() - started) / max(done, 1) * (sum(steps) - done)
        say(
            f"epoch {stats.epoch}/{epochs}  lr {lr:.3g}  loss {stats.loss:.4f}  "
            f"acc {stats.accuracy:.2f}%  {stats.images_per_s:.1f} img/s"
            + (f"  (about {_duration(left)} left)" if epoch + 1 < epochs else "")
        )
        if run_dir is not None and ctx.is_main:
            save_checkpoint(
                Path(run_dir), epoch + 1, method, optimizer, scaler,
                {"lr": lr, "loss": stats.loss, "accuracy": stats.accuracy},
                keep=settings.keep_checkpoints,
            )  # fmt: skip
        ctx.barrier()
        if selector is not None:
            selector.after_epoch(stats.epoch)
        if on_epoch_end is not None:
            on_epoch_end(stats)


def _duration(seconds: float) -> str:
    """43 s, 12 min, 1 h 35 min."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"


@dataclass
class _Training:
    """What every training step of one `fit` call uses; built once by `fit`."""

    method: Any
    loader: torch.utils.data.DataLoader
    optimizer: torch.optim.Optimizer
    scaler: Any  # torch.amp.GradScaler for fp16, else None
    scale: Callable[[torch.Tensor], torch.Tensor]  # the loss scaling (identity without scaler)
    params: list[torch.nn.Parameter]  # the trainable parameters
    ctx: Dist
    device: torch.device
    precision: str  # the effective precision (`effective_precision`)
    show: bool  # draw a progress bar
    run_dir: str | Path | None
    pool: Any = None  # the view pool (`vlprompt.view_pool.ViewPool`), or None for fresh views
    epochs: int = 0  # the epochs of the training (`schedule.planned_epochs`)
    # the learning rate of each 0-based global step (lr_schedule "step"); None: set per epoch
    # (one per group when the method trains in stages, `PromptMethod.lr_spans`)
    lr_of_step: Callable[[int], float | list[float]] | None = None
    bar: Any = None  # one tqdm bar over every step of the run (its ETA is the whole run's)
    total_steps: int = 0  # the optimizer steps of the whole training (`schedule.total_steps`)


def _lr_of_step(
    method: Any, cfg: Any, steps_per_epoch: int
) -> Callable[[int], float | list[float]] | None:
    """The per-step learning rate of a `lr_schedule="step"` training (one per parameter group
    for a method trained in stages, `PromptMethod.lr_spans`), else None."""
    if cfg.lr_schedule != "step":
        return None
    steps = total_steps(cfg, steps_per_epoch)
    spans = method.lr_spans(steps)
    if spans is not None:
        return lambda step: staged_lrs(step, lr=cfg.lr, min_lr=cfg.min_lr, spans=spans)
    return lambda step: lr_at_step(step, lr=cfg.lr, min_lr=cfg.min_lr, total_steps=steps)


def _reported(lr: float | list[float]) -> float:
    """The learning rate an epoch line shows: the one, or the learning group's (the largest)."""
    return lr if isinstance(lr, (int, float)) else max(lr)


def _run_epoch(run: _Training, epoch: int, lr: float) -> EpochStats:
    """One epoch (0-based `epoch`, at learning rate `lr`) over `run.loader`; the loss and
    accuracy are summed over all processes."""

    method, loader, optimizer, scaler = run.method, run.loader, run.optimizer, run.scaler
    ctx, device, pool, show = run.ctx, run.device, run.pool, run.show
    epochs = run.epochs
    total_loss = correct = seen = 0.0
    started = time.perf_counter()
    steps = steps_in_epoch(method.config, epoch, len(loader))  # fewer in an `iterations` end
    batches = itertools.islice(loader, steps)
    bar = run.bar
    bar.set_description(f"epoch {epoch + 1}/{epochs}")
    for step, (images, labels) in enumerate(batches):
        method.on_train_step(epoch * len(loader) + step, run.total_steps)
        if run.lr_of_step is not None:
            set_lr(optimizer, run.lr_of_step(epoch * len(loader) + step))
        if pool is not None:  # the loader gives image indices; the pool gives their views
            feed = pool.feed(method, pool.rows(images, epoch))
        else:
            feed = contextlib.nullcontext(images.to(device, non_blocking=True))
        labels = labels.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with autocast_for(device, run.precision), feed as inputs:
            out = method.backward_step(inputs, labels, run.scale)
        if not all_finite(out.loss, ctx):
            kept = _kept_checkpoint(run.run_dir)
            raise TrainingDivergedError(
                f"training loss is {out.loss.item()} (not finite) at epoch {epoch + 1}/{epochs}, "
                f"step {step + 1}/{len(loader)} (lr {lr:.3g}); training stopped and {kept}. "
                "Lower the learning rate or use fp32 (--precision fp32), then restart with "
                "--overwrite (or --resume to continue from that checkpoint)"
            )
        if not out.gradients_synced:
            all_reduce_gradients(run.params, ctx)
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
        bar.update(1)
        if show:
            bar.set_postfix(
                loss=f"{total_loss / seen:.4f}",
                acc=f"{100 * correct / seen:.1f}",
                ips=f"{seen * ctx.world_size / max(elapsed, 1e-9):.1f}",
            )
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
