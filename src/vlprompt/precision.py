"""Mixed precision: what an asked `precision` runs as on a device, and its autocast context.
Training steps, view-pool building and evaluation all run under the same autocast."""

from __future__ import annotations

import contextlib

import torch

from vlprompt.errors import RunError

AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
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
