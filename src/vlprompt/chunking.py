"""Rows (a class list's prompts) through a tower in chunks: the one loop of every text side that
encodes many classes (CoOp's family, CoCoOp, TCP, the deep prompts of IVLP/MaPLe/PromptSRC,
RPO's prompt rows).

`chunk_size` has one meaning everywhere: rows per pass through the tower, in training and in
evaluation alike (0: all rows in one pass). Rows never interact (each class's prompt is its own
sequence), so chunking changes memory and speed, never a number. While autograd records, a chunk
may run under `torch.utils.checkpoint`: its activations are dropped and its forward recomputed in
the backward pass, so the text side's activation memory is one chunk's, not 1000 classes'
(ImageNet). `checkpoint_mode`: "auto" (checkpoint when there is more than one chunk), "always",
"never".
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.checkpoint import checkpoint

CHECKPOINT_MODES = ("auto", "always", "never")


def chunk_bounds(n: int, chunk_size: int) -> list[slice]:
    """The consecutive row slices of `n` rows in chunks of `chunk_size` (0: one chunk)."""
    size = n if chunk_size <= 0 else chunk_size
    return [slice(start, min(start + size, n)) for start in range(0, n, max(size, 1))]


def checkpoints(n_chunks: int, checkpoint_mode: str) -> bool:
    """Whether the chunks run checkpointed: only while autograd records, then as the mode says."""
    if not torch.is_grad_enabled():
        return False
    return checkpoint_mode == "always" or (checkpoint_mode == "auto" and n_chunks > 1)


def encode_in_chunks(
    encode: Callable[[slice], torch.Tensor],
    n: int,
    chunk_size: int,
    checkpoint_mode: str = "auto",
    checkpoint_fn: Callable[..., torch.Tensor] = checkpoint,
) -> torch.Tensor:
    """`encode(rows)` of each chunk of `n` rows, concatenated in order [n, ...]; checkpointed
    as `checkpoints` says (`checkpoint_fn`: torch's non-reentrant checkpoint)."""
    parts = chunk_bounds(n, chunk_size)
    if checkpoints(len(parts), checkpoint_mode):
        outs = [checkpoint_fn(encode, part, use_reentrant=False) for part in parts]
    else:
        outs = [encode(part) for part in parts]
    return outs[0] if len(outs) == 1 else torch.cat(outs)
