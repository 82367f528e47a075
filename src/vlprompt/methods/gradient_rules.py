"""ProGrad's prompt-aligned gradient rule, usable with any method (see `MethodConfig`).

Official behaviour (ProGrad's `prograd_backward_and_update`): the KL towards the zero-shot
prediction is differentiated first, then the method's own loss; for every parameter tensor whose
two gradients conflict (cosine < 0) the loss gradient loses `lambda` times its component along the
KL gradient. The KL gradient itself is never added to the update.

Under DDP (a process group of several processes) the rule acts on the global batch, as one
process on the whole batch would: the loss gradient and the KL gradient are each averaged over
the processes before the projection, never projected per process and then averaged. Each
process then holds the same projected gradient, so the engine does not average it again.

Under a GradScaler (fp16 on CUDA) both gradients arrive multiplied by the same scale s. The rule
is scale-consistent: the conflict test (the sign of a dot product) does not depend on s, and the
projection `s g - lam (s g . s k) / |s k|^2 s k` is s times the unscaled one, so unscaling after
the rule gives the unscaled run's update (tests/test_precision.py checks it with a constant
scale). A KL gradient that overflowed makes the parameter's gradient non-finite, so the scaler
skips the step and lowers its scale, as it does when the loss gradient overflows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F


def prograd_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """mean over the batch of sum_c -softmax(teacher/T) * log_softmax(student/T) * T^2."""
    t = temperature
    target = F.softmax(teacher_logits.detach().float() / t, dim=-1)
    log_p = F.log_softmax(student_logits.float() / t, dim=-1)
    return (-(target * log_p).sum(dim=-1)).mean() * (t * t)


def project_conflicting(g_loss: torch.Tensor, g_kl: torch.Tensor, lam: float) -> torch.Tensor:
    """`g_loss` unchanged unless cos(g_loss, g_kl) < 0; then g - lam * (g . k_hat) k_hat."""
    dot = torch.dot(g_loss.flatten().float(), g_kl.flatten().float())
    if dot >= 0:
        return g_loss
    kl_norm_sq = g_kl.float().pow(2).sum()
    return (g_loss.float() - lam * dot / kl_norm_sq * g_kl.float()).to(g_loss.dtype)


def in_process_group() -> bool:
    """True under DDP with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def mean_over_processes(grads: Sequence[torch.Tensor | None]) -> list[torch.Tensor | None]:
    """Each gradient averaged over the processes (one flat all-reduce); as is without DDP.
    `None` entries (unused parameters) are `None` on every process and stay so."""
    grads = list(grads)
    if not in_process_group():
        return grads
    present = [g for g in grads if g is not None]
    if not present:
        return grads
    flat = torch.cat([g.reshape(-1).float() for g in present])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    out, offset = [], 0
    for g in grads:
        if g is None:
            out.append(None)
            continue
        out.append(flat[offset : offset + g.numel()].view_as(g).to(g.dtype))
        offset += g.numel()
    return out


def prograd_backward(
    params: Sequence[torch.nn.Parameter],
    loss: torch.Tensor,
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    lam: float = 1.0,
    temperature: float = 1.0,
    scale: Callable[[torch.Tensor], torch.Tensor] = lambda t: t,
) -> None:
    """Leave ProGrad's projected gradient of `loss` in each parameter's `.grad` (accumulated)."""
    params = [p for p in params if p.requires_grad]
    kl = prograd_kl(student_logits, teacher_logits, temperature)
    g_kl = torch.autograd.grad(scale(kl), params, retain_graph=True, allow_unused=True)
    g_loss = torch.autograd.grad(scale(loss), params, allow_unused=True)
    g_kl, g_loss = mean_over_processes(g_kl), mean_over_processes(g_loss)
    for p, gl, gk in zip(params, g_loss, g_kl):
        if gl is None:
            continue
        if gk is not None and not bool(torch.isfinite(gk).all()):
            # overflowed under loss scaling: its direction is unknown, so is the projection;
            # a non-finite gradient makes the GradScaler skip this step
            g = torch.full_like(gl, float("inf"))
        elif gk is None or not torch.any(gk != 0):
            g = gl
        else:
            g = project_conflicting(gl, gk, lam)
        p.grad = g if p.grad is None else p.grad + g
