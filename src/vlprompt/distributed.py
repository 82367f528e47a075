"""Distributed data parallel helpers: who this process is, its device, and the all-reduces.

A method computes its own gradients (`method.backward_step`, which may use torch.autograd.grad, as
ProGrad does), so under DDP the engine does not rely on DistributedDataParallel's backward hooks:
it averages the trainable parameters' gradients across processes with one all-reduce per step
(`all_reduce_gradients`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from vlprompt.errors import RunError


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
    """Average `.grad` of `params` across processes (one flat all-reduce). A parameter no
    process computed a gradient for keeps none, as in one process: the optimizer then leaves it
    and its state untouched (AdamW's step count of a part that learns later, in stages)."""
    if not ctx.enabled:
        return
    computed = torch.tensor([float(p.grad is not None) for p in params], device=params[0].device)
    dist.all_reduce(computed, op=dist.ReduceOp.MAX)
    params = [p for p, flag in zip(params, computed.tolist()) if flag > 0]
    if not params:
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
